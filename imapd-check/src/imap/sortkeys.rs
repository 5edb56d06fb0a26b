//! The sort-key file of a mailbox (`.sortkeys`, docs/FORMAT.md §10): what
//! SORT (RFC 5256, RFC 5957) and THREAD (RFC 5256 3) take from each
//! message's header, kept so that a mailbox of a million messages is not
//! read header by header for every SORT SUBJECT or THREAD REFERENCES.
//!
//! Derived data, never trusted over the messages:
//! - an entry is used only for a record with the same UID, size and CRC32
//!   (a message's bytes never change under its UID, the store's first
//!   rule; a reconstruct that records a changed file changes them), and
//!   the file only under the UIDVALIDITY its header names;
//! - every entry carries its own CRC32 and bounded fields; the first one
//!   that does not check out (CRC, a length, UTF-8) ends the reading, and
//!   what it would have held is read from the messages again;
//! - entries are only made from a header whose file matched its record's
//!   CRC32 (`Candidate::header_verified`).
//!
//! So the file needs no lock and no fsync: sessions append whole entries
//! with `O_APPEND`, and a file found torn, too big, of another UIDVALIDITY
//! or holding many entries of expunged messages is replaced whole (written
//! to `.sortkeys.tmp`, renamed over). A lost or torn file costs a re-read,
//! never a wrong answer. The reader holds the file's bytes (at most
//! [`MAX_FILE`]) and one map slot per entry while one command runs.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest as _};
use nix::fcntl::OFlag;
use storage::internals::fault;
use storage::{Dir, Record};

/// The file's name in the mailbox directory.
pub const FILE: &str = storage::SORT_KEYS_FILE;
/// Where a replacement is written before it is renamed over [`FILE`].
const TMP: &str = ".sortkeys.tmp";
const MAGIC: &[u8; 8] = b"MSSORTK\x01";
/// Magic, UIDVALIDITY, CRC32 of the two.
const HEADER_LEN: usize = 16;
/// A bigger file is not read (and is replaced by what one command finds).
pub const MAX_FILE: u64 = 512 << 20;
/// Most bytes of one entry's payload (the fields below at their bounds:
/// 4 + 8 + 4 + 1 + 6 * (1 + 255) + 2 * 16 + 1 + 64 * 16 = 2610).
const MAX_PAYLOAD: usize = 4096;
/// At most this many of a message's references are used: the last ones,
/// its nearest ancestors (a longer References field is cut from the
/// front). Bounds THREAD's container table to this many ids per message,
/// and an entry of the file.
pub const MAX_REFS: usize = 64;
/// A mailbox with fewer messages than this reads its headers instead:
/// the file's read and write would cost more than they save.
pub const MIN_MESSAGES: u32 = 256;

/// A 128-bit digest (BLAKE2b) of a thread key: equal texts, equal digests.
pub type Digest = [u8; 16];

/// The digest of `text` as a thread key of `kind` (`b'i'` a message id,
/// `b's'` a casemapped base subject).
pub fn digest(kind: u8, text: &str) -> Digest {
    let mut h = Blake2b::<U16>::new();
    h.update([b'k', kind, 0]);
    h.update(text.as_bytes());
    h.finalize().into()
}

/// What SORT and THREAD take from one header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderKeys {
    /// The casemapped base subject, cut at `sort::KEY_MAX` bytes.
    pub subject: String,
    /// The subject had a reply or forward marker (RFC 5256 2.1).
    pub reply: bool,
    /// Casemapped addr-mailbox of the first From, To and Cc address.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// Casemapped display names for DISPLAYFROM and DISPLAYTO.
    pub display_from: String,
    pub display_to: String,
    /// Digest of the whole casemapped base subject; `None` when empty.
    pub subject_digest: Option<Digest>,
    /// Digest of the valid Message-ID.
    pub id: Option<Digest>,
    /// Digests of the parent ids: the last [`MAX_REFS`] valid References,
    /// else the first valid In-Reply-To.
    pub refs: Vec<Digest>,
}

