//! Delivers one message, read from standard input, to a user's mailbox:
//! the core of a delivery agent or of an LMTP server's DATA.
//!
//! ```text
//! deliver_one [--create] SPOOL USER [MAILBOX] < message
//! ```
//!
//! `--create` first creates the user's INBOX (and MAILBOX) when missing;
//! without it an unknown user is refused, as an MTA expects. On success it
//! prints the new message's UID and exits 0: from then on the message is
//! durable (with the default [`Durability::Full`]) and keeps that UID. On
//! failure it prints the LMTP reply a server would send and exits with the
//! sysexits code a one-shot agent would (75, EX_TEMPFAIL, makes the MTA
//! retry later; other codes bounce).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use mailstore::{AppendOptions, Durability, Error, MailboxName, Options, Store, UserName};

/// The limit this example sets on a message (`AppendOptions::max_size`).
const MAX_SIZE: u64 = 64 << 20;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let create = args.first().is_some_and(|a| a == "--create");
    if create {
        args.remove(0);
    }
    let (spool, user, mailbox) = match args.as_slice() {
        [s, u] => (PathBuf::from(s), u.clone(), "INBOX".to_string()),
        [s, u, m] => (PathBuf::from(s), u.clone(), m.clone()),
        _ => {
            eprintln!("usage: deliver_one [--create] SPOOL USER [MAILBOX] < message");
            return ExitCode::from(64);
        }
    };
    let mut message = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut message) {
        eprintln!("451 4.3.0 reading the message: {e}");
        return ExitCode::from(75);
    }
    match deliver(&spool, &user, &mailbox, create, &message) {
        Ok(uid) => {
            println!("250 2.0.0 delivered to {user} {mailbox} as UID {uid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let (exit, reply) = reply_for(&e);
            println!("{reply} {e}");
            ExitCode::from(exit)
        }
    }
}

fn deliver(
    spool: &std::path::Path,
    user: &str,
    mailbox: &str,
    create: bool,
    message: &[u8],
) -> mailstore::Result<u32> {
    // `Durability::Full`: when `append` returns, the message file, its
    // directory entry and the index commit are on disk (fsync).
    let opts = Options {
        durability: Durability::Full,
        ..Options::default()
    };
    let store = Store::open(spool, opts)?;
    let user = UserName::new(user)?;
    let name = MailboxName::new(mailbox)?;
    if create {
        store.ensure_mailbox(&user, &MailboxName::inbox())?;
        store.ensure_mailbox(&user, &name)?;
    }
    let mut mbox = store.open_mailbox(&user, &name)?;
    let opts = AppendOptions {
        max_size: Some(MAX_SIZE),
        ..AppendOptions::default()
    };
    // Stages the bytes in the mailbox's `.stage/`, then commits them under
    // the next UID with one index write (docs/PROTOCOL.md).
    mbox.append(message, opts)
}

/// The exit code and LMTP reply (RFC 2033, with RFC 3463 enhanced codes)
/// for a storage error: temporary errors ask the client to retry.
fn reply_for(e: &Error) -> (u8, &'static str) {
    match e {
        Error::NoSuchUser(_) => (67, "550 5.1.1"),
        Error::InvalidName { .. } => (67, "550 5.1.3"),
        Error::NoSuchMailbox(_) => (73, "550 5.2.0"),
        Error::TooLarge { .. } => (65, "552 5.2.3"),
        Error::OverQuota { .. } => (75, "452 4.2.2"),
        Error::UidsExhausted | Error::MailboxFull { .. } => (73, "552 5.2.0"),
        Error::Symlink(_) => (77, "550 5.7.0"),
        e if e.is_disk_full() => (75, "452 4.3.1"),
        // Lock timeouts, a mailbox deleted meanwhile, I/O errors,
        // corruption: nothing was acknowledged, the client retries.
        _ => (75, "451 4.3.0"),
    }
}
