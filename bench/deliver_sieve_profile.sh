#!/usr/bin/env bash
# The cost of the Sieve path per LMTP delivery (docs/BENCHMARKS.md, "LMTP
# with a Sieve script"), for three recipients on the same messages as
# bench/deliver_bench.sh: `p` without a script, `s` with
# bench/deliver_bench.sieve (files the messages into five mailboxes) and
# `c`, the control: the same script with every fileinto into INBOX (the
# same tests and actions, no spreading over mailboxes). Each is measured
# with its script in the server's cache in steady state: the cache reads
# a script (and `.sieve/active`) again on every delivery while its ctime
# is less than 2 s old (docs/FORMAT.md §9), so the measurement waits that
# out after installing it. `r` is `s` measured right after the script was
# installed, inside that window (how bench/deliver_bench.py measured the
# Sieve cell before 2026-12-06, session 7). Not part of the tests.
#
# 1. user-space instructions per message: valgrind's callgrind on the
#    LMTP server, fsync off (--unsafe-no-fsync);
# 2. system calls per message: strace -c on the server, fsync off;
# 3. with fsync on, one session, the three recipients in rotated rounds
#    (fresh users per round, their mailboxes made by a warm-up): per
#    message the device's write requests, flush requests and KiB written
#    (/sys/dev/block/M:m/stat of the spool's disk), the server's CPU time
#    and context switches (perf stat -p, software counters), and the
#    wall-clock rate with its ratio to `p` in the same round. The device
#    counters include whatever else writes to that disk; PROFILE_FS=loop
#    puts the spool on a private journal-less ext4 on a loop device, whose
#    counters are this run's alone (its flush latency is not the disk's:
#    read its rates as counts, not as the benchmark).
#
# Usage (as root, Debian 12):  bash bench/deliver_sieve_profile.sh [N] [ROUNDS]
#   N       messages per measured run (default 400; callgrind runs ~50x
#           slower; phase 3 uses 5*N)
#   ROUNDS  phase-3 rounds (default 4)
#   DELIVER=/path/to/deliver  measure that binary (e.g. an older build)
#   PROFILE_ONLY=cpu|io       phases 1-2 only, or phase 3 only
#   PROFILE_DIR=/some/dir     parent of the phase-3 spool (default /tmp)
#   PROFILE_FS=loop           phase 3 on a private loop-device ext4
#   PROFILE_KEEP=/some/dir    keep the callgrind outputs there
#   UNSAFE=1                  phase 3 with --unsafe-no-fsync (CPU only;
#                             e.g. with PROFILE_DIR=/dev/shm)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400}
ROUNDS=${2:-4}
ONLY=${PROFILE_ONLY:-}
for p in valgrind strace python3 perf; do
    command -v "$p" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        "$([[ $p == perf ]] && echo linux-perf || echo "$p")" >/dev/null
done
cargo build -q --release -p deliver -p deliver-bench -p tools
bin=$(pwd)/target/release
deliver=${DELIVER:-$bin/deliver}
work=$(mktemp -d /tmp/deliver-sieve-profile.XXXXXX)
server=""
spool=""
loop_dev=""
loop_img=""
loop_mnt=""
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
    [[ -z $spool ]] || rm -rf "$spool"
    if [[ -n $loop_mnt ]]; then
        umount "$loop_mnt" || umount -l "$loop_mnt"
        rmdir "$loop_mnt"
    fi
    [[ -z $loop_dev ]] || losetup -d "$loop_dev"
    [[ -z $loop_img ]] || rm -f "$loop_img"
}
trap cleanup EXIT
sed -E 's/fileinto :create "[^"]*"/fileinto :create "INBOX"/' bench/deliver_bench.sieve >"$work/control.sieve"
python3 - "$work" "$N" "$ROUNDS" <<'EOF'
import sys
sys.path.insert(0, "bench")
import deliver_bench as d
work, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d.write_messages(f"{work}/warm1.msgs", d.make_messages(10, first=0))
d.write_messages(f"{work}/warm2.msgs", d.make_messages(10, first=50))
d.write_messages(f"{work}/run.msgs", d.make_messages(n, first=1000))
d.write_messages(f"{work}/run2.msgs", d.make_messages(n, first=100000))
for r in range(rounds):
    d.write_messages(f"{work}/io{r}.msgs", d.make_messages(5 * n, first=200000 + r * 10 * n))
