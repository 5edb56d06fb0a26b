//! A per-mailbox full-text candidate index for IMAP SEARCH BODY/TEXT
//! and the header keys (SUBJECT, HEADER, FROM, TO, CC, BCC: header
//! fields have terms of their own, [`grams::HEADER`]).
//!
//! Stored in the mailbox directory as `.fts/` (derived data: deleted
//! freely, rebuilt lazily or by `idx-admin fts-rebuild`). One tantivy
//! document per message: its key (UIDVALIDITY << 32 | UID, indexed and a
//! fast field), the byte trigrams of its searchable text ([`grams`],
//! [`text`]) and its words ([`words`]). The index is only a filter: it
//! answers "which messages could contain this needle" (trigrams: a
//! superset the caller confirms on the messages) and "which certainly
//! do" (a one-word needle among their words), and it covers the UIDs up
//! to its high-water mark only (the caller searches the others directly).
//!
//! Why tantivy: a maintained, MIT-licensed inverted index with atomic
//! commits, segment merging, deletes by term and a bounded writer
//! memory budget, usable as a library (no server). Built with
//! `default-features = false, features = ["mmap"]`: no stemmer, stop
//! words or doc-store compression (we store no documents, and IMAP
//! substring search must not stem).
//!
//! The high-water mark is the largest key of the current UIDVALIDITY in
//! the snapshot searched, so it is always consistent with that snapshot:
//! a writer adds messages in ascending UID order, every live message of
//! its view above the previous mark, and commits them at once. Documents
//! of another UIDVALIDITY are ignored. One writer per index: the
//! `.fts/lock` file's `flock`; a process that cannot take it searches
//! without catching up.

#![deny(missing_docs)]

pub mod address;
pub mod grams;
pub mod text;
pub mod words;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, Schema, TantivyDocument, Term};
use tantivy::{DocId, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader};

pub use grams::{Grams, Probe, probe};

/// The index's directory inside a mailbox directory.
pub const DIR: &str = ".fts";
const LOCK: &str = "lock";
const KEY: &str = "key";
const GRAM: &str = "gram";
const WORD: &str = "word";

/// Messages with more distinct words than this get none (they are only
/// candidates, read to confirm).
pub const MAX_WORDS: usize = 100_000;

/// Messages larger than this are not read for indexing: marked
/// [`grams::UNINDEXED`] (searched directly every time).
pub const INDEX_MAX: u64 = 64 << 20;

/// The smallest writer memory budget tantivy accepts.
pub const MIN_MEMORY: usize = 15_000_000;

/// What went wrong with an index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index files could not be read or written.
    #[error("full-text index {path}: {source}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What tantivy reported.
        source: tantivy::TantivyError,
    },
    /// A file operation on the index directory failed.
    #[error("full-text index {path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn tv(path: &Path) -> impl FnOnce(tantivy::TantivyError) -> Error + '_ {
    move |source| Error::Index {
        path: path.to_path_buf(),
        source,
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let key = b.add_u64_field(KEY, INDEXED | FAST);
    let gram = b.add_u64_field(GRAM, INDEXED);
    let word = b.add_text_field(WORD, tantivy::schema::STRING);
    (b.build(), Fields { key, gram, word })
}

/// The index's fields.
#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    gram: Field,
    word: Field,
}

fn key(uidvalidity: u32, uid: u32) -> u64 {
    (u64::from(uidvalidity) << 32) | u64::from(uid)
}

/// An index opened for searching (kept per process, reloaded per use).
struct Opened {
    reader: IndexReader,
    f: Fields,
}

/// Open readers by index directory, so a SEARCH does not reopen the
/// segments; bounded.
static READERS: Mutex<Option<HashMap<PathBuf, Arc<Opened>>>> = Mutex::new(None);
const MAX_READERS: usize = 256;

fn open_reader(dir: &Path) -> Result<Option<Arc<Opened>>> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = tantivy::Index::open_in_dir(dir).map_err(tv(dir))?;
    let s = index.schema();
    let (Ok(key), Ok(gram), Ok(word)) = (s.get_field(KEY), s.get_field(GRAM), s.get_field(WORD))
    else {
        return Err(Error::Index {
            path: dir.to_path_buf(),
            source: tantivy::TantivyError::SchemaError("not a full-text index".into()),
        });
    };
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(tv(dir))?;
    let f = Fields { key, gram, word };
    Ok(Some(Arc::new(Opened { reader, f })))
}

