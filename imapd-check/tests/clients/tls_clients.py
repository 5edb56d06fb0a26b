"""TLS and COMPRESS checks against `imapd-check serve` with Python's ssl,
imaplib and zlib (driven by imapd-check/tests/imap_security.rs).

Usage: tls_clients.py MODE PORT CAFILE USER PASSWORD
Modes:
  implicit  IMAP4_SSL on the TLS port: verified certificate, LOGIN, SELECT,
            FETCH, LOGOUT.
  starttls  IMAP4 on the plain port of a server that trusts no network:
            LOGINDISABLED and STARTTLS before, LOGIN refused with
            [PRIVACYREQUIRED]; after starttls(): AUTH=PLAIN, no
            LOGINDISABLED, no STARTTLS; LOGIN, SELECT, LOGOUT.
  inject    A command pipelined after STARTTLS in the same packet must not
            be executed (CVE-2011-0411).
  compress-plain / compress-tls
            COMPRESS DEFLATE after LOGIN (raw DEFLATE both ways, RFC 4978),
            over the plain port or the TLS port: pipelined commands, a
            large FETCH, IDLE ended by DONE sent in one block with the next
            command; a second COMPRESS gets [COMPRESSIONACTIVE].
  idle-partial
            IDLE over TLS while only half of the TLS record carrying DONE
            has arrived: a delivery meanwhile is still reported (a partial
            record is not plaintext to wait on), then the rest of the
            record ends the IDLE.
  cert-der  Prints the SHA-256 of the certificate the TLS port presents.
Prints "<mode>: ok" at the end; any failure raises.
"""

import hashlib
import imaplib
import socket
import ssl
import sys
import zlib

mode, port, cafile, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
HOST = "127.0.0.1"


def ctx():
    c = ssl.create_default_context(cafile=cafile)
    c.check_hostname = True
    return c


def caps_of(m):
    typ, data = m.capability()
    assert typ == "OK", (typ, data)
    return data[0].decode().upper().split()


def implicit():
    m = imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx())
    caps = caps_of(m)
    assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps and "STARTTLS" not in caps, caps
    m.login(user, password)
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    n = int(data[0])
    assert n >= 1, n
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and b"Subject: message 0" in data[0][1], data
    # IDLE over TLS with the next command pipelined behind DONE.
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    assert m.readline().startswith(b"+"), "no IDLE continuation"
    m.send(b"DONE\r\nz1 NOOP\r\n")
    lines = [m.readline() for _ in range(2)]
    assert lines[0].startswith(f"{tag} OK".encode()), lines
    assert lines[1].startswith(b"z1 OK"), lines
    m.logout()


def starttls():
    m = imaplib.IMAP4(HOST, port)
    caps = caps_of(m)
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps, caps
    try:
        m.login(user, password)
        raise AssertionError("LOGIN accepted before TLS")
    except imaplib.IMAP4.error as e:
        assert "PRIVACYREQUIRED" in str(e), e
    tag = m._new_tag().decode()
    m.send(f"{tag} AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n".encode())
    reply = m.readline()
    assert reply.startswith(f"{tag} NO [PRIVACYREQUIRED]".encode()), reply
    m.starttls(ssl_context=ctx())
    caps = caps_of(m)
    assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps and "STARTTLS" not in caps, caps
    m.login(user, password)
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    m.logout()


def read_until(f, tag):
    lines = []
    while True:
        line = f.readline()
        assert line, f"connection closed before {tag}: {lines}"
        lines.append(line)
        if line.startswith(tag.encode() + b" "):
            return lines


def inject():
    s = socket.create_connection((HOST, port), timeout=20)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    # One packet: STARTTLS and a command an attacker appended.
    s.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
    reply = f.readline()
    assert reply.startswith(b"a OK"), reply
    t = ctx().wrap_socket(s, server_hostname=HOST)
    tf = t.makefile("rb")
    t.sendall(b"c CAPABILITY\r\n")
    lines = read_until(tf, "c")
    assert not any(l.startswith(b"b ") for l in lines), lines
    assert any(b"AUTH=PLAIN" in l for l in lines), lines
    t.sendall(b"d LOGOUT\r\n")
    read_until(tf, "d")


class Deflated:
    """Raw DEFLATE both ways over a (TLS or plain) socket."""

    def __init__(self, sock, rest):
        self.s = sock
        self.c = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.d = zlib.decompressobj(-15)
        self.buf = self.d.decompress(rest)

    def send(self, data):
        self.s.sendall(self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH))

    def readline(self):
        while b"\n" not in self.buf:
            z = self.s.recv(65536)
            assert z, f"connection closed; have {self.buf[:200]!r}"
            self.buf += self.d.decompress(z)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def until(self, tag):
        return read_until(self, tag)


