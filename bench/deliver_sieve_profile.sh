#!/usr/bin/env bash
# The cost of the Sieve path per LMTP delivery, in numbers that do not
# depend on the machine's load (docs/BENCHMARKS.md, "LMTP with a Sieve
# script"): user-space instructions per message (valgrind's callgrind on
# the LMTP server) and system calls per message (strace -c), for a
# recipient without a script and one with bench/deliver_bench.sieve, on
# the same messages as bench/deliver_bench.sh. fsync is off
# (--unsafe-no-fsync): this measures the CPU side only. Not part of the
# tests.
#
# Usage (as root, Debian 12):  bash bench/deliver_sieve_profile.sh [N]
#   N  messages per measured run (default 400; callgrind runs ~50x slower)
#   DELIVER=/path/to/deliver  measure that binary (e.g. an older build)
#                             instead of this tree's
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
for p in valgrind strace python3; do
    command -v "$p" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null
done
cargo build -q --release -p deliver -p deliver-bench -p tools
bin=$(pwd)/target/release
work=$(mktemp -d /tmp/deliver-sieve-profile.XXXXXX)
server=""
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
python3 - "$work" "$N" <<'EOF'
import sys
sys.path.insert(0, "bench")
import deliver_bench as d
work, n = sys.argv[1], int(sys.argv[2])
d.write_messages(f"{work}/warm1.msgs", d.make_messages(10, first=0))
d.write_messages(f"{work}/warm2.msgs", d.make_messages(10, first=50))
d.write_messages(f"{work}/run.msgs", d.make_messages(n, first=1000))
d.write_messages(f"{work}/run2.msgs", d.make_messages(n, first=100000))
EOF
load() { "$bin/deliver-load" -k 1 --messages "$work/$1" lmtp --socket "$work/sock" --rcpt "$2@example.org" >/dev/null; }
# start [wrapper...]: a fresh spool with user p (no script) and s (the
# script, its mailboxes created by a warm-up), LMTP server on $work/sock.
start() {
    rm -rf "$work/spool" "$work/sock"
    mkdir "$work/spool"
    "$@" "${DELIVER:-$bin/deliver}" --lmtp --listen "unix:$work/sock" --spool "$work/spool" \
        --autocreate --unsafe-no-fsync 2>"$work/server.log" &
    server=$!
    for _ in $(seq 300); do [[ -S $work/sock ]] && break; sleep 0.1; done
    load warm1.msgs p
    load warm1.msgs s
    "$bin/sieve-check" put --spool "$work/spool" -d s bench bench/deliver_bench.sieve --activate >/dev/null
    load warm2.msgs s
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

echo "== user-space instructions per delivery (callgrind, N=$N)"
for who in p s; do
    start valgrind --tool=callgrind --callgrind-out-file="$work/cg.$who"
    sleep 2
    callgrind_control -z "$server" >/dev/null 2>&1
    load run.msgs "$who"
    callgrind_control -d "$server" >/dev/null 2>&1
    stop
    total=$(callgrind_annotate "$work/cg.$who.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    echo "  $([[ $who == p ]] && echo 'no script ' || echo '10 rules  ') $((total / N)) instructions/message"
done

echo "== system calls per delivery (strace -c, N=$N)"
start
for who in p s; do
    strace -f -c -p "$server" -o "$work/st.$who" 2>/dev/null &
    st=$!
    sleep 1
    load run2.msgs "$who"
    kill -INT "$st"
    wait "$st" 2>/dev/null || true
    # "% time, seconds, usecs/call, calls, [errors,] total"
    calls=$(awk '$NF == "total" {print $4}' "$work/st.$who")
    echo "  $([[ $who == p ]] && echo 'no script ' || echo '10 rules  ') $(awk -v c="$calls" -v n="$N" 'BEGIN {printf "%.1f", c / n}') calls/message"
done
stop
