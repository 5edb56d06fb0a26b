#!/usr/bin/env python3
"""Summarizes bench/imap_bench.sh output (its RESULT lines, on stdin or in
the files named): per client count, the median over runs of each server's
ops/s, their ratio, the server RSS after the runs, and each command's mean
latency (median over runs) for both servers. With a third server "base"
(BENCH_BASE: another build of ours), its figures too, so two builds
compare within one run. Where the load generator reported them, a second
table gives the means at the socket (the kernel's receive time of each
reply, which leaves out the generator's own wait for a CPU)."""
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)  # (server, clients) -> [(rss, result)]
src = [open(f) for f in sys.argv[1:]] or [sys.stdin]
for f in src:
    for line in f:
        if not line.startswith("RESULT "):
            continue
        _, server, clients, _rep, rss, rest = line.split(" ", 5)
        r = None
        if rest.startswith("cpu_ms_per_op="):
            cpu, rest = rest.split(" ", 1)
            r = json.loads(rest)
            r["cpu_ms_per_op"] = float(cpu.split("=")[1])
        else:
            r = json.loads(rest)
        runs[(server, int(clients))].append((int(rss.split("=")[1]), r))

for c in sorted({c for _, c in runs}):
    d, o, b = (runs.get((s, c), []) for s in ("dovecot", "ours", "base"))
    if not d or not o:
        continue
    med = lambda rs: statistics.median(r["ops_per_s"] for _, r in rs)
    each = lambda rs: ", ".join("%.0f" % r["ops_per_s"] for _, r in rs)
    base = (f"base {med(b):.0f} ops/s (runs {each(b)}), ratio {med(b) / med(d):.2f}x, "
            if b else "")
    print(f"clients {c}: Dovecot {med(d):.0f} ops/s (runs {each(d)}), "
          f"ours {med(o):.0f} ops/s (runs {each(o)}), "
          f"ratio {med(o) / med(d):.2f}x; {base}RSS after: Dovecot {max(x for x, _ in d)} MiB (all processes), "
          f"ours {max(x for x, _ in o)} MiB")
    if all("cpu_ms_per_op" in r for _, r in d + o + b):
        cpu = lambda rs: statistics.median(r["cpu_ms_per_op"] for _, r in rs)
        print(f"  server CPU per command (ms, median over runs): Dovecot {cpu(d):.3f}, "
              f"ours {cpu(o):.3f}" + (f", base {cpu(b):.3f}" if b else ""))
    cmds = sorted(set().union(*(r["commands"].keys() for _, r in d + o + b)))
    servers = [("Dovecot", d), ("ours", o)] + ([("base", b)] if b else [])

    def table(title, prefix):
        """Each command's mean and median (medians over the runs) of the
        fields `{prefix}mean_ms` and `{prefix}median_ms`."""
        print(f"  {title}{'command':<11}"
              + "".join(f" {n + ' mean ms':>16}" for n, _ in servers)
              + "".join(f" {n + ' median':>15}" for n, _ in servers))
        for k in cmds:
            m = lambda rs, f: statistics.median(r["commands"][k][f] for _, r in rs if k in r["commands"])
            print(f"  {' ' * len(title)}{k:<11}"
                  + "".join(f" {m(rs, prefix + 'mean_ms'):>16.2f}" for _, rs in servers)
                  + "".join(f" {m(rs, prefix + 'median_ms'):>15.2f}" for _, rs in servers))

    table("", "")
    if all("sock_mean_ms" in v for _, r in d + o + b for v in r["commands"].values()):
        table("at the socket: ", "sock_")