/// A consistent view of one mailbox's index for one UIDVALIDITY.
pub struct Snapshot {
    searcher: tantivy::Searcher,
    f: Fields,
    uidvalidity: u32,
    high: u32,
    docs: u64,
}

/// The current snapshot of the index in `mbox_dir`, for messages of
/// `uidvalidity`; `None` when there is no index. An index that cannot
/// be read is an error (the caller searches directly).
pub fn snapshot(mbox_dir: &Path, uidvalidity: u32) -> Result<Option<Snapshot>> {
    let dir = mbox_dir.join(DIR);
    let cached = READERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&dir)
        .cloned();
    let opened = match cached {
        Some(o) if o.reader.reload().is_ok() => o,
        _ => {
            let mut map = READERS.lock().unwrap_or_else(|e| e.into_inner());
            let map = map.get_or_insert_with(HashMap::new);
            map.remove(&dir);
            let Some(o) = open_reader(&dir)? else {
                return Ok(None);
            };
            if map.len() >= MAX_READERS {
                map.clear();
            }
            map.insert(dir.clone(), o.clone());
            o
        }
    };
    let searcher = opened.reader.searcher();
    Snapshot::of(searcher, opened.f, uidvalidity, &dir).map(Some)
}

impl Snapshot {
    fn of(
        searcher: tantivy::Searcher,
        f: Fields,
        uidvalidity: u32,
        dir: &Path,
    ) -> Result<Snapshot> {
        let mut high = 0u32;
        let mut docs = 0u64;
        for seg in searcher.segment_readers() {
            let col = seg.fast_fields().u64(KEY).map_err(tv(dir))?;
            if seg.max_doc() == 0 {
                continue;
            }
            let max = col.max_value();
            if max >> 32 == u64::from(uidvalidity) {
                high = high.max(max as u32);
            }
            if col.min_value() >> 32 == u64::from(uidvalidity) {
                docs += u64::from(seg.num_docs());
            }
        }
        Ok(Snapshot {
            searcher,
            f,
            uidvalidity,
            high,
            docs,
        })
    }

    /// Every UID up to this one was indexed (0: none).
    pub fn high_water(&self) -> u32 {
        self.high
    }

    /// Documents of this UIDVALIDITY (expunged messages not yet purged
    /// included).
    pub fn documents(&self) -> u64 {
        self.docs
    }

