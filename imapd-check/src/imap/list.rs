//! LIST with its extensions: LIST-EXTENDED (RFC 5258: selection options
//! SUBSCRIBED, REMOTE, RECURSIVEMATCH; return options SUBSCRIBED,
//! CHILDREN; several patterns; `\NonExistent`, `\Subscribed`, CHILDINFO),
//! LIST-STATUS (RFC 5819: `RETURN (STATUS (...))`), SPECIAL-USE (RFC 6154:
//! the selection and return option, the attributes), and NAMESPACE
//! (RFC 2342). LSUB stays in `mailboxes.rs` (RFC 5258 leaves it as is).

use std::collections::{BTreeMap, BTreeSet};

use storage::MailboxName;
use storage::special_use::SpecialUse;

use super::conn::{Done, Session, ok};
use super::extparse::ListCommand;
use super::mailboxes::{canonical_pattern, wildcard};
use super::wire;

/// What one listed name is.
enum Kind {
    /// A mailbox (selectable).
    Mailbox,
    /// A directory that is only a parent (`\Noselect`).
    Parent,
    /// Neither: a subscription to a name that does not exist.
    NonExistent,
}

impl Session {
    /// RFC 2342: one personal namespace, the user's mailboxes, with `/`;
    /// no other users' or shared namespaces.
    pub(super) fn namespace(&mut self) -> Result<Done, super::conn::Fail> {
        self.user()?;
        self.buf
            .extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
        ok("NAMESPACE completed")
    }

    /// The user's mailboxes, and those with every directory above them
    /// (the parents that are not mailboxes are `\Noselect`).
    pub(super) fn mailbox_tree(
        &self,
        user: &storage::UserName,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), super::conn::Fail> {
        let boxes: BTreeSet<String> = self
            .store
            .list_mailboxes(user)?
            .iter()
            .map(|m| m.to_string())
            .collect();
        let dirs = tree(&boxes.iter().map(String::as_str).collect())
            .into_iter()
            .map(str::to_string)
            .collect();
        Ok((boxes, dirs))
    }

    /// LIST in any of its forms (RFC 3501 6.3.8, RFC 5258, 5819, 6154).
    pub(super) fn list_extended(&mut self, cmd: &ListCommand) -> Result<Done, super::conn::Fail> {
        let user = self.user()?;
        let reference = String::from_utf8_lossy(&cmd.reference).into_owned();
        if self.rev2
            && cmd
                .ret_status
                .as_deref()
                .is_some_and(super::rev2::asks_recent)
        {
            return super::conn::bad("RECENT is not a STATUS item in IMAP4rev2");
        }
        // STATUS returned by LIST is STATUS (RFC 5819 §2): with
        // HIGHESTMODSEQ, a CONDSTORE-enabling command (RFC 7162 3.1).
        if cmd.ret_status.as_deref().is_some_and(|items| {
            items.contains(&imap_codec::imap_types::status::StatusDataItemName::HighestModSeq)
        }) {
            self.enable_condstore();
        }
        // RFC 3501 6.3.8 / RFC 5258 §3: an empty pattern asks for the
        // hierarchy delimiter and the root of the reference.
        if cmd.patterns.iter().all(|p| p.is_empty()) {
            self.write_root("LIST", &reference);
            return ok("LIST completed");
        }
        let patterns: Vec<String> = cmd
            .patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| canonical_pattern(&format!("{reference}{}", String::from_utf8_lossy(p))))
            .collect();
        let matches = |name: &str| {
            patterns
                .iter()
                .any(|p| wildcard(p.as_bytes(), name.as_bytes()))
        };

        // One walk (or the cached one) for the names and their special
        // uses; everything below borrows from it.
        let all = self.store.mailbox_listing(&user)?;
        let boxes: BTreeSet<&str> = all.iter().map(|(m, _)| m.as_str()).collect();
        let dirs = tree(&boxes);
        let subs = if cmd.sel_subscribed || cmd.ret_subscribed {
            self.subscriptions(&user)?
        } else {
            BTreeSet::new()
        };
        let uses: BTreeMap<&str, &[SpecialUse]> = all
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();

        // The names that satisfy the selection criteria themselves.
        let filtered = cmd.sel_subscribed || cmd.sel_special_use;
        let meets = |name: &str| {
            (!cmd.sel_subscribed || subs.contains(name))
                && (!cmd.sel_special_use || uses.contains_key(name))
                && (filtered || dirs.contains(name))
        };
        let mut universe: BTreeSet<&str> = dirs.clone();
        universe.extend(subs.iter().map(String::as_str));
        if cmd.sel_recursive {
            for s in &subs {
                universe.extend(ancestors(s));
            }
        }
        let mut criteria = Vec::new();
        if cmd.sel_subscribed {
            criteria.push("\"SUBSCRIBED\"");
        }
        if cmd.sel_special_use {
            criteria.push("\"SPECIAL-USE\"");
        }

