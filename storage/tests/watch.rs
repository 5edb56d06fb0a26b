//! `mailstore::watch`: waiting for a committed change of a mailbox.
//!
//! The commits come from another process (this test binary re-executed
//! with `WATCH_CHILD_SPOOL` set, running `commit_child`), as an IMAP IDLE
//! (RFC 2177 section 3: the server sends updates "as they happen") would see
//! a delivery. Every wake is decided by the generation, so each test also
//! checks that the mailbox really changed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mailstore::mailbox::ViewMark;
use mailstore::watch::{self, Waited, Watch};
use mailstore::{AppendOptions, Mailbox, MailboxName, Options, SessionView, Store, UserName};

const SPOOL_ENV: &str = "WATCH_CHILD_SPOOL";
const DELAY_ENV: &str = "WATCH_CHILD_DELAY_MS";
const BOX_ENV: &str = "WATCH_CHILD_MAILBOX";
/// Long enough for any wake in these tests; shorter than
/// [`watch::FALLBACK`], so a wake before it came from inotify.
const LONG: Duration = Duration::from_secs(20);

fn user() -> UserName {
    UserName::new("watcher").unwrap()
}

fn setup(spool: &Path, names: &[&str]) -> Store {
    let store = Store::open(spool, Options::default()).unwrap();
    store
        .ensure_mailbox(&user(), &MailboxName::inbox())
        .unwrap();
    for n in names {
        store
            .ensure_mailbox(&user(), &MailboxName::new(n).unwrap())
            .unwrap();
    }
    store
}

fn open(store: &Store, name: &str) -> Mailbox {
    store
        .open_mailbox(&user(), &MailboxName::new(name).unwrap())
        .unwrap()
}

/// Not a test of its own: the child process of the tests below. Without
/// `WATCH_CHILD_SPOOL` it returns at once.
#[test]
fn commit_child() {
    let Ok(spool) = std::env::var(SPOOL_ENV) else {
        return;
    };
    let delay: u64 = std::env::var(DELAY_ENV).unwrap().parse().unwrap();
    let name = std::env::var(BOX_ENV).unwrap();
    std::thread::sleep(Duration::from_millis(delay));
    let store = Store::open(Path::new(&spool), Options::default()).unwrap();
    let mut mbox = open(&store, &name);
    mbox.append(
        &b"Subject: wake\r\n\r\nfrom another process\r\n"[..],
        AppendOptions::default(),
    )
    .unwrap();
}

/// Starts a process that appends one message to `name` after `delay`.
fn commit_later(spool: &Path, name: &str, delay: Duration) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "commit_child", "--nocapture", "--test-threads=1"])
        .env(SPOOL_ENV, spool)
        .env(DELAY_ENV, delay.as_millis().to_string())
        .env(BOX_ENV, name)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn finish(mut child: std::process::Child) {
    assert!(child.wait().unwrap().success(), "commit child failed");
}

fn exists(mbox: &mut Mailbox) -> u32 {
    mbox.header().unwrap().exists
}

/// A fresh spool with the mailbox `name` open and a session view on it.
struct Fixture {
    tmp: tempfile::TempDir,
    store: Store,
    mbox: Mailbox,
    view: SessionView,
}

fn fixture(name: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = setup(tmp.path(), &[name]);
    let mut mbox = open(&store, name);
    let view = SessionView::open(&mut mbox).unwrap();
    Fixture {
        tmp,
        store,
        mbox,
        view,
    }
}

