//! Staging: a message streamed into the mailbox's `.stage` directory,
//! outside any lock, with its size, header size and CRC32 computed on the
//! way, and flushed (ordered append), started on its way (unordered) or
//! left for the batch's filesystem sync (import). Nothing is visible
//! until `append.rs` commits it. Ordering: docs/PROTOCOL.md §3 (steps
//! 1-2, *Unordered appends*) and §3a.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

use super::Mailbox;
use crate::error::{Error, Result};
use crate::fault;
use crate::format::Flags;
use crate::fsutil::{self, Dir};
use crate::index::Durability;
use crate::lock::{LockKind, LockedFile};

/// How [`Mailbox::append`] and [`Mailbox::stage`] store a message.
#[derive(Clone, Debug, Default)]
pub struct AppendOptions {
    /// Initial system flags (IMAP APPEND's flag list).
    pub flags: Flags,
    /// Initial keywords (IMAP atoms, see [`crate::validate_keyword`]).
    pub keywords: Vec<String>,
    /// INTERNALDATE; now when `None`.
    pub internal_date: Option<i64>,
    /// INTERNALDATE's zone in minutes east of UTC (0: UTC); clamped to
    /// `format::MAX_ZONE_MINUTES` either way.
    pub internal_zone: i16,
    /// Sent date from the Date: header, if the caller parsed one.
    pub sent_date: i64,
    /// Refuse messages larger than this many bytes.
    pub max_size: Option<u64>,
}

/// A message written to the staging area, not yet visible. Dropping it
/// without committing removes the staged file.
#[derive(Debug)]
pub struct StagedMessage {
    pub(super) name: String,
    pub(super) file: Option<LockedFile>,
    pub(super) stage: std::sync::Arc<Dir>,
    /// Bytes written.
    pub size: u64,
    /// Bytes of the header block, blank line included.
    pub header_size: u32,
    /// CRC32 of the bytes written.
    pub message_crc: u32,
    /// The options it was staged with.
    pub opts: AppendOptions,
    /// The bytes are written but not flushed: the commit's flush makes
    /// them durable (an unordered append, PROTOCOL.md §3).
    pub(super) pending_sync: bool,
    /// Staged for a batch import (`Mailbox::stage_for_batch`): not flushed
    /// yet; the commit syncs the filesystem once for the whole batch first
    /// (PROTOCOL.md §3a), then commits ordered.
    pub(crate) batch_sync: bool,
    pub(super) committed: bool,
}

