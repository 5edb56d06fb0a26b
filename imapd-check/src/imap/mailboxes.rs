//! The commands on mailboxes as a whole: SELECT,
//! CREATE, DELETE, RENAME, LIST/LSUB, (UN)SUBSCRIBE, STATUS, APPEND.

use std::collections::BTreeSet;

use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox as WireMailbox;
use imap_codec::imap_types::status::StatusDataItemName;
use storage::special_use::SpecialUse;
use storage::{Flags, MailboxName, UserName};

use super::conn::{Done, Fail, Selected, Session, bad, no, ok, ok_code};
use super::wire;

/// The store's name for a mailbox the client named.
pub(super) fn mailbox_name(m: &WireMailbox) -> Result<MailboxName, Fail> {
    match m {
        WireMailbox::Inbox => Ok(MailboxName::inbox()),
        WireMailbox::Other(o) => mailbox_name_raw(o.as_ref()),
    }
}

/// The store's name for a mailbox name as sent (INBOX in any case).
pub(super) fn mailbox_name_raw(raw: &[u8]) -> Result<MailboxName, Fail> {
    if raw.eq_ignore_ascii_case(b"INBOX") {
        return Ok(MailboxName::inbox());
    }
    // Names are UTF-8 (RFC 9051 5.1); other bytes are refused, never
    // replaced.
    let raw = std::str::from_utf8(raw)
        .map_err(|_| Fail::No(Some("CANNOT"), "Mailbox name is not UTF-8".into()))?;
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    MailboxName::new(trimmed).map_err(|e| Fail::No(Some("CANNOT"), e.to_string()))
}

/// Splits flags into system flags and keywords; `\Recent` and unknown
/// system flags are refused.
pub(super) fn split_flags(flags: &[Flag]) -> Result<(Flags, Vec<String>), Fail> {
    let mut f = Flags::empty();
    let mut kw = Vec::new();
    for fl in flags {
        match fl {
            Flag::Seen => f = f.union(Flags::SEEN),
            Flag::Answered => f = f.union(Flags::ANSWERED),
            Flag::Flagged => f = f.union(Flags::FLAGGED),
            Flag::Deleted => f = f.union(Flags::DELETED),
            Flag::Draft => f = f.union(Flags::DRAFT),
            Flag::Keyword(a) => kw.push(a.as_ref().to_string()),
            // RFC 3501 2.3.2, 6.4.6: \Recent is the server's to set.
            Flag::Extension(_) if fl.to_string().eq_ignore_ascii_case("\\Recent") => {
                return bad("\\Recent cannot be set or cleared by a client");
            }
            Flag::Extension(_) => return bad("Unknown system flag"),
        }
    }
    Ok((f, kw))
}

/// IMAP LIST wildcard match (RFC 3501 6.3.8): `*` anything, `%`
/// anything but the delimiter `/`. One pass over the pattern keeping the
/// set of name positions reachable, so the cost is bounded by pattern ×
/// name length whatever the client sends (no backtracking blow-up).
pub(super) fn wildcard(pat: &[u8], name: &[u8]) -> bool {
    // INBOX is case-insensitive (RFC 3501 5.1): so is its name in a
    // pattern (`inbox/%`, `inb*`); other names are compared exactly.
    if pat == b"*" {
        // Everything (LIST "" "*", the most common pattern).
        return true;
    }
    let inbox = name.starts_with(b"INBOX") && matches!(name.get(5), None | Some(b'/'));
    let ci = if inbox { 5 } else { 0 };
    let n = name.len();
    // A run of wildcards is one (`*` if it holds one, else `%`), and a
    // pattern with more literal bytes than the name cannot match: the
    // work is then at most about 2n × n steps.
    let mut compact: Vec<u8> = Vec::new();
    for &p in pat {
        match (compact.last_mut(), p) {
            (Some(last @ (b'*' | b'%')), b'*' | b'%') => {
                if p == b'*' {
                    *last = b'*';
                }
            }
            _ => compact.push(p),
        }
    }
    if compact.iter().filter(|&&b| b != b'*' && b != b'%').count() > n {
        return false;
    }
    let mut at = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    at[0] = true;
    for &p in &compact {
        next.fill(false);
        match p {
            b'*' | b'%' => {
                let mut reach = false;
                for i in 0..=n {
                    reach |= at[i];
                    next[i] = reach;
                    // `%` cannot run over a delimiter.
                    if p == b'%' && i < n && name[i] == b'/' {
                        reach = false;
                    }
                }
            }
            c => {
                for i in 0..n {
                    let same = name[i] == c || i < ci && name[i].eq_ignore_ascii_case(&c);
                    next[i + 1] = at[i] && same;
                }
            }
        }
        std::mem::swap(&mut at, &mut next);
        if !at.contains(&true) {
            return false;
        }
    }
    at[n]
}