impl HeaderKeys {
    /// Borrowed, as the file gives them.
    pub fn as_ref(&self) -> KeysRef<'_> {
        KeysRef {
            subject: &self.subject,
            reply: self.reply,
            from: &self.from,
            to: &self.to,
            cc: &self.cc,
            display_from: &self.display_from,
            display_to: &self.display_to,
            subject_digest: self.subject_digest.as_ref(),
            id: self.id.as_ref(),
            refs: self.refs.as_flattened(),
        }
    }

    /// The entry's payload; `None` when a field is over its bound (the
    /// message is then not kept in the file).
    fn encode(&self, rec: &Record, out: &mut Vec<u8>) -> Option<()> {
        let texts = [
            &self.subject,
            &self.from,
            &self.to,
            &self.cc,
            &self.display_from,
            &self.display_to,
        ];
        if texts.iter().any(|t| t.len() > u8::MAX as usize) || self.refs.len() > MAX_REFS {
            return None;
        }
        out.extend_from_slice(&rec.uid.to_le_bytes());
        out.extend_from_slice(&rec.size.to_le_bytes());
        out.extend_from_slice(&rec.message_crc.to_le_bytes());
        out.push(
            u8::from(self.reply)
                | u8::from(self.subject_digest.is_some()) << 1
                | u8::from(self.id.is_some()) << 2,
        );
        for t in texts {
            out.push(t.len() as u8);
            out.extend_from_slice(t.as_bytes());
        }
        for d in [&self.subject_digest, &self.id].into_iter().flatten() {
            out.extend_from_slice(d);
        }
        out.push(self.refs.len() as u8);
        out.extend_from_slice(self.refs.as_flattened());
        Some(())
    }
}

/// The keys of one message, borrowed from the file (or a [`HeaderKeys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeysRef<'a> {
    pub subject: &'a str,
    pub reply: bool,
    pub from: &'a str,
    pub to: &'a str,
    pub cc: &'a str,
    pub display_from: &'a str,
    pub display_to: &'a str,
    pub subject_digest: Option<&'a Digest>,
    pub id: Option<&'a Digest>,
    /// The parent ids' digests, one after another.
    refs: &'a [u8],
}

impl<'a> KeysRef<'a> {
    /// The parent ids' digests, oldest first.
    pub fn refs(&self) -> impl Iterator<Item = &'a Digest> + use<'a> {
        self.refs.as_chunks::<16>().0.iter()
    }
}

/// An entry's payload read back: its UID, size, CRC32 and keys; `None`
/// when it is not well formed.
fn decode(p: &[u8]) -> Option<(u32, u64, u32, KeysRef<'_>)> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = p.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let uid = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let flags = take(1)?[0];
    if flags & !7 != 0 {
        return None;
    }
    let mut texts = [""; 6];
    for t in &mut texts {
        let n = take(1)?[0] as usize;
        *t = std::str::from_utf8(take(n)?).ok()?;
    }
    let mut digest = |present: bool| -> Option<Option<&Digest>> {
        if !present {
            return Some(None);
        }
        Some(Some(take(16)?.try_into().ok()?))
    };
    let subject_digest = digest(flags & 2 != 0)?;
    let id = digest(flags & 4 != 0)?;
    let n = take(1)?[0] as usize;
    if n > MAX_REFS {
        return None;
    }
    let refs = take(n * 16)?;
    if take(1).is_some() {
        return None; // bytes left over
    }
    let [subject, from, to, cc, display_from, display_to] = texts;
    Some((
        uid,
        size,
        crc,
        KeysRef {
            subject,
            reply: flags & 1 != 0,
            from,
            to,
            cc,
            display_from,
            display_to,
            subject_digest,
            id,
            refs,
        },
    ))
}

/// Replaces `dir`'s file whole with `bytes` (through [`TMP`], no fsync:
/// a file lost or torn in a crash is found out by its CRCs and written
/// again).
fn replace(dir: &Dir, bytes: &[u8]) -> storage::Result<()> {
    dir.replace_derived(TMP, FILE, bytes, "sortkeys.after_tmp_write")?;
    fault::point("sortkeys.after_replace")
}

/// One frame: payload length, CRC32 of the payload, payload.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn file_header(uidvalidity: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&uidvalidity.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Keys read from messages are written out in pieces of about this many
/// bytes, so a command over a million messages holds little of them.
const FLUSH_BYTES: usize = 4 << 20;

