#!/usr/bin/env python3
"""Delivery throughput: our `deliver` against Dovecot's and Cyrus's, same disk,
same messages.

Run by bench/deliver_bench.sh (which installs Dovecot and Cyrus, builds
deliver, starts a private Dovecot LMTP server and a private Cyrus master with
lmtpd, and runs this as an unprivileged user). Measures deliveries per second
for:

  deliver        one process per message (as Postfix's pipe/mailbox_command)
  dovecot-lda    one process per message, no daemon
  cyrdeliver     one process per message (as Postfix's cyrus pipe), which
                 hands the message to the private lmtpd over its unix socket
  deliver LMTP   sessions against `deliver --lmtp --listen unix:...`
  Dovecot LMTP   sessions against the private Dovecot's lmtp socket
  Cyrus LMTP     sessions against the private Cyrus lmtpd's unix socket

each with 1 and 4 concurrent loops/sessions, all into ONE mailbox per run,
N distinct ~4 KiB messages per run, REPS groups of back-to-back runs each;
prints medians and ratios. Every delivery, timed or warm-up, goes through
`deliver-load` (bench/src/main.rs); this script prepares and reports.
Cyrus is left out when --cyrus-conf is not given.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SENDER = "bench-sender@example.org"


# What makes message i (by i % 10) match a rule of bench/deliver_bench.sieve,
# and where that script files it: (From, extra header lines, mailbox,
# flagged). Only the Sieve cell runs the script; the others store every
# message in INBOX, whatever its headers.
KINDS = [
    (None, "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=9.1\n", "Junk", False),
    (None, "List-Id: Rust users <rust-users.lists.example.org>\n"
           "List-Unsubscribe: <mailto:rust-users-leave@lists.example.org>\nPrecedence: list\n",
     "Lists/rust-users", False),
    (None, "List-Id: <debian-devel.lists.debian.org>\nPrecedence: list\n", "Lists/debian-devel", False),
    ("GitHub <notifications@github.example.com>", "", "Notifications", False),
    ("The Boss <boss@example.org>", "", "INBOX", True),
] + [(None, "", "INBOX", False)] * 5


def sieve_counts(first, n):
    """Messages per mailbox that the script files messages first..first+n into."""
    counts = {}
    for i in range(first, first + n):
        box = KINDS[i % len(KINDS)][2]
        counts[box] = counts.get(box, 0) + 1
    return counts


def make_messages(n, size=4096, first=0):
    """N distinct messages of about `size` bytes, LF line ends; message i
    has the headers of KINDS[i % 10] (numbered from `first`)."""
    msgs = []
    filler = "The quick brown fox jumps over the lazy dog, again and again. 0123456789\n"
    for i in range(first, first + n):
        sender, extra, _, _ = KINDS[i % len(KINDS)]
        head = (
            f"From: {sender or f'Bench Sender <{SENDER}>'}\n"
            f"To: bench@example.org\n"
            f"{extra}"
            f"Subject: benchmark message {i}\n"
            f"Date: Sun, 22 Nov 2026 12:00:00 +0000\n"
            f"Message-ID: <bench.{i}.{os.getpid()}.{time.time_ns()}@example.org>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
        )
        body = []
        total = len(head)
        line_no = 0
        while total < size:
            line = f"{i:06d}.{line_no:03d} {filler}"
            body.append(line)
            total += len(line)
            line_no += 1
        msgs.append((head + "".join(body)).encode())
    return msgs


class DiskStats:
    """Write and flush requests of the disk under `path`, from /sys/dev/block.

    Printed per cell so that a ratio can be read against how many device
    writes and cache flushes each system needs per message. Other activity
    on the same disk is counted too; on a quiet machine it is noise."""

    def __init__(self, path):
        st = os.stat(path)
        self.file = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"
        if not os.path.exists(self.file):
            self.file = None

    def read(self):
        if not self.file:
            return None
        f = [int(x) for x in open(self.file).read().split()]
        # writes completed, flushes completed (fields 5 and 16, kernel >= 5.5)
        return (f[4], f[15] if len(f) > 15 else 0)


def cyrus_message_count(mbpath, conf, user):
    """Messages in user's Cyrus INBOX: the `UID.` files in its directory."""
    r = subprocess.run([mbpath, "-C", conf, "-u", user],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"mbpath -u {user} exited {r.returncode}: {r.stderr.strip()}")
    path = r.stdout.strip()
    return sum(1 for f in os.listdir(path) if f.endswith(".") and f[:-1].isdigit())