    /// The UIDs up to [`Self::high_water`] that may match `probe`,
    /// ascending: every indexed message holding all trigrams of one of
    /// its alternatives, and every message marked unindexed.
    pub fn candidates(&self, probe: &Probe) -> Result<Vec<u32>> {
        let term = |g: u32| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_u64(self.f.gram, u64::from(g)),
                IndexRecordOption::Basic,
            ))
        };
        let mut any: Vec<(Occur, Box<dyn Query>)> = probe
            .0
            .iter()
            .map(|alt| {
                let all: Vec<(Occur, Box<dyn Query>)> =
                    alt.iter().map(|&g| (Occur::Must, term(g))).collect();
                (
                    Occur::Should,
                    Box::new(BooleanQuery::new(all)) as Box<dyn Query>,
                )
            })
            .collect();
        any.push((Occur::Should, term(grams::UNINDEXED)));
        self.keys(&BooleanQuery::new(any))
    }

    /// [`Self::candidates`] for a needle compared with header field
    /// values, unfolded or decoded, or with the addresses of an address
    /// field (SEARCH SUBJECT, HEADER, FROM, TO, CC, BCC): among the
    /// [`grams::HEADER`] terms; also every message indexed without them
    /// ([`grams::HEADER_TERMS`]).
    pub fn header_candidates(&self, probe: &Probe) -> Result<Vec<u32>> {
        let mut uids = self.candidates(&probe.in_headers())?;
        if self.unmarked_headers()? {
            let term = Term::from_field_u64(self.f.gram, u64::from(grams::HEADER_TERMS));
            let old: Vec<(Occur, Box<dyn Query>)> = vec![
                (Occur::Must, Box::new(tantivy::query::AllQuery)),
                (
                    Occur::MustNot,
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                ),
            ];
            uids.extend(self.keys(&BooleanQuery::new(old))?);
            uids.sort_unstable();
            uids.dedup();
        }
        Ok(uids)
    }

    /// The UIDs up to [`Self::high_water`] that certainly match SEARCH
    /// `field` (`FROM`, `TO`, `CC` or `BCC`) `needle`: those whose field
    /// holds an address equal to the needle, in any ASCII case
    /// ([`words::address_term`]).
    pub fn proven_address(&self, field: &str, needle: &[u8]) -> Result<Vec<u32>> {
        let Some(t) = words::address_term(field, needle) else {
            return Ok(Vec::new());
        };
        let term = Term::from_field_text(self.f.word, &t);
        self.keys(&TermQuery::new(term, IndexRecordOption::Basic))
    }

    /// The UIDs up to [`Self::high_water`] that certainly match SEARCH
    /// SUBJECT `needle`: those holding it as a word of a Subject field
    /// ([`words::Place::Subject`]); none when it is not a single word.
    pub fn proven_subject(&self, needle: &str) -> Result<Vec<u32>> {
        self.proven_in(needle, &[words::Place::Subject])
    }

    /// Whether some document lacks [`grams::HEADER_TERMS`] (counted
    /// with deleted documents, which can only make this true).
    fn unmarked_headers(&self) -> Result<bool> {
        let term = Term::from_field_u64(self.f.gram, u64::from(grams::HEADER_TERMS));
        for seg in self.searcher.segment_readers() {
            let dir = || PathBuf::from(DIR);
            let marked = seg
                .inverted_index(self.f.gram)
                .map_err(|source| Error::Index {
                    path: dir(),
                    source,
                })?
                .doc_freq(&term)
                .map_err(io("read the postings", &dir()))?;
            if marked < seg.max_doc() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The UIDs up to [`Self::high_water`] that certainly match `needle`
    /// (BODY, or TEXT when `text`): those holding it as a word
    /// ([`words`]); none when it is not a single word.
    pub fn proven(&self, needle: &str, text: bool) -> Result<Vec<u32>> {
        use words::Place;
        let places: &[Place] = if text {
            &[Place::Body, Place::Header]
        } else {
            &[Place::Body]
        };
        self.proven_in(needle, places)
    }

    /// The UIDs holding `needle` as a word in one of `places`.
    fn proven_in(&self, needle: &str, places: &[words::Place]) -> Result<Vec<u32>> {
        let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for w in words::proof_words(needle) {
            for &p in places {
                let t = Term::from_field_text(self.f.word, &words::term(p, &w));
                any.push((
                    Occur::Should,
                    Box::new(TermQuery::new(t, IndexRecordOption::Basic)),
                ));
            }
        }
        if any.is_empty() {
            return Ok(Vec::new());
        }
        self.keys(&BooleanQuery::new(any))
    }

    /// Every indexed UID of this UIDVALIDITY, ascending.
    pub fn indexed(&self) -> Result<Vec<u32>> {
        self.keys(&tantivy::query::AllQuery)
    }

    /// The UIDs of this UIDVALIDITY's documents matching `q`, ascending.
    fn keys(&self, q: &dyn Query) -> Result<Vec<u32>> {
        let mut uids = self
            .searcher
            .search(
                q,
                &Keys {
                    uidvalidity: self.uidvalidity,
                },
            )
            .map_err(|source| Error::Index {
                path: PathBuf::from(DIR),
                source,
            })?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }
}

/// Collects the UIDs of matching documents of one UIDVALIDITY.
struct Keys {
    uidvalidity: u32,
}

struct SegmentKeys {
    col: tantivy::columnar::Column<u64>,
    uidvalidity: u32,
    out: Vec<u32>,
}

impl Collector for Keys {
    type Fruit = Vec<u32>;
    type Child = SegmentKeys;

    fn for_segment(&self, _: u32, seg: &SegmentReader) -> tantivy::Result<SegmentKeys> {
        Ok(SegmentKeys {
            col: seg.fast_fields().u64(KEY)?,
            uidvalidity: self.uidvalidity,
            out: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u32>>) -> tantivy::Result<Vec<u32>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for SegmentKeys {
    type Fruit = Vec<u32>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(k) = self.col.first(doc)
            && k >> 32 == u64::from(self.uidvalidity)
        {
            self.out.push(k as u32);
        }
    }

    fn harvest(self) -> Vec<u32> {
        self.out
    }
}

/// The single writer of one mailbox's index (holds `.fts/lock`).
pub struct Writer {
    dir: PathBuf,
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    f: Fields,
    words: words::Words,
    uidvalidity: u32,
    high: u32,
    grams: Grams,
    /// Trigrams of header fields ([`grams::HEADER`]).
    header_grams: Grams,
    added: u64,
    _lock: Flock<File>,
}

/// Removes the index of the mailbox in `mbox_dir` (derived data; the
/// next SEARCH or `idx-admin fts-rebuild` builds it again).
pub fn remove(mbox_dir: &Path) -> Result<()> {
    let dir = mbox_dir.join(DIR);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &dir)(e)),
        _ => Ok(()),
    }
}

