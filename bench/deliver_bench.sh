#!/usr/bin/env bash
# Delivery benchmark: our deliver (one process per message, and LMTP) against
# Dovecot's dovecot-lda and LMTP and Cyrus's deliver and lmtpd from Debian's
# packages, in one run, on the same disk, with the same ~4 KiB messages. Not
# part of the tests.
#
# Usage (as root, Debian 12):  bash bench/deliver_bench.sh [N] [REPS]
#   N     messages per run (default 500)      REPS  groups of runs per cell (default 6)
#   BENCH_DIR=/some/dir  parent of the work directory (default /tmp; use a
#                        directory on the disk you want to measure)
#   BENCH_ONLY=pp|lmtp   run only the process-per-message or the LMTP cells
#   BENCH_CYRUS=0        leave Cyrus out (default: measure it)
#
# The LMTP part also measures ours with a typical 10-rule Sieve script
# (bench/deliver_bench.sieve) active for the recipient, in the same groups
# as ours without one (issue 18: at least 95% of that throughput).
#   BENCH_SIEVE_ONLY=1   LMTP groups of ours with and without the script
#                        only (no Dovecot or Cyrus cell): that ratio alone,
#                        when a loaded disk makes the others' cells slow.
#                        A group is then one run of `deliver-load
#                        lmtp-paired`: the cells take turns in batches of
#                        BENCH_BATCH messages (default 100; order rotated
#                        every batch), each cell timed over its own batches,
#                        so that the cells compared see the same moments
#   BENCH_SIEVE_CONTROL=1  adds a cell with that script's fileintos all
#                        into INBOX (its cost without spreading the mail)
#   BENCH_SIEVE_AA=1     adds a cell of a second recipient without a script
#                        (the ratio the method gives for two equal cells)
# Every LMTP group's users are made, warmed up and given their script
# first; the groups then run back to back, the order within a group
# rotated (ABBA...). The Sieve table gives the median of the groups'
# ratios with its 95% confidence interval and IQR: use many groups for a
# tight band (docs/BENCHMARKS.md, session 10: N=2000, 20-30 groups).
#   BENCH_FS=ext4-journal  run on a fresh ext4 with the default journal: an
#                        8 GiB image file on BENCH_DIR's disk (default
#                        /var/tmp), attached with losetup --direct-io=on and
#                        mounted for the run (docs/BENCHMARKS.md: the test
#                        VM's root ext4 has no journal, which changes what a
#                        flush costs)
#   BENCH_FS=ext4-fresh  the same, without a journal (as the root here) but
#                        fresh: no recently deleted inodes. A journal-less
#                        ext4 skips free inodes deleted in the last minute
#                        (six while their inode block is dirty) when it
#                        allocates one, scanning past each, so for minutes
#                        after a big `rm -rf` (another run's cleanup, other
#                        work on the disk) every file create of every cell
#                        costs up to milliseconds (docs/BENCHMARKS.md)
#   BENCH_LOG=FILE       keeps our LMTP server's log (a line per delivery
#                        with its user and elapsed_ms) as FILE
#
# It installs dovecot-core, dovecot-lmtpd, cyrus-common and strace if missing
# (without recommends: cyrus-common recommends cyrus-imapd, which conflicts
# with dovecot-imapd and is not needed; Debian's policy-rc.d keeps the system
# Dovecot and Cyrus from starting; we run private ones), builds deliver with
# scripts/build-release.sh (static), creates the unprivileged user
# `delivbench`, and removes its work directory and stops its Dovecot and
# Cyrus at the end. Dovecot runs at Debian's default durability,
# mail_fsync = optimized; Cyrus at its default (lmtpd fsyncs the message,
# cyrus.cache, the quota file, cyrus.index and deliver.db, no directory);
# ours at its default (full: fdatasync of the staged message, then of the
# index; PROTOCOL.md §3).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
REPS=${2:-6}
BENCH_USER=delivbench
BENCH_CYRUS=${BENCH_CYRUS:-1}

[[ $(id -u) -eq 0 ]] || { echo "run as root (installs packages, starts Dovecot)" >&2; exit 1; }

packages=(dovecot-core dovecot-lmtpd strace python3)
[[ $BENCH_CYRUS == 0 ]] || packages+=(cyrus-common)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get -q -o DPkg::Lock::Timeout=600 update
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
fi
id "$BENCH_USER" >/dev/null 2>&1 || useradd -r -s /usr/sbin/nologin -d /nonexistent "$BENCH_USER"

# The build OPERATIONS.md recommends installing (static, stripped).
bin_dir=$(bash scripts/build-release.sh)
# The load generator: its CPU per message must stay small next to the
# servers' on a 2-CPU machine, which a Python client's does not.
cargo build -q --release -p deliver-bench

