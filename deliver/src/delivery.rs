//! Where a message goes (user, mailbox, fallback, autocreate, plus
//! addressing) and the checks around storing it (quota, size, bad input).
//! Shared by one-shot and LMTP mode.

use std::io::Read;
use std::time::{Duration, Instant};

use storage::config::Config;
use storage::dedup::Key;
use storage::{AppendOptions, Error, Flags, MailboxName, StagedMessage, Store, UserName};

use crate::group::{Stored, Submission, commit_batch};
use crate::input::{BadInput, Normalizer};
use crate::status::{EX_CANTCREAT, EX_DATAERR, Failure, from_storage};

pub struct Settings {
    pub store: Store,
    pub config: Config,
    pub autocreate: bool,
    pub no_fallback: bool,
    pub quota_hard: bool,
    pub ignore_quota: bool,
    pub max_size: Option<u64>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Duplicate suppression window in seconds; 0 = off.
    pub dedup_window: u64,
    /// Where Sieve's `include :global` finds scripts (`NAME.sieve`).
    pub sieve_global_dir: Option<std::path::PathBuf>,
    /// The command Sieve's redirect and vacation send mail with (split on
    /// white space; `-i -f SENDER -- RCPT` are appended).
    pub sendmail: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub user: UserName,
    pub mailbox: MailboxName,
}

/// A stored message, for the log line.
#[derive(Debug)]
pub struct Delivered {
    /// `None`: a duplicate within the window, accepted and not stored.
    pub uid: Option<u32>,
    pub size: u64,
    pub message_id: Option<String>,
    pub elapsed: Duration,
}

fn st(e: Error) -> Failure {
    from_storage(&e)
}

pub fn nul_failure() -> Failure {
    Failure::new(EX_DATAERR, "5.6.0", "message contains a NUL byte")
}

pub fn empty_failure() -> Failure {
    Failure::new(EX_DATAERR, "5.6.0", "empty message")
}

