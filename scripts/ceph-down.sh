#!/usr/bin/env bash
# Undoes scripts/ceph-up.sh STATE_DIR: unmounts both ceph-fuse mounts and
# stops the ceph-fuse clients, the MDS, the OSD and the monitor it started,
# by the pid files in STATE_DIR/run (never by name), then removes the
# daemons' data (the OSD's objects lived in memory anyway).
#
#   scripts/ceph-down.sh STATE_DIR
#
# Safe to run twice, and on a half-started cluster. Exits non-zero if a
# process or a mount is still there afterwards.
set -uo pipefail
(($# == 1)) || { echo "usage: ceph-down.sh STATE_DIR" >&2; exit 2; }
C=$1
[[ -d $C ]] || exit 0
C=$(cd "$C" && pwd)

# By /proc/self/mounts, not mountpoint(1): a mount whose client died or
# was evicted fails stat ("Transport endpoint is not connected").
mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
if [[ -f $C/mounts ]]; then
    while read -r m; do
        [[ -n $m ]] || continue
        if mounted "$m"; then
            umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount -l "$m"
        fi
    done <"$C/mounts"
fi

stop() { # pid file [signal]
    local f=$1 sig=${2:-TERM} pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -s "$sig" "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$f"
}
for f in "$C"/run/fuse-*.pid; do stop "$f"; done
# The MDS is killed outright: on SIGTERM it gets itself fenced and then
# re-executes itself as a new daemon ("respawn") that no pid file names.
stop "$C/run/mds.a.pid" KILL
stop "$C/run/osd.0.pid"
stop "$C/run/mon.a.pid"
# Anything still running with this cluster's configuration (such a
# respawned daemon): found by its environment, never by name.
for env in /proc/[0-9]*/environ; do
    if tr '\0' '\n' 2>/dev/null <"$env" | grep -qxF "CEPH_CONF=$C/ceph.conf"; then
        pid=${env#/proc/}
        pid=${pid%/environ}
        [[ $pid != "$$" ]] && kill -9 "$pid" 2>/dev/null
    fi
done

left=0
if [[ -f $C/mounts ]]; then
    while read -r m; do
        [[ -n $m ]] && mounted "$m" && { echo "ceph-down.sh: $m is still mounted" >&2; left=1; }
    done <"$C/mounts"
fi
for f in "$C"/run/*.pid; do
    [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && { echo "ceph-down.sh: $(cat "$f") ($f) still runs" >&2; left=1; }
done
((left)) && exit 1
rm -rf "${C:?}"/mon "$C"/osd.0 "$C"/mds.a "$C"/mounts
exit 0
