//! IMAP subscriptions (SUBSCRIBE, LSUB): `USER/.subscriptions`, one
//! name per line, changed only under the user's name lock
//! (`Store::lock_names`) and replaced whole (temp, fdatasync, rename,
//! directory fsync), so concurrent sessions never lose each other's
//! changes and a power cut leaves the old list or the new one.

use std::collections::BTreeSet;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};
use crate::index::Durability;
use crate::names::UserName;
use crate::store::Store;

const SUBSCRIPTIONS: &str = ".subscriptions";
const SUBSCRIPTIONS_TMP: &str = ".subscriptions.tmp";
/// The largest subscription list written or read (docs/FORMAT.md §7): a
/// SUBSCRIBE that would exceed it is refused ([`Error::TooLarge`]), and a
/// larger file is corrupt, never read into memory.
pub const MAX_SUBSCRIPTIONS_BYTES: u64 = 4 << 20;

impl Store {
    /// The names `user` subscribed to (IMAP SUBSCRIBE), whether or not
    /// such mailboxes exist. Empty if the user never subscribed.
    pub fn subscriptions(&self, user: &UserName) -> Result<BTreeSet<String>> {
        let dir = self.user_dir(user, false)?;
        read_subscriptions(&dir)
    }

    /// Adds `name` to `user`'s subscriptions, or removes it. Under the
    /// user's name lock, so concurrent sessions never lose each other's
    /// changes; the file is replaced whole (temp, fdatasync, rename,
    /// directory fsync).
    pub fn set_subscribed(&self, user: &UserName, name: &str, on: bool) -> Result<()> {
        let dir = self.user_dir(user, true)?;
        let _names = self.lock_names(&dir)?;
        let mut subs = read_subscriptions(&dir)?;
        let changed = if on {
            subs.insert(name.to_string())
        } else {
            subs.remove(name)
        };
        if !changed {
            return Ok(());
        }
        let text: String = subs.iter().map(|s| format!("{s}\n")).collect();
        if text.len() as u64 > MAX_SUBSCRIPTIONS_BYTES {
            return Err(Error::TooLarge {
                size: text.len() as u64,
                limit: MAX_SUBSCRIPTIONS_BYTES,
            });
        }
        let durable = self.options().durability == Durability::Full;
        dir.replace_file(SUBSCRIPTIONS_TMP, SUBSCRIPTIONS, text.as_bytes(), durable)?;
        if durable {
            dir.fsync()?;
        }
        Ok(())
    }
}

fn read_subscriptions(user_dir: &Dir) -> Result<BTreeSet<String>> {
    let os = fsutil::os(SUBSCRIPTIONS.as_bytes());
    let mut f = match user_dir.open_file(os, OFlag::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => {
            return Ok(BTreeSet::new());
        }
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(&mut f, MAX_SUBSCRIPTIONS_BYTES + 1),
        &mut text,
    )
    .map_err(|e| Error::io("read", user_dir.child_path(os), e))?;
    if text.len() as u64 > MAX_SUBSCRIPTIONS_BYTES {
        return Err(Error::corrupt(
            user_dir.child_path(os),
            MAX_SUBSCRIPTIONS_BYTES,
            format!("subscription list larger than {MAX_SUBSCRIPTIONS_BYTES} bytes"),
        ));
    }
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}