/// Has another process commit to `name` while `w` waits from `mark`:
/// the wait must end with `Changed`, by an event or a poll (well before
/// `LONG`), and after the commit.
fn expect_wake(spool: &Path, name: &str, mbox: &mut Mailbox, w: &Watch, mark: &ViewMark) {
    let child = commit_later(spool, name, Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(w.wait(mbox, mark, LONG).unwrap(), Waited::Changed);
    assert!(t0.elapsed() < LONG, "woken by the timeout, not the commit");
    assert_eq!(exists(mbox), 1, "woken before the commit");
    finish(child);
}

/// A blocking wait wakes on another process's commit, by inotify (well
/// before the fallback re-check), and not before it.
#[test]
fn blocking_wait_wakes_on_commit_by_other_process() {
    let mut f = fixture("blocking");
    let w = Watch::new(&f.mbox).unwrap();
    assert!(w.is_notified(), "inotify should watch a local mailbox");
    expect_wake(f.tmp.path(), "blocking", &mut f.mbox, &w, &f.view.mark());
}

/// The async wait (`tokio` feature) wakes on another process's commit.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_wait_wakes_on_commit_by_other_process() {
    let mut f = fixture("async");
    let w = Watch::new(&f.mbox).unwrap();
    assert!(w.is_notified());
    let child = commit_later(f.tmp.path(), "async", Duration::from_millis(300));
    let waited = w
        .wait_async(&mut f.mbox, &f.view.mark(), LONG)
        .await
        .unwrap();
    assert_eq!(waited, Waited::Changed);
    assert_eq!(exists(&mut f.mbox), 1, "woken before the commit");
    finish(child);
    // And a timeout returns when nothing more is committed.
    f.view = SessionView::open(&mut f.mbox).unwrap();
    let t0 = Instant::now();
    let waited = w
        .wait_async(&mut f.mbox, &f.view.mark(), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(waited, Waited::TimedOut);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

/// Without a commit the wait returns `TimedOut` once the timeout passed;
/// with a commit already made since the mark it returns at once.
#[test]
fn timeout_returns_and_earlier_commit_is_seen() {
    let mut f = fixture("quiet");
    let w = Watch::new(&f.mbox).unwrap();
    let t0 = Instant::now();
    let waited = w
        .wait(&mut f.mbox, &f.view.mark(), Duration::from_millis(200))
        .unwrap();
    assert_eq!(waited, Waited::TimedOut);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "returned early: {took:?}"
    );
    assert!(took < LONG, "did not return: {took:?}");
    // A commit between the mark and the wait: no event is pending for it
    // after a drain, yet the wait's first read sees it.
    finish(commit_later(f.tmp.path(), "quiet", Duration::ZERO));
    w.drain();
    let t0 = Instant::now();
    assert_eq!(
        w.wait(&mut f.mbox, &f.view.mark(), LONG).unwrap(),
        Waited::Changed
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// The process's inotify descriptors.
fn inotify_fds() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let t = std::fs::read_link(&p).ok()?;
            (t.to_string_lossy() == "anon_inode:inotify").then_some(p)
        })
        .collect()
}

/// How many watches of the process's inotify instance are on the file
/// or directory at `path` (by inode, from `/proc/self/fdinfo`).
fn watches_on(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let ino = format!("ino:{:x} ", std::fs::metadata(path).unwrap().ino());
    let fd = inotify_fds()[0].file_name().unwrap().to_owned();
    let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd)).unwrap();
    info.lines().filter(|l| l.contains(&ino)).count()
}

/// More waiters than the kernel's default inotify instance limit (128 per
/// user) on two mailboxes share one inotify fd; a commit to one mailbox
/// wakes all of its waiters and none of the other's.
#[test]
fn many_waiters_share_one_inotify_fd() {
    const N: usize = 140;
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(setup(tmp.path(), &["busy", "other"]));
    let ready = Arc::new(Barrier::new(2 * N + 1));
    let mut threads = Vec::new();
    for i in 0..2 * N {
        let store = store.clone();
        let ready = ready.clone();
        let name = if i % 2 == 0 { "busy" } else { "other" };
        threads.push(std::thread::spawn(move || {
            let mut mbox = open(&store, name);
            let view = SessionView::open(&mut mbox).unwrap();
            let w = Watch::new(&mbox).unwrap();
            assert!(w.is_notified());
            ready.wait();
            let timeout = if name == "busy" {
                LONG
            } else {
                Duration::from_secs(3)
            };
            (name, w.wait(&mut mbox, &view.mark(), timeout).unwrap())
        }));
    }
    ready.wait();
    assert_eq!(inotify_fds().len(), 1, "one inotify fd for every waiter");
    let busy = store.mailbox_path(&user(), &MailboxName::new("busy").unwrap());
    // One watch on the mailbox directory and one on its index, shared.
    assert_eq!(watches_on(&busy), 1);
    assert_eq!(watches_on(&busy.join(".index")), 1);
    let child = commit_later(tmp.path(), "busy", Duration::ZERO);
    for t in threads {
        let (name, waited) = t.join().unwrap();
        let want = if name == "busy" {
            Waited::Changed
        } else {
            Waited::TimedOut
        };
        assert_eq!(waited, want, "waiter on {name}");
    }
    finish(child);
    // Every waiter is gone: so are the watches.
    assert_eq!(watches_on(&busy), 0);
    assert_eq!(watches_on(&busy.join(".index")), 0);
}

/// A polling watch (a shared filesystem, where other hosts' commits raise
/// no inotify event) sees a commit by re-reading the generation.
#[test]
fn polling_watch_sees_commit() {
    let mut f = fixture("polled");
    watch::set_poll_interval(Duration::from_millis(50));
    let w = Watch::polling(&f.mbox).unwrap();
    assert!(!w.is_notified());
    expect_wake(f.tmp.path(), "polled", &mut f.mbox, &w, &f.view.mark());
}

/// A repack renames a new index into place: a waiter on the old file
/// still wakes on the next commit (to the new file).
#[test]
fn wait_follows_repack() {
    let mut f = fixture("repacked");
    let w = Watch::new(&f.mbox).unwrap();
    open(&f.store, "repacked").repack().unwrap();
    // The repack itself is a change (a new index file): look after it.
    f.view = SessionView::open(&mut f.mbox).unwrap();
    expect_wake(f.tmp.path(), "repacked", &mut f.mbox, &w, &f.view.mark());
}
