#!/usr/bin/env bash
# SEARCH BODY with and without the full-text index (docs/BENCHMARKS.md,
# "Full-text search"; issue 21). Generates N messages (1-4 KB of text
# drawn from a 20,000-word vocabulary, Zipf-like, so words have every
# frequency), imports them into WORK/spool, then over one stdio IMAP
# session each (release build, everything in the page cache):
#   1. UID SEARCH BODY <word> with imapd.fts = off     (reads every message)
#   2. idx-admin fts-rebuild                           (index build time, size)
#   3. the same searches with the index                (warm)
#   4. D more deliveries, then the first SEARCH (catch-up) and a warm one
#   5. the same searches in Dovecot 2.3 (/usr/lib/dovecot/imap, no fts
#      plugin) on a Maildir of the same messages (with DOVECOT=1, default)
# Answers of 1, 3 and 5 must be identical (checked). Medians of R rounds.
# Removes everything it made. Usage:
#   bench/fts_search.sh [N] [WORK] [R] [D]  (default 100000 /dev/shm/fts-bench 9 1000)
#   FTS_KEY=SUBJECT      search SUBJECT instead of BODY (each message's
#                        subject holds one word drawn the same way)
#   DOVECOT=0            skips Dovecot
set -euo pipefail
N=${1:-100000}
WORK=${2:-/dev/shm/fts-bench}
R=${3:-9}
D=${4:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAPD=${IMAPD:-$ROOT/target/release/imapd-check}
ADMIN=${IDX_ADMIN:-$ROOT/target/release/idx-admin}
for b in "$IMAPD" "$ADMIN"; do
    [ -x "$b" ] || { echo "build first: cargo build --release -p imapd-check -p tools" >&2; exit 1; }
done
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
gen() { # gen FILE COUNT SEED
python3 - "$1" "$2" "$3" <<'PY'
import sys, random
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(21)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rnd.choice(letters) for _ in range(rnd.randint(4, 10))) for _ in range(20000)]
rnd = random.Random(seed)
weights = [1.0 / (i + 1) for i in range(len(vocab))]
with open(path, "w") as f:
    for i in range(n):
        words = rnd.choices(vocab, weights, k=rnd.randint(150, 600))
        body = []
        for j in range(0, len(words), 12):
            body.append(" ".join(words[j:j + 12]))
        f.write("From bench@example.org Tue Jan  2 10:00:00 2024\n"
                "From: sender%d@example.org\nTo: bench@example.org\nSubject: message %d %s\n"
                "Date: Tue, 2 Jan 2024 10:00:00 +0100\nMessage-ID: <b%d.%d@example.org>\n\n%s\n\n"
                % (i % 97, i, words[0], seed, i, "\n".join(body)))
PY
}
gen "$WORK/a.mbox" "$N" 1
gen "$WORK/b.mbox" "$D" 2
# Vocabulary ranks 30, 1000 and 15000 (common, middling, rare) and a
# substring inside words.
WORDS=$(python3 -c '
import random
rnd = random.Random(21)
letters = "abcdefghijklmnopqrstuvwxyz"
v = ["".join(rnd.choice(letters) for _ in range(rnd.randint(4, 10))) for _ in range(20000)]
print(v[30], v[1000], v[15000], v[1000][1:4])')
"$ADMIN" import --mbox "$WORK/a.mbox" --spool "$WORK/spool" -d bench --create >/dev/null
DOVECOT=${DOVECOT:-1}
if [ "$DOVECOT" = 1 ]; then
python3 - "$WORK/a.mbox" "$WORK/dc/Maildir" <<'PY'
import os, sys
src, root = sys.argv[1], sys.argv[2]
for d in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(root, d))
msgs, cur = [], None
for line in open(src, "rb"):
    if line.startswith(b"From bench@"):
        if cur is not None:
            msgs.append(cur)
        cur = []
    else:
        cur.append(line)
msgs.append(cur)
for i, m in enumerate(msgs):
    data = b"".join(m)[:-1]  # the mbox separator's blank line
    with open(os.path.join(root, "cur", "%d.M%dP1.bench:2,S" % (1700000000 + i, i)), "wb") as f:
        f.write(data)