/// A mailbox's sort keys as one command reads and adds to them.
#[derive(Default)]
pub struct SortKeys {
    bytes: Vec<u8>,
    /// (UID, offset of its frame in `bytes`), ascending by UID, one per
    /// UID (its last frame in the file wins).
    at: Vec<(u32, u32)>,
    /// Where the next lookup looks first: SORT and THREAD ask in UID
    /// order, so each lookup is usually the entry after the last one.
    cursor: Cell<usize>,
    /// Frames read (duplicates and expunged messages' included).
    frames: usize,
    /// The file was read whole with the right header: appending to it
    /// keeps it well formed.
    clean: bool,
    /// Entries of this command not written yet (added through a shared
    /// reference, while keys borrowed from `bytes` are held).
    pending: RefCell<Vec<u8>>,
    /// [`Self::prepare`] left a file that entries may be appended to.
    writable: Cell<bool>,
}

impl SortKeys {
    /// Reads `dir`'s file for a mailbox of `uidvalidity`. Never fails: a
    /// missing, unreadable, oversized or foreign file gives no keys (and
    /// [`Self::prepare`] replaces it), and a damaged entry ends the
    /// reading there (logged with its offset).
    pub fn load(dir: &Dir, uidvalidity: u32) -> SortKeys {
        let mut k = SortKeys::default();
        let name = storage::internals::fsutil::os(FILE.as_bytes());
        let mut f = match dir.open_derived(name, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(_) => return k,
        };
        let mut bytes = Vec::new();
        if let Err(e) = (&mut f).take(MAX_FILE + 1).read_to_end(&mut bytes) {
            tracing::debug!(dir = %dir.path.display(), "sort keys not read: {e}");
            return k;
        }
        if bytes.len() as u64 > MAX_FILE
            || bytes.len() < HEADER_LEN
            || bytes[..HEADER_LEN] != file_header(uidvalidity)
        {
            return k;
        }
        let mut off = HEADER_LEN;
        let mut clean = true;
        while off < bytes.len() {
            let Some(next) = Self::check_frame(&bytes, off) else {
                tracing::warn!(
                    dir = %dir.path.display(),
                    offset = off,
                    "sort keys: damaged entry; the rest is read from the messages"
                );
                clean = false;
                break;
            };
            let uid = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().expect("4 bytes"));
            k.at.push((uid, off as u32));
            k.frames += 1;
            off = next;
        }
        // Stable: a UID's frames stay in file order, and the last is kept.
        k.at.sort_by_key(|e| e.0);
        k.at.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        bytes.truncate(off);
        k.bytes = bytes;
        k.clean = clean;
        k
    }

    /// Where the frame at `off` ends, when it is whole and well formed.
    fn check_frame(bytes: &[u8], off: usize) -> Option<usize> {
        let head = bytes.get(off..off.checked_add(8)?)?;
        let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
        if len > MAX_PAYLOAD {
            return None;
        }
        let payload = bytes.get(off + 8..off + 8 + len)?;
        if crc32fast::hash(payload) != u32::from_le_bytes(head[4..].try_into().ok()?) {
            return None;
        }
        decode(payload)?;
        Some(off + 8 + len)
    }

    /// The whole frame at `off` (checked by [`Self::load`]).
    fn frame_at(&self, off: u32) -> &[u8] {
        let off = off as usize;
        let len = u32::from_le_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"));
        &self.bytes[off..off + 8 + len as usize]
    }

    /// The keys of `rec`'s message, if the file has them for this very
    /// message (same UID, size and CRC32).
    pub fn get(&self, rec: &Record) -> Option<KeysRef<'_>> {
        let c = self.cursor.get();
        let i = if self.at.get(c).is_some_and(|e| e.0 == rec.uid) {
            c
        } else {
            match self.at.binary_search_by_key(&rec.uid, |e| e.0) {
                Ok(i) => i,
                Err(i) => {
                    self.cursor.set(i);
                    return None;
                }
            }
        };
        self.cursor.set(i + 1);
        let (uid, size, crc, keys) = decode(&self.frame_at(self.at[i].1)[8..])?;
        (uid == rec.uid && size == rec.size && crc == rec.message_crc).then_some(keys)
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Before entries are added: a file that was not read clean (missing,
    /// torn, foreign) or that mostly holds entries of messages the
    /// mailbox no longer has (`messages` it has, `live` tells which UIDs)
    /// is replaced by the live entries read, in UID order. Failures are
    /// logged; nothing is then written.
    pub fn prepare(
        &mut self,
        dir: &Dir,
        uidvalidity: u32,
        messages: usize,
        live: impl Fn(u32) -> bool,
    ) {
        self.writable.set(false);
        if self.clean && self.frames <= 2 * messages + 1024 {
            self.writable.set(true);
            return;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + self.at.len() * 96);
        out.extend_from_slice(&file_header(uidvalidity));
        for &(_, o) in self.at.iter().filter(|(u, _)| live(*u)) {
            out.extend_from_slice(self.frame_at(o));
        }
        match replace(dir, &out) {
            Ok(()) => self.writable.set(true),
            Err(e) => tracing::debug!(dir = %dir.path.display(), "sort keys not written: {e}"),
        }
    }

    /// Adds the keys of `rec`'s message (read from a verified header),
    /// written out by [`Self::flush`] (called here every few MiB).
    /// Keys over a field's bound are not kept.
    pub fn add(&self, dir: &Dir, rec: &Record, keys: &HeaderKeys) {
        if !self.writable.get() {
            return;
        }
        let mut payload = Vec::with_capacity(128);
        if keys.encode(rec, &mut payload).is_none() {
            return;
        }
        let full = {
            let mut pending = self.pending.borrow_mut();
            frame(&payload, &mut pending);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            self.flush(dir);
        }
    }

    /// Appends the entries added since the last flush to the file.
    pub fn flush(&self, dir: &Dir) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() || !self.writable.get() {
            return;
        }
        let r = fault::point("sortkeys.before_append")
            .and_then(|()| {
                dir.open_derived(
                    storage::internals::fsutil::os(FILE.as_bytes()),
                    OFlag::O_WRONLY | OFlag::O_APPEND,
                )
            })
            .and_then(|mut f| {
                let len = f.metadata().map_or(0, |m| m.len());
                if len + pending.len() as u64 > MAX_FILE {
                    return Ok(());
                }
                f.write_all(&pending).map_err(|source| storage::Error::Io {
                    op: "write",
                    path: dir.path.join(FILE),
                    source,
                })
            })
            .and_then(|()| fault::point("sortkeys.after_append"));
        if let Err(e) = r {
            self.writable.set(false);
            tracing::debug!(dir = %dir.path.display(), "sort keys not written: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: u32) -> Record {
        Record {
            uid,
            size: 1000 + u64::from(uid),
            message_crc: uid.wrapping_mul(2_654_435_761),
            ..Record::default()
        }
    }

    fn keys(uid: u32) -> HeaderKeys {
        HeaderKeys {
            subject: format!("SUBJECT {uid}"),
            reply: uid.is_multiple_of(2),
            from: format!("from{uid}"),
            to: "TO".into(),
            cc: String::new(),
            display_from: "ÄNNE".into(),
            display_to: "x".repeat(255),
            subject_digest: (!uid.is_multiple_of(3)).then(|| digest(b's', &uid.to_string())),
            id: (!uid.is_multiple_of(5)).then(|| digest(b'i', &format!("{uid}@x"))),
            refs: (0..(uid as usize % 7))
                .map(|i| digest(b'i', &i.to_string()))
                .collect(),
        }
    }

    fn dir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        (t, d)
    }

    /// One command's run: load, prepare, add `uids`, flush; read back.
    fn save(d: &Dir, uv: u32, uids: std::ops::Range<u32>, live: std::ops::Range<u32>) -> SortKeys {
        let mut k = SortKeys::load(d, uv);
        k.prepare(d, uv, live.len(), |u| live.contains(&u));
        for u in uids {
            k.add(d, &rec(u), &keys(u));
        }
        k.flush(d);
        SortKeys::load(d, uv)
    }

    #[test]
    fn keys_come_back_for_the_same_message_only() {
        let (_t, d) = dir();
        let k = save(&d, 7, 1..200, 1..200);
        assert_eq!(k.len(), 199);
        for u in 1..200 {
            assert_eq!(k.get(&rec(u)), Some(keys(u).as_ref()), "uid {u}");
            let refs: Vec<&Digest> = k.get(&rec(u)).unwrap().refs().collect();
            assert_eq!(refs, keys(u).refs.iter().collect::<Vec<_>>());
        }
        // Another size or CRC32 under the UID: not this message.
        let mut r = rec(5);
        r.size += 1;
        assert_eq!(k.get(&r), None);
        let mut r = rec(5);
        r.message_crc ^= 1;
        assert_eq!(k.get(&r), None);
        assert_eq!(k.get(&rec(500)), None);
        // Another UIDVALIDITY: nothing.
        assert!(SortKeys::load(&d, 8).is_empty());
        // Appended: the second save adds to the file.
        let before = std::fs::metadata(d.path.join(FILE)).unwrap().len();
        let k = save(&d, 7, 200..210, 1..210);
        assert_eq!(k.len(), 209);
        assert!(std::fs::metadata(d.path.join(FILE)).unwrap().len() > before);
        assert!(k.clean);
    }

    #[test]
    fn a_damaged_entry_ends_the_reading_and_the_next_save_replaces_the_file() {
        let (_t, d) = dir();
        save(&d, 1, 1..50, 1..50);
        let path = d.path.join(FILE);
        let good = std::fs::read(&path).unwrap();
        // Every single-byte change after the header, and every cut: the
        // keys read are a prefix of the true ones, never other keys.
        for i in (HEADER_LEN..good.len()).step_by(7) {
            for bad in [good[i] ^ 0x40, 0xff] {
                let mut b = good.clone();
                b[i] = bad;
                std::fs::write(&path, &b).unwrap();
                let k = SortKeys::load(&d, 1);
                for u in 1..50 {
                    if let Some(got) = k.get(&rec(u)) {
                        assert_eq!(got, keys(u).as_ref(), "byte {i}");
                    }
                }
            }
            std::fs::write(&path, &good[..i]).unwrap();
            // Cut inside an entry: the reading stops before it, and the
            // file is not taken as whole (a save replaces it).
            let k = SortKeys::load(&d, 1);
            assert!(k.len() < 49, "cut at {i}");
        }
        // A damaged header: nothing is used.
        let mut b = good.clone();
        b[9] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(SortKeys::load(&d, 1).is_empty());
        // Torn in the middle: the next save writes a whole file again.
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let k = save(&d, 1, 50..60, 1..60);
        assert!(k.clean);
        for u in 50..60 {
            assert_eq!(k.get(&rec(u)), Some(keys(u).as_ref()));
        }
    }

    #[test]
    fn expunged_messages_leave_the_file_when_it_is_replaced() {
        let (_t, d) = dir();
        save(&d, 3, 1..3000, 1..3000);
        // Only 100 left: the next save finds mostly dead entries.
        let k = save(&d, 3, 3000..3001, 2900..3001);
        assert_eq!(k.len(), 101);
        assert!(k.get(&rec(5)).is_none() && k.get(&rec(2950)).is_some());
    }

    /// A UID written twice: the later entry counts; lookups in any order
    /// (the cursor is only where a lookup starts) find every entry.
    #[test]
    fn the_later_entry_of_a_uid_counts_and_lookups_go_in_any_order() {
        let (_t, d) = dir();
        save(&d, 2, 1..100, 1..100);
        let mut k = SortKeys::load(&d, 2);
        k.prepare(&d, 2, 99, |_| true);
        let mut newer = keys(10);
        newer.subject = "NEWER".into();
        k.add(&d, &rec(10), &newer);
        k.flush(&d);
        let k = SortKeys::load(&d, 2);
        assert_eq!(k.get(&rec(10)), Some(newer.as_ref()));
        let mut order: Vec<u32> = (0..120).collect();
        let mut x = 7u32;
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            order.swap(i, x as usize % (i + 1));
        }
        for pass in [order.clone(), (0..120).collect(), (0..120).rev().collect()] {
            for u in pass {
                let want = match u {
                    10 => Some(newer.clone()),
                    1..100 => Some(keys(u)),
                    _ => None,
                };
                assert_eq!(
                    k.get(&rec(u)),
                    want.as_ref().map(HeaderKeys::as_ref),
                    "uid {u}"
                );
            }
        }
    }

    #[test]
    fn oversized_keys_are_not_kept() {
        let (_t, d) = dir();
        let mut big = keys(1);
        big.subject = "s".repeat(256);
        let mut k = SortKeys::load(&d, 1);
        k.prepare(&d, 1, 2, |_| true);
        k.add(&d, &rec(1), &big);
        k.add(&d, &rec(2), &keys(2));
        k.flush(&d);
        let k = SortKeys::load(&d, 1);
        assert_eq!(
            (k.get(&rec(1)), k.get(&rec(2))),
            (None, Some(keys(2).as_ref()))
        );
    }
}
