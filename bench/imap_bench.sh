#!/usr/bin/env bash
# IMAP load benchmark: our `imapd-check serve` against Debian's Dovecot imap,
# side by side, with the same messages and the same argon2id password hash,
# driven by the same load generator (bench/src/imap_load.rs, `imap-load`).
# Not part of the tests.
#
# Usage (as root, Debian 12):  bash bench/imap_bench.sh [SECONDS] [REPS]
#   SECONDS  length of each timed run (default 20)   REPS  runs per cell (default 3)
#   BENCH_CLIENTS="10 30"   client counts of the mix
#   BENCH_USERS=1           users the clients spread over (1: all on one INBOX)
#   BENCH_MSGS=1000         messages loaded into each INBOX
#   BENCH_ONLY=mix|idle     only the mix, or only the many-idlers run
#   BENCH_PACE_MS=0         each client starts a round of the mix every this
#                           many ms (0: back to back). Paced, both servers get
#                           the same offered load, so their latencies compare
#                           at equal throughput (pick a pace Dovecot sustains)
#   BENCH_IDLERS=1000       connections of the idle run (ours only)
#   BENCH_OURS=DIR          take imapd-check and idx-admin from DIR instead of
#                           building target/release (to measure an old build)
#   BENCH_DIR=/some/dir     parent of the work directory (default /tmp)
#   BENCH_CONF="k = v;..."  more config lines for ours (not for base), e.g.
#                           "imapd.heavy_nice = 0" (';' separates lines)
#   BENCH_BASE=DIR          also run DIR's imapd-check as a third server
#                           ("base", on its own copy of the spool), in the
#                           same rotation: an A/B of two builds of ours
#                           within one run, beside the same Dovecot runs
#
# What it does: installs dovecot-core and dovecot-imapd if missing (Debian's
# policy keeps the system Dovecot from starting; a private one is run),
# creates the unprivileged user `imapbench`, writes BENCH_MSGS messages into
# a Maildir, gives Dovecot a copy of it (mail_location = maildir) and
# imports it into our spool with `idx-admin import`. One password hash,
# made by `imapd-check passwd`, is in both password files (Dovecot reads it
# as `{ARGON2ID}`). Both listen on loopback TCP; every client LOGINs. Both
# run at their default durability: Dovecot mail_fsync = optimized, ours
# full. For each client count and each rep the mix runs against both
# servers (alternating which goes first), and the server's RSS is read
# after each run. At the end the work directory is removed and the servers
# are stopped (by their own pids).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
REPS=${2:-3}
CLIENTS=${BENCH_CLIENTS:-"10 30"}
USERS=${BENCH_USERS:-1}
NMSG=${BENCH_MSGS:-1000}
IDLERS=${BENCH_IDLERS:-1000}
ONLY=${BENCH_ONLY:-}
BUSER=imapbench
PASS=bench-password

. bench/dovecot_common.sh
bench_setup "${BENCH_OURS:-}"

W=$(mktemp -d "${BENCH_DIR:-/tmp}/imapbench.XXXXXX")
DPID=
OPID=
cleanup() {
    if [[ -n $OPID ]]; then kill "$OPID" 2>/dev/null || true; fi
    if [[ -n $DPID ]]; then kill "$DPID" 2>/dev/null || true; fi
    if [[ -n ${BPID:-} ]]; then kill "$BPID" 2>/dev/null || true; fi
    sleep 1
    rm -rf "$W"
}
trap cleanup EXIT
echo "work directory $W"

user_name() { if ((USERS > 1)); then echo "bench$1"; else echo bench; fi; }

# Messages: plain text and multipart, 1-12 KiB, 20 senders.
python3 - "$W/maildir" "$NMSG" <<'EOF'
import os, random, sys, time
root, n = sys.argv[1], int(sys.argv[2])
for d in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
rnd = random.Random(17)
words = "mail index store lock fsync generation expunge flag folder quota header body".split()
base = int(time.time()) - n * 3600
for i in range(n):
    sender = f"sender{rnd.randrange(20)}@example.org"
    subj = " ".join(rnd.choice(words) for _ in range(5))
    body = "\r\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(rnd.randrange(10, 150)))
    hdr = (f"From: Sender <{sender}>\r\nTo: bench@example.org\r\nSubject: {subj} {i}\r\n"
           f"Message-ID: <{i}.bench@example.org>\r\n"
           f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(base + i * 3600))}\r\n"
           "MIME-Version: 1.0\r\n")
    if i % 4 == 0:
        msg = (hdr + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
               "Content-Type: text/plain\r\n\r\n" + body + "\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n" + "QUJD" * 200 + "\r\n--b1--\r\n")
    else:
        msg = hdr + "Content-Type: text/plain\r\n\r\n" + body + "\r\n"
    flags = "S" if i % 3 else ""
    name = f"{base + i * 3600}.M{i}P1.bench:2,{flags}"
    p = os.path.join(root, "cur", name)
    with open(p, "w", newline="") as f:
        f.write(msg)
    os.utime(p, (base + i * 3600, base + i * 3600))
EOF

HASH=$(echo "$PASS" | "$BIN/imapd-check" passwd x | cut -d: -f2-)
mkdir -p "$W/home" "$W/spool" "$W/dovecot-run"
: > "$W/ours.passwd"
: > "$W/dovecot.passwd"
for ((u = 0; u < USERS; u++)); do
    name=$(user_name "$u")
    echo "$name:$HASH" >> "$W/ours.passwd"
    echo "$name:{ARGON2ID}$HASH" >> "$W/dovecot.passwd"
    mkdir -p "$W/home/$name"
    cp -r "$W/maildir" "$W/home/$name/Maildir"
    "$BIN/idx-admin" import --spool "$W/spool" -d "$name" --create --maildir "$W/maildir" >/dev/null