/// The `detail` of `user+detail@domain` (recipient delimiter `+`).
pub fn address_detail(addr: &str) -> Option<&str> {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    local
        .split_once('+')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

impl Settings {
    /// Resolves a delivery target.
    ///
    /// - The user is known when the store has their INBOX; otherwise
    ///   `--autocreate` creates it, else 67 `5.1.1`.
    /// - `mailbox` (`-m`; empty counts as absent, as Postfix passes an
    ///   empty `${extension}`): used when it exists; created with
    ///   `--autocreate`; otherwise INBOX, or with `--no-fallback` exit 73
    ///   `5.2.0` (EX_CANTCREAT: the output "file" cannot be created).
    ///   An invalid name is treated as a missing mailbox that cannot be
    ///   created.
    /// - `detail` (from `-a user+detail@domain` or an LMTP recipient): used
    ///   only when no `-m` is given and only when that mailbox exists. It is
    ///   never created and never fails the delivery, since any sender can
    ///   choose it.
    pub fn resolve(
        &self,
        user: &str,
        mailbox: Option<&str>,
        detail: Option<&str>,
    ) -> Result<Target, Failure> {
        let user = UserName::new(user).map_err(st)?;
        let inbox = MailboxName::inbox();
        if !self.store.user_exists(&user).map_err(st)? {
            if !self.autocreate {
                return Err(st(Error::NoSuchUser(user.to_string())));
            }
            if self.store.ensure_mailbox(&user, &inbox).map_err(st)? {
                tracing::debug!(user = %user, "created INBOX on first delivery");
            }
        }
        let found = |name: MailboxName| Target {
            user: user.clone(),
            mailbox: name,
        };
        if let Some(m) = mailbox.filter(|m| !m.is_empty()) {
            let missing = match MailboxName::new(m) {
                Ok(name) => {
                    if self.store.mailbox_exists(&user, &name).map_err(st)? {
                        return Ok(found(name));
                    }
                    if self.autocreate {
                        self.store.ensure_mailbox(&user, &name).map_err(st)?;
                        return Ok(found(name));
                    }
                    format!("mailbox {m:?} does not exist")
                }
                Err(e) => e.to_string(),
            };
            if self.no_fallback {
                return Err(Failure::new(EX_CANTCREAT, "5.2.0", missing));
            }
            tracing::debug!(user = %user, mailbox = m, "{missing}; delivering to INBOX");
            return Ok(found(inbox));
        }
        if let Some(d) = detail.filter(|d| !d.is_empty())
            && let Ok(name) = MailboxName::new(d)
            && self.store.mailbox_exists(&user, &name).map_err(st)?
        {
            return Ok(found(name));
        }
        Ok(found(inbox))
    }

    /// Refuses when `size` more bytes would put `user` over quota: 75
    /// `4.2.2` (Postfix retries), or 73 `5.2.2` with `--quota-hard`.
    pub fn check_quota(&self, user: &UserName, size: u64) -> Result<(), Failure> {
        if self.ignore_quota {
            return Ok(());
        }
        let Some(limit) = self.config.quota_for(user.as_str()) else {
            return Ok(());
        };
        let used = self.store.usage(user).map_err(st)?;
        if used.saturating_add(size) > limit {
            let mut f = st(Error::OverQuota { used, size, limit });
            if self.quota_hard {
                f.exit = EX_CANTCREAT;
                f.status = "5.2.2";
            }
            return Err(f);
        }
        Ok(())
    }

    /// The duplicate key of a message, when suppression is on and it has
    /// a (non-empty) Message-ID.
    pub fn dedup_key(&self, message_id: Option<&str>) -> Option<Key> {
        if self.dedup_window == 0 {
            return None;
        }
        message_id.and_then(Key::from_message_id)
    }

    pub fn append_options(&self) -> AppendOptions {
        AppendOptions {
            flags: self.flags,
            keywords: self.keywords.clone(),
            max_size: self.max_size,
            ..Default::default()
        }
    }

    /// One-shot delivery: streams `input` through the normalizer into the
    /// target's staging area, checks it, commits (or, with duplicate
    /// suppression on, finds it in the duplicate log and drops it). On any
    /// error the staged file is dropped (removed) and nothing was committed.
    pub fn deliver_stream(
        &self,
        target: &Target,
        input: impl Read,
        sender: Option<&str>,
    ) -> Result<Delivered, Failure> {
        let start = Instant::now();
        let mut mbox = self
            .store
            .open_mailbox(&target.user, &target.mailbox)
            .map_err(st)?;
        // Another delivery committing here now: flush this message on its
        // own, outside the lock, so the two flushes overlap (PROTOCOL.md §3).
        mbox.set_unordered_appends(!mbox.lock_in_use());
        let mut norm = Normalizer::new(input, true, sender);
        let staged = mbox.stage(&mut norm, self.append_options());
        if norm.bad == Some(BadInput::Nul) {
            return Err(nul_failure());
        }
        let mut staged: StagedMessage = staged.map_err(st)?;
        if norm.content_bytes == 0 {
            return Err(empty_failure());
        }
        norm.headers.finish();
        staged.opts.sent_date = norm
            .headers
            .date
            .as_deref()
            .and_then(storage::sent_date::parse)
            .unwrap_or(0);
        self.check_quota(&target.user, staged.size)?;
        let size = staged.size;
        let message_id = norm.headers.message_id.take();
        let sub = Submission {
            staged: vec![staged],
            key: self.dedup_key(message_id.as_deref()),
        };
        let stored = commit_batch(&mut mbox, self.dedup_window, vec![sub])
            .pop()
            .expect("one result per submission")?;
        Ok(Delivered {
            uid: match stored {
                Stored::Uids(u) => Some(u[0]),
                Stored::Duplicate => None,
            },
            size,
            message_id,
            elapsed: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::address_detail;

    #[test]
    fn details() {
        assert_eq!(address_detail("bob+lists@example.org"), Some("lists"));
        assert_eq!(address_detail("<bob+a+b@x>"), Some("a+b"));
        assert_eq!(address_detail("bob@x"), None);
        assert_eq!(address_detail("bob+@x"), None);
        assert_eq!(address_detail("bob+x"), Some("x"));
    }
}
