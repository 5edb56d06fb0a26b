#!/usr/bin/env bash
# The per-change figures of the big-mailbox benchmark (issue 21: UID STORE
# of one flag, the other session's NOOP after it, UID EXPUNGE of one, the
# NOOP after that) at two mailbox sizes at once, rounds interleaved
# (small, big, big, small, ...), so that the machine's load falls on both
# alike and the ratio big/small is read within one run. Not part of the
# tests (CI does not run it).
#
# Usage (as root): bash bench/bigchanges_bench.sh SMALL_DIR BIG_DIR
#   SMALL_DIR, BIG_DIR   work directories kept by bench/bigmailbox_bench.sh
#                        with BIG_KEEP (their spool/ and ours.passwd), e.g.
#                        BIG_KEEP=/dev/shm/big1k ... bigmailbox_bench.sh 1000
#                        and BIG_KEEP=/dev/shm/big1m ... 1000000
#   CH_ROUNDS=10         interleaved rounds per run
#   CH_PER_ROUND=20      iterations per server per round
#   CH_PATTERN=big       what one iteration is (bench/src/changes.rs):
#                        big: as bigmailbox_bench.sh's rounds (B SELECT, B
#                        NOOP, A STORE, B NOOP, A EXPUNGE, B NOOP, A APPEND);
#                        full: big, then B's UID SEARCH UNSEEN and FETCH
#                        1:* (FLAGS), untimed (bigmailbox_bench.sh's whole
#                        round: A's STORE then follows a pause);
#                        select-store: B SELECT, B NOOP, A STORE, B NOOP;
#                        store: A STORE, B NOOP only (no SELECT between)
#   CH_THRASH_MIB=0      MiB the client writes over before each iteration
#                        (evicts the CPU caches without work in the server)
#   CH_OURS=DIR          imapd-check from DIR instead of target/release
#   CH_BASE=DIR          also measure DIR's imapd-check: whole runs
#                        alternate, ours, base, ours, base ... (CH_RUNS each)
#   CH_RUNS=1            runs per build
#   CH_PIN=1             both servers on CPU 1, the client on CPU 0
#                        (taskset): every command then wakes a thread on
#                        the other CPU at both sizes. Unpinned, the
#                        scheduler keeps a thread that just ran a long
#                        command (the big SELECT) on its own CPU, so the
#                        big server's next commands pay a cross-CPU wake-up
#                        that the small server's, pulled onto the client's
#                        CPU, do not (docs/BENCHMARKS.md, session 14)
#
# Each run starts one server per directory (loopback TCP, the password file
# of the directory), runs `imap-load changes` against both and stops them.
# Each INBOX drifts by the iterations' expunges and appends (pattern big:
# one of each per iteration, so its size stays).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 2 ]] || { sed -n '2,/^set /p' "$0" | sed '$d'; exit 2; }
SMALL=$1
BIG=$2
for d in "$SMALL" "$BIG"; do
    [[ -d $d/spool && -f $d/ours.passwd ]] || { echo "$d: no spool/ or ours.passwd (see bigmailbox_bench.sh BIG_KEEP)" >&2; exit 1; }
done
cargo build --release -p deliver-bench --bin imap-load
LOAD=$PWD/target/release/imap-load
if [[ -n ${CH_OURS:-} ]]; then
    OURS=$CH_OURS
else
    cargo build --release -p imapd-check
    OURS=$PWD/target/release
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break
        sleep 0.2
    done
}
SERVER_PIN=()
CLIENT_PIN=()
if [[ -n ${CH_PIN:-} ]]; then
    [[ $(nproc) -ge 2 ]] || { echo "CH_PIN needs two CPUs" >&2; exit 1; }
    SERVER_PIN=(taskset -c 1)
    CLIENT_PIN=(taskset -c 0)
fi
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# run LABEL BINDIR
run() {
    local ps=() p d
    PIDS=()
    for d in "$SMALL" "$BIG"; do
        p=$(free_port)
        ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$2/imapd-check" serve --spool "$d/spool" --listen "127.0.0.1:$p" --passwd "$d/ours.passwd" </dev/null >/dev/null 2>>"$d/changes-bench.log" &
        PIDS+=($!)
        ps+=("$p")
    done
    for p in "${ps[@]}"; do wait_port "$p"; done
    echo "### $1 ($2/imapd-check)${CH_PIN:+, pinned: servers CPU 1, client CPU 0}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    ${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$LOAD" --user bench --password bench-password changes \
        --label "small" --at "${ps[0]}" --label "big" --at "${ps[1]}" \
        --rounds "${CH_ROUNDS:-10}" --per-round "${CH_PER_ROUND:-20}" \
        --pattern "${CH_PATTERN:-big}" --thrash-mib "${CH_THRASH_MIB:-0}" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
    PIDS=()
}
for _ in $(seq "${CH_RUNS:-1}"); do
    run ours "$OURS"
    [[ -z ${CH_BASE:-} ]] || run base "$CH_BASE"
done
