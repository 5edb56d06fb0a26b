#!/usr/bin/env bash
# Big-mailbox benchmark (issue 21): our `imapd-check serve` against Debian's
# Dovecot 2.3 imap on ONE INBOX of N messages, the same messages, in one run.
# Not part of the tests (CI does not run it).
#
# Usage (as root, Debian 12):  bash bench/bigmailbox_bench.sh [N]
#   N                    messages in the INBOX (default 1000; the issue's
#                        figures are at 1000 and 1000000)
#   BIG_ROUNDS=9         rounds of the per-change operations (medians)
#   BIG_SEARCH_ROUNDS=9  timed runs of each memory command (each after one
#                        untimed warm-up run)
#   BIG_BODY_ROUNDS=9    timed runs of each UID SEARCH BODY (after one warm-up;
#                        0: none). Dovecot without a full-text index reads
#                        every message: ~260 s each at 1,000,000 here, so
#                        the 1,000,000 run in BENCHMARKS.md used 1.
#   BIG_MEMORY=1         also FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE),
#                        UID SEARCH ALL, UID SORT (REVERSE DATE) and
#                        (SUBJECT), UID THREAD REFERENCES (0: not); the
#                        warm-up run of each is printed, not counted
#   BIG_ONLY=ours|dovecot  measure one server only
#   BIG_BASE=DIR         also measure DIR's imapd-check ("base", another build
#                        of ours) on the same spool, right after ours: an A/B
#                        of two builds within one run
#   BIG_OURS=DIR         imapd-check and idx-admin from DIR instead of
#                        building target/release (to measure another build)
#   BIG_DIR=/dev/shm     parent of the work directory: our spool, Dovecot's
#                        index files, configs, logs
#   BIG_MAILDIR_DIR=DIR  where the generated Maildir (Dovecot's mail, and
#                        the import's source) goes; default: the work
#                        directory. On tmpfs every file takes a 4 KiB page,
#                        so 1,000,000 messages are ~4.3 GB per copy: put the
#                        Maildir on disk (BIG_MAILDIR_DIR=/var/tmp) to stay
#                        under 6 GB of /dev/shm; Dovecot's index files stay
#                        in the work directory either way.
#   BIG_FTS=1            build our full-text index after the import
#                        (`idx-admin fts-rebuild`, timed and reported), as a
#                        postmaster would after moving mail in; 0: leave it
#                        to the SEARCHes, which catch it up lazily
#                        (imapd.fts_batch messages or 2 s per SEARCH)
#   (Run the whole script under `taskset -c 0` to take the scheduler's
#   cross-CPU wake-ups out of the per-change figures: every process then
#   shares one CPU; docs/BENCHMARKS.md, session 19.)
#   BIG_KEEP=DIR         keep the prepared data in DIR (the work directory)
#                        and reuse it on the next run with the same N: no
#                        generation, no import, no first Dovecot indexing.
#                        Each run flags, expunges and appends BIG_ROUNDS
#                        messages, so the INBOX drifts by that much.
#                        Remove DIR (and BIG_MAILDIR_DIR's bigbench-N) by hand.
#
# What it does: installs dovecot-core and dovecot-imapd if missing, creates
# the unprivileged user `imapbench` (Dovecot's mail user), generates N small
# varied messages (`imap-load gen-maildir`, bench/src/big.rs: a few hundred
# bytes to a few KB, one in five multipart, words from a Zipf vocabulary with
# a common word in a third of the messages and a rare one in one in 997)
# straight into a Maildir, imports it into our spool with
# `idx-admin import --maildir` (timed and reported), and lets Dovecot build
# its index with one untimed SELECT. One argon2id password hash is in both
# password files; both listen on loopback TCP; every session LOGINs.
# Durability: ours at its default (full; on tmpfs fsync costs nothing),
# Dovecot with mail_fsync = never (so neither pays for fsync, wherever its
# Maildir is). Dovecot's imap processes get vsz_limit = 4G (its default
# 256M is not enough at 1,000,000 messages).
#
# Then, per server (`imap-load big`, bench/src/big.rs), sessions A and B
# both SELECTed on the INBOX, BIG_ROUNDS rounds of: B SELECT (warm); B NOOP
# with nothing changed; A UID STORE +FLAGS.SILENT (\Flagged) of one message
# (or -FLAGS when it has it), then B NOOP; A UID STORE \Deleted + UID
# EXPUNGE of one, then B NOOP; A APPEND small; B UID SEARCH UNSEEN; B FETCH
# 1:* (FLAGS) read to the tagged OK. Then B UID SEARCH BODY <rare word> and
# <common word> (and the memory commands), each warmed up once and timed
# BIG_SEARCH_ROUNDS times. Each figure is the median; beside it the peak RSS
# of the serving processes during the command (VmHWM reset before each run
# through /proc/PID/clear_refs): ours is one process for all sessions,
# Dovecot's is the sum over its `imap` processes (one per session).
# Prints each server's table, a side-by-side table (ours / Dovecot / ratio)
# and one JSON line (`BIGBENCH {...}`) for docs/BENCHMARKS.md. At the end
# the servers are stopped (by their own pids) and, without BIG_KEEP, every
# file made is removed (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
ROUNDS=${BIG_ROUNDS:-9}
SROUNDS=${BIG_SEARCH_ROUNDS:-9}
BROUNDS=${BIG_BODY_ROUNDS:-9}
BASE=${BIG_BASE:-}
MEMORY=${BIG_MEMORY:-1}
ONLY=${BIG_ONLY:-}
BUSER=imapbench
PASS=bench-password