def compress(use_tls):
    s = socket.create_connection((HOST, port), timeout=20)
    if use_tls:
        s = ctx().wrap_socket(s, server_hostname=HOST)
    buf = b""

    def line():
        nonlocal buf
        while b"\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "closed"
            buf += chunk
        l, _, buf = buf.partition(b"\n")
        return l + b"\n"

    assert line().startswith(b"* OK")
    s.sendall(f"a LOGIN {user} {password}\r\n".encode())
    l = line()
    assert l.startswith(b"a OK") and b"COMPRESS=DEFLATE" in l, l
    s.sendall(b"b COMPRESS DEFLATE\r\n")
    l = line()
    assert l.startswith(b"b OK"), l
    z = Deflated(s, buf)
    z.send(b"c CAPABILITY\r\nd SELECT INBOX\r\ne FETCH 1:* (BODY.PEEK[])\r\n")
    lines = z.until("c")
    assert not any(b"COMPRESS=DEFLATE" in l for l in lines), lines
    assert z.until("d")[-1].startswith(b"d OK"), "SELECT"
    fetched = z.until("e")
    assert fetched[-1].startswith(b"e OK"), fetched[-1]
    assert sum(1 for l in fetched if b"Subject: message" in l) >= 1, fetched[:5]
    z.send(b"f IDLE\r\n")
    assert z.readline().startswith(b"+"), "no IDLE continuation"
    z.send(b"DONE\r\ng NOOP\r\n")
    assert z.until("f")[-1].startswith(b"f OK")
    assert z.until("g")[-1].startswith(b"g OK")
    z.send(b"h COMPRESS DEFLATE\r\n")
    l = z.until("h")[-1]
    assert l.startswith(b"h NO [COMPRESSIONACTIVE]"), l
    z.send(b"i LOGOUT\r\n")
    assert z.until("i")[-1].startswith(b"i OK")


class MemoryTls:
    """TLS over a socket through memory BIOs, to send records in pieces."""

    def __init__(self, sock):
        self.s = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx().wrap_bio(self.inc, self.out, server_hostname=HOST)
        self.buf = b""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.push()
                data = self.s.recv(65536)
                assert data, "closed during handshake"
                self.inc.write(data)
        self.push()

    def push(self):
        if self.out.pending:
            self.s.sendall(self.out.read())

    def record(self, data):
        """The TLS bytes carrying `data`, not sent."""
        self.obj.write(data)
        return self.out.read()

    def send(self, data):
        self.s.sendall(self.record(data))

    def readline(self):
        while b"\n" not in self.buf:
            try:
                self.buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                data = self.s.recv(65536)
                assert data, f"closed; have {self.buf!r}"
                self.inc.write(data)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def until(self, tag):
        return read_until(self, tag)


def idle_partial(plain_port):
    s = socket.create_connection((HOST, port), timeout=20)
    t = MemoryTls(s)
    assert t.readline().startswith(b"* OK")
    t.send(f"a LOGIN {user} {password}\r\nb SELECT INBOX\r\n".encode())
    assert t.until("a")[-1].startswith(b"a OK")
    exists = [l for l in t.until("b") if l.endswith(b" EXISTS\r\n")]
    n = int(exists[0].split()[1])
    t.send(b"c IDLE\r\n")
    assert t.readline().startswith(b"+")
    rec = t.record(b"DONE\r\n")
    s.sendall(rec[: len(rec) // 2])
    other = imaplib.IMAP4(HOST, plain_port)
    other.login(user, password)
    typ, data = other.append("INBOX", None, None, b"Subject: late\r\n\r\nhi\r\n")
    assert typ == "OK", data
    other.logout()
    line = t.readline()
    assert line == f"* {n + 1} EXISTS\r\n".encode(), line
    s.sendall(rec[len(rec) // 2 :])
    assert t.until("c")[-1].startswith(b"c OK")
    t.send(b"d LOGOUT\r\n")
    t.until("d")


def cert_der():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=20) as s:
        with c.wrap_socket(s, server_hostname=HOST) as t:
            print("sha256", hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest())


{
    "implicit": implicit,
    "starttls": starttls,
    "inject": inject,
    "compress-plain": lambda: compress(False),
    "compress-tls": lambda: compress(True),
    "cert-der": cert_der,
    "idle-partial": lambda: idle_partial(int(sys.argv[6])),
}[mode]()
print(f"{mode}: ok")
