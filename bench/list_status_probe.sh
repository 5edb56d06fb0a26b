#!/usr/bin/env bash
# LIST and STATUS cost of one or more builds of `imapd-check serve`, each
# on its own copy of one spool, measured deterministically: system calls
# per command (strace -c -f), user-space instructions per command (callgrind, over
# N/10 commands; this VM has no hardware counters for perf stat), and an unloaded latency loop (median and p90 of N commands on
# one stdio session). The user has INBOX and six folders, as in the IMAP
# load benchmark (bench/imap_bench.sh); LIST is `LIST "" "*"`, STATUS is
# `STATUS <folder> (MESSAGES UNSEEN UIDNEXT)` over the folders in turn.
# Not part of the tests.
#
# Usage: bash bench/list_status_probe.sh NAME=IMAPD-CHECK [NAME=IMAPD-CHECK ...]
#   PROBE_N=2000   commands per latency loop (and per strace/perf run)
#   PROBE_DIR=/tmp parent of the work directory (removed at the end)
# Example (A/B of two builds in one run):
#   bash bench/list_status_probe.sh base=/tmp/base/imapd-check new=target/release/imapd-check
set -euo pipefail
cd "$(dirname "$0")/.."
N=${PROBE_N:-2000}
W=$(mktemp -d "${PROBE_DIR:-/tmp}/listprobe.XXXXXX")
trap 'rm -rf "$W"' EXIT

python3 - "$W" "$N" "$@" <<'EOF'
import os, re, shutil, statistics, subprocess, sys, time
work, n, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
folders = ["Drafts", "Sent", "Trash", "Junk", "Archive", "Work"]

def session(binary, spool, wrap=None):
    cmd = [binary, "serve", "--spool", spool, "-d", "bench", "--stdio"]
    p = subprocess.Popen((wrap or []) + cmd, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()  # PREAUTH greeting
    return p

tagn = [0]
def run(p, line):
    tagn[0] += 1
    tag = b"t%d" % tagn[0]
    p.stdin.write(tag + b" " + line + b"\r\n"); p.stdin.flush()
    out = []
    while True:
        l = p.stdout.readline()
        if not l:
            raise SystemExit("server closed: %r" % out)
        out.append(l)
        if l.startswith(tag + b" "):
            if not l.startswith(tag + b" OK"):
                raise SystemExit("failed: %r" % out)
            return out

def commands(kind, i):
    if kind == "LIST":
        return b'LIST "" "*"'
    return b"STATUS %s (MESSAGES UNSEEN UIDNEXT)" % folders[i % len(folders)].encode()

base_spool = os.path.join(work, "spool")
setup = session(builds[0].split("=", 1)[1], base_spool)
# The login created Drafts, Sent, Trash, Junk and Archive (special use).
run(setup, b"CREATE Work")
for i in range(20):
    msg = b"From: a@b\r\nSubject: %d\r\n\r\nbody %d\r\n" % (i, i)
    for box in (b"INBOX", b"Work"):
        setup.stdin.write(b"a%d APPEND %s {%d+}\r\n" % (i, box, len(msg)) + msg + b"\r\n")
        setup.stdin.flush()
        while not setup.stdout.readline().startswith(b"a%d " % i):
            pass
run(setup, b"LOGOUT"); setup.wait()

rows = []
for b in builds:
    name, binary = b.split("=", 1)
    spool = os.path.join(work, "spool-" + name)
    shutil.copytree(base_spool, spool, symlinks=True)
    for kind in ("LIST", "STATUS"):
        # Warm up (first LIST fills caches), then N commands.
        p = session(binary, spool)
        for i in range(50):
            run(p, commands(kind, i))
        lat = []
        for i in range(n):
            t = time.perf_counter()
            run(p, commands(kind, i))
            lat.append((time.perf_counter() - t) * 1e6)
        run(p, b"LOGOUT"); p.wait()
        lat.sort()
        # System calls: strace over a session of N commands minus one of
        # none (start, greeting, LOGOUT), divided by N.
        def syscalls(count):
            out = os.path.join(work, "strace.out")
            p = session(binary, spool, ["strace", "-c", "-f", "-o", out])
            for i in range(count):
                run(p, commands(kind, i))
            run(p, b"LOGOUT"); p.wait()
            total = 0
            for line in open(out):
                if line.strip().endswith(" total"):
                    total = int(line.split()[3])
            return total
        def instructions(count):
            # This VM has no hardware counters for perf: callgrind counts
            # the user-space instructions exactly (kernel time is in the
            # system calls above).
            out = os.path.join(work, "callgrind.out")
            p = session(binary, spool, ["valgrind", "--tool=callgrind",
                                        "--callgrind-out-file=" + out])
            for i in range(count):
                run(p, commands(kind, i))
            run(p, b"LOGOUT"); p.wait()
            for line in open(out):
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
            return 0
        sc = (syscalls(n) - syscalls(0)) / n
        ni = max(n // 10, 1)
        ins = (instructions(ni) - instructions(0)) / ni
        rows.append((name, kind, statistics.median(lat), lat[int(len(lat) * 0.9)], sc, ins))

print("| build | command | median µs | p90 µs | syscalls/cmd | user instructions/cmd |")
print("|---|---|---|---|---|---|")
for name, kind, med, p90, sc, ins in rows:
    print(f"| {name} | {kind} | {med:.0f} | {p90:.0f} | {sc:.1f} | {ins:,.0f} |")
EOF
