//! A read-only report of users' mailboxes: message counts, sizes, UIDs,
//! and a consistency check of each, as a monitoring job would run it.
//!
//! ```text
//! admin_report SPOOL USER...
//! ```
//!
//! Nothing is written: the listing walks directories, and each mailbox is
//! checked with [`mailstore::verify::verify_path`], which reads the index
//! under the shared lock and opens no file for writing. Exits 1 when a
//! mailbox has problems (details on standard error), 2 when one could not
//! be read at all, else 0.

use std::path::PathBuf;
use std::process::ExitCode;

use mailstore::verify::{self, Report};
use mailstore::{Options, Store, UserName};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((spool, users)) = args.split_first().filter(|(_, u)| !u.is_empty()) else {
        eprintln!("usage: admin_report SPOOL USER...");
        return ExitCode::from(64);
    };
    let spool = PathBuf::from(spool);
    if !spool.is_dir() {
        // `Store::open` would create it: a report must not.
        eprintln!("{}: no such spool", spool.display());
        return ExitCode::from(2);
    }
    let store = match Store::open(&spool, Options::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut worst = 0;
    println!("user\tmailbox\tmessages\tbytes\tuidvalidity\tuidnext\tproblems\twarnings");
    for u in users {
        worst = worst.max(report_user(&store, u));
    }
    ExitCode::from(worst)
}

/// Prints one line per mailbox of `user`; returns the exit code it earns.
fn report_user(store: &Store, user: &str) -> u8 {
    let listed = UserName::new(user).and_then(|u| Ok((store.list_mailboxes(&u)?, u)));
    let (names, user) = match listed {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{user}: {e}");
            return 2;
        }
    };
    let mut worst = 0;
    for name in names {
        let path = store.mailbox_path(&user, &name);
        match verify::verify_path(&path, store.options().lock_timeout) {
            Ok(rep) => {
                print_line(&user, &name, &rep);
                for f in rep.problems() {
                    let at = f
                        .offset
                        .map(|o| format!(" at byte {o}"))
                        .unwrap_or_default();
                    eprintln!("{user} {name}: {}{at}: {}", f.path.display(), f.message);
                    worst = worst.max(1);
                }
            }
            Err(e) => {
                eprintln!("{user} {name}: {e}");
                worst = 2;
            }
        }
    }
    worst
}

fn print_line(user: &UserName, name: &mailstore::MailboxName, rep: &Report) {
    let Some(h) = &rep.header else {
        println!("{user}\t{name}\t-\t-\t-\t-\t{}\t-", rep.problems().count());
        return;
    };
    println!(
        "{user}\t{name}\t{}\t{}\t{}\t{}\t{}\t{}",
        h.exists,
        h.total_bytes,
        h.uidvalidity,
        u64::from(h.last_uid) + 1,
        rep.problems().count(),
        rep.warnings().count()
    );
}
