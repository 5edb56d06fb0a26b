"""Python imaplib against `imapd-check serve --stdio` (IMAP4_stream).

Usage: imaplib_sessions.py IMAPD SPOOL [DELIVER]
Checks, with two independent sessions (two server processes):
  - a delivery while a session is selected shows up as `* n EXISTS` on NOOP,
    and on IDLE within the same second (latency printed);
  - a STORE in one session reaches the other as FETCH FLAGS;
  - an EXPUNGE in one session reaches the other only outside
    FETCH/STORE/SEARCH by sequence number;
  - APPEND/COPY/MOVE answer with APPENDUID/COPYUID; malformed input gets BAD
    and the session goes on.
Exits non-zero (AssertionError) on any deviation.
"""
import imaplib
import shlex
import subprocess
import sys
import time

IMAPD, SPOOL = sys.argv[1], sys.argv[2]
DELIVER = sys.argv[3] if len(sys.argv) > 3 else None
TUNNEL = f"{shlex.quote(IMAPD)} serve --spool {shlex.quote(SPOOL)} -d alice --stdio"


def session():
    m = imaplib.IMAP4_stream(TUNNEL)
    assert m.state == "AUTH", m.state
    return m


def deliver(n, subject):
    msg = f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nbody {n}\r\n".encode()
    if DELIVER:
        subprocess.run([DELIVER, "--spool", SPOOL, "-d", "alice", "--autocreate"], input=msg, check=True,
                       stderr=subprocess.DEVNULL)
    else:
        # Another process committing to the store, like deliver does.
        other = session()
        typ, _ = other.append("INBOX", None, None, msg)
        assert typ == "OK"
        other.logout()


def untagged(m, name):
    return m.untagged_responses.pop(name, [])


def raw(m, line):
    """Sends one raw command line and returns all lines up to its tagged reply."""
    tag = m._new_tag().decode()
    m.send(f"{tag} {line}\r\n".encode())
    out = []
    while True:
        l = m.readline().decode()
        out.append(l.rstrip("\r\n"))
        if l.startswith(tag + " "):
            return out


for i in range(3):
    deliver(i, f"seed {i}")

a, b = session(), session()
assert a.select("INBOX") == ("OK", [b"3"])
assert b.select("INBOX")[0] == "OK"
untagged(a, "EXISTS"), untagged(b, "EXISTS")

# 1. Delivery while selected -> NOOP shows EXISTS.
deliver(3, "while selected")
typ, _ = a.noop()
assert typ == "OK"
assert untagged(a, "EXISTS") == [b"4"], a.untagged_responses

# 2. STORE in b appears in a as FETCH FLAGS.
b.noop()
untagged(b, "EXISTS")
assert b.store("2", "+FLAGS", "(\\Flagged)")[0] == "OK"
a.noop()
fetches = untagged(a, "FETCH")
# a selected first, so UID 2 is \Recent there (RFC 3501 2.3.2), not in b.
assert any(b"2 (UID 2 FLAGS (\\Flagged \\Recent))" == f for f in fetches), fetches

# 3. EXPUNGE in b reaches a only outside FETCH/STORE/SEARCH by sequence number.
assert b.store("1", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
assert b.expunge() == ("OK", [b"1"])
lines = raw(a, "FETCH 1:* (UID FLAGS)")
assert not any("EXPUNGE" in l for l in lines), lines
assert sum(l.startswith("* ") and " FETCH " in l for l in lines) == 4, lines  # still 4 messages in a's view
lines = raw(a, "STORE 3 +FLAGS (\\Seen)")
assert not any("EXPUNGE" in l for l in lines), lines
lines = raw(a, "SEARCH ALL")
assert not any("EXPUNGE" in l for l in lines), lines
assert "* SEARCH 2 3 4" in lines, lines
lines = raw(a, "UID SEARCH ALL")  # UID commands may carry it
assert "* 1 EXPUNGE" in lines, lines
lines = raw(a, "NOOP")
assert not any("EXPUNGE" in l for l in lines), lines  # reported exactly once
lines = raw(a, "FETCH 1:* (UID)")
assert [l for l in lines if l.startswith("* ")] == ["* 1 FETCH (UID 2)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)"], lines

# 4. IDLE sees a delivery quickly, and a change made just before IDLE at once.
b.noop()
deliver(5, "before idle")
a.send(b"I1 IDLE\r\n")
got = [a.readline().decode().strip() for _ in range(3)]
assert got[0].startswith("+"), got
assert got[1] == "* 4 EXISTS", got  # committed before IDLE: reported immediately
assert got[2] == "* 4 RECENT", got  # a claims what it is first told of (RFC 3501 7.3.2)
t0 = time.monotonic()
deliver(6, "during idle")
t1 = time.monotonic()
line = a.readline().decode().strip()
t2 = time.monotonic()
assert line == "* 5 EXISTS", line
line = a.readline().decode().strip()
assert line == "* 5 RECENT", line
a.send(b"DONE\r\n")
assert a.readline().decode().startswith("I1 OK"), "IDLE not terminated"
print(f"idle: delivery took {1000*(t1-t0):.1f} ms, EXISTS seen {1000*(t2-t1):.1f} ms after it returned")

# 5. UIDPLUS, MOVE, malformed input.
typ, data = a.append("INBOX", "(\\Seen $Label1)", None, b"Subject: appended\r\n\r\nx\r\n")
assert typ == "OK" and b"APPENDUID" in data[0], data
assert a.create("Kept")[0] == "OK"
typ, data = a.uid("COPY", "2:3", "Kept")
assert typ == "OK", data
assert untagged(a, "COPYUID")[-1].endswith(b" 2:3 1:2")
lines = raw(a, "UID MOVE 4 Kept")
assert any("[COPYUID" in l for l in lines) and any(l.endswith(" EXPUNGE") for l in lines), lines
lines = raw(a, "FETCH (((")
assert lines[-1].split()[1] == "BAD", lines
lines = raw(a, "FROBNICATE")
assert lines[-1].split()[1] == "BAD", lines
assert a.noop()[0] == "OK"
typ, data = a.status("Kept", "(MESSAGES UIDNEXT)")
assert data == [b'"Kept" (MESSAGES 3 UIDNEXT 4)'], data
a.logout()
b.logout()
print("imaplib: ok")