PY
chmod -R a+rwX "$WORK"
fi
rm "$WORK/a.mbox"
printf 'imapd.fts = off\n' >"$WORK/off.conf"
printf 'imapd.fts = on\nimapd.fts_batch = 10000000\n' >"$WORK/on.conf"
KEY=${FTS_KEY:-BODY}
case $KEY in BODY|TEXT|SUBJECT) ;; *) echo "FTS_KEY: BODY, TEXT or SUBJECT" >&2; exit 2;; esac
session() { # session CONF|dovecot ROUNDS WORDS... -> per word: word median_ms first_ms hits md5
python3 - "$IMAPD" "$WORK" "$KEY" "$1" "$2" "${@:3}" <<'PY'
import sys, os, subprocess, time, hashlib, statistics
imapd, work, key, conf, rounds, words = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:]
if conf == "dovecot":
    home = os.path.join(work, "dc")
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i",
            "HOME=" + home, "USER=nobody", "PATH=/usr/bin:/bin", "/usr/lib/dovecot/imap",
            "-o", "mail_location=maildir:%s/Maildir" % home]
    env = None
else:
    argv = [imapd, "serve", "--spool", os.path.join(work, "spool"), "-d", "bench", "--stdio"]
    env = dict(os.environ, MAILSTORE_CONFIG=conf)
p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, env=env)
p.stdout.readline()
n = 0
def cmd(c):
    global n
    n += 1
    tag = b"t%d" % n
    p.stdin.write(tag + b" " + c.encode() + b"\r\n"); p.stdin.flush()
    out = []
    while True:
        l = p.stdout.readline()
        if not l:
            sys.exit("server closed the connection")
        if l.startswith(tag + b" "):
            assert b" OK " in l, l
            return out
        out.append(l)
cmd("SELECT INBOX")
for w in words:
    times = []
    for r in range(rounds + 1):
        t = time.perf_counter()
        out = cmd('UID SEARCH %s "%s"' % (key, w))
        times.append((time.perf_counter() - t) * 1000)
    res = b"".join(l.rstrip() for l in out if l.startswith(b"* SEARCH"))
    hits = len(res.split()) - 2
    print(w, "%.1f" % statistics.median(times[1:] or times), "%.1f" % times[0], hits,
          hashlib.md5(res).hexdigest())
cmd("LOGOUT")
p.wait()
PY
}
echo "N=$N messages, $(du -sh "$WORK/spool" | cut -f1) spool; UID SEARCH $KEY; words: $WORDS"
echo "## without the index (imapd.fts = off)"
session "$WORK/off.conf" "$R" $WORDS | tee "$WORK/off.txt"
s=$(date +%s.%N)
"$ADMIN" fts-rebuild --spool "$WORK/spool" -d bench
e=$(date +%s.%N)
echo "index build: $(echo "$e - $s" | bc) s, size $(du -sh "$WORK/spool/bench/INBOX/.fts" | cut -f1)"
echo "## with the index"
session "$WORK/on.conf" "$R" $WORDS | tee "$WORK/on.txt"
if diff <(awk '{print $1, $4, $5}' "$WORK/off.txt") <(awk '{print $1, $4, $5}' "$WORK/on.txt") >/dev/null; then
    echo "answers identical"
else
    echo "ANSWERS DIFFER"; exit 1
fi
"$ADMIN" import --mbox "$WORK/b.mbox" --spool "$WORK/spool" -d bench >/dev/null
echo "## after $D more deliveries (first SEARCH catches the index up)"
session "$WORK/on.conf" "$R" $(echo $WORDS | cut -d' ' -f2)
if [ "$DOVECOT" = 1 ]; then
    echo "## Dovecot 2.3, Maildir, no fts plugin (first SELECT builds its index)"
    session dovecot "$R" $WORDS | tee "$WORK/dc.txt"
    # Dovecot numbers UIDs from 1 in file-name order: the same UIDs.
    if diff <(awk '{print $1, $4, $5}' "$WORK/off.txt") <(awk '{print $1, $4, $5}' "$WORK/dc.txt") >/dev/null; then
        echo "Dovecot's answers identical"
    else
        echo "Dovecot's answers differ (UID numbering?)"
    fi
else
    awk '{print $1, "-", "-", "-", "-"}' "$WORK/off.txt" >"$WORK/dc.txt"
fi
echo "| word | hits | without index (median ms) | with index (median ms) | Dovecot (median ms) |"
echo "|---|---|---|---|---|"
join <(sort "$WORK/off.txt") <(sort "$WORK/on.txt") | join - <(sort "$WORK/dc.txt") |
    awk '{printf "| %s | %s | %s | %s | %s |\n", $1, $4, $2, $6, $10}'
