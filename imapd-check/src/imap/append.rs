//! APPEND of one message (RFC 3501 6.3.11) or several (MULTIAPPEND,
//! RFC 3502), with UIDPLUS's APPENDUID (RFC 4315 §3).
//!
//! All or none (RFC 3502 §6.3.11): every message is staged first
//! (`Mailbox::stage`, outside any lock; a failure drops the staged files
//! and nothing became visible), then all are made visible in one
//! `Mailbox::commit`: one exclusive lock, one index write, one generation
//! bump (PROTOCOL.md §3). No session ever sees a part of the batch, and
//! nothing is undone after it was visible.

use imap_codec::imap_types::flag::Flag;
use storage::{AppendOptions, Error, Flags, MailboxName};

use super::conn::{Done, Fail, Session, bad, no, ok_code};
use super::extparse::AppendMessage;
use super::groupcommit;
use super::mailboxes::{mailbox_name_raw, split_flags};

/// One message of an APPEND.
pub(super) struct NewMessage<'a> {
    pub data: &'a [u8],
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// INTERNALDATE as Unix seconds and its zone in minutes east of UTC.
    pub internal_date: Option<(i64, i16)>,
}

impl Session {
    /// MULTIAPPEND (or a single APPEND imap-codec did not take): the
    /// messages' octets are ranges of `bytes`, the assembled command.
    pub(super) fn multiappend(
        &mut self,
        mailbox: &[u8],
        messages: &[AppendMessage],
        bytes: &[u8],
    ) -> Result<Done, Fail> {
        self.user()?;
        let name = mailbox_name_raw(mailbox)?;
        let mut msgs = Vec::with_capacity(messages.len());
        for m in messages {
            let mut flags = Vec::with_capacity(m.flags.len());
            for f in &m.flags {
                match Flag::try_from(f.as_str()) {
                    Ok(f) => flags.push(f),
                    Err(_) => return bad("Invalid flag"),
                }
            }
            let (flags, keywords) = split_flags(&flags)?;
            msgs.push(NewMessage {
                data: &bytes[m.data.clone()],
                flags,
                keywords,
                internal_date: m.date,
            });
        }
        self.append_messages(&name, msgs)
    }

    /// Appends all of `msgs` to `name` or none of them.
    pub(super) fn append_messages(
        &mut self,
        name: &MailboxName,
        msgs: Vec<NewMessage>,
    ) -> Result<Done, Fail> {
        let user = self.user()?;
        let mut target = match self.store.open_mailbox(&user, name) {
            Err(Error::NoSuchMailbox(_)) => return no(Some("TRYCREATE"), "No such mailbox"),
            r => r?,
        };
        // Not a message; Dovecot and Cyrus refuse it too (RFC 3502 does not
        // say, and a MULTIAPPEND client may mean it as a cancel).
        if msgs.iter().any(|m| m.data.is_empty()) {
            return no(None, "Refusing a zero-length message: nothing appended");
        }
        let total: u64 = msgs.iter().map(|m| m.data.len() as u64).sum();
        if let Some(q) = self.quota(&user)?
            && q.used.saturating_add(total) > q.limit
        {
            return no(Some("OVERQUOTA"), "Over quota");
        }
        // With other sessions appending here, stage ordered: their
        // flushes overlap outside the lock, the group commit flushes the
        // index once (groupcommit.rs, PROTOCOL.md §3).
        let ticket = groupcommit::enter_append(&target)?;
        if ticket.others {
            target.set_unordered_appends(false);
        }
        let mut staged = Vec::with_capacity(msgs.len());
        for m in msgs {
            // As at delivery and import: the same sent date however a
            // message arrives.
            let sent_date = storage::sent_date::of_message(m.data).unwrap_or(0);
            let opts = AppendOptions {
                flags: m.flags,
                keywords: m.keywords,
                internal_date: m.internal_date.map(|d| d.0),
                internal_zone: m.internal_date.map_or(0, |d| d.1),
                sent_date,
                max_size: Some(self.limits.append),
            };
            // On error the staged files so far are dropped (removed).
            staged.push(target.stage(m.data, opts)?);
        }
        let uids = groupcommit::append(&mut target, &ticket, staged)?;
        drop(ticket);
        let validity = target.header()?.uidvalidity;
        ok_code(
            format!("APPENDUID {validity} {}", super::messages::compact(&uids)),
            "APPEND completed",
        )
    }
}