/// Empties `dir` except the lock file (an index that cannot be opened).
fn clear(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io("read_dir", dir))? {
        let e = e.map_err(io("read_dir", dir))?;
        if e.file_name() == LOCK {
            continue;
        }
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io("remove", &p))?;
    }
    Ok(())
}

/// Opens the index of `mbox_dir` for writing messages of `uidvalidity`,
/// creating it (or replacing one that cannot be read, or emptying one of
/// another UIDVALIDITY); `None` when another process is writing it.
/// `memory`: the writer's budget in bytes (at least [`MIN_MEMORY`]).
pub fn writer(mbox_dir: &Path, uidvalidity: u32, memory: usize) -> Result<Option<Writer>> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = mbox_dir.join(DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(io("mkdir", &dir)(e));
        }
        _ => {}
    }
    let lock_path = dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(io("flock", &lock_path)(e.into())),
    };
    let (schema, f) = schema();
    let open = |dir: &Path| -> Result<tantivy::Index> {
        let d = MmapDirectory::open(dir).map_err(|e| tv(dir)(e.into()))?;
        let index = tantivy::Index::open_or_create(d, schema.clone()).map_err(tv(dir))?;
        Ok(index)
    };
    let index = match open(&dir) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("replacing a full-text index that cannot be opened: {e}");
            clear(&dir)?;
            open(&dir)?
        }
    };
    let memory = memory.clamp(MIN_MEMORY, 4 << 30);
    let writer = index.writer_with_num_threads(1, memory).map_err(tv(&dir))?;
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(tv(&dir))?;
    let snap = Snapshot::of(reader.searcher(), f, uidvalidity, &dir)?;
    let mut w = Writer {
        dir,
        writer,
        reader,
        f,
        words: words::Words::default(),
        uidvalidity,
        high: snap.high_water(),
        grams: Grams::default(),
        header_grams: Grams::default(),
        added: 0,
        _lock: lock,
    };
    // Documents of another UIDVALIDITY are never wanted again.
    let total: u64 = snap
        .searcher
        .segment_readers()
        .iter()
        .map(|s| u64::from(s.num_docs()))
        .sum();
    if total > snap.documents() {
        w.clear()?;
    }
    Ok(Some(w))
}

impl Writer {
    /// Every UID up to this one is indexed.
    pub fn high_water(&self) -> u32 {
        self.high
    }

    /// Documents added since this writer was opened.
    pub fn added(&self) -> u64 {
        self.added
    }

