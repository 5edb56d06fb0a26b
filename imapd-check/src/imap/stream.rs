//! The connection's byte stream, whatever carries it: a TCP socket or
//! stdin/stdout, optionally under TLS (rustls), optionally compressed
//! (COMPRESS=DEFLATE, above TLS). Layers are switched on in place: the
//! session keeps the same `Shared` handle for reading (`io::Input`) and
//! writing (`Writer`), so STARTTLS and COMPRESS change nothing above.
//!
//! Reads wait with poll(2) up to the stream's deadline (the pre-login or
//! autologout timer), so a silent client costs a thread only until then,
//! on a socket or a pipe alike. `pending` says whether plaintext is ready
//! without touching the fd (TLS records or DEFLATE blocks already read),
//! which poll alone cannot see.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustls::ServerConnection;

use super::compress::Deflate;

pub struct Stream {
    rd: File,
    wr: File,
    tls: Option<Box<ServerConnection>>,
    z: Option<Box<Deflate>>,
    deadline: Option<Instant>,
}

/// One stream shared by the reading and the writing half of a session
/// (both used from the connection's one thread).
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Stream>>);

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client timed out")
}

/// Waits until `fd` is readable or the deadline passes.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<()> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_fd(rd: &mut File, deadline: Option<Instant>, buf: &mut [u8]) -> io::Result<usize> {
    wait_readable(rd.as_fd(), deadline)?;
    loop {
        match rd.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Sends every TLS record rustls has queued.
fn flush_tls(conn: &mut ServerConnection, wr: &mut File) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(wr)?;
    }
    Ok(())
}

/// Reads one TLS record's worth from the socket into rustls and
/// processes it; false at end of input.
fn pull_tls(
    conn: &mut ServerConnection,
    rd: &mut File,
    wr: &mut File,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    flush_tls(conn, wr)?;
    wait_readable(rd.as_fd(), deadline)?;
    let n = loop {
        match conn.read_tls(rd) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n == 0 {
        return Ok(false);
    }
    if let Err(e) = conn.process_new_packets() {
        // Send the alert rustls queued, then give up.
        let _ = flush_tls(conn, wr);
        return Err(tls_error(e));
    }
    Ok(true)
}

impl Stream {
    /// The plaintext layer (TLS or the fd) read, waiting for data.
    fn read_lower(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(conn) = self.tls.as_mut() else {
            return read_fd(&mut self.rd, self.deadline, buf);
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end like any.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !pull_tls(conn, &mut self.rd, &mut self.wr, self.deadline)? {
                return Ok(0);
            }
        }
    }

    /// True when the plaintext layer has bytes without reading the fd.
    fn lower_pending(&mut self) -> io::Result<bool> {
        match self.tls.as_mut() {
            None => Ok(false),
            Some(conn) => {
                let st = conn.process_new_packets().map_err(tls_error)?;
                Ok(st.plaintext_bytes_to_read() > 0 || st.peer_has_closed())
            }
        }
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.z.is_none() {
            return self.read_lower(buf);
        }
        let mut zbuf = [0u8; 8192];
        loop {
            let z = self.z.as_mut().expect("checked above");
            if z.pump()? {
                return Ok(z.take(buf));
            }
            if z.ended() {
                return Ok(0);
            }
            let n = self.read_lower(&mut zbuf)?;
            if n == 0 {
                return Ok(0);
            }
            self.z.as_mut().expect("checked above").feed(&zbuf[..n]);
        }
    }

    /// Plaintext ready to read without waiting on the fd.
    pub fn pending(&mut self) -> io::Result<bool> {
        if self.z.is_none() {
            return self.lower_pending();
        }
        let mut zbuf = [0u8; 8192];
        loop {
            let z = self.z.as_mut().expect("checked above");
            if z.pump()? || z.ended() {
                return Ok(true);
            }
            if !self.lower_pending()? {
                return Ok(false);
            }
            let n = self.read_lower(&mut zbuf)?;
            if n == 0 {
                return Ok(true);
            }
            self.z.as_mut().expect("checked above").feed(&zbuf[..n]);
        }
    }

    /// After poll found the fd readable: takes what arrived into the TLS
    /// and DEFLATE layers without blocking, so that `pending` then tells
    /// whether plaintext is there (a TLS record or DEFLATE block may
    /// arrive in pieces, or carry no data at all). True at end of input.
    fn absorb(&mut self) -> io::Result<bool> {
        let mut zbuf = [0u8; 8192];
        match self.tls.as_mut() {
            Some(conn) => {
                let n = loop {
                    match conn.read_tls(&mut self.rd) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r?,
                    }
                };
                if n == 0 {
                    return Ok(true);
                }
                if let Err(e) = conn.process_new_packets() {
                    let _ = flush_tls(conn, &mut self.wr);
                    return Err(tls_error(e));
                }
                flush_tls(conn, &mut self.wr)?;
                if let Some(z) = self.z.as_mut() {
                    loop {
                        match conn.reader().read(&mut zbuf) {
                            Ok(0) => return Ok(true),
                            Ok(n) => z.feed(&zbuf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                return Ok(true);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            None => {
                if let Some(z) = self.z.as_mut() {
                    let n = loop {
                        match self.rd.read(&mut zbuf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            r => break r?,
                        }
                    };
                    if n == 0 {
                        return Ok(true);
                    }
                    z.feed(&zbuf[..n]);
                }
            }
        }
        Ok(false)
    }

    /// Writes through the layers; `flush` ends a burst of responses.
    fn write_layers(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        let compressed;
        let data = match self.z.as_mut() {
            Some(z) => {
                z.compress(data, flush)?;
                compressed = z.output().to_vec();
                z.clear_output();
                &compressed[..]
            }
            None => data,
        };
        match self.tls.as_mut() {
            None => self.wr.write_all(data),
            Some(conn) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = conn.writer().write(rest)?;
                    rest = &rest[n..];
                    flush_tls(conn, &mut self.wr)?;
                }
                flush_tls(conn, &mut self.wr)
            }
        }
    }

    /// Runs a TLS handshake as the server to its end.
    pub fn start_tls(&mut self, conn: ServerConnection) -> io::Result<()> {
        let mut conn = Box::new(conn);
        while conn.is_handshaking() {
            if conn.wants_write() {
                flush_tls(&mut conn, &mut self.wr)?;
            } else if !pull_tls(&mut conn, &mut self.rd, &mut self.wr, self.deadline)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client left during the TLS handshake",
                ));
            }
        }
        flush_tls(&mut conn, &mut self.wr)?;
        self.tls = Some(conn);
        Ok(())
    }

    /// Switches compression on; `already` is what was read past the
    /// COMPRESS command (compressed bytes).
    pub fn start_deflate(&mut self, already: Vec<u8>) {
        self.z = Some(Box::new(Deflate::new(already)));
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn is_compressed(&self) -> bool {
        self.z.is_some()
    }

    /// Reads fail with `TimedOut` once `deadline` passes.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Sends TLS close_notify (best effort) before the socket closes.
    pub fn close(&mut self) {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            let _ = flush_tls(conn, &mut self.wr);
        }
    }
}

