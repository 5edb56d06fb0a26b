//! The legacy reader of seed 002, reproduced on purpose: Cyrus 2.x
//! `index_check()` `stat()`ed the index without a lock, compared
//! `st_mtime` in whole seconds, and only when it differed re-read the
//! header (fstat, cache that mtime, parse), still without a lock.
//!
//! The bug: deliver writes the record (mtime becomes second S), this
//! reader sees S, caches it and reads the *old* header; deliver then writes
//! the new header within the same second S; every later check compares S
//! with S and concludes nothing changed, until some unrelated write lands
//! in another second. Never use this outside the race harness.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use storage::Dir;
use storage::Header;
use storage::internals::index::{INDEX_NAME, IndexFile};

pub struct MtimeReader {
    path: PathBuf,
    index: IndexFile,
    /// Whole seconds, as `time_t st_mtime` was.
    cached_mtime: i64,
    pub header: Header,
}

impl MtimeReader {
    /// SELECT: open the index, read the header, remember the mtime.
    pub fn open(mailbox_dir: &Path) -> storage::Result<MtimeReader> {
        let index = IndexFile::open_read_only(&Dir::open_root(mailbox_dir)?)?;
        let mut r = MtimeReader {
            path: mailbox_dir.join(INDEX_NAME),
            index,
            cached_mtime: i64::MIN,
            header: Header::default(),
        };
        r.read_index_header()?;
        Ok(r)
    }

    /// One NOOP. True when it re-read the header.
    pub fn check(&mut self) -> storage::Result<bool> {
        let st = std::fs::metadata(&self.path).map_err(|e| storage::Error::Io {
            op: "stat",
            path: self.path.clone(),
            source: e,
        })?;
        if st.mtime() == self.cached_mtime {
            return Ok(false); // "nothing changed"
        }
        self.read_index_header()?;
        Ok(true)
    }

    /// `mailbox_read_index_header`: fstat, cache the mtime, then parse the
    /// header, all without a lock.
    fn read_index_header(&mut self) -> storage::Result<()> {
        let st = self.index.file.metadata().map_err(|e| storage::Error::Io {
            op: "fstat",
            path: self.path.clone(),
            source: e,
        })?;
        self.cached_mtime = st.mtime();
        self.header = self.index.read_header()?;
        Ok(())
    }
}