work=""
fs_image=""
fs_loop=""
fs_mount=""
dovecot_pid=""
cyrus_pid=""
cy=""
cleanup() {
    if [[ -n $dovecot_pid ]]; then
        kill "$dovecot_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$dovecot_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    # Cyrus's master stops its lmtpd children on SIGTERM; wait for it so
    # that nothing writes into the directory being removed.
    if [[ -z $cyrus_pid && -s $cy/run/master.pid ]]; then cyrus_pid=$(cat "$cy/run/master.pid"); fi
    if [[ -n $cyrus_pid ]]; then
        kill "$cyrus_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$cyrus_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    sleep 0.5
    if [[ -n ${BENCH_LOG:-} && -n $work && -f $work/data/our-lmtp.log ]]; then
        cp "$work/data/our-lmtp.log" "$BENCH_LOG" || true
    fi
    if [[ -n $work ]]; then rm -rf "$work"; fi
    if [[ -n $fs_mount ]]; then
        # Servers' children may take a moment to let go of the mount.
        for _ in $(seq 50); do umount "$fs_mount" 2>/dev/null && break; sleep 0.1; done
        mountpoint -q "$fs_mount" && umount -l "$fs_mount"
        rmdir "$fs_mount" || true
    fi
    if [[ -n $fs_loop ]]; then losetup -d "$fs_loop" || true; fi
    if [[ -n $fs_image ]]; then rm -f "$fs_image"; fi
}
trap cleanup EXIT

case ${BENCH_FS:-} in
"") ;;
ext4-journal | ext4-fresh)
    fs_image=$(mktemp "${BENCH_DIR:-/var/tmp}/deliver-bench-fs.XXXXXX")
    truncate -s 8G "$fs_image"
    if [[ $BENCH_FS == ext4-fresh ]]; then
        mkfs.ext4 -q -F -O ^has_journal "$fs_image"
    else
        mkfs.ext4 -q -F "$fs_image"
    fi
    fs_loop=$(losetup --find --show --direct-io=on "$fs_image")
    fs_mount=$(mktemp -d /tmp/deliver-bench-mnt.XXXXXX)
    mount "$fs_loop" "$fs_mount"
    BENCH_DIR=$fs_mount
    ;;
*) echo "BENCH_FS: unknown value ${BENCH_FS} (ext4-journal, ext4-fresh)" >&2; exit 64 ;;
esac

work=$(mktemp -d "${BENCH_DIR:-/tmp}/deliver-bench.XXXXXX")
chmod 0755 "$work"
cy=$work/cyrus

# Binaries where the unprivileged user can run them (/work may be closed).
install -m 0755 "$bin_dir/deliver" "$work/deliver"
install -m 0755 "$bin_dir/sieve-check" "$work/sieve-check"
install -m 0644 bench/deliver_bench.sieve "$work/deliver_bench.sieve"
install -m 0644 bench/deliver_bench.py "$work/deliver_bench.py"
install -m 0755 target/release/deliver-load "$work/deliver-load"
mkdir -p "$work/data"
chown "$BENCH_USER:" "$work/data"
bench_uid=$(id -u "$BENCH_USER")
bench_gid=$(id -g "$BENCH_USER")

# dovecot-lda without a daemon, as the unprivileged user.
cat >"$work/lda.conf" <<EOF
base_dir = $work/data/lda-run
log_path = $work/data/dovecot-lda.log
protocols =
ssl = no
postmaster_address = postmaster@example.org
mail_fsync = optimized
EOF

# A private Dovecot with only LMTP, on a unix socket; every recipient maps
# to the unprivileged user, one maildir per recipient.
mkdir -p "$work/dovecot-run"
cat >"$work/dovecot.conf" <<EOF
base_dir = $work/dovecot-run
log_path = $work/dovecot.log
protocols = lmtp
ssl = no
postmaster_address = postmaster@example.org
mail_fsync = optimized
mail_location = maildir:~/Maildir
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=$bench_uid gid=$bench_gid home=$work/data/dovecot-home/%u allow_all_users=yes
}
service lmtp {
  unix_listener $work/dovecot-lmtp.sock {
    mode = 0666
  }
}
EOF
dovecot -c "$work/dovecot.conf"
for _ in $(seq 100); do
    [[ -S $work/dovecot-lmtp.sock && -f $work/dovecot-run/master.pid ]] && break
    sleep 0.1
done
dovecot_pid=$(cat "$work/dovecot-run/master.pid")

# A private Cyrus: master with only lmtpd on a unix socket, run as the
# unprivileged user (cyrus_user names it, so Cyrus does not switch to the
# system's `cyrus`), with its own configuration directory, partition,
# sockets and pid file under $cy; nothing of the system's Cyrus
# (/etc/imapd.conf, /var/lib/cyrus, /var/spool/cyrus) is read or written.
# Defaults otherwise (duplicate suppression on, twoskip databases,
# unixhierarchysep, so user U's INBOX is user/U); lmtpd creates a missing
# INBOX on the first delivery (autocreate_post, with autocreate_quota: 0).
# master does not pass its -C to the programs it starts, so every cmd
# names the configuration. Cyrus logs only to syslog.
cyrus_args=()
if [[ $BENCH_CYRUS != 0 ]]; then
    [[ $cy != *[[:space:]]* ]] || { echo "the work directory $cy must not contain spaces (cyrus.conf)" >&2; exit 1; }
    mkdir -p "$cy"/conf/{db,lock,log,msg,proc,quota,socket,user} "$cy/spool/stage." \
        "$cy/sieve" "$cy/tmp" "$cy/run" "$cy/socket"
    cat >"$cy/imapd.conf" <<EOF
