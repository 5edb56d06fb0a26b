#!/usr/bin/env bash
# CephFS against local disk, side by side in one run (docs/BENCHMARKS.md,
# "CephFS"): one-shot deliveries per second (one `deliver` process per
# message, one after another, then two streams at once, one through each
# mount) and IMAP NOOP latency of a session on mount B, with Ceph's default
# client settings. Not part of the tests.
#
# Usage (as root, Debian 12, Ceph packages installed as scripts/test.sh does):
#   bash bench/cephfs_bench.sh [N] [NOOPS]     (defaults 300 and 1000)
#   BIN_DIR=dir   use these release binaries (default: scripts/build-release.sh)
# Brings Ceph up with scripts/ceph-up.sh in /tmp/cephfs-bench and always
# takes it down again (scripts/ceph-down.sh); the local cells run in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
NOOPS=${2:-1000}
BIN_DIR=${BIN_DIR:-$(bash scripts/build-release.sh)}
W=/tmp/cephfs-bench
mkdir -p "$W"
trap 'bash scripts/ceph-down.sh "$W/state" >/dev/null 2>&1 || true; rm -rf "$W/local"' EXIT
bash scripts/ceph-up.sh "$W/state" "$W/A" "$W/B" >/dev/null

msg() { # a ~4 KiB message
    printf 'From: a@example.org\r\nTo: u@example.org\r\nSubject: bench %s\r\n\r\n' "$1"
    for _ in $(seq 1 60); do printf '%s\r\n' 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; done
}
msg 0 >"$W/msg.eml"

# deliveries/s of N one-shot deliveries through SPOOL (one stream).
stream() { # spool user n
    local s=$1 u=$2 n=$3
    for i in $(seq 1 "$n"); do
        "$BIN_DIR/deliver" --spool "$s" -d "$u" --autocreate <"$W/msg.eml" 2>/dev/null || exit 1
    done
}
rate() { # label, then the command
    local label=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    printf '%-44s %8.1f deliveries/s\n' "$label" "$(echo "$N / ($t1 - $t0)" | bc -l)"
}
two_streams() { # spoolA spoolB user
    stream "$1" "$3" $((N / 2)) &
    local p=$!
    stream "$2" "$3" $((N / 2))
    wait $p
}

mkdir -p "$W/local" "$W/A/sp"
echo "== one-shot deliver, $N messages of $(wc -c <"$W/msg.eml") bytes, Durability::Full"
rate "local disk ($(stat -f -c %T /tmp)), one stream" stream "$W/local/sp" u1 "$N"
rate "CephFS via mount A, one stream" stream "$W/A/sp" u1 "$N"
rate "local disk, two streams, one mailbox" two_streams "$W/local/sp" "$W/local/sp" u2
rate "CephFS, streams via A and B, one mailbox" two_streams "$W/A/sp" "$W/B/sp" u2
for s in "$W/A/sp" "$W/B/sp" "$W/local/sp"; do
    "$BIN_DIR/idx-inspect" verify --spool "$s" -d u2 >/dev/null || echo "verify FAILED through $s"
done

# Dovecot in the same run: dovecot-lda, one process per message, maildir,
# with the settings its documentation asks for on shared storage.
LDA=/usr/lib/dovecot/dovecot-lda
if [[ -x $LDA ]] && id delivbench >/dev/null 2>&1; then
    mkdir -p "$W/lda-run"
    chown delivbench: "$W/lda-run"
    printf '%s\n' "base_dir = $W/lda-run" "log_path = $W/lda-run/lda.log" "protocols =" "ssl = no" \
        "postmaster_address = postmaster@example.org" "mmap_disable = yes" \
        "mail_fsync = always" "lock_method = fcntl" >"$W/lda.conf"
    lda_stream() { # maildir n
        for _ in $(seq 1 "$2"); do
            HOME=$W/lda-run setpriv --reuid=delivbench --regid=delivbench --clear-groups \
                "$LDA" -c "$W/lda.conf" -o "mail_location=maildir:$1" -f a@example.org <"$W/msg.eml" ||
                echo "$?" >>"$W/lda-run/failed"
        done
    }
    lda_two() { # maildirA maildirB
        lda_stream "$1" $((N / 2)) &
        local p=$!
        lda_stream "$2" $((N / 2))
        wait $p
    }
    for d in "$W/local" "$W/A"; do mkdir -p "$d/dovecot" && chown delivbench: "$d/dovecot"; done
    echo "== dovecot-lda (maildir, mmap_disable=yes mail_fsync=always lock_method=fcntl)"
    rate "local disk, one stream" lda_stream "$W/local/dovecot/m1" "$N"
    rate "CephFS via mount A, one stream" lda_stream "$W/A/dovecot/m1" "$N"
    rate "CephFS, streams via A and B, one maildir" lda_two "$W/A/dovecot/m2" "$W/B/dovecot/m2"
    echo "   messages in the shared maildir: $(find "$W/A/dovecot/m2/new" "$W/A/dovecot/m2/cur" -type f | wc -l) of $N;" \
        "dovecot-lda runs that failed: $(sort "$W/lda-run/failed" 2>/dev/null | uniq -c | awk '{printf "%s (exit %s) ", $1, $2}')" \
        "log errors: $(grep -c 'Error:' "$W/lda-run/lda.log" 2>/dev/null || true)"
    grep 'Error:' "$W/lda-run/lda.log" 2>/dev/null | sed 's/^.*Error: /   /' | sort | uniq -c | sort -rn | head -5 || true
else
    echo "== dovecot-lda: skipped (no $LDA or no user delivbench; bench/deliver_bench.sh creates it)"
fi

# NOOP latency: a session on SPOOL, NOOPS NOOPs one after another.
noop() { # label spool
    python3 - "$BIN_DIR/imapd-check" "$2" "$NOOPS" "$1" <<'PY'
import subprocess, sys, time
binary, spool, n, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = subprocess.Popen([binary, "serve", "--stdio", "--spool", spool, "-d", "u1"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def cmd(tag, c):
    p.stdin.write(f"{tag} {c}\r\n".encode()); p.stdin.flush()
    while not p.stdout.readline().startswith(tag.encode() + b" "):
        pass
p.stdout.readline()  # greeting
cmd("s", "SELECT INBOX")
lat = []
for i in range(n):
    t = time.perf_counter(); cmd(f"n{i}", "NOOP"); lat.append(time.perf_counter() - t)
cmd("z", "LOGOUT"); p.wait()
lat.sort()
print(f"{label:<44} median {lat[n // 2] * 1e6:7.0f} us  p99 {lat[n * 99 // 100] * 1e6:7.0f} us")
PY
}
echo "== IMAP NOOP latency, $NOOPS NOOPs, mailbox of $N messages"
noop "local disk" "$W/local/sp"
noop "CephFS via mount B (written through A)" "$W/B/sp"
