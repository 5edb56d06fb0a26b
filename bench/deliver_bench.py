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
N distinct ~4 KiB messages per run, REPS runs each; prints medians and ratios.
Cyrus is left out when --cyrus-conf is not given.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

SENDER = "bench-sender@example.org"


def make_messages(n, size=4096):
    """N distinct messages of about `size` bytes, LF line ends."""
    msgs = []
    filler = "The quick brown fox jumps over the lazy dog, again and again. 0123456789\n"
    for i in range(n):
        head = (
            f"From: Bench Sender <{SENDER}>\n"
            f"To: bench@example.org\n"
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


def split(items, k):
    return [items[i::k] for i in range(k)]


def run_loops(k, msgs, one):
    """Runs `one(msg)` over msgs in k concurrent loops; returns deliveries/s."""
    errors = []

    def loop(part):
        for m in part:
            try:
                one(m)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=loop, args=(p,)) for p in split(msgs, k)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
    return len(msgs) / elapsed


def process_per_message(argv):
    def one(msg):
        r = subprocess.run(argv, input=msg, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr.decode(errors='replace').strip()}")

    return one


class Lmtp:
    """A minimal pipelining LMTP client: one session, one recipient per message."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")
        self.reply()
        self.sock.sendall(b"LHLO bench.example.org\r\n")
        self.reply()

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("LMTP server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    def expect(self, want, what):
        code, text = self.reply()
        if code != want:
            raise RuntimeError(f"{what}: {text!r}")

    def deliver(self, rcpt, data):
        self.sock.sendall(
            f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        )
        self.expect(250, "MAIL")
        self.expect(250, "RCPT")
        self.expect(354, "DATA")
        self.sock.sendall(data)
        self.expect(250, "after DATA")

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        finally:
            self.sock.close()


def lmtp_payload(msg):
    """CRLF line ends, dot-stuffed, with the terminating dot line."""
    lines = msg.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [(b"." + l if l.startswith(b".") else l) for l in lines]
    return b"\r\n".join(out) + b"\r\n.\r\n"


def lmtp_sessions(path, k, rcpt, msgs):
    payloads = [lmtp_payload(m) for m in msgs]
    errors = []
    barrier = threading.Barrier(k + 1)

    def session(part):
        try:
            c = Lmtp(path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            barrier.wait()
            return
        barrier.wait()
        try:
            for p in part:
                c.deliver(rcpt, p)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=session, args=(p,)) for p in split(payloads, k)]
    for t in threads:
        t.start()
    barrier.wait()  # connections and LHLO are not timed
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"LMTP failed: {errors[0]}")
    return len(msgs) / elapsed


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
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--load", help="deliver-load binary (the Rust load generator); without it the "
                    "timed loops run in Python, whose client CPU competes with the servers")
    ap.add_argument("--only", default="", help="comma list of cells to run: pp,lmtp (default both)")
    ap.add_argument("--cyrus-conf", help="the private Cyrus imapd.conf; without it Cyrus is not measured")
    ap.add_argument("--cyrus-lmtp", help="the private Cyrus lmtpd's unix socket")
    ap.add_argument("--cyrdeliver", default="/usr/sbin/cyrdeliver", help="Cyrus deliver (Debian's name)")
    ap.add_argument("--cyrus-mbpath", default="/usr/lib/cyrus/bin/mbpath")
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

    def check_cyrus(user):
        """Every timed delivery must have landed: the warm-up plus N. Cyrus
        answers success for a suppressed duplicate too, so exit codes and
        LMTP replies alone would not show a lost delivery."""
        got = cyrus_message_count(a.cyrus_mbpath, a.cyrus_conf, user)
        if got != a.n + 1:
            raise RuntimeError(f"Cyrus mailbox of {user} holds {got} messages, expected {a.n + 1}")

    def ours_oneshot(user, extra=()):
        return process_per_message(
            [a.deliver, "--spool", spool, "-d", user, "-f", SENDER, *extra]
        )

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

        def oneshot_rate(k, argv):
            if a.load:
                return load_rate(a.load, k, msgs_file, ["process", *argv])
            return run_loops(k, msgs, process_per_message(argv))

        def lmtp_rate(sock, k, rcpt):
            if a.load:
                return load_rate(a.load, k, msgs_file, ["lmtp", "--socket", sock, "--rcpt", rcpt])
            return lmtp_sessions(sock, k, rcpt, msgs)

        # Each cell runs as REPS back-to-back groups (ours, Dovecot's and
        # Cyrus's, the order rotated every group), so that the runs of a
        # group see the same machine: on a shared VM the disk's flush time
        # drifts by 2x within minutes, which a ratio of two far-apart runs
        # would carry.
        def group(rep, runs):
            for key, run in rotated(rep, runs):
                record(key, run)

        for k in concs:
            for rep in range(a.reps):
                if "pp" not in only:
                    break
                # One process per message. A warm-up delivery creates the
                # mailbox first, as a real one would already exist.
                user = f"pp{k}r{rep}"
                ours_oneshot(user, ["--autocreate"])(warm)
                mine = [a.deliver, "--spool", spool, "-d", user, "-f", SENDER]
                maildir = os.path.join(a.dir, f"lda{k}r{rep}")
                lda = [a.dovecot_lda, "-c", a.lda_conf, "-o", f"mail_location=maildir:{maildir}", "-f", SENDER]
                process_per_message(lda)(warm)
                runs = [(("deliver", "process/message", k), lambda: oneshot_rate(k, mine)),
                        (("dovecot", "process/message", k), lambda: oneshot_rate(k, lda))]
                if cyrus:
                    # As Postfix's cyrus pipe runs it (master.cf:
                    # argv=deliver -e -r ${sender} -m ${extension} ${user};
                    # no extension expands to an empty argument).
                    cyr = [a.cyrdeliver, "-C", a.cyrus_conf, "-e", "-r", SENDER, "-m", "", user]
                    process_per_message(cyr)(warm)  # lmtpd autocreates the INBOX
                    runs.append((("cyrus", "process/message", k), lambda: oneshot_rate(k, cyr)))
                group(rep, runs)
                if cyrus:
                    check_cyrus(user)
            for rep in range(a.reps):
                if "lmtp" not in only:
                    break
                # LMTP, k sessions into one mailbox.
                user = f"lm{k}r{rep}"
                rcpt = f"{user}@example.org"
                ours_oneshot(user, ["--autocreate"])(warm)
                lmtp_sessions(a.dovecot_lmtp, 1, rcpt, [warm])
                runs = [(("deliver", "LMTP", k), lambda: lmtp_rate(our_sock, k, rcpt)),
                        (("dovecot", "LMTP", k), lambda: lmtp_rate(a.dovecot_lmtp, k, rcpt))]
                if cyrus:
                    lmtp_sessions(a.cyrus_lmtp, 1, rcpt, [warm])  # autocreates the INBOX
                    runs.append((("cyrus", "LMTP", k), lambda: lmtp_rate(a.cyrus_lmtp, k, rcpt)))
                group(rep, runs)
                if cyrus:
                    check_cyrus(user)
    finally:
        server.terminate()
        server.wait()

    def rates(xs):
        return f"{statistics.median(xs):.0f} [{min(xs):.0f}..{max(xs):.0f}]"

    def ratio(rs):
        return f"**{statistics.median(rs):.2f}x** [{min(rs):.2f}..{max(rs):.2f}]"

    others = [("dovecot", "Dovecot")] + ([("cyrus", "Cyrus")] if cyrus else [])
    print()
    print(f"N = {a.n} messages of ~{len(msgs[0])} bytes per run, {a.reps} "
          f"{'triples' if cyrus else 'pairs'} of runs per cell; deliveries/s, median [min..max]; "
          f"ratio: median of the {'triples' if cyrus else 'pairs'}' ratios [min..max]")
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
            print(f"| {label} | {k} | **{statistics.median(ours):.0f}** [{min(ours):.0f}..{max(ours):.0f}] | "
                  + " | ".join(cols + ratio_cols) + " |")
            summary.append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": a.n, "reps": a.reps, "results": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