    /// Indexes message `uid` (its stored bytes `raw`, whose header block
    /// is its first `header_size` bytes, as its record says). UIDs must be
    /// added in ascending order, each above [`Self::high_water`], and
    /// every message of the mailbox between them must be added (or
    /// [`Self::add_unindexed`]).
    pub fn add(&mut self, uid: u32, raw: &[u8], header_size: u64) -> Result<()> {
        use words::Place;
        if raw.len() as u64 > INDEX_MAX {
            return self.add_unindexed(uid);
        }
        let hs = (header_size.min(raw.len() as u64)) as usize;
        self.grams.add_ascii_folded(raw);
        self.words.add_raw(Place::Header, &raw[..hs]);
        self.words.add_raw(Place::Body, &raw[hs..]);
        if let Some(m) = text::parse_for_search(raw) {
            text::any_text(&m, &mut |t| {
                self.grams.add_lowercased(t);
                self.words.add_text(Place::Body, t);
                false
            });
        }
        // The header the matcher reads (SUBJECT, HEADER; TEXT decodes
        // it): the record's header block, at most HEADER_CAP bytes. Each
        // field unfolded, as those keys compare it (a needle can span a
        // fold, or a bare CR, which the stored bytes break), and decoded.
        for f in text::header_fields(&raw[..hs.min(text::HEADER_CAP)]) {
            self.header_grams.add_ascii_folded(&f);
            let v = text::field_value(&f);
            // SUBJECT compares the unfolded value and its decoded form:
            // their words prove a one-word needle.
            let name = address::field_name(&f);
            let subject = name.eq_ignore_ascii_case(b"subject");
            if subject {
                self.words.add_raw(Place::Subject, v);
            }
            if text::has_encoded_word(v)
                && let Some(d) = text::decode_unstructured(v)
            {
                self.grams.add_lowercased(&d);
                self.header_grams.add_lowercased(&d);
                self.words.add_text(Place::Header, &d);
                if subject {
                    self.words.add_text(Place::Subject, &d);
                }
            }
            if address::is_search_field(name) {
                // FROM, TO, CC, BCC compare the addresses rebuilt
                // (comments and folding dropped), decoded too.
                let items = address::parse(v);
                let field = String::from_utf8_lossy(name).to_ascii_lowercase();
                for a in address::address_parts(&items) {
                    if let Some(t) = words::address_term(&field, &a) {
                        self.words.add_term(t);
                    }
                }
                if !items.is_empty() {
                    let st = address::search_text(&items);
                    self.header_grams.add_ascii_folded(&st);
                    if text::has_encoded_word(&st)
                        && let Some(d) = text::decode_unstructured(&st)
                    {
                        self.header_grams.add_lowercased(&d);
                    }
                }
            }
        }
        if self.grams.len() + self.header_grams.len() > grams::MAX_GRAMS {
            self.grams.take();
            self.header_grams.take();
            self.words.take().for_each(drop);
            return self.add_unindexed(uid);
        }
        let mut doc = TantivyDocument::new();
        doc.add_u64(self.f.key, key(self.uidvalidity, uid));
        doc.add_u64(self.f.gram, u64::from(grams::HEADER_TERMS));
        for g in self.grams.take() {
            doc.add_u64(self.f.gram, u64::from(g));
        }
        for g in self.header_grams.take() {
            doc.add_u64(self.f.gram, u64::from(g | grams::HEADER));
        }
        // Words only prove matches: too many are dropped, not cut.
        let many = self.words.len() > MAX_WORDS;
        for w in self.words.take() {
            if !many {
                doc.add_text(self.f.word, w);
            }
        }
        self.push(uid, doc)
    }

