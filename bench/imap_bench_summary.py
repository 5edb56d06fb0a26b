#!/usr/bin/env python3
"""Summarizes bench/imap_bench.sh output (its RESULT lines, on stdin or in
the files named): per client count, the median over runs of each server's
ops/s, their ratio, the server RSS after the runs, and each command's mean
latency (median over runs) for both servers. With a third server "base"
(BENCH_BASE: another build of ours), its figures too, so two builds
compare within one run."""
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)  # (server, clients) -> [(rss, result)]
src = [open(f) for f in sys.argv[1:]] or [sys.stdin]
for f in src:
    for line in f:
        if not line.startswith("RESULT "):
            continue
        _, server, clients, _rep, rss, js = line.split(" ", 5)
        runs[(server, int(clients))].append((int(rss.split("=")[1]), json.loads(js)))

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
    cmds = sorted(set().union(*(r["commands"].keys() for _, r in d + o + b)))
    head = f"  {'command':<11} {'Dovecot mean ms':>16} {'ours mean ms':>13}"
    if b:
        head += f" {'base mean ms':>13}"
    print(head + f" {'Dovecot median':>15} {'ours median':>12}" + (f" {'base median':>12}" if b else ""))
    for k in cmds:
        m = lambda rs, f: statistics.median(r["commands"][k][f] for _, r in rs if k in r["commands"])
        line = f"  {k:<11} {m(d, 'mean_ms'):>16.2f} {m(o, 'mean_ms'):>13.2f}"
        if b:
            line += f" {m(b, 'mean_ms'):>13.2f}"
        line += f" {m(d, 'median_ms'):>15.2f} {m(o, 'median_ms'):>12.2f}"
        if b:
            line += f" {m(b, 'median_ms'):>12.2f}"
        print(line)
