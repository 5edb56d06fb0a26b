//! Kills the changes of a user's mailbox names (create, create with a
//! special use, delete of a leaf and of a parent, rename, a reconstruct
//! that makes a mailbox of a directory without index) at each of their
//! fault points (`fault::NAMES_POINTS`, real child processes, SIGKILL),
//! while this process holds a listing in the process-wide cache that the
//! names generation validates (docs/PROTOCOL.md §6b). After each kill, and
//! again after the next change, the listing this process gives must be the
//! one a fresh process walks from the directories: a change killed midway
//! never leaves a stale cached answer, and the killed state is the state
//! before or after the change (or, for a create with a special use, the
//! mailbox without its attribute, PROTOCOL.md §6).
//!
//! The child is this test binary re-executed with `NAMES_CRASH_ROLE` set,
//! running only `names_crash_child`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailstore::internals::fault::{self, NAMES_POINTS};
use mailstore::special_use::SpecialUse;
use mailstore::{MailboxName, Options, Store, UserName};

const ROLE: &str = "NAMES_CRASH_ROLE";
const SPOOL: &str = "NAMES_CRASH_SPOOL";

fn user() -> UserName {
    UserName::new("names").unwrap()
}

fn mb(n: &str) -> MailboxName {
    MailboxName::new(n).unwrap()
}

fn store_at(spool: &Path) -> Store {
    Store::open(spool, Options::default()).unwrap()
}

