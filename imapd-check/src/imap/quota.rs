//! QUOTA (RFC 9208) over the store's quota: one quota root, `""`, per
//! user, holding all of the user's mailboxes, with the one resource the
//! store enforces, STORAGE (the sum of the messages' RFC822.SIZE, reported
//! in units of 1024 octets, RFC 9208 §5.1). Limits come from the store's
//! config (`quota`, `quota.USER`), set by the administrator: SETQUOTA is
//! refused and QUOTASET is not advertised. A user without a limit has no
//! quota root.

use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::mailbox::Mailbox as WireMailbox;

use super::conn::{Done, Fail, Session, no, ok};
use super::mailboxes::mailbox_name;
use super::wire;

/// The name of every user's quota root.
const ROOT: &str = "";

impl Session {
    /// RFC 9208 §4.1.2: the quota roots of a mailbox and their quotas.
    pub(super) fn get_quota_root(&mut self, m: &WireMailbox) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name(m)?;
        if !self.store.mailbox_exists(&user, &name)? {
            return no(Some("NONEXISTENT"), "No such mailbox");
        }
        let quota = self.quota(&user)?;
        self.buf.extend_from_slice(b"* QUOTAROOT ");
        wire::mailbox(&mut self.buf, name.as_str());
        if quota.is_some() {
            self.buf.push(b' ');
            wire::string(&mut self.buf, ROOT.as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
        if let Some(q) = quota {
            self.write_quota(q);
        }
        ok("GETQUOTAROOT completed")
    }

    /// RFC 9208 §4.1.1: the quota of a root.
    pub(super) fn get_quota(&mut self, root: &AString) -> Result<Done, Fail> {
        let user = self.user()?;
        let root: &[u8] = root.as_ref();
        match self.quota(&user)? {
            Some(q) if root == ROOT.as_bytes() => {
                self.write_quota(q);
                ok("GETQUOTA completed")
            }
            _ => no(Some("NONEXISTENT"), "No such quota root"),
        }
    }

    /// RFC 9208 §4.1.3: limits are the administrator's (the store's
    /// config), so a user may not change them.
    pub(super) fn set_quota(&mut self) -> Result<Done, Fail> {
        self.user()?;
        no(
            Some("NOPERM"),
            "Quotas are set by the administrator in the store's config",
        )
    }

    fn write_quota(&mut self, q: storage::transfer::Quota) {
        self.buf.extend_from_slice(b"* QUOTA ");
        wire::string(&mut self.buf, ROOT.as_bytes());
        self.buf.extend_from_slice(
            format!(
                " (STORAGE {} {})\r\n",
                q.used.div_ceil(1024),
                q.limit / 1024
            )
            .as_bytes(),
        );
    }
}