done
chown -R "$BUSER:$BUSER" "$W/home"
chmod 755 "$W"

DPORT=$(free_port)
{
    dovecot_conf "$W" "$DPORT" "$BUSER" "$W/home/%u" "maildir:~/Maildir"
    cat <<EOF
service imap {
  process_limit = 2000
}
# Default 10: more connections of one user from one address are refused.
protocol imap {
  mail_max_userip_connections = 2000
}
default_client_limit = 4000
EOF
} > "$W/dovecot.conf"
dovecot -F -c "$W/dovecot.conf" </dev/null >"$W/dovecot.out" 2>&1 &
DPID=$!
wait_port "$DPORT"

BASE=${BENCH_BASE:-}
if [[ -n $BASE ]]; then
    # Before any server touches it: the same messages, the same UIDs.
    cp -a "$W/spool" "$W/spool-base"
fi

OPORT=$(free_port)
# The same room as Dovecot's limits above (ours default to 20 sessions per
# user: OPERATIONS.md section 6a).
printf 'imapd.max_connections_per_user = 2000\nimapd.max_connections = 4000\n' >"$W/base.conf"
{ cat "$W/base.conf"; tr ';' '\n' <<<"${BENCH_CONF:-}"; } >"$W/ours.conf"
"$BIN/imapd-check" serve --config "$W/ours.conf" --spool "$W/spool" --listen "127.0.0.1:$OPORT" --passwd "$W/ours.passwd" </dev/null >/dev/null 2>"$W/ours.log" &
OPID=$!
wait_port "$OPORT"

BPID=
BPORT=
if [[ -n $BASE ]]; then
    BPORT=$(free_port)
    "$BASE/imapd-check" serve --config "$W/base.conf" --spool "$W/spool-base" --listen "127.0.0.1:$BPORT" --passwd "$W/ours.passwd" </dev/null >/dev/null 2>"$W/base.log" &
    BPID=$!
    wait_port "$BPORT"
    "$LOAD" --port "$BPORT" --user bench --users "$USERS" --password "$PASS" prepare
fi

"$LOAD" --port "$DPORT" --user bench --users "$USERS" --password "$PASS" prepare
"$LOAD" --port "$OPORT" --user bench --users "$USERS" --password "$PASS" prepare

# Sums what the awk program $3 prints for /proc/PID/$2 over the process $1
# and its live children.
sum_procs() {
    local total=0 p v
    for p in "$1" $(ps -o pid= --ppid "$1"); do
        v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
# Dovecot's RSS is the sum over its processes (master, auth, login, one imap
# per connection); ours is one process.
dovecot_rss() { echo $(($(sum_procs "$DPID" status '/^VmRSS/ {print $2}') / 1024)); }
ours_rss() { awk '/^VmRSS/ {printf "%d", $2/1024}' "/proc/${1:-$OPID}/status"; }
# CPU time (clock ticks: user + system, with reaped children's) of a server:
# Dovecot's over its master and every live child (an imap process that
# exited was reaped by the master, so its time is in the master's
# cutime/cstime); ours the one process.
cpu_ticks() { sum_procs "$1" stat '{print $14 + $15 + $16 + $17}'; }
TICK=$(getconf CLK_TCK)

if [[ $ONLY != idle ]]; then
    for c in $CLIENTS; do
        for ((r = 1; r <= REPS; r++)); do
            if ((r % 2)); then order="dovecot ours"; else order="ours dovecot"; fi
            if [[ -n $BASE ]]; then
                case $((r % 3)) in
                    1) order="dovecot base ours" ;;
                    2) order="ours dovecot base" ;;
                    0) order="base ours dovecot" ;;
                esac
            fi
            for s in $order; do
                port=$DPORT; [[ $s == ours ]] && port=$OPORT; [[ $s == base ]] && port=$BPORT
                echo "=== $s clients=$c rep=$r"
                spid=$DPID; [[ $s == ours ]] && spid=$OPID; [[ $s == base ]] && spid=$BPID
                cpu0=$(cpu_ticks "$spid")
                out=$("$LOAD" --port "$port" --user bench --users "$USERS" --password "$PASS" mix -c "$c" --seconds "$SECS" --seed "$r" --pace-ms "${BENCH_PACE_MS:-0}")
                echo "$out" | sed '$d'
                case $s in
                    ours) rss=$(ours_rss) ;;
                    base) rss=$(ours_rss "$BPID") ;;
                    *) sleep 1; rss=$(dovecot_rss) ;;
                esac
                # The server's CPU time per command over the run (its login
                # and logout included), in milliseconds.
                cpu=$(python3 -c "import json,sys; o=json.loads(sys.argv[1])['ops']; print('%.3f' % (($(cpu_ticks "$spid") - $cpu0) * 1000 / $TICK / max(o, 1)))" "$(echo "$out" | tail -1)")
                echo "RESULT $s $c $r rss_mib=$rss cpu_ms_per_op=$cpu $(echo "$out" | tail -1)" | tee -a "$W/results"
            done
        done
    done
fi

if [[ -s $W/results ]]; then
    echo "ours: peak RSS (VmHWM) $(awk '/^VmHWM/ {printf "%d MiB", $2/1024}' "/proc/$OPID/status")"
    echo "=== summary (medians over the runs)"
    python3 bench/imap_bench_summary.py "$W/results"
fi

if [[ $ONLY != mix ]]; then
    echo "=== ours: $IDLERS idlers"
    "$LOAD" --port "$OPORT" --user "$(user_name 0)" --users 1 --password "$PASS" idle -c "$IDLERS" --rounds 20 --server-pid "$OPID"
fi
