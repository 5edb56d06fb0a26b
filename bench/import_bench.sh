#!/usr/bin/env bash
# Dovecot Maildir import speed (docs/BENCHMARKS.md, "Dovecot Maildir
# import"; issue 20: within 2x of `cp -a` of the same files on the same
# disk). Generates a Maildir++ INBOX of N messages (1.4-6 KB, LF line
# ends, a dovecot-uidlist version 3 with every UID) under WORK, then times
#   1. cp -a Maildir copy && sync -f copy   (the copy made durable)
#   2. idx-admin import --dovecot-maildir   (release build)
#   3. the same import again                (everything here already)
# and removes everything it made. Usage:
#   bench/import_bench.sh [N] [WORK]     (default 100000, /tmp/import-bench)
set -euo pipefail
N=${1:-100000}
WORK=${2:-/tmp/import-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${IDX_ADMIN:-$ROOT/target/release/idx-admin}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p tools --bin idx-admin" >&2; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/Maildir" "$N" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
for d in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(root, d))
rnd = random.Random(20)
lines = ["3 V1700000000 N%d Gbench0000000000000000000000000000" % (n + 1)]
words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod".split()
for uid in range(1, n + 1):
    body_len = rnd.randint(1200, 5800)
    head = ("From: sender%d@example.org\nTo: bench@example.org\nSubject: message %d\n"
            "Date: Tue, 2 Jan 2024 10:00:00 +0100\nMessage-ID: <b%d@example.org>\n\n") % (uid % 97, uid, uid)
    body = []
    size = 0
    while size < body_len:
        line = " ".join(rnd.choice(words) for _ in range(10)) + "\n"
        body.append(line)
        size += len(line)
    data = (head + "".join(body)).encode()
    crlf = len(data) + data.count(b"\n")
    base = "%d.M%dP1.bench,S=%d,W=%d" % (1700000000 + uid, uid, len(data), crlf)
    flags = "S" if uid % 3 else "FS"
    p = os.path.join(root, "cur", base + ":2," + flags)
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (1700000000 + uid, 1700000000 + uid))
    lines.append("%d :%s" % (uid, base))
with open(os.path.join(root, "dovecot-uidlist"), "w") as f:
    f.write("\n".join(lines) + "\n")
PY
sync
du -sh "$WORK/Maildir" | cut -f1 | sed 's/^/Maildir size: /'
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
cp_time=$(t bash -c "cp -a '$WORK/Maildir' '$WORK/copy' && sync -f '$WORK/copy'")
rm -rf "$WORK/copy"; sync
imp=$(t "$BIN" import --dovecot-maildir "$WORK/Maildir" --spool "$WORK/spool" -d bench)
again=$(t "$BIN" import --dovecot-maildir "$WORK/Maildir" --spool "$WORK/spool" -d bench)
"${IDX_INSPECT:-$ROOT/target/debug/idx-inspect}" verify --spool "$WORK/spool" -d bench 2>/dev/null | tail -1 || true
printf '| `cp -a Maildir copy && sync -f copy` | %.1f s |\n' "$cp_time"
printf '| `idx-admin import --dovecot-maildir` | %.1f s (%.1fx) |\n' "$imp" "$(echo "$imp / $cp_time" | bc -l)"
printf '| the same import again (everything here already) | %.1f s |\n' "$again"