impl Shared {
    /// `rd` and `wr` may be the same socket (dup'ed) or stdin and stdout.
    pub fn new(rd: OwnedFd, wr: OwnedFd) -> Shared {
        Shared(Arc::new(Mutex::new(Stream {
            rd: File::from(rd),
            wr: File::from(wr),
            tls: None,
            z: None,
            deadline: None,
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Stream> {
        // A panic while holding it ended that connection's thread; the
        // stream is only ever used by it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffered writer over this stream.
    /// The connection's output: buffered only while a response is being
    /// written (`io::Output`), so an idle connection holds no buffer.
    pub fn writer(&self) -> super::io::Output<Writer> {
        super::io::Output::new(Writer(self.clone()), super::OUT_BUF)
    }

    /// Waits until the plaintext is readable or `other` is, or `timeout`
    /// passes; `TimedOut` when the deadline comes first.
    pub fn wait(
        &self,
        other: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> io::Result<(bool, bool)> {
        let mut s = self.lock();
        if s.pending()? {
            return Ok((true, false));
        }
        let mut timeout = timeout;
        if let Some(d) = s.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            timeout = timeout.min(left);
        }
        let mut fds = vec![PollFd::new(s.rd.as_fd(), PollFlags::POLLIN)];
        fds.extend(other.map(|o| PollFd::new(o, PollFlags::POLLIN)));
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Ok((false, false)),
            Err(e) => return Err(e.into()),
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (input, other) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        if !input || (s.tls.is_none() && s.z.is_none()) {
            return Ok((input, other));
        }
        // Bytes came, but maybe not a whole record or block yet.
        let ended = s.absorb()?;
        Ok((ended || s.pending()?, other))
    }
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read_plain(buf)
    }
}

/// The writing half: plaintext in, through COMPRESS and TLS, to the fd.
pub struct Writer(Shared);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().write_layers(buf, false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut s = self.0.lock();
        if s.z.is_some() {
            s.write_layers(&[], true)?;
        }
        s.wr.flush()
    }
}