/// Canonical `INBOX` prefix in a pattern (INBOX is case-insensitive).
pub(super) fn canonical_pattern(p: &str) -> String {
    if p.len() >= 5
        && p[..5].eq_ignore_ascii_case("INBOX")
        && matches!(p.as_bytes().get(5), None | Some(b'/'))
    {
        format!("INBOX{}", &p[5..])
    } else {
        p.to_string()
    }
}

impl Session {
    /// A user who can log in has an INBOX, even before any delivery
    /// (Dovecot and Cyrus create it at first login too). A failure is
    /// only logged: SELECT then says what is wrong.
    pub(super) fn ensure_inbox(&self, user: &UserName) {
        if let Err(e) = self.store.ensure_mailbox(user, &MailboxName::inbox()) {
            tracing::warn!(user = %user, error = %e, "could not create the INBOX at login");
        }
        // RFC 6154: an account whose only mailbox is INBOX also gets
        // Drafts, Sent, Trash, Junk and Archive with their attributes
        // (storage::special_use; docs/OPERATIONS.md says when).
        match self.store.provision_special_use(user) {
            Ok(made) if !made.is_empty() => {
                tracing::info!(user = %user, ?made, "created the special-use mailboxes");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "could not create the special-use mailboxes");
            }
        }
    }

    pub(super) fn select(
        &mut self,
        m: &WireMailbox,
        params: &[SelectParameter],
        read_only: bool,
    ) -> Result<Done, Fail> {
        let user = self.user()?;
        // A failed SELECT (even a BAD one) leaves no mailbox selected
        // (RFC 3501 6.3.1).
        let old = self.close_for_select();
        let resync = self.resync_param(params)?;
        let name = mailbox_name(m)?;
        if params
            .iter()
            .any(|p| matches!(p, SelectParameter::CondStore))
        {
            self.condstore = true;
        }
        let (mbox, mut view, resync, shared) = self.open_view(&user, &name, resync, old)?;
        self.write_flags(view.keywords(), read_only);
        let first_unseen = view.first_unseen();
        let mut sel = Selected {
            name,
            mbox,
            view,
            read_only,
            recent: if self.rev2 {
                super::recent::Recent::off()
            } else {
                Default::default()
            },
            shared,
        };
        // RFC 3501 6.3.1: SELECT claims the \Recent messages; EXAMINE
        // (6.3.2) only shows those nobody claimed.
        sel.learn_recent();
        let recent = sel.recent.count(&sel.view);
        let view = &sel.view;
        self.buf
            .extend_from_slice(format!("* {} EXISTS\r\n", view.len()).as_bytes());
        if self.rev2 {
            // RFC 9051 6.3.2: no RECENT, no UNSEEN; the mailbox's LIST.
            self.write_selected_list(&user, &sel.name)?;
        } else {
            self.buf
                .extend_from_slice(format!("* {recent} RECENT\r\n").as_bytes());
            if let Some(s) = first_unseen {
                self.buf
                    .extend_from_slice(format!("* OK [UNSEEN {s}] First unseen\r\n").as_bytes());
            }
        }
        let view = &sel.view;
        self.buf.extend_from_slice(
            format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n* OK [HIGHESTMODSEQ {}] Highest\r\n",
                view.uidvalidity(),
                view.uid_next(),
                view.highest_modseq().max(1)
            )
            .as_bytes(),
        );
        if let Some(r) = &resync {
            self.write_resync(&sel.view, r);
        }
        self.sel = Some(sel);
        if read_only {
            ok_code("READ-ONLY".into(), "EXAMINE completed")
        } else {
            ok_code("READ-WRITE".into(), "SELECT completed")
        }
    }

    pub(super) fn create(&mut self, m: &WireMailbox) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name(m)?;
        super::rev2::check_new_name(&name)?;
        self.store.create_mailbox(&user, &name)?;
        ok("CREATE completed")
    }

    /// CREATE with `(USE (...))` (RFC 6154 §3, CREATE-SPECIAL-USE). `\All`
    /// and `\Flagged` name virtual mailboxes this store does not have.
    pub(super) fn create_with_use(&mut self, m: &[u8], uses: &[String]) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name_raw(m)?;
        super::rev2::check_new_name(&name)?;
        let mut parsed = Vec::with_capacity(uses.len());
        for u in uses {
            match SpecialUse::parse(u) {
                Some(u) => parsed.push(u),
                None => {
                    return no(
                        Some("USEATTR"),
                        &format!("Special use {u} is not supported here"),
                    );
                }
            }
        }
        self.store.create_mailbox_with_use(&user, &name, &parsed)?;
        ok("CREATE completed")
    }

    pub(super) fn delete(&mut self, m: &WireMailbox) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name(m)?;
        if self.sel.as_ref().is_some_and(|s| s.name == name) {
            self.sel = None;
        }
        match self.store.delete_mailbox(&user, &name) {
            // RFC 9051 6.3.5, 7.1: a name that is only the parent of
            // other mailboxes (\Noselect) cannot be deleted.
            Err(storage::Error::NoSuchMailbox(_))
                if self.mailbox_tree(&user)?.1.contains(name.as_str()) =>
            {
                return no(
                    Some("HASCHILDREN"),
                    &format!("{name} is not a mailbox, only the parent of others"),
                );
            }
            r => r?,
        }
        ok("DELETE completed")
    }

    pub(super) fn rename(&mut self, from: &WireMailbox, to: &WireMailbox) -> Result<Done, Fail> {
        let user = self.user()?;
        let (from, to) = (mailbox_name(from)?, mailbox_name(to)?);
        super::rev2::check_new_name(&to)?;
        self.store.rename_mailbox(&user, &from, &to)?;
        ok("RENAME completed")
    }

    pub(super) fn subscriptions(&self, user: &UserName) -> Result<BTreeSet<String>, Fail> {
        self.store
            .subscriptions(user)
            .map_err(|e| Fail::No(Some("SERVERBUG"), format!("cannot read subscriptions: {e}")))
    }

    pub(super) fn subscribe(&mut self, m: &WireMailbox, on: bool) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name(m)?;
        self.store
            .set_subscribed(&user, name.as_str(), on)
            .map_err(|e| Fail::No(Some("SERVERBUG"), format!("cannot save subscriptions: {e}")))?;
        ok(if on {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        })
    }

    /// `* WHAT (\Noselect) "/" root` for an empty pattern (RFC 3501
    /// 6.3.8): the hierarchy delimiter and the root name of the reference
    /// (its first level with the delimiter, or "").
    pub(super) fn write_root(&mut self, what: &str, reference: &str) {
        let root = reference.find('/').map_or("", |i| &reference[..=i]);
        self.buf
            .extend_from_slice(format!("* {what} (\\Noselect) \"/\" ").as_bytes());
        wire::mailbox(&mut self.buf, root);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// LSUB (RFC 3501 6.3.9); LIST in all its forms is `list_extended`.
    pub(super) fn lsub(&mut self, reference: &WireMailbox, pattern: &[u8]) -> Result<Done, Fail> {
        let user = self.user()?;
        let reference = match reference {
            WireMailbox::Inbox => "INBOX".to_string(),
            WireMailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
        };
        let pattern = String::from_utf8_lossy(pattern).into_owned();
        if pattern.is_empty() {
            self.write_root("LSUB", &reference);
            return ok("LSUB completed");
        }
        let full = canonical_pattern(&format!("{reference}{pattern}"));
        let (boxes, all) = self.mailbox_tree(&user)?;
        let subs = self.subscriptions(&user)?;
        // RFC 3501 6.3.9: with `%`, an unsubscribed parent of a subscribed
        // name the pattern stops above is listed, as \Noselect. Only a `%`
        // stops above a name: one the pattern misses even with each `%`
        // made `*` lists no parent (`LSUB "" *x` lists no unsubscribed
        // `a/x` for a subscribed `a/x/y`, as Dovecot).
        let widened = full.replace('%', "*");
        let mut parents = BTreeSet::new();
        for sub in &subs {
            if wildcard(full.as_bytes(), sub.as_bytes())
                || !wildcard(widened.as_bytes(), sub.as_bytes())
            {
                continue;
            }
            let mut p = sub.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !subs.contains(parent) && wildcard(full.as_bytes(), parent.as_bytes()) {
                    parents.insert(parent.to_string());
                }
                p = parent;
            }
        }
        // One sorted list of both.
        let names: BTreeSet<&String> = subs.iter().chain(&parents).collect();
        for name in names {
            if !wildcard(full.as_bytes(), name.as_bytes()) {
                continue;
            }
            let children = all.iter().any(|o| {
                o.len() > name.len() + 1
                    && o.starts_with(name.as_str())
                    && o.as_bytes()[name.len()] == b'/'
            });
            let mut attrs = Vec::new();
            if !boxes.contains(name) || parents.contains(name) {
                attrs.push("\\Noselect");
            }
            attrs.push(if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            self.buf
                .extend_from_slice(format!("* LSUB ({}) \"/\" ", attrs.join(" ")).as_bytes());
            wire::mailbox(&mut self.buf, name);
            self.buf.extend_from_slice(b"\r\n");
        }
        ok("LSUB completed")
    }

    pub(super) fn status(
        &mut self,
        m: &WireMailbox,
        items: &[StatusDataItemName],
    ) -> Result<Done, Fail> {
        let user = self.user()?;
        let name = mailbox_name(m)?;
        if self.rev2 && super::rev2::asks_recent(items) {
            return bad("RECENT is not a STATUS item in IMAP4rev2");
        }
        // STATUS of the selected mailbox (RFC 9051 6.3.11): what changed
        // is told first, so the counts agree with the session's.
        if self.sel.as_ref().is_some_and(|s| s.name == name) {
            self.check(storage::session::Allow::AllUpdates)
                .map_err(Fail::Stop)?;
        }
        if items.contains(&StatusDataItemName::HighestModSeq) {
            self.enable_condstore();
        }
        let parts = self.status_values(&user, &name, items)?;
        self.write_status(&name, &parts);
        ok("STATUS completed")
    }

    /// The STATUS data items of a mailbox (RFC 3501 6.3.10; SIZE from
    /// RFC 8438; DELETED and DELETED-STORAGE from RFC 9208 §4.3).
    pub(super) fn status_values(
        &mut self,
        user: &UserName,
        name: &MailboxName,
        items: &[StatusDataItemName],
    ) -> Result<Vec<String>, Fail> {
        // A handle kept open between STATUS commands while the user's
        // mailbox names do not change (Store::with_mailbox): one header
        // read under the shared lock.
        let this = &*self;
        let parts = this.store.with_mailbox(user, name, |mbox| {
            let h = mbox.header()?;
            let mut parts = Vec::new();
            for it in items {
                let v = match it {
                    StatusDataItemName::Messages => format!("MESSAGES {}", h.exists),
                    StatusDataItemName::Recent => {
                        format!("RECENT {}", this.status_recent(mbox, name, &h)?)
                    }
                    StatusDataItemName::UidNext => format!("UIDNEXT {}", h.last_uid + 1),
                    StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", h.uidvalidity),
                    StatusDataItemName::Unseen => {
                        format!("UNSEEN {}", h.exists.saturating_sub(h.seen))
                    }
                    StatusDataItemName::Deleted => format!("DELETED {}", h.deleted),
                    StatusDataItemName::HighestModSeq => {
                        format!("HIGHESTMODSEQ {}", h.highestmodseq.max(1))
                    }
                    // The sum of RFC822.SIZE over the messages not expunged.
                    StatusDataItemName::Size => format!("SIZE {}", h.total_bytes),
                    StatusDataItemName::DeletedStorage => {
                        // One pass over the records, none kept.
                        let mut deleted = 0u64;
                        mbox.snapshot_each(|r| {
                            if !r.is_expunged() && r.flags.contains(Flags::DELETED) {
                                deleted += r.size;
                            }
                        })?;
                        format!("DELETED-STORAGE {deleted}")
                    }
                };
                parts.push(v);
            }
            Ok(parts)
        })?;
        Ok(parts)
    }

    pub(super) fn write_status(&mut self, name: &MailboxName, parts: &[String]) {
        self.buf.extend_from_slice(b"* STATUS ");
        wire::mailbox(&mut self.buf, name.as_str());
        self.buf
            .extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
    }

    /// STATUS RECENT (RFC 3501 6.3.10) without claiming anything: the
    /// live messages nobody has claimed as `\Recent`, plus, for the
    /// mailbox this session has selected read-write, those it claimed.
    fn status_recent(
        &self,
        mbox: &mut storage::Mailbox,
        name: &MailboxName,
        h: &storage::Header,
    ) -> storage::Result<u32> {
        let claimed = mbox.recent_claimed(h.uidvalidity).unwrap_or_else(|e| {
            tracing::warn!("\\Recent not known: {e}");
            h.last_uid
        });
        let mut n = 0;
        if claimed < h.last_uid && h.exists > 0 {
            mbox.snapshot_each(|r| n += u32::from(!r.is_expunged() && r.uid > claimed))?;
        }
        if let Some(sel) = self
            .sel
            .as_ref()
            .filter(|s| &s.name == name && !s.read_only)
            && sel.view.uidvalidity() == h.uidvalidity
        {
            n += sel.recent.count(&sel.view);
        }
        Ok(n)
    }

    /// The user's limit from the store's config (`quota`, `quota.USER`,
    /// read at start with the server's config) with the current usage;
    /// `None` when unlimited.
    pub(super) fn quota(&self, user: &UserName) -> Result<Option<storage::transfer::Quota>, Fail> {
        match self.cfg.store.quota_for(user.as_str()) {
            None => Ok(None),
            Some(limit) => Ok(Some(storage::transfer::Quota {
                used: self.store.usage(user)?,
                limit,
            })),
        }
    }

    pub(super) fn append(
        &mut self,
        m: &WireMailbox,
        flags: &[Flag],
        date: Option<&DateTime>,
        message: LiteralOrLiteral8,
    ) -> Result<Done, Fail> {
        self.user()?;
        let name = mailbox_name(m)?;
        let (flags, keywords) = split_flags(flags)?;
        // A binary literal's `binary` parts are stored in base64
        // (binappend.rs); a literal cannot have any that need it.
        let converted;
        let data: &[u8] = match &message {
            LiteralOrLiteral8::Literal(l) => l.as_ref(),
            LiteralOrLiteral8::Literal8(l) => match super::binappend::convert(l.data.as_ref()) {
                Some(c) => {
                    converted = c;
                    &converted
                }
                None => l.data.as_ref(),
            },
        };
        let msg = super::append::NewMessage {
            data,
            flags,
            keywords,
            internal_date: date.map(|d| {
                let d = d.as_ref();
                (d.timestamp(), (d.offset().local_minus_utc() / 60) as i16)
            }),
        };
        self.append_messages(&name, vec![msg])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(wildcard(b"*", b"a/b"));
        assert!(wildcard(b"%", b"a"));
        assert!(!wildcard(b"%", b"a/b"));
        assert!(wildcard(b"a/%", b"a/b"));
        assert!(wildcard(b"INBOX", b"INBOX"));
        assert!(wildcard(b"inb*", b"INBOX"));
        assert!(wildcard(b"iNbOx/%", b"INBOX/x"));
        assert!(
            !wildcard(b"inbox/X", b"INBOX/x"),
            "only INBOX itself ignores case"
        );
        assert!(!wildcard(b"inboxes", b"INBOXES"));
        assert!(wildcard(b"a%c", b"abc"));
        assert!(!wildcard(b"a%c", b"a/c"));
        assert!(wildcard(b"a*c", b"a/c"));
        assert!(wildcard(b"%/%", b"a/b"));
        assert!(!wildcard(b"%/%", b"a/b/c"));
        assert!(wildcard(b"*/c", b"a/b/c"));
        assert!(wildcard(b"%", b""));
        assert!(!wildcard(b"a", b""));
        assert!(!wildcard(b"", b"a"));
        // No backtracking blow-up on a hostile pattern.
        let pat = "*a".repeat(2000);
        assert!(!wildcard(pat.as_bytes(), "a".repeat(1999).as_bytes()));
        assert!(wildcard(pat.as_bytes(), "a".repeat(2000).as_bytes()));
        assert!(wildcard(b"a%*%b", b"a/x/b"));
        assert!(!wildcard(b"a%%b", b"a/b"));
        let many = "*%".repeat(30_000) + "z";
        assert!(!wildcard(many.as_bytes(), "y".repeat(1000).as_bytes()));
        assert_eq!(canonical_pattern("inbox/x"), "INBOX/x");
        assert_eq!(canonical_pattern("inboxes"), "inboxes");
    }
}