EOF
# load FILE USER [SOCKET]: one session; prints deliver-load's JSON line.
load() { "$bin/deliver-load" -k 1 --messages "$work/$1" lmtp --socket "${3:-$work/sock}" --rcpt "$2@example.org"; }
# warm USER [SPOOL]: creates USER's INBOX; s* and c* get their script and
# (s*) the script's mailboxes.
warm() {
    local spool=${2:-$work/spool}
    load warm1.msgs "$1" >/dev/null
    case $1 in
    [sr]*) "$bin/sieve-check" put --spool "$spool" -d "$1" bench bench/deliver_bench.sieve --activate >/dev/null ;;
    c*) "$bin/sieve-check" put --spool "$spool" -d "$1" bench "$work/control.sieve" --activate >/dev/null ;;
    esac
    [[ $1 == p* ]] || load warm2.msgs "$1" >/dev/null
}
# start SPOOL [wrapper...]: LMTP server on $work/sock.
start() {
    local spool=$1
    shift
    rm -rf "$spool" "$work/sock"
    mkdir "$spool"
    "$@" "$deliver" --lmtp --listen "unix:$work/sock" --spool "$spool" --autocreate \
        ${UNSAFE:+--unsafe-no-fsync} 2>"$work/server.log" &
    server=$!
    for _ in $(seq 300); do [[ -S $work/sock ]] && break; sleep 0.1; done
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }
label() {
    case $1 in
    p*) echo "no script             " ;;
    s*) echo "10 rules              " ;;
    c*) echo "control (INBOX)       " ;;
    r*) echo "10 rules, just put    " ;;
    esac
}
# settle USER: lets a script installed by `warm` leave the cache's 2 s
# window (r*: measured inside it, on purpose).
settle() { [[ $1 == r* ]] || sleep 2.5; }