configdirectory: $cy/conf
defaultpartition: default
partition-default: $cy/spool
lmtpsocket: $cy/socket/lmtp
idlesocket: $cy/socket/idle
notifysocket: $cy/socket/notify
sievedir: $cy/sieve
temp_path: $cy/tmp
cyrus_user: $BENCH_USER
autocreate_post: yes
autocreate_quota: 0
EOF
    # Debian's cyrus.conf, reduced to what delivery needs.
    cat >"$cy/cyrus.conf" <<EOF
START {
  recover cmd="ctl_cyrusdb -C $cy/imapd.conf -r"
}
SERVICES {
  lmtpunix cmd="lmtpd -C $cy/imapd.conf" listen="$cy/socket/lmtp" prefork=0 maxchild=20
}
EVENTS {
  checkpoint cmd="ctl_cyrusdb -C $cy/imapd.conf -c" period=30
}
EOF
    chown -R "$BENCH_USER:" "$cy"
    runuser -u "$BENCH_USER" -- /usr/sbin/cyrmaster -C "$cy/imapd.conf" -M "$cy/cyrus.conf" \
        -p "$cy/run/master.pid" -L "$cy/master.log" -d
    for _ in $(seq 100); do
        [[ -S $cy/socket/lmtp && -s $cy/run/master.pid ]] && break
        sleep 0.1
    done
    if ! [[ -S $cy/socket/lmtp && -s $cy/run/master.pid ]]; then
        echo "Cyrus master did not start:" >&2
        cat "$cy/master.log" >&2 || true
        exit 1
    fi
    cyrus_pid=$(cat "$cy/run/master.pid")
    cyrus_args=(--cyrus-conf "$cy/imapd.conf" --cyrus-lmtp "$cy/socket/lmtp")
fi

echo "== machine"
echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
df -hT "$work" | tail -1
fs_dev=$(df --output=source "$work" | tail -1)
if [[ $(df --output=fstype "$work" | tail -1) == ext[34] ]]; then
    if tune2fs -l "$fs_dev" 2>/dev/null | grep -q '^Filesystem features:.*has_journal'; then
        echo "ext4 journal: yes ($(findmnt -n -o OPTIONS --target "$work"))"
    else
        echo "ext4 journal: NO (every flush covers only what one fsync wrote)"
    fi
fi
cyrus_version=off
[[ $BENCH_CYRUS == 0 ]] || cyrus_version=$(dpkg-query -W -f='${Version}' cyrus-common)
echo "dovecot $(dovecot --version), cyrus $cyrus_version, deliver $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
echo
echo "== throughput (N=$N, REPS=$REPS, dir $work)"
runuser -u "$BENCH_USER" -- python3 "$work/deliver_bench.py" \
    --dir "$work/data" --deliver "$work/deliver" --lda-conf "$work/lda.conf" \
    --dovecot-lmtp "$work/dovecot-lmtp.sock" -n "$N" --reps "$REPS" \
    --only "${BENCH_ONLY:-}" --load "$work/deliver-load" ${cyrus_args[@]+"${cyrus_args[@]}"} \
    --sieve-check "$work/sieve-check" --sieve-script "$work/deliver_bench.sieve" \
    ${BENCH_SIEVE_CONTROL:+--sieve-control} ${BENCH_SIEVE_ONLY:+--sieve-only} \
    ${BENCH_SIEVE_AA:+--sieve-aa} ${BENCH_BATCH:+--batch "$BENCH_BATCH"}

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Syscalls of one steady-state delivery (the mailbox already exists).
echo
echo "== syscalls of one deliver process (steady state, strace -f)"
msg=$work/one.eml
python3 -c "
import sys; sys.path.insert(0, '$work')
import deliver_bench; sys.stdout.buffer.write(deliver_bench.make_messages(1)[0])" >"$msg"
chmod 0644 "$msg"
as_bench() { runuser -u "$BENCH_USER" -- "$@"; }
as_bench "$work/deliver" --spool "$work/data/strace-spool" -d st --autocreate -f x@example.org <"$msg"
as_bench "$work/deliver" --spool "$work/data/strace-spool" -d st -f x@example.org <"$msg"
as_bench strace -f -c -o "$work/data/strace-count.txt" \
    "$work/deliver" --spool "$work/data/strace-spool" -d st -f x@example.org <"$msg"
cat "$work/data/strace-count.txt"
echo
echo "== durability-relevant sequence of that delivery"
as_bench strace -f -y -o "$work/data/strace-seq.txt" \
    -e trace=openat,mkdirat,linkat,renameat,renameat2,unlinkat,fsync,fdatasync,fcntl,flock,pwrite64,write,ftruncate,fallocate \
    "$work/deliver" --spool "$work/data/strace-spool" -d st -f x@example.org <"$msg"
grep -v -E 'F_GETFD|F_SETFD|F_GETFL|/(etc|lib|proc|usr|sys|dev)/' "$work/data/strace-seq.txt" |
    sed "s#$work/data/##g"