/// The listing as one comparable string: `name[uses]` per mailbox.
fn listing(s: &Store) -> String {
    s.mailboxes_with_uses(&user())
        .unwrap()
        .iter()
        .map(|(n, u)| {
            let u: Vec<&str> = u.iter().map(|u| u.attribute()).collect();
            format!("{n}[{}]", u.join(" "))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn run_op(s: &Store, op: &str) -> mailstore::Result<()> {
    let u = user();
    match op {
        "create" => s.create_mailbox(&u, &mb("New/Sub")),
        "create_use" => s.create_mailbox_with_use(&u, &mb("Sent2"), &[SpecialUse::Sent]),
        "delete_leaf" => s.delete_mailbox(&u, &mb("Leaf")),
        "delete_parent" => s.delete_mailbox(&u, &mb("Par")),
        "rename" => s.rename_mailbox(&u, &mb("Old"), &mb("Moved/Old")),
        // idx-admin reconstruct of a directory holding a message file but
        // no index: it becomes a mailbox.
        "reconstruct" => mailstore::recovery::reconstruct(
            &s.mailbox_path(&u, &mb("Rec")),
            mailstore::Durability::Full,
            std::time::Duration::from_secs(10),
        )
        .map(|_| ()),
        // Another change after the killed one (finishing what it left).
        "next" => s.create_mailbox(&u, &mb("Next")),
        other => panic!("unknown op {other}"),
    }
}

/// The operations that pass through `point`.
fn ops_for(point: &str) -> &'static [&'static str] {
    match point.split('.').next().unwrap() {
        "names" => &[
            "create",
            "create_use",
            "delete_leaf",
            "delete_parent",
            "rename",
            "reconstruct",
        ],
        "create" => &["create", "create_use"],
        "special_use" => &["create_use"],
        "delete" => &["delete_leaf", "delete_parent"],
        "rename" => &["rename"],
        _ => panic!("fault point {point} is not covered by the names crash test"),
    }
}

/// Child side: a no-op unless the parent set the role.
#[test]
fn names_crash_child() {
    let Ok(op) = std::env::var(ROLE) else { return };
    let spool = PathBuf::from(std::env::var(SPOOL).unwrap());
    let s = store_at(&spool);
    if op == "list" {
        println!("CHILD-LIST {}", listing(&s));
        return;
    }
    match run_op(&s, &op) {
        Ok(()) => println!("CHILD-RESULT ok"),
        Err(e) => println!("CHILD-RESULT error {e}"),
    }
}

fn spawn_child(spool: &Path, op: &str, fault_spec: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "names_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, op)
        .env(SPOOL, spool)
        .env(fault::ENV, fault_spec)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What a fresh process (empty cache) lists.
fn fresh_listing(spool: &Path) -> String {
    let (st, out) = spawn_child(spool, "list", "");
    assert!(st.success(), "{out}");
    out.lines()
        .find_map(|l| l.split_once("CHILD-LIST ").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no listing in {out}"))
        .to_string()
}

fn prefill(spool: &Path) {
    let s = store_at(spool);
    for n in ["INBOX", "Leaf", "Par", "Par/Kid", "Old"] {
        s.create_mailbox(&user(), &mb(n)).unwrap();
    }
    // Not a mailbox until reconstructed.
    let rec = s.mailbox_path(&user(), &mb("Rec"));
    std::fs::create_dir(&rec).unwrap();
    std::fs::write(rec.join("1."), b"Subject: lost index\r\n\r\nbody\r\n").unwrap();
}

/// The listing after `op` completed, from a spool where it ran to the end.
fn after_state(op: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    prefill(&spool);
    let (st, out) = spawn_child(&spool, op, "");
    assert!(
        st.success() && out.contains("CHILD-RESULT ok"),
        "{op}: {out}"
    );
    fresh_listing(&spool)
}

#[test]
fn kill_at_every_names_point_leaves_no_stale_listing() {
    for point in NAMES_POINTS {
        for op in ops_for(point) {
            let ctx = format!("{op} killed at {point}");
            let tmp = tempfile::tempdir().unwrap();
            let spool = tmp.path().join("spool");
            prefill(&spool);
            // This process caches the listing before the change.
            let s = store_at(&spool);
            let before = listing(&s);
            assert_eq!(listing(&s), before, "{ctx}: cached listing");
            let (status, out) = spawn_child(&spool, op, &format!("{point}=kill"));
            assert_eq!(status.signal(), Some(9), "{ctx}: not killed: {out}");
            let fresh = fresh_listing(&spool);
            assert_eq!(listing(&s), fresh, "{ctx}: stale listing after the kill");
            let after = after_state(op);
            let partial = after.replace("Sent2[\\Sent]", "Sent2[]");
            assert!(
                fresh == before || fresh == after || fresh == partial,
                "{ctx}: {fresh} is neither {before} nor {after}"
            );
            // The next change goes on from whatever the kill left.
            let (st, out) = spawn_child(&spool, "next", "");
            assert!(
                st.success() && out.contains("CHILD-RESULT ok"),
                "{ctx}: {out}"
            );
            let fresh = fresh_listing(&spool);
            assert!(fresh.contains("Next[]"), "{ctx}: {fresh}");
            assert_eq!(
                listing(&s),
                fresh,
                "{ctx}: stale listing after the next change"
            );
            // And the killed operation can be redone (or is done).
            let s2 = store_at(&spool);
            let _ = run_op(&s2, op);
            assert_eq!(listing(&s), fresh_listing(&spool), "{ctx}: after a redo");
        }
    }
}

/// The names generation is checked on every listing: a change by another
/// process (no kill) is seen at once, and a spool whose `.names.gen` was
/// removed or damaged by hand is walked, never answered from the cache.
#[test]
fn other_process_changes_and_a_damaged_generation_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    prefill(&spool);
    let s = store_at(&spool);
    let before = listing(&s);
    let (st, out) = spawn_child(&spool, "create_use", "");
    assert!(st.success(), "{out}");
    let after = listing(&s);
    assert_ne!(before, after);
    assert!(after.contains("Sent2[\\Sent]"), "{after}");
    let gen_file = spool.join("names").join(".names.gen");
    // Removed: walked (and created again).
    std::fs::remove_file(&gen_file).unwrap();
    std::fs::create_dir(spool.join("names").join("Hand")).unwrap();
    std::fs::copy(
        spool.join("names").join("Leaf").join(".index"),
        spool.join("names").join("Hand").join(".index"),
    )
    .unwrap();
    assert!(listing(&s).contains("Hand[]"), "{}", listing(&s));
    // Damaged: walked.
    std::fs::write(&gen_file, b"garbage").unwrap();
    std::fs::remove_dir_all(spool.join("names").join("Hand")).unwrap();
    assert!(!listing(&s).contains("Hand"), "{}", listing(&s));
    assert_eq!(listing(&s), fresh_listing(&spool));
}