    /// Indexes message `uid` of `size` bytes, read by `read` unless it
    /// is too large: `Ok(None)` when it is gone (expunged: skipped), an
    /// error when it cannot be read (then marked unindexed, so searches
    /// read it and report the error).
    pub fn add_read<E: std::fmt::Display>(
        &mut self,
        uid: u32,
        (size, header_size): (u64, u64),
        read: impl FnOnce() -> std::result::Result<Option<Vec<u8>>, E>,
    ) -> Result<()> {
        if size > INDEX_MAX {
            return self.add_unindexed(uid);
        }
        match read() {
            Ok(Some(raw)) => self.add(uid, &raw, header_size),
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(uid, "not indexed: {e}");
                self.add_unindexed(uid)
            }
        }
    }

    /// Records message `uid` as not indexed (unreadable, too large): it
    /// is a candidate for every needle.
    pub fn add_unindexed(&mut self, uid: u32) -> Result<()> {
        let mut doc = TantivyDocument::new();
        doc.add_u64(self.f.key, key(self.uidvalidity, uid));
        doc.add_u64(self.f.gram, u64::from(grams::UNINDEXED));
        // A candidate for header needles as for any (UNINDEXED): marked,
        // so that it does not count as a document of an older version.
        doc.add_u64(self.f.gram, u64::from(grams::HEADER_TERMS));
        self.push(uid, doc)
    }

    fn push(&mut self, uid: u32, doc: TantivyDocument) -> Result<()> {
        debug_assert!(uid > self.high);
        self.writer.add_document(doc).map_err(tv(&self.dir))?;
        self.high = self.high.max(uid);
        self.added += 1;
        Ok(())
    }

    /// Leaves segments of more than `max_docs` documents out of merges,
    /// so a small catch-up never waits for a large merge (a rebuild merges
    /// everything).
    pub fn limit_merges(&mut self, max_docs: usize) {
        let mut p = tantivy::indexer::LogMergePolicy::default();
        p.set_max_docs_before_merge(max_docs);
        self.writer.set_merge_policy(Box::new(p));
    }

    /// Drops every document (a rebuild then adds the messages again).
    pub fn clear(&mut self) -> Result<()> {
        self.writer.delete_all_documents().map_err(tv(&self.dir))?;
        self.high = 0;
        Ok(())
    }

    /// Removes the documents of `uids` (expunged messages).
    pub fn remove(&mut self, uids: &[u32]) {
        for &u in uids {
            self.writer
                .delete_term(Term::from_field_u64(self.f.key, key(self.uidvalidity, u)));
        }
    }

    /// The committed state (what readers see now).
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.reader.reload().map_err(tv(&self.dir))?;
        Snapshot::of(self.reader.searcher(), self.f, self.uidvalidity, &self.dir)
    }

    /// Makes what was added and removed visible, at once, then lets
    /// tantivy finish the segment merges it started (still under the
    /// lock), so the number of segments stays logarithmic.
    pub fn commit(mut self) -> Result<()> {
        self.writer.commit().map_err(tv(&self.dir))?;
        let Writer {
            dir, writer, _lock, ..
        } = self;
        writer.wait_merging_threads().map_err(tv(&dir))?;
        drop(_lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(dir: &Path, uv: u32, needle: &str) -> Vec<u32> {
        let s = snapshot(dir, uv).unwrap().unwrap();
        s.candidates(&probe(needle.as_bytes()).unwrap()).unwrap()
    }

    /// Header needles are looked up in the fields unfolded (a fold or a
    /// bare CR inside a field is not in the stored bytes' trigrams), and
    /// a document indexed before fields were (no
    /// [`grams::HEADER_TERMS`]) is a candidate for every header needle.
    #[test]
    fn header_needles_span_folds_and_older_documents_stay_candidates() {
        let t = tempfile::tempdir().unwrap();
        let mut w = writer(t.path(), 7, MIN_MEMORY).unwrap().unwrap();
        let folded = b"Subject: weekly\r\n status\rmeeting\r\n\r\nbody\r\n";
        w.add(1, folded, folded.len() as u64 - 6).unwrap();
        w.add(2, b"Subject: other\r\n\r\nweekly status\r\n", 18)
            .unwrap();
        // As an older version indexed: the stored bytes, no marker.
        let mut g = Grams::default();
        g.add_ascii_folded(b"Subject: weekly\r\n\tstatus\r\n\r\n");
        let mut doc = TantivyDocument::new();
        doc.add_u64(w.f.key, key(7, 3));
        for x in g.take() {
            doc.add_u64(w.f.gram, u64::from(x));
        }
        w.push(3, doc).unwrap();
        w.commit().unwrap();
        let s = snapshot(t.path(), 7).unwrap().unwrap();
        let p = probe(b"Weekly Status").unwrap();
        assert_eq!(s.candidates(&p).unwrap(), [2], "the stored bytes");
        // Header needles meet the header fields only, unfolded.
        assert_eq!(s.header_candidates(&p).unwrap(), [1, 3]);
        let p = probe(b"statusmeeting").unwrap();
        assert_eq!(s.header_candidates(&p).unwrap(), [1, 3]);
        let p = probe(b"body").unwrap();
        assert_eq!(s.candidates(&p).unwrap(), [1]);
        assert_eq!(s.header_candidates(&p).unwrap(), [3]);
        assert_eq!(s.header_candidates(&probe(b"zebra").unwrap()).unwrap(), [3]);
        assert!(s.unmarked_headers().unwrap());

        // Without older documents (unindexed ones are marked) the query
        // for them is not made.
        let mut w = writer(t.path(), 7, MIN_MEMORY).unwrap().unwrap();
        w.clear().unwrap();
        w.add(1, folded, folded.len() as u64 - 6).unwrap();
        w.add_unindexed(2).unwrap();
        w.commit().unwrap();
        let s = snapshot(t.path(), 7).unwrap().unwrap();
        assert!(!s.unmarked_headers().unwrap());
        assert_eq!(s.header_candidates(&probe(b"body").unwrap()).unwrap(), [2]);
        assert_eq!(
            s.header_candidates(&probe(b"weekly").unwrap()).unwrap(),
            [1, 2]
        );
    }

    #[test]
    fn index_search_remove_and_uidvalidity() {
        let t = tempfile::tempdir().unwrap();
        assert!(snapshot(t.path(), 7).unwrap().is_none());
        let mut w = writer(t.path(), 7, MIN_MEMORY).unwrap().unwrap();
        assert!(
            writer(t.path(), 7, MIN_MEMORY).unwrap().is_none(),
            "one writer at a time"
        );
        w.add(1, b"Subject: hello\r\n\r\nThe quick brown fox\r\n", 18)
            .unwrap();
        w.add(
            3,
            b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nlazy dog\r\n",
            40,
        )
        .unwrap();
        w.add_unindexed(4).unwrap();
        w.commit().unwrap();
        assert_eq!(find(t.path(), 7, "QUICK"), [1, 4]);
        assert_eq!(find(t.path(), 7, "grüße"), [3, 4]);
        assert_eq!(find(t.path(), 7, "zebra"), [4]);
        let s = snapshot(t.path(), 7).unwrap().unwrap();
        assert_eq!((s.high_water(), s.documents()), (4, 3));
        assert_eq!(s.indexed().unwrap(), [1, 3, 4]);
        assert_eq!(s.proven("Quick", false).unwrap(), [1]);
        assert_eq!(s.proven("qui", false).unwrap(), Vec::<u32>::new());
        assert_eq!(s.proven("hello", false).unwrap(), Vec::<u32>::new());
        assert_eq!(s.proven("hello", true).unwrap(), [1]);
        assert_eq!(s.proven("GRÜSSE", true).unwrap(), Vec::<u32>::new());
        assert_eq!(s.proven("GRÜßE", true).unwrap(), [3]);

        let mut w = writer(t.path(), 7, MIN_MEMORY).unwrap().unwrap();
        assert_eq!(w.high_water(), 4);
        w.remove(&[1]);
        w.commit().unwrap();
        assert_eq!(find(t.path(), 7, "quick"), [4]);

        // Another UIDVALIDITY: the old documents do not count, and the
        // next writer drops them.
        let s = snapshot(t.path(), 8).unwrap().unwrap();
        assert_eq!((s.high_water(), s.documents()), (0, 0));
        assert_eq!(find(t.path(), 8, "lazy"), Vec::<u32>::new());
        let mut w = writer(t.path(), 8, MIN_MEMORY).unwrap().unwrap();
        assert_eq!(w.high_water(), 0);
        w.add(1, b"\r\nlazy cat", 2).unwrap();
        w.commit().unwrap();
        assert_eq!(find(t.path(), 8, "lazy"), [1]);
        assert_eq!(find(t.path(), 7, "lazy"), Vec::<u32>::new());
    }

    #[test]
    fn a_corrupt_index_is_an_error_then_replaced() {
        let t = tempfile::tempdir().unwrap();
        let mut w = writer(t.path(), 1, MIN_MEMORY).unwrap().unwrap();
        w.add(1, b"\r\nsome text", 2).unwrap();
        w.commit().unwrap();
        std::fs::write(t.path().join(DIR).join("meta.json"), b"{garbage").unwrap();
        READERS.lock().unwrap().take();
        assert!(snapshot(t.path(), 1).is_err());
        let mut w = writer(t.path(), 1, MIN_MEMORY).unwrap().unwrap();
        assert_eq!(w.high_water(), 0);
        w.add(2, b"\r\nother text", 2).unwrap();
        w.commit().unwrap();
        assert_eq!(find(t.path(), 1, "text"), [2]);
        remove(t.path()).unwrap();
        assert!(snapshot(t.path(), 1).unwrap().is_none());
    }
}