        for &name in &universe {
            if !matches(name) {
                continue;
            }
            // RFC 5258 §3 (RECURSIVEMATCH): a name whose descendant meets
            // the criteria without being listed itself (it does not match
            // the patterns) is returned with CHILDINFO.
            let childinfo =
                cmd.sel_recursive && descendants(&universe, name).any(|d| meets(d) && !matches(d));
            if !meets(name) && !childinfo {
                continue;
            }
            let kind = if boxes.contains(name) {
                Kind::Mailbox
            } else if dirs.contains(name) {
                Kind::Parent
            } else {
                Kind::NonExistent
            };
            let mut attrs: Vec<&str> = Vec::new();
            match kind {
                Kind::Mailbox => {}
                Kind::Parent => attrs.push("\\Noselect"),
                Kind::NonExistent => attrs.push("\\NonExistent"),
            }
            if !matches!(kind, Kind::NonExistent) {
                let children = descendants(&dirs, name).next().is_some();
                attrs.push(if children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
            }
            if cmd.ret_subscribed && subs.contains(name) {
                attrs.push("\\Subscribed");
            }
            // Special-use attributes are always given (RFC 6154 §2
            // allows it without RETURN (SPECIAL-USE)), as Dovecot does.
            if let Some(u) = uses.get(name) {
                attrs.extend(u.iter().map(|u| u.attribute()));
            }
            self.buf.extend_from_slice(b"* LIST (");
            for (i, a) in attrs.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b' ');
                }
                self.buf.extend_from_slice(a.as_bytes());
            }
            self.buf.extend_from_slice(b") \"/\" ");
            wire::mailbox(&mut self.buf, name);
            if childinfo {
                self.buf.extend_from_slice(
                    format!(" (\"CHILDINFO\" ({}))", criteria.join(" ")).as_bytes(),
                );
            }
            self.buf.extend_from_slice(b"\r\n");
            // RFC 5819 §2: STATUS follows the LIST of each selectable
            // mailbox; a mailbox that fails (deleted meanwhile) gets none.
            if let (Some(items), Kind::Mailbox) = (&cmd.ret_status, &kind) {
                let Ok(mb) = MailboxName::new(name) else {
                    continue;
                };
                match self.status_values(&user, &mb, items) {
                    Ok(parts) => self.write_status(&mb, &parts),
                    Err(e) => tracing::info!(mailbox = %name, "no STATUS in LIST: {e:?}"),
                }
            }
        }
        ok("LIST completed")
    }
}

/// `boxes` and every name above them.
fn tree<'a>(boxes: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
    let mut dirs = boxes.clone();
    for b in boxes {
        dirs.extend(ancestors(b));
    }
    dirs
}

/// The names above `name` (`a/b` and `a` for `a/b/c`), slices of it.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.char_indices()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &name[..i])
}

/// The names below `name` in a sorted set (those starting `name/`), found
/// by a range rather than a scan.
fn descendants<'a, 'b>(
    set: &'b BTreeSet<&'a str>,
    name: &'b str,
) -> impl Iterator<Item = &'a str> + 'b {
    set.range::<str, _>((std::ops::Bound::Excluded(name), std::ops::Bound::Unbounded))
        .copied()
        // The names that start with `name` follow it without a gap.
        .take_while(move |d| d.starts_with(name))
        .filter(move |d| d.as_bytes().get(name.len()) == Some(&b'/') && d.len() > name.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_helpers() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
        let set: BTreeSet<&str> = ["a", "a!", "a-b/c", "a/b", "a/b/c", "a0", "ab", "b"]
            .into_iter()
            .collect();
        let below: Vec<&str> = descendants(&set, "a").collect();
        assert_eq!(below, vec!["a/b", "a/b/c"]);
        assert_eq!(descendants(&set, "b").count(), 0);
        assert_eq!(descendants(&set, "a/b").collect::<Vec<_>>(), vec!["a/b/c"]);
        let boxes: BTreeSet<&str> = ["x/y/z", "w"].into_iter().collect();
        assert_eq!(
            tree(&boxes).into_iter().collect::<Vec<_>>(),
            vec!["w", "x", "x/y", "x/y/z"]
        );
    }
}
