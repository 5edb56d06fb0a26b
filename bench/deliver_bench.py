#!/usr/bin/env python3
"""Delivery throughput: our `deliver` against Dovecot's, same disk, same messages.

Run by bench/deliver_bench.sh (which installs Dovecot, builds deliver, starts a
private Dovecot LMTP server and runs this as an unprivileged user). Measures
deliveries per second for:

  deliver        one process per message (as Postfix's pipe/mailbox_command)
  dovecot-lda    one process per message, no daemon
  deliver LMTP   sessions against `deliver --lmtp --listen unix:...`
  Dovecot LMTP   sessions against the private Dovecot's lmtp socket

each with 1 and 4 concurrent loops/sessions, all into ONE mailbox per run,
N distinct ~4 KiB messages per run, REPS runs each; prints medians and ratios.
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
    a = ap.parse_args()

    concs = [int(c) for c in a.concurrency.split(",")]
    msgs = make_messages(a.n)
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

        # Each cell runs as REPS back-to-back pairs (ours, then Dovecot's,
        # the order swapped every pair), so that the two runs of a pair see
        # the same machine: on a shared VM the disk's flush time drifts by
        # 2x within minutes, which a ratio of two far-apart runs would carry.
        def pair(rep, k, ours, theirs):
            runs = [ours, theirs] if rep % 2 == 0 else [theirs, ours]
            for key, run in runs:
                record(key, run)

        for k in concs:
            for rep in range(a.reps):
                if "pp" not in only:
                    break
                # One process per message. A warm-up delivery creates the
                # mailbox first, as a real one would already exist.
                user = f"pp{k}r{rep}"
                ours_oneshot(user, ["--autocreate"])(msgs[0])
                mine = [a.deliver, "--spool", spool, "-d", user, "-f", SENDER]
                maildir = os.path.join(a.dir, f"lda{k}r{rep}")
                lda = [a.dovecot_lda, "-c", a.lda_conf, "-o", f"mail_location=maildir:{maildir}", "-f", SENDER]
                process_per_message(lda)(msgs[0])
                pair(rep, k,
                     (("deliver", "process/message", k), lambda: oneshot_rate(k, mine)),
                     (("dovecot", "process/message", k), lambda: oneshot_rate(k, lda)))
            for rep in range(a.reps):
                if "lmtp" not in only:
                    break
                # LMTP, k sessions into one mailbox.
                rcpt = f"lm{k}r{rep}@example.org"
                ours_oneshot(f"lm{k}r{rep}", ["--autocreate"])(msgs[0])
                lmtp_sessions(a.dovecot_lmtp, 1, rcpt, msgs[:1])
                pair(rep, k,
                     (("deliver", "LMTP", k), lambda: lmtp_rate(our_sock, k, rcpt)),
                     (("dovecot", "LMTP", k), lambda: lmtp_rate(a.dovecot_lmtp, k, rcpt)))
    finally:
        server.terminate()
        server.wait()

    print()
    print(f"N = {a.n} messages of ~{len(msgs[0])} bytes per run, {a.reps} pairs of runs per cell; "
          "deliveries/s, median [min..max]; ratio: median of the pairs' ratios [min..max]")
    print()
    print("| path | concurrency | deliver | Dovecot | ratio deliver/Dovecot |")
    print("|---|---|---|---|---|")
    summary = []
    for mode, label in [("process/message", "one process per message (deliver vs dovecot-lda)"),
                        ("LMTP", "LMTP, sessions into one mailbox")]:
        for k in concs:
            if ("deliver", mode, k) not in results:
                continue
            ours = results[("deliver", mode, k)]
            theirs = results[("dovecot", mode, k)]
            mo, mt = statistics.median(ours), statistics.median(theirs)
            ratios = [o / t for o, t in zip(ours, theirs)]
            print(
                f"| {label} | {k} | **{mo:.0f}** [{min(ours):.0f}..{max(ours):.0f}] "
                f"| {mt:.0f} [{min(theirs):.0f}..{max(theirs):.0f}] "
                f"| **{statistics.median(ratios):.2f}x** [{min(ratios):.2f}..{max(ratios):.2f}] |"
            )
            summary.append({"mode": mode, "k": k, "deliver": ours, "dovecot": theirs, "ratios": ratios})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": a.n, "reps": a.reps, "results": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