impl Drop for StagedMessage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.stage.unlink(fsutil::os(self.name.as_bytes()));
        }
        // Dropping the file releases its liveness lock (`LockedFile`).
        self.file.take();
    }
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Mailbox {
    /// Creates and locks a new staged file. Between the create and the
    /// lock, a concurrent `recover` can lock the file, find it unowned and
    /// unlink it; a writer that went on would fail at its rename (ENOENT).
    /// So the file counts as ours only once it is locked and still linked:
    /// recover unlinks only files it holds the lock of.
    fn create_staged_file(&self) -> Result<(String, LockedFile, std::path::PathBuf)> {
        use std::os::unix::fs::MetadataExt;
        let mut attempt = 0;
        loop {
            let name = format!(
                "{}.{}.{}",
                std::process::id(),
                fsutil::now(),
                STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let os = fsutil::os(name.as_bytes());
            let file = match self
                .stage
                .open_file(os, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL)
            {
                // The staging directory vanishes only with the mailbox.
                Err(e) if e.is_not_found() => {
                    return Err(Error::MailboxDeleted);
                }
                r => LockedFile::new(r?),
            };
            let path = self.stage.child_path(os);
            // The staged file's own lock says "a live writer owns me".
            // Settling and recovery probe unowned files by locking them
            // for a moment; wait for such a prober rather than give up the
            // name (a settle would leave the file behind, it only drops
            // names of linked files).
            let locked = crate::lock::lock(
                std::os::fd::AsFd::as_fd(&file),
                LockKind::Exclusive,
                self.lock_timeout,
                &path,
            );
            let linked = file
                .metadata()
                .map_err(|e| Error::io("stat", &path, e))?
                .nlink()
                > 0;
            match locked {
                Ok(()) if linked => return Ok((name, file, path)),
                // Taken by a recover (which unlinks it): use another name.
                Ok(()) | Err(Error::LockTimeout { .. }) if attempt < 100 => attempt += 1,
                Ok(()) => {
                    return Err(Error::io(
                        "create staged file",
                        &path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether [`Mailbox::stage`] prepares messages of at most 256 KiB for
    /// an unordered append (the default): their commit then costs one
    /// flush, taken inside the mailbox lock, instead of two, of which the
    /// message's runs outside it (PROTOCOL.md §3). Both are equally safe.
    /// A writer that knows other writers are committing to this mailbox
    /// at the same moment may turn it off: their staged flushes then
    /// overlap instead of queueing behind the lock.
    pub fn set_unordered_appends(&mut self, on: bool) {
        self.unordered_appends = on;
    }

    /// Whether another handle (in any process) holds or waits for this
    /// mailbox's lock right now: a hint for [`Mailbox::set_unordered_appends`].
    pub fn lock_in_use(&self) -> bool {
        crate::lock::is_in_use(std::os::fd::AsFd::as_fd(&*self.index.file))
    }

    /// Streams `src` into the staging area (outside any lock) and makes
    /// it durable, or (unordered) starts writing it; nothing is visible
    /// until [`Mailbox::commit`].
    pub fn stage(&self, src: impl Read, opts: AppendOptions) -> Result<StagedMessage> {
        self.stage_as(src, opts, false)
    }

    /// [`Mailbox::stage`]; with `batch`, the file is neither flushed nor
    /// written out, and the commit makes the whole batch durable with one
    /// filesystem sync (`import.rs`, PROTOCOL.md §3a).
    pub(crate) fn stage_as(
        &self,
        mut src: impl Read,
        opts: AppendOptions,
        batch: bool,
    ) -> Result<StagedMessage> {
        let (name, mut file, path) = self.create_staged_file()?;
        let mut staged = StagedMessage {
            name,
            file: None,
            stage: self.stage.clone(),
            size: 0,
            header_size: 0,
            message_crc: 0,
            opts,
            pending_sync: false,
            batch_sync: false,
            committed: false,
        };
        let mut hasher = crc32fast::Hasher::new();
        let mut header_end = HeaderEnd::default();
        let mut read_buf = ReadBuf::take();
        let buf = &mut read_buf.0[..];
        loop {
            let n = match src.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read message", "input", e)),
            };
            let chunk = &buf[..n];
            header_end.feed(chunk, staged.size);
            hasher.update(chunk);
            staged.size += n as u64;
            let limit = staged
                .opts
                .max_size
                .unwrap_or(u64::MAX)
                .min(crate::format::MAX_MESSAGE_SIZE);
            if staged.size > limit {
                return Err(Error::TooLarge {
                    size: staged.size,
                    limit,
                });
            }
            file.write_all(chunk)
                .map_err(|e| Error::io("write", &path, e))?;
        }
        fault::point("append.after_stage_write")?;
        if self.durability == Durability::Full {
            // On a shared filesystem neither syncfs nor sync_file_range
            // is known to reach the server: every append is ordered there,
            // each message flushed on its own (PROTOCOL.md §8).
            let shared = crate::fsmode::active();
            if batch && !shared {
                // The batch's syncfs makes the bytes durable before the
                // commit (§3a); the kernel writes them back in bulk.
                staged.batch_sync = true;
            } else if self.unordered_appends
                && staged.size <= crate::format::UNORDERED_MAX_SIZE
                && !shared
            {
                // Start the bytes on their way; the commit's flush makes
                // them durable together with the index (§3).
                fsutil::write_out(&file, &path, false)?;
                staged.pending_sync = true;
            } else {
                fsutil::fdatasync(&file, &path)?;
            }
        }
        fault::point("append.after_stage_fsync")?;
        staged.header_size = header_end.end.unwrap_or(staged.size).min(u32::MAX as u64) as u32;
        staged.message_crc = hasher.finalize();
        staged.file = Some(file);
        Ok(staged)
    }
}

/// Size of [`Mailbox::stage`]'s read buffer: from the heap arena, not a
/// fresh mapping per message.
const READ_BUF: usize = 16 * 1024;

thread_local! {
    /// This thread's [`ReadBuf`], kept between messages.
    static READ_BUFS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`Mailbox::stage`]'s read buffer, taken from the thread and given back
/// when dropped: zero-filled once per thread (an LMTP session), not once
/// per message.
struct ReadBuf(Vec<u8>);

impl ReadBuf {
    fn take() -> ReadBuf {
        let v = READ_BUFS.take();
        ReadBuf(if v.len() == READ_BUF {
            v
        } else {
            vec![0; READ_BUF]
        })
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        let _ = READ_BUFS.try_with(|c| c.set(v));
    }
}

/// Finds the end of the header block (the blank line: the first LF LF
/// or CR LF CR LF) in a stream, looking at each byte once and at none
/// after the end.
#[derive(Default)]
struct HeaderEnd {
    end: Option<u64>,
    /// Last bytes seen (at most 3), to match a separator split across chunks.
    tail: Vec<u8>,
}

impl HeaderEnd {
    fn feed(&mut self, chunk: &[u8], offset: u64) {
        if self.end.is_some() {
            return;
        }
        let t = self.tail.len();
        let at = |i: usize| if i < t { self.tail[i] } else { chunk[i - t] };
        for (j, _) in chunk.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            let i = t + j;
            let lf = i >= 1 && at(i - 1) == b'\n';
            let crlf = i >= 3 && at(i - 1) == b'\r' && at(i - 2) == b'\n' && at(i - 3) == b'\r';
            if lf || crlf {
                self.end = Some(offset - t as u64 + i as u64 + 1);
                return;
            }
        }
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(3)..]);
        let cut = self.tail.len().saturating_sub(3);
        self.tail.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderEnd;

    /// The first blank line, by a plain search of the whole text.
    fn reference(text: &[u8]) -> Option<u64> {
        let find = |n: &[u8]| {
            text.windows(n.len())
                .position(|w| w == n)
                .map(|p| p + n.len())
        };
        match (find(b"\r\n\r\n"), find(b"\n\n")) {
            (Some(a), Some(b)) => Some(a.min(b) as u64),
            (a, b) => a.or(b).map(|e| e as u64),
        }
    }

    /// RFC 5322 2.1: the header ends at the first empty line, CRLF or
    /// bare LF, wherever the stream's chunks split it.
    #[test]
    fn header_end_across_chunks() {
        let texts: [&[u8]; 8] = [
            b"A: b\r\nC: d\r\n\r\nbody\r\n\r\n",
            b"A: b\n\nbody",
            b"A: b\r\n\nbody",
            b"A: b\n\r\n\r\nx",
            b"\r\n\r\n",
            b"\n\n",
            b"no blank line\r\nat all\r\n",
            b"A: b\r\n\r\r\n\r\n",
        ];
        for text in texts {
            for size in 1..=text.len() {
                let mut h = HeaderEnd::default();
                let mut offset = 0;
                for chunk in text.chunks(size) {
                    h.feed(chunk, offset);
                    offset += chunk.len() as u64;
                }
                assert_eq!(h.end, reference(text), "{text:?} in chunks of {size}");
            }
        }
    }
}
