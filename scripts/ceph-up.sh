#!/usr/bin/env bash
# Brings up a one-node Ceph (one monitor, one OSD on memstore, one MDS, no
# authentication, 127.0.0.1 only) and mounts its CephFS twice with ceph-fuse,
# at MNT_A and MNT_B: two client mounts of one file system, standing in for
# two hosts (docs/PROTOCOL.md §8, tests/tests/cephfs.rs).
#
#   scripts/ceph-up.sh STATE_DIR MNT_A MNT_B [ceph-fuse option ...]
#
# STATE_DIR holds the configuration, daemon data, logs and pid files; the
# OSD keeps its objects in memory (memstore, at most 1 GiB). Extra arguments
# go to both ceph-fuse mounts (e.g. --fuse_disable_pagecache=true); none
# means Ceph's default client settings. Idempotent: a run whose daemons and
# mounts are up does nothing. scripts/ceph-down.sh STATE_DIR undoes it.
# Needs root, /dev/fuse and the Debian packages ceph-mon ceph-osd ceph-mds
# ceph-fuse ceph-common (scripts/test.sh installs them). There is no
# systemd here: the daemons are started by hand and stopped by pid.
set -euo pipefail

die() {
    echo "ceph-up.sh: $*" >&2
    if [[ -n ${C:-} && -d ${C:-}/log ]]; then
        for f in "$C"/log/*.log; do
            [[ -f $f ]] || continue
            echo "--- last lines of $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    exit 1
}

(($# >= 3)) || die "usage: ceph-up.sh STATE_DIR MNT_A MNT_B [ceph-fuse option ...]"
C=$1 A=$2 B=$3
shift 3
FUSE_OPTS=("$@")

for bin in ceph-mon ceph-osd ceph-mds ceph-fuse ceph ceph-authtool monmaptool; do
    command -v "$bin" >/dev/null ||
        die "$bin not found; install the Debian packages ceph-mon ceph-osd ceph-mds ceph-fuse ceph-common"
done
[[ -c /dev/fuse ]] || die "/dev/fuse is missing; ceph-fuse needs FUSE"
[[ $(id -u) -eq 0 ]] || die "must run as root (FUSE mounts with allow_other, daemons on fixed ports)"

mkdir -p "$C"/run "$C"/log "$A" "$B"
C=$(cd "$C" && pwd)
export CEPH_CONF=$C/ceph.conf

alive() { # pid file -> running?
    [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}
is_ceph_mount() {
    mountpoint -q "$1" && [[ $(stat -f -c %T "$1" 2>/dev/null) == fuseblk || $(stat -f -c %t "$1") == 65735546 ]]
}

if alive "$C/run/mon.a.pid" && alive "$C/run/osd.0.pid" && alive "$C/run/mds.a.pid" &&
    is_ceph_mount "$A" && is_ceph_mount "$B"; then
    echo "ceph-up.sh: already up ($A, $B)"
    exit 0
fi

# A half-started or stale cluster: stop it and start from scratch (the data
# lives in memory only, so nothing is lost that a restart would keep).
if [[ -f $C/ceph.conf ]]; then
    "$(dirname "$0")/ceph-down.sh" "$C" >/dev/null 2>&1 || true
fi
for port in 3300 6789; do
    if ss -ltn 2>/dev/null | awk '{print $4}' | grep -q ":$port\$"; then
        die "127.0.0.1:$port is in use (another Ceph monitor?); stop it first (scripts/ceph-down.sh)"
    fi
done
rm -rf "${C:?}"/mon "$C"/osd.0 "$C"/mds.a "$C"/keyring "$C"/monmap "$C"/run/* "$C"/log/*
mkdir -p "$C"/mon "$C"/osd.0 "$C"/mds.a

FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$C/ceph.conf" <<CONF
[global]
fsid = $FSID
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
run_dir = $C/run
pid_file = $C/run/\$name.pid
admin_socket = $C/run/\$name.asok
log_file = $C/log/\$name.log
keyring = $C/keyring
[mon]
mon_data = $C/mon/\$name
[osd]
osd_data = $C/\$name
osd_objectstore = memstore
memstore_device_bytes = 1073741824
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
[mds]
mds_data = $C/\$name
CONF

q() { "$@" >>"$C/log/setup.log" 2>&1 || die "failed: $* (see $C/log/setup.log)"; }
q ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *'
q ceph-authtool "$C/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mds 'allow *' --cap mgr 'allow *'
q monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$FSID" "$C/monmap"
q ceph-mon --mkfs -i a --monmap "$C/monmap" --keyring "$C/keyring"
q ceph-mon -i a
q timeout 60 ceph --connect-timeout 30 mon stat
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ID=$(timeout 60 ceph osd new "$OSD_UUID" 2>>"$C/log/setup.log") || die "ceph osd new failed"
[[ $ID == 0 ]] || die "expected OSD id 0, got $ID"
q ceph-osd -i 0 --mkfs --osd-uuid "$OSD_UUID"
q ceph-osd -i 0
q ceph-mds -i a
q timeout 60 ceph osd pool create cephfs_metadata 8
q timeout 60 ceph osd pool create cephfs_data 8
q timeout 60 ceph fs new cephfs cephfs_metadata cephfs_data

# Wait for an active MDS before mounting (a mount before it hangs).
for _ in $(seq 1 120); do
    timeout 10 ceph mds stat 2>/dev/null | grep -q 'up:active' && break
    sleep 0.5
done
timeout 10 ceph mds stat 2>/dev/null | grep -q 'up:active' || die "no MDS became active within 60 s"

# client_die_on_failed_dentry_invalidate=false: in a container ceph-fuse
# cannot make the kernel drop dentries (it needs CAP_SYS_ADMIN in the init
# namespace for the remount fallback) and would otherwise exit at once.
# It concerns name lookups only, not data caching.
for m in "$A" "$B"; do
    tag=$(basename "$m")
    q timeout 60 ceph-fuse -n client.admin --client_die_on_failed_dentry_invalidate=false \
        --log_file="$C/log/fuse-$tag.log" --pid_file="$C/run/fuse-$tag.pid" --admin_socket="$C/run/fuse-$tag.asok" \
        ${FUSE_OPTS[@]+"${FUSE_OPTS[@]}"} "$m"
done
for m in "$A" "$B"; do
    for _ in $(seq 1 100); do
        is_ceph_mount "$m" && break
        sleep 0.1
    done
    is_ceph_mount "$m" || die "$m did not become a ceph-fuse mount"
done
printf '%s\n%s\n' "$A" "$B" >"$C/mounts"
echo "ceph-up.sh: CephFS mounted at $A and $B (state in $C)"