. bench/dovecot_common.sh
bench_setup "${BIG_OURS:-}"

KEEP=${BIG_KEEP:-}
if [[ -n $KEEP ]]; then
    mkdir -p "$KEEP"
    W=$(cd "$KEEP" && pwd)
else
    W=$(mktemp -d "${BIG_DIR:-/dev/shm}/bigbench.XXXXXX")
fi
if [[ -n ${BIG_MAILDIR_DIR:-} ]]; then
    MHOME=$BIG_MAILDIR_DIR/bigbench-$N
    [[ -n $KEEP ]] || MHOME=$(mktemp -d "$BIG_MAILDIR_DIR/bigbench-$N.XXXXXX")
else
    MHOME=$W/home
fi
MAILDIR=$MHOME/bench/Maildir
DPID=
OPID=
cleanup() {
    if [[ -n $OPID ]]; then kill "$OPID" 2>/dev/null || true; fi
    if [[ -n $DPID ]]; then kill "$DPID" 2>/dev/null || true; fi
    sleep 1
    if [[ -z $KEEP ]]; then
        rm -rf "$W"
        [[ $MHOME == "$W"/* ]] || rm -rf "$MHOME"
    fi
}
trap cleanup EXIT
echo "work directory $W, Maildir $MAILDIR"

HASH=$(echo "$PASS" | "$BIN/imapd-check" passwd x | cut -d: -f2-)
echo "bench:$HASH" > "$W/ours.passwd"
echo "bench:{ARGON2ID}$HASH" > "$W/dovecot.passwd"

if [[ $(cat "$W/ready" 2>/dev/null) != "$N" ]]; then
    rm -rf "$W/spool" "$W/dovecot-index" "$MHOME"
    mkdir -p "$MHOME/bench" "$W/spool"
    "$LOAD" gen-maildir "$MAILDIR" "$N"
    echo "maildir: $(du -sh "$MAILDIR" | cut -f1) on disk"
    t0=$(date +%s.%N)
    "$BIN/idx-admin" import --spool "$W/spool" -d bench --create --maildir "$MAILDIR" >/dev/null
    t1=$(date +%s.%N)
    echo "IMPORT $N messages: $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s (idx-admin import --maildir)"
    echo "spool: $(du -sh "$W/spool" | cut -f1) on disk"
    if [[ ${BIG_FTS:-1} == 1 ]]; then
        # What a postmaster does after a migration (OPERATIONS.md 6c):
        # otherwise the first SEARCHes catch the index up a batch at a time.
        t0=$(date +%s.%N)
        "$BIN/idx-admin" fts-rebuild --spool "$W/spool" -d bench --memory 512M >/dev/null
        t1=$(date +%s.%N)
        echo "FTS-REBUILD $N messages: $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s (idx-admin fts-rebuild, 512 MiB budget)"
    fi
    chown -R "$BUSER:$BUSER" "$MHOME"
    NEEDS_INDEX=1
else
    echo "reusing the prepared data of $N messages in $W"
    NEEDS_INDEX=0
fi
mkdir -p "$W/dovecot-run" "$W/dovecot-index"
chown "$BUSER:$BUSER" "$W/dovecot-index"
chmod 755 "$W" "$MHOME"

DPORT=$(free_port)
{
    dovecot_conf "$W" "$DPORT" "$BUSER" "$MHOME/%u" "maildir:~/Maildir:INDEX=$W/dovecot-index/%u"
    cat <<EOF
mail_fsync = never
service imap {
  vsz_limit = 4G
}
EOF
} > "$W/dovecot.conf"
OPORT=$(free_port)
LOADARGS=(--user bench --password "$PASS")
RESULTS=$W/results.$$
: > "$RESULTS"

run_dovecot() {
    dovecot -F -c "$W/dovecot.conf" </dev/null >"$W/dovecot.out" 2>&1 &
    DPID=$!
    wait_port "$DPORT"
    if ((NEEDS_INDEX)); then
        local t0; t0=$(date +%s.%N)
        "$LOAD" --port "$DPORT" "${LOADARGS[@]}" prepare
        echo "dovecot: first indexing of $N messages (untimed in the results): $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s"
        NEEDS_INDEX=0
        [[ -z $KEEP ]] || echo "$N" > "$W/ready"
    fi
    "$LOAD" --port "$DPORT" "${LOADARGS[@]}" big --label dovecot --rounds "$ROUNDS" \
        --search-rounds "$SROUNDS" --body-rounds "$BROUNDS" --dovecot-master "$DPID" ${MEMORY_FLAG:+"$MEMORY_FLAG"} | tee -a "$RESULTS"
    kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=
}
# run_ours LABEL BINDIR
run_ours() {
    "$2/imapd-check" serve --spool "$W/spool" --listen "127.0.0.1:$OPORT" --passwd "$W/ours.passwd" </dev/null >/dev/null 2>"$W/ours.log" &
    OPID=$!
    wait_port "$OPORT"
    "$LOAD" --port "$OPORT" "${LOADARGS[@]}" prepare
    "$LOAD" --port "$OPORT" "${LOADARGS[@]}" big --label "$1" --rounds "$ROUNDS" \
        --search-rounds "$SROUNDS" --body-rounds "$BROUNDS" --server-pid "$OPID" ${MEMORY_FLAG:+"$MEMORY_FLAG"} | tee -a "$RESULTS"
    echo "$1: peak RSS over the whole run $(awk '/^VmHWM/ {printf "%d MiB", $2/1024}' "/proc/$OPID/status")"
    kill "$OPID"; wait "$OPID" 2>/dev/null || true; OPID=
}
MEMORY_FLAG=
((MEMORY)) && MEMORY_FLAG=--memory
if ((NEEDS_INDEX)) && [[ $ONLY == ours ]]; then
    echo "BIG_ONLY=ours on new data: Dovecot still indexes it once (for BIG_KEEP reuse)"
    dovecot -F -c "$W/dovecot.conf" </dev/null >"$W/dovecot.out" 2>&1 &
    DPID=$!
    wait_port "$DPORT"
    "$LOAD" --port "$DPORT" "${LOADARGS[@]}" prepare
    kill "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=
    NEEDS_INDEX=0
fi
[[ -z $KEEP ]] || echo "$N" > "$W/ready"
# One server at a time: the other's processes neither compete for the two
# cores nor hold memory while one is measured. Ours first (the quick one).
[[ $ONLY == dovecot ]] || run_ours ours "$BIN"
[[ $ONLY == dovecot || -z $BASE ]] || run_ours base "$BASE"
[[ $ONLY == ours ]] || run_dovecot

python3 - "$RESULTS" "$N" <<'EOF'
import json, sys
res = {}
for line in open(sys.argv[1]):
    if line.startswith("{") and '"server"' in line:
        j = json.loads(line)
        res[j["server"]] = j
o, d, b0 = res.get("ours"), res.get("dovecot"), res.get("base")
names = [
    ("SELECT", "SELECT (warm)"),
    ("NOOP", "NOOP, nothing changed"),
    ("UID_STORE_FLAG", "A: UID STORE one flag"),
    ("NOOP_AFTER_STORE", "B: NOOP after that flag change"),
    ("UID_EXPUNGE_ONE", "A: UID STORE \\Deleted + UID EXPUNGE one"),
    ("NOOP_AFTER_EXPUNGE", "B: NOOP after that expunge"),
    ("APPEND", "A: APPEND small"),
    ("UID_SEARCH_UNSEEN", "UID SEARCH UNSEEN"),
    ("UID_SEARCH_BODY_RARE", "UID SEARCH BODY rare word"),
    ("UID_SEARCH_BODY_COMMON", "UID SEARCH BODY common word"),
    ("FETCH_ALL_FLAGS", "FETCH 1:* (FLAGS)"),
    ("FETCH_ALL_UID_FLAGS_SIZE_DATE", "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)"),
    ("UID_SEARCH_ALL", "UID SEARCH ALL"),
    ("UID_SORT_REVERSE_DATE", "UID SORT (REVERSE DATE) UTF-8 ALL"),
    ("UID_SORT_SUBJECT", "UID SORT (SUBJECT) UTF-8 ALL (after a warm-up)"),
    ("UID_THREAD_REFERENCES", "UID THREAD REFERENCES UTF-8 ALL (after a warm-up)"),
]
def cell(r, k, f):
    x = r and r["ops"].get(k)
    return x[f] if x else None
print(f"=== {sys.argv[2]} messages, medians (ms); peak RSS of the serving processes during the command (MiB)")
bh = " base (BIG_BASE) |" if b0 else ""
print(f"| operation | ours | Dovecot | ratio (Dovecot/ours) | hits/lines (ours, Dovecot) | peak RSS ours | peak RSS Dovecot |{bh}")
print("|---|---|---|---|---|---|---|" + ("---|" if b0 else ""))
summary = {}
for k, label in names:
    a, b = cell(o, k, "median_ms"), cell(d, k, "median_ms")
    if a is None and b is None:
        continue
    fa = f"{a:,.2f}" if a is not None else "-"
    fb = f"{b:,.2f}" if b is not None else "-"
    ratio = f"{b / a:.2f}x" if a and b else "-"
    ans = f"{cell(o, k, 'answer')}, {cell(d, k, 'answer')}"
    ra = cell(o, k, "rss_peak_kib"); rb = cell(d, k, "rss_peak_kib")
    fr = lambda v: f"{v / 1024:,.0f}" if v is not None else "-"
    extra = ""
    summary[k] = {"ours_ms": a, "dovecot_ms": b, "ours_rss_peak_kib": ra, "dovecot_rss_peak_kib": rb}
    if b0:
        x, rx = cell(b0, k, "median_ms"), cell(b0, k, "rss_peak_kib")
        extra = f" {x:,.2f} ms, {fr(rx)} MiB |" if x is not None else " - |"
        summary[k].update({"base_ms": x, "base_rss_peak_kib": rx})
    print(f"| {label} | {fa} | {fb} | {ratio} | {ans} | {fr(ra)} | {fr(rb)} |{extra}")
print("BIGBENCH " + json.dumps({"messages": int(sys.argv[2]), "ops": summary}, separators=(",", ":")))
EOF
rm -f "$RESULTS"