def rotated(rep, runs):
    """The runs of one repetition, rotated by rep, so that over the reps every
    system runs first, second, ... equally often (with two systems: swapped
    every other rep)."""
    i = rep % len(runs)
    return runs[i:] + runs[:i]


def median_ci(xs, conf=0.95):
    """A distribution-free confidence interval for the median of xs: the
    order statistics x(r) and x(n+1-r) (1-based), r the largest with
    P(Binomial(n, 1/2) < r) <= (1 - conf) / 2 (the whole range when n is
    too small for that)."""
    from math import comb
    xs = sorted(xs)
    n = len(xs)
    r, below = 1, 0.0
    for i in range(n // 2):
        below += comb(n, i) / 2 ** n  # P(X <= i)
        if below > (1 - conf) / 2:
            break
        r = i + 1
    r = min(r, (n + 1) // 2)
    return xs[r - 1], xs[n - r]


def write_messages(path, msgs):
    with open(path, "wb") as f:
        for m in msgs:
            f.write(b"%d\n" % len(m))
            f.write(m)


def load_rate(load, k, msgs_file, args):
    """Runs the Rust load generator; returns deliveries/s."""
    r = subprocess.run([load, "-k", str(k), "--messages", msgs_file, *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"deliver-load failed: {r.stderr.decode(errors='replace').strip()}")
    return json.loads(r.stdout)["rate"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="work directory (on the disk under test)")
    ap.add_argument("--deliver", required=True, help="path of our deliver binary")
    ap.add_argument("--dovecot-lda", default="/usr/lib/dovecot/dovecot-lda")
    ap.add_argument("--lda-conf", required=True)
    ap.add_argument("--dovecot-lmtp", required=True, help="Dovecot's LMTP socket")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--load", required=True, help="deliver-load binary (the Rust load generator)")
    ap.add_argument("--only", default="", help="comma list of cells to run: pp,lmtp (default both)")
    ap.add_argument("--cyrus-conf", help="the private Cyrus imapd.conf; without it Cyrus is not measured")
    ap.add_argument("--cyrus-lmtp", help="the private Cyrus lmtpd's unix socket")
    ap.add_argument("--cyrdeliver", default="/usr/sbin/cyrdeliver", help="Cyrus deliver (Debian's name)")
    ap.add_argument("--cyrus-mbpath", default="/usr/lib/cyrus/bin/mbpath")
    ap.add_argument("--sieve-check", help="our sieve-check binary: with --sieve-script, adds the "
                    "LMTP cell of ours with that script active for the recipient")
    ap.add_argument("--sieve-script", help="the Sieve script of that cell (bench/deliver_bench.sieve)")
    ap.add_argument("--sieve-only", action="store_true",
                    help="LMTP groups without Dovecot's and Cyrus's cells: ours with and without "
                         "the Sieve script only (for that ratio when the others are too slow)")
    ap.add_argument("--sieve-control", action="store_true",
                    help="one more cell: the same script with every fileinto into INBOX (the "
                    "script's cost without the spreading over mailboxes)")
    ap.add_argument("--batch", type=int, default=100,
                    help="--sieve-only: messages per batch of the interleaved cells")
    ap.add_argument("--sieve-aa", action="store_true",
                    help="one more cell: a second recipient without a script (what the method "
                    "gives for two equal cells)")
    a = ap.parse_args()

    concs = [int(c) for c in a.concurrency.split(",")]
    cyrus = bool(a.cyrus_conf)
    if cyrus and not a.cyrus_lmtp:
        ap.error("--cyrus-conf needs --cyrus-lmtp")
    msgs = make_messages(a.n)
    # The warm-up delivery that creates each mailbox uses a message of its
    # own: Cyrus suppresses a second delivery of a Message-ID to the same
    # mailbox (duplicatesuppression, on by default), so reusing msgs[0]
    # would make one timed delivery a cheap no-op.
    warm = make_messages(1)[0]
    spool = os.path.join(a.dir, "our-spool")
    our_sock = os.path.join(a.dir, "our-lmtp.sock")
    results = {}  # (system, mode, k) -> [rates]

    disk = DiskStats(a.dir)

    def record(key, run):
        before = disk.read()
        rate = run()
        after = disk.read()
        results.setdefault(key, []).append(rate)
        io = ""
        if before and after:
            n = len(msgs)
            io = f"   {(after[0] - before[0]) / n:5.2f} writes/msg {(after[1] - before[1]) / n:5.2f} flushes/msg"
        print(f"  {key[0]:<8} {key[1]:<18} x{key[2]}: {rate:8.1f}/s{io}", flush=True)

    def count_files(user, mailbox):
        """Message files (`UID.`) in one of our mailboxes (FORMAT.md 1)."""
        d = os.path.join(spool, user, *mailbox.split("/"))
        return sum(1 for f in os.listdir(d) if f.endswith(".") and f[:-1].isdigit())

    def check_ours(user, expected):
        """Every delivery landed where it should: `expected` maps each
        mailbox to its message count (so the script did run, and file)."""
        for box, want in expected.items():
            got = count_files(user, box)
            if got != want:
                raise RuntimeError(f"our mailbox {user}/{box} holds {got} messages, expected {want}")

    def check_cyrus(user):
        """Every timed delivery must have landed: the warm-up plus N. Cyrus
        answers success for a suppressed duplicate too, so exit codes and
        LMTP replies alone would not show a lost delivery."""
        got = cyrus_message_count(a.cyrus_mbpath, a.cyrus_conf, user)
        if got != a.n + 1:
            raise RuntimeError(f"Cyrus mailbox of {user} holds {got} messages, expected {a.n + 1}")


    # Our LMTP server, unprivileged, for the whole run.
    server = subprocess.Popen(
        [a.deliver, "--lmtp", "--listen", f"unix:{our_sock}", "--spool", spool],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(a.dir, "our-lmtp.log"), "wb"),
    )
    try:
        deadline = time.time() + 30
        while not os.path.exists(our_sock):
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("our LMTP server did not start; see our-lmtp.log")
            time.sleep(0.05)

        msgs_file = os.path.join(a.dir, "messages.bin")
        write_messages(msgs_file, msgs)
        only = set(filter(None, a.only.split(","))) or {"pp", "lmtp"}

        warm_file = os.path.join(a.dir, "warm.bin")
        write_messages(warm_file, [warm])
        # The Sieve cell's warm-up: one message of each kind, so that every
        # mailbox the script files into exists before the timed runs (as
        # it would for a user who has had the script a while).
        sieve = bool(a.sieve_check and a.sieve_script)
        control = sieve and a.sieve_control
        if control:
            import re
            text = open(a.sieve_script).read()
            control_script = os.path.join(a.dir, "control.sieve")
            with open(control_script, "w") as f:
                f.write(re.sub(r'fileinto :create "[^"]*"', 'fileinto :create "INBOX"', text))
        warm_sieve_file = os.path.join(a.dir, "warm-sieve.bin")
        write_messages(warm_sieve_file, make_messages(len(KINDS)))

        def oneshot_rate(k, argv):
            return load_rate(a.load, k, msgs_file, ["process", *argv])

        def lmtp_rate(sock, k, rcpt):
            return load_rate(a.load, k, msgs_file, ["lmtp", "--socket", sock, "--rcpt", rcpt])

        def warm_up(args):
            """Delivers the warm-up message (through deliver-load, untimed)."""
            load_rate(a.load, 1, warm_file, args)

        # Each cell runs as REPS back-to-back groups (ours, Dovecot's and
        # Cyrus's, the order rotated every group), so that the runs of a
        # group see the same machine: on a shared VM the disk's flush time
        # drifts by 2x within minutes, which a ratio of two far-apart runs
        # would carry.
        def group(rep, runs):
            for key, run in rotated(rep, runs):
                record(key, run)

        def paired(rep, k, cells):
            """--sieve-only: one group as one run of deliver-load's
            lmtp-paired mode, the cells interleaved in batches of
            --batch messages (their order rotated every batch and every
            group), each cell's rate over its own batches' time."""
            cells = rotated(rep, cells)
            argv = ["lmtp-paired", "--socket", our_sock, "--batch", str(a.batch)]
            for _, rcpt in cells:
                argv += ["--rcpt", rcpt]
            before = disk.read()
            r = subprocess.run([a.load, "-k", str(k), "--messages", msgs_file, *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            after = disk.read()
            if r.returncode != 0:
                raise RuntimeError(f"deliver-load failed: {r.stderr.decode(errors='replace').strip()}")
            out = json.loads(r.stdout)
            io = ""
            if before and after:
                n = len(msgs) * len(cells)
                io = f"   {(after[0] - before[0]) / n:5.2f} writes/msg {(after[1] - before[1]) / n:5.2f} flushes/msg (all cells)"
            line = []
            for (key, _), cell in zip(cells, out["cells"]):
                results.setdefault(key, []).append(cell["rate"])
                line.append(f"{key[1]} {cell['rate']:.1f}/s")
            print(f"  group {rep:2d} x{k}: " + ", ".join(line) + io, flush=True)

        for k in concs:
            for rep in range(a.reps):
                if "pp" not in only:
                    break
                # One process per message. A warm-up delivery creates the
                # mailbox first, as a real one would already exist.
                user = f"pp{k}r{rep}"
                mine = [a.deliver, "--spool", spool, "-d", user, "-f", SENDER]
                warm_up(["process", *mine, "--autocreate"])
                maildir = os.path.join(a.dir, f"lda{k}r{rep}")
                lda = [a.dovecot_lda, "-c", a.lda_conf, "-o", f"mail_location=maildir:{maildir}", "-f", SENDER]
                warm_up(["process", *lda])
                runs = [(("deliver", "process/message", k), lambda: oneshot_rate(k, mine)),
                        (("dovecot", "process/message", k), lambda: oneshot_rate(k, lda))]
                if cyrus:
                    # As Postfix's cyrus pipe runs it (master.cf:
                    # argv=deliver -e -r ${sender} -m ${extension} ${user};
                    # no extension expands to an empty argument).
                    cyr = [a.cyrdeliver, "-C", a.cyrus_conf, "-e", "-r", SENDER, "-m", "", user]
                    warm_up(["process", *cyr])  # lmtpd autocreates the INBOX
                    runs.append((("cyrus", "process/message", k), lambda: oneshot_rate(k, cyr)))
                group(rep, runs)
                if cyrus:
                    check_cyrus(user)
            if "lmtp" not in only:
                continue
            # LMTP, k sessions into one mailbox. Every group's users (fresh
            # mailboxes per group) are made and warmed up first, and the
            # scripts installed, so the groups then run back to back: no
            # warm-up or wait between them, and every group's first run
            # starts on the same footing.
            plan = []
            installed = None
            for rep in range(a.reps):
                user = f"lm{k}r{rep}"
                rcpt = f"{user}@example.org"
                warm_up(["process", a.deliver, "--spool", spool, "-d", user, "-f", SENDER, "--autocreate"])
                runs = [(("deliver", "LMTP", k), lambda rcpt=rcpt: lmtp_rate(our_sock, k, rcpt))]
                if not a.sieve_only:
                    warm_up(["lmtp", "--socket", a.dovecot_lmtp, "--rcpt", rcpt])
                    runs.append((("dovecot", "LMTP", k), lambda rcpt=rcpt: lmtp_rate(a.dovecot_lmtp, k, rcpt)))
                if cyrus and not a.sieve_only:
                    warm_up(["lmtp", "--socket", a.cyrus_lmtp, "--rcpt", rcpt])  # autocreates the INBOX
                    runs.append((("cyrus", "LMTP", k), lambda rcpt=rcpt: lmtp_rate(a.cyrus_lmtp, k, rcpt)))
                users = {"plain": user}
                if sieve:
                    # Ours again, the same server and messages, with the
                    # script active for this recipient (installed as a
                    # postmaster would, with sieve-check).
                    s_user = f"ls{k}r{rep}"
                    s_rcpt = f"{s_user}@example.org"
                    warm_up(["process", a.deliver, "--spool", spool, "-d", s_user, "-f", SENDER, "--autocreate"])
                    subprocess.run([a.sieve_check, "put", "--spool", spool, "-d", s_user, "bench",
                                    a.sieve_script, "--activate"], check=True, stdout=subprocess.DEVNULL)
                    installed = time.monotonic()
                    load_rate(a.load, 1, warm_sieve_file, ["lmtp", "--socket", our_sock, "--rcpt", s_rcpt])
                    runs.insert(1, (("deliver", "LMTP+sieve", k), lambda r=s_rcpt: lmtp_rate(our_sock, k, r)))
                    users["sieve"] = s_user
                if control:
                    c_user = f"lc{k}r{rep}"
                    c_rcpt = f"{c_user}@example.org"
                    warm_up(["process", a.deliver, "--spool", spool, "-d", c_user, "-f", SENDER, "--autocreate"])
                    subprocess.run([a.sieve_check, "put", "--spool", spool, "-d", c_user, "bench",
                                    control_script, "--activate"], check=True, stdout=subprocess.DEVNULL)
                    installed = time.monotonic()
                    load_rate(a.load, 1, warm_sieve_file, ["lmtp", "--socket", our_sock, "--rcpt", c_rcpt])
                    runs.insert(2, (("deliver", "LMTP+sieve→INBOX", k), lambda r=c_rcpt: lmtp_rate(our_sock, k, r)))
                    users["control"] = c_user
                if a.sieve_aa:
                    # A second recipient without a script, measured as the
                    # script's cell is: its ratio to the first shows what
                    # the method itself gives for two equal cells.
                    a_user = f"la{k}r{rep}"
                    a_rcpt = f"{a_user}@example.org"
                    warm_up(["process", a.deliver, "--spool", spool, "-d", a_user, "-f", SENDER, "--autocreate"])
                    runs.append((("deliver", "LMTP (A/A)", k), lambda r=a_rcpt: lmtp_rate(our_sock, k, r)))
                    users["aa"] = a_user
                plan.append((rep, runs, users))
            # The server's script cache reads a script (and `.sieve/active`)
            # again on every delivery while its ctime is under 2 s old
            # (docs/FORMAT.md §9, "racily clean"), so timing starts after
            # that: a user's script is older than that, and the cell
            # measures the steady state it stands for.
            if installed is not None:
                time.sleep(max(0.0, installed + 2.5 - time.monotonic()))
            for rep, runs, users in plan:
                if a.sieve_only:
                    paired(rep, k, [(key, f"{users[cell]}@example.org") for key, cell in
                                    [(("deliver", "LMTP", k), "plain"),
                                     (("deliver", "LMTP+sieve", k), "sieve"),
                                     (("deliver", "LMTP+sieve→INBOX", k), "control"),
                                     (("deliver", "LMTP (A/A)", k), "aa")] if cell in users])
                else:
                    group(rep, runs)
            for rep, _, users in plan:
                check_ours(users["plain"], {"INBOX": a.n + 1})
                if "sieve" in users:
                    want = sieve_counts(0, len(KINDS))
                    for box, c in sieve_counts(0, a.n).items():
                        want[box] = want.get(box, 0) + c
                    want["INBOX"] += 1  # the one-shot warm-up, before the script
                    check_ours(users["sieve"], want)
                if "control" in users:
                    check_ours(users["control"], {"INBOX": a.n + 1 + len(KINDS)})
                if "aa" in users:
                    check_ours(users["aa"], {"INBOX": a.n + 1})
                if cyrus and not a.sieve_only:
                    check_cyrus(users["plain"])
    finally:
        server.terminate()
        server.wait()

    def rates(xs, bold=False):
        m = f"{statistics.median(xs):.0f}"
        return f"{'**' + m + '**' if bold else m} [{min(xs):.0f}..{max(xs):.0f}]"

    def ratio(rs):
        return f"**{statistics.median(rs):.2f}x** [{min(rs):.2f}..{max(rs):.2f}]"

    def pooled(xs):
        """The rate over all runs of a cell: every run has N messages, so
        all messages over all seconds is the harmonic mean of the rates."""
        return len(xs) / sum(1 / x for x in xs)

    def spread(rs):
        lo, hi = median_ci(rs)
        q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
        return (f"**{statistics.median(rs):.3f}x** ({lo:.3f}..{hi:.3f}) "
                f"IQR {q[0]:.3f}..{q[2]:.3f} [{min(rs):.2f}..{max(rs):.2f}]")

    others = [("dovecot", "Dovecot")] + ([("cyrus", "Cyrus")] if cyrus else [])
    compared = any(key[0] == "dovecot" for key in results)
    print()
    print(f"N = {a.n} messages of ~{len(msgs[0])} bytes per run, {a.reps} "
          f"{'triples' if cyrus else 'pairs'} of runs per cell; deliveries/s, median [min..max]; "
          f"ratio: median of the {'triples' if cyrus else 'pairs'}' ratios [min..max]")
    if compared:
        print()
        print("| path | concurrency | deliver | " + " | ".join(name for _, name in others) + " | "
              + " | ".join(f"ratio deliver/{name}" for _, name in others) + " |")
        print("|---|---|---|" + "---|" * (2 * len(others)))
    pp_label = "one process per message (deliver vs dovecot-lda" + (", cyrdeliver)" if cyrus else ")")
    summary = []
    for mode, label in [("process/message", pp_label),
                        ("LMTP", "LMTP, sessions into one mailbox")]:
        for k in concs:
            if ("deliver", mode, k) not in results:
                continue
            if any((system, mode, k) not in results for system, _ in others):
                continue  # --sieve-only: no comparison with the others
            ours = results[("deliver", mode, k)]
            row = {"mode": mode, "k": k, "deliver": ours}
            cols, ratio_cols = [], []
            for system, _ in others:
                theirs = results[(system, mode, k)]
                # Runs of one group are at the same index in both lists.
                ratios = [o / t for o, t in zip(ours, theirs)]
                cols.append(rates(theirs))
                ratio_cols.append(ratio(ratios))
                row[system] = theirs
                row["ratios" if system == "dovecot" else f"{system}_ratios"] = ratios
            print(f"| {label} | {k} | {rates(ours, bold=True)} | " + " | ".join(cols + ratio_cols) + " |")
            summary.append(row)
    sieve_cells = [("LMTP+sieve", "10-rule script"),
                   ("LMTP+sieve→INBOX", "control: the script filing into INBOX"),
                   ("LMTP (A/A)", "A/A: a second recipient without a script")]
    if any(key[1] in dict(sieve_cells) for key in results):
        print()
        print("Sieve at delivery: ours with bench/deliver_bench.sieve active for the recipient "
              "against ours without a script, in the same groups (fresh mailboxes per group, "
              "the groups back to back, the order within a group rotated: ABBA..."
              + (f"; --sieve-only: within a group the cells interleaved in batches of {a.batch} "
                 "messages, each cell's rate over its own batches" if a.sieve_only else "")
              + "). Rates: "
              "median [min..max] and the pooled rate (all messages / all seconds). Ratio: "
              "median of the groups' ratios (cell / no script), its 95% confidence interval "
              "(order statistics), the middle half of the ratios (IQR), [min..max]")
        print()
        print("| cell | concurrency | deliver, no script | deliver, cell | pooled ratio | "
              "ratio: median (95% CI) IQR [min..max] |")
        print("|---|---|---|---|---|---|")
        for k in concs:
            if ("deliver", "LMTP", k) not in results:
                continue
            plain = results[("deliver", "LMTP", k)]
            for mode, label in sieve_cells:
                if ("deliver", mode, k) not in results:
                    continue
                cell = results[("deliver", mode, k)]
                ratios = [c / p for c, p in zip(cell, plain)]
                print(f"| {label} | {k} | {rates(plain)}, pooled {pooled(plain):.0f} | "
                      f"{rates(cell)}, pooled {pooled(cell):.0f} | {pooled(cell) / pooled(plain):.3f}x | "
                      f"{spread(ratios)} |")
                summary.append({"mode": mode, "k": k, "deliver": cell, "no_script": plain,
                                "ratios": ratios})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": a.n, "reps": a.reps, "results": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