if [[ $ONLY != io ]]; then
    echo "== user-space instructions per delivery (callgrind, fsync off, N=$N)"
    for who in p s c r; do
        UNSAFE=1 start "$work/spool" valgrind --tool=callgrind --callgrind-out-file="$work/cg.$who"
        warm "$who"
        settle "$who"
        callgrind_control -z "$server" >/dev/null 2>&1
        load run.msgs "$who" >/dev/null
        callgrind_control -d "$server" >/dev/null 2>&1
        stop
        total=$(callgrind_annotate "$work/cg.$who.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
        echo "  $(label $who) $((total / N)) instructions/message"
        [[ -z ${PROFILE_KEEP:-} ]] || cp "$work/cg.$who.1" "$PROFILE_KEEP/cg.$who"
    done

    echo "== system calls per delivery (strace -c, fsync off, N=$N)"
    UNSAFE=1 start "$work/spool"
    for who in p s c r; do
        warm "$who"
        strace -f -c -p "$server" -o "$work/st.$who" 2>/dev/null &
        st=$!
        sleep 0.5
        settle "$who"
        load run2.msgs "$who" >/dev/null
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        # "% time, seconds, usecs/call, calls, [errors,] syscall"
        calls=$(awk '$NF == "total" {print $4}' "$work/st.$who")
        echo "  $(label $who) $(awk -v c="$calls" -v n="$N" 'BEGIN {printf "%.1f", c / n}') calls/message:" \
            "$(awk -v n="$N" '$1 ~ /^[0-9.]+$/ && $NF != "total" {printf "%s %.2f, ", $NF, $4 / n}' "$work/st.$who" | sed 's/, $//')"
    done
    stop
fi

[[ $ONLY != cpu ]] || exit 0
parent=${PROFILE_DIR:-/tmp}
if [[ ${PROFILE_FS:-} == loop ]]; then
    loop_img=$(mktemp /var/tmp/deliver-sieve-profile-fs.XXXXXX)
    truncate -s 2G "$loop_img"
    mkfs.ext4 -q -F -O ^has_journal "$loop_img"
    loop_dev=$(losetup --find --show --direct-io=on "$loop_img")
    loop_mnt=$(mktemp -d /tmp/deliver-sieve-profile-mnt.XXXXXX)
    mount "$loop_dev" "$loop_mnt"
    parent=$loop_mnt
fi
spool=$(mktemp -d "$parent/deliver-sieve-profile-spool.XXXXXX")
rmdir "$spool"
stat_file=$(python3 -c "import os, sys; s = os.stat(sys.argv[1]); print(f'/sys/dev/block/{os.major(s.st_dev)}:{os.minor(s.st_dev)}/stat')" "$parent")
if [[ ! -e $stat_file ]]; then
    # No block device (tmpfs): device columns stay 0.
    stat_file=$work/no-device.stat
    echo "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0" >"$stat_file"
fi
n3=$((5 * N))
echo "== $([[ -n ${UNSAFE:-} ]] && echo 'fsync OFF (UNSAFE=1)' || echo 'with fsync'), one session, $ROUNDS rounds of $n3 messages per recipient ($(df --output=source "$parent" | tail -1), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "   per message: device writes, flushes, KiB written; server CPU µs, context switches; rate/s (ratio to p in the round)"
start "$spool"
declare -A sum_w sum_f sum_k sum_cpu sum_cs
for r in $(seq 0 $((ROUNDS - 1))); do
    order=(p s c r)
    order=("${order[@]:r%4}" "${order[@]:0:r%4}")
    for who in p s c; do warm "$who$r" "$spool"; done
    sync
    sleep 2.5
    declare -A rate
    for who in "${order[@]}"; do
        [[ $who != r ]] || warm "$who$r" "$spool"
        perf stat -e task-clock,context-switches -x, -o "$work/perf" -p "$server" &
        pf=$!
        sleep 0.2
        read -r -a d0 <"$stat_file"
        json=$(load "io$r.msgs" "$who$r")
        read -r -a d1 <"$stat_file"
        sleep 0.2
        kill -INT "$pf"
        wait "$pf" 2>/dev/null || true
        rate[$who]=$(python3 -c "import json, sys; print(json.loads(sys.argv[1])['rate'])" "$json")
        # fields: 5 writes completed, 7 sectors written, 16 flushes completed
        w=$(((d1[4] - d0[4]))); k=$(((d1[6] - d0[6]) / 2)); f=$(((d1[15] - d0[15])))
        cpu=$(awk -F, '$3 == "task-clock" {print $1 * 1000}' "$work/perf")
        cs=$(awk -F, '$3 == "context-switches" {print $1}' "$work/perf")
        printf '  round %d %s  %5.2f writes  %5.2f flushes  %6.1f KiB  %6.1f µs CPU  %5.2f cs  %7.1f/s\n' \
            "$r" "$(label $who)" "$(bc -l <<<"$w / $n3")" "$(bc -l <<<"$f / $n3")" "$(bc -l <<<"$k / $n3")" \
            "$(bc -l <<<"$cpu / $n3")" "$(bc -l <<<"$cs / $n3")" "${rate[$who]}"
        sum_w[$who]=$((${sum_w[$who]:-0} + w)); sum_f[$who]=$((${sum_f[$who]:-0} + f)); sum_k[$who]=$((${sum_k[$who]:-0} + k))
        sum_cpu[$who]=$(bc -l <<<"${sum_cpu[$who]:-0} + $cpu"); sum_cs[$who]=$((${sum_cs[$who]:-0} + cs))
    done
    ratio() { printf '%.3f' "$(bc -l <<<"${rate[$1]} / ${rate[p]}")"; }
    echo "  round $r ratios to no script: 10 rules $(ratio s)x, control $(ratio c)x, 10 rules just put $(ratio r)x"
done
stop
total=$((ROUNDS * n3))
echo "== phase 3 totals per message ($total messages per recipient; load $(cut -d' ' -f1-3 /proc/loadavg))"
for who in p s c r; do
    printf '  %s  %5.2f writes  %5.2f flushes  %6.1f KiB  %6.1f µs CPU  %5.2f cs\n' "$(label $who)" \
        "$(bc -l <<<"${sum_w[$who]} / $total")" "$(bc -l <<<"${sum_f[$who]} / $total")" \
        "$(bc -l <<<"${sum_k[$who]} / $total")" "$(bc -l <<<"${sum_cpu[$who]} / $total")" \
        "$(bc -l <<<"${sum_cs[$who]} / $total")"
done
rm -rf "$spool"
