//! Big answers stream (issue 21): FETCH 1:* and SEARCH over a mailbox of
//! tens of thousands of messages answer every message, in order, through
//! the connection's bounded output, without holding the answer (or a
//! list of its messages) in the server's memory.

mod imap_common;

use std::collections::BTreeSet;
use std::path::Path;

use imap_common::*;
use storage::{AppendOptions, Durability, Flags, MailboxName, Options, Store, UserName};

/// Messages in the test mailbox: its answers are hundreds of KB, beyond
/// the server's 256 KiB response buffer and the ESEARCH inline limit.
const N: u32 = 30_000;

/// Message i (from 0) is \Seen unless i % 2 == 1 or i % 7 == 0: UNSEEN
/// answers are many short ranges.
fn unseen(i: u32) -> bool {
    i % 2 == 1 || i.is_multiple_of(7)
}

/// A spool whose INBOX holds N small messages (UIDs 1..=N), staged and
/// committed in batches without fsync (setup speed only).
fn big_spool(dir: &Path) -> std::path::PathBuf {
    spool_of(dir, N)
}

/// A spool whose INBOX holds `n` messages `message(0..n)`.
fn spool_of(dir: &Path, n: u32) -> std::path::PathBuf {
    let spool = dir.join("spool");
    let store = Store::open(
        &spool,
        Options {
            durability: Durability::Relaxed,
            ..Options::default()
        },
    )
    .unwrap();
    let user = UserName::new("alice").unwrap();
    store.ensure_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let opts = AppendOptions {
            flags: if unseen(i) {
                Flags::empty()
            } else {
                Flags::SEEN
            },
            ..AppendOptions::default()
        };
        batch.push(inbox.stage(&message(i as usize)[..], opts).unwrap());
        if batch.len() == 5000 {
            inbox.commit(std::mem::take(&mut batch)).unwrap();
        }
    }
    inbox.commit(batch).unwrap();
    spool
}

/// One spool of N messages (its setup is most of the time) for the
/// three checks that only read it, each a behaviour of its own (their
/// doc comments name the RFC sections).
#[test]
fn large_mailbox_answers_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = big_spool(tmp.path());
    status_counts_do_not_copy_the_index(&spool);
    fetch_all_of_a_large_mailbox_answers_every_message(&spool);
    search_answers_over_a_large_mailbox_are_whole(&spool);
    big_answers_do_not_raise_the_servers_peak_memory(&spool);
    vanished_answers_do_not_copy_the_index(&spool);
    leaving_idle_does_not_copy_the_index(&spool);
    // Last: it changes a flag.
    a_recounting_store_does_not_copy_the_index(&spool);
}

/// Reads the untagged lines of `tag`'s command up to its tagged OK.
fn answer(c: &mut Client, tag: &str, command: &str) -> Vec<String> {
    c.send(&format!("{tag} {command}\r\n"));
    answer_of(c, tag, command)
}

/// The untagged lines up to `tag`'s tagged OK, `command` already sent.
fn answer_of(c: &mut Client, tag: &str, command: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
            assert!(rest.starts_with("OK"), "{command}: {l}");
            return lines;
        }
        lines.push(l);
    }
}

/// The numbers of a `* SEARCH n n ...` line.
fn search_numbers(line: &str) -> Vec<u32> {
    let rest = line.strip_prefix("* SEARCH ").expect(line);
    rest.split(' ').map(|n| n.parse().unwrap()).collect()
}

/// The numbers of a sequence set (`1:3,7`).
fn expand(set: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => v.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// RFC 3501 6.4.5 and 7.4.2: FETCH 1:* answers one FETCH response per
/// message, in sequence order, with its flags; UID FETCH of several
/// ranges (overlapping, out of order, `n:*`) answers each named message
/// once, ascending.
fn fetch_all_of_a_large_mailbox_answers_every_message(spool: &Path) {
    let mut c = Client::spawn(spool, "alice");
    c.ok("SELECT INBOX");
    let lines = answer(&mut c, "f1", "FETCH 1:* (UID FLAGS)");
    assert_eq!(lines.len(), N as usize);
    for (i, l) in lines.iter().enumerate() {
        // This session is the first to see them: \Recent is not what is
        // checked here.
        let l = &l
            .replace("\\Recent ", "")
            .replace(" \\Recent", "")
            .replace("\\Recent", "");
        let seq = i as u32 + 1;
        let want = if unseen(i as u32) { "()" } else { "(\\Seen)" };
        assert_eq!(
            l,
            &format!("* {seq} FETCH (UID {seq} FLAGS {want})"),
            "message {seq}"
        );
    }
    let lines = answer(
        &mut c,
        "f2",
        "UID FETCH 29990:*,5:10,3,7:12,20000:20001 (FLAGS)",
    );
    let seqs: Vec<u32> = lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut want: Vec<u32> = vec![3];
    want.extend(5..=12);
    want.extend([20000, 20001]);
    want.extend(29990..=N);
    assert_eq!(seqs, want);
    assert!(lines.iter().all(|l| l.contains("UID ")), "{lines:?}");
    // Out of range by sequence number: BAD, nothing sent.
    let (untagged, done) = c.cmd(&format!("FETCH 1:{} (FLAGS)", N + 1));
    assert!(done.contains(" BAD "), "{done}");
    assert!(untagged.is_empty(), "{untagged:?}");
}

/// RFC 5530 (CORRUPTION) with RFC 3501 7.2.5: a SEARCH that meets a
/// message not matching its record answers NO [CORRUPTION]. When part of
/// its `* SEARCH` line has already gone out (the answer passed the
/// server's 256 KiB output buffer) the line is ended where it is, a
/// well-formed response the NO disowns; when none of it had, no
/// untagged SEARCH is sent at all.
#[test]
fn search_meeting_a_corrupt_message_ends_or_takes_back_its_line() {
    const M: u32 = 50_000;
    let tmp = tempfile::tempdir().unwrap();
    let spool = spool_of(tmp.path(), M);
    // The last message's body (`body N`): one byte changed, same size.
    let last = spool.join("alice").join("INBOX").join(format!("{M}."));
    let mut raw = std::fs::read(&last).unwrap();
    let at = raw.len() - 3;
    raw[at] ^= 0x20;
    std::fs::write(&last, raw).unwrap();
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    // Only the last message is read (OR stops at its first key).
    let (lines, done) = c.cmd(&format!("SEARCH OR 1:{} BODY body", M - 1));
    assert!(done.contains(" NO [CORRUPTION] "), "{done}");
    assert_eq!(lines.len(), 1);
    let got = search_numbers(&lines[0]);
    assert!(
        got.len() > 30_000 && got.len() < M as usize,
        "{}",
        got.len()
    );
    assert!(got.iter().enumerate().all(|(i, &n)| n == i as u32 + 1));
    // A short answer is taken back whole.
    let (lines, done) = c.cmd(&format!("SEARCH {}:* BODY body", M - 5));
    assert!(done.contains(" NO [CORRUPTION] "), "{done}");
    assert!(lines.is_empty(), "{lines:?}");
    let (lines, done) = c.cmd(&format!("SEARCH RETURN (ALL) {}:* BODY body", M - 5));
    assert!(done.contains(" NO [CORRUPTION] "), "{done}");
    assert!(lines.is_empty(), "{lines:?}");
}

/// RFC 3501 7.2.5 (one `* SEARCH` line with every match) and RFC 4731
/// 3.1 (`* ESEARCH ... MIN MAX COUNT ALL`, ALL as a sequence set): both
/// answers are right when they are far longer than the server's output
/// buffer, and ESEARCH's return data may come in any order (its grammar,
/// RFC 4731 section 3.1, `*(SP search-return-data)`).
fn search_answers_over_a_large_mailbox_are_whole(spool: &Path) {
    let mut c = Client::spawn(spool, "alice");
    c.ok("SELECT INBOX");
    let want: Vec<u32> = (0..N).filter(|&i| unseen(i)).map(|i| i + 1).collect();
    let lines = answer(&mut c, "s1", "UID SEARCH UNSEEN");
    assert_eq!(lines.len(), 1);
    let got = search_numbers(&lines[0]);
    assert_eq!(got, want);
    let lines = answer(&mut c, "s2", "UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN");
    assert_eq!(lines.len(), 1);
    let l = lines[0]
        .strip_prefix("* ESEARCH (TAG \"s2\") UID ")
        .unwrap();
    let words: Vec<&str> = l.split(' ').collect();
    let item = |name: &str| {
        let at = words.iter().position(|w| *w == name).unwrap();
        words[at + 1]
    };
    assert_eq!(item("MIN"), want[0].to_string());
    assert_eq!(item("MAX"), want.last().unwrap().to_string());
    assert_eq!(item("COUNT"), want.len().to_string());
    assert_eq!(expand(item("ALL")), want);
    // Every message: one range.
    let lines = answer(&mut c, "s3", "SEARCH RETURN (ALL COUNT) ALL");
    assert_eq!(
        lines,
        [format!("* ESEARCH (TAG \"s3\") COUNT {N} ALL 1:{N}")]
    );
    let lines = answer(&mut c, "s4", "SEARCH ALL");
    let all: BTreeSet<u32> = lines[0][9..]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(all.len(), N as usize);
    assert_eq!(all.last(), Some(&N));
}

/// FETCH 1:* FLAGS and SEARCH ALL stream (issue 21): answering them
/// does not raise the server's resident memory by anything like the size
/// of the answers. glibc's malloc is told to give every block of 64 KiB
/// or more its own mapping (`MALLOC_MMAP_THRESHOLD_`), so that a big
/// block is returned to the system when freed and the peak RSS (VmHWM,
/// reset before each command through /proc/PID/clear_refs, which the
/// process's owner may write) shows the big blocks a command held at
/// once. A server that builds an answer whole, or a list of the messages
/// it names, peaks higher by a multiple of the answer (measured with the
/// previous build at 30,000 messages: SEARCH ALL +713 KB for a 169 KB
/// answer, ESEARCH ALL +848 KB for 84 KB, FETCH 1:* FLAGS +393 KB for
/// 833 KB); streamed, the growth is 0-50 KB. The bound, an eighth of the answer's
/// bytes plus 256 KiB for the buffers, does not depend on timing.
fn big_answers_do_not_raise_the_servers_peak_memory(spool: &Path) {
    let mut c = measured_session(spool);
    c.ok("SELECT INBOX");
    let mut failures = Vec::new();
    for (t, cmd) in [
        ("m1", "FETCH 1:* (FLAGS)"),
        ("m2", "UID FETCH 1:* (UID FLAGS RFC822.SIZE)"),
        ("m3", "UID SEARCH ALL"),
        ("m4", "UID SEARCH RETURN (ALL) UNSEEN"),
        ("m5", "SEARCH UNSEEN"),
    ] {
        let (grew, lines) = peak_growth(&mut c, t, cmd);
        let sent: u64 = lines.iter().map(|l| l.len() as u64 + 2).sum();
        eprintln!("{cmd}: peak RSS grew by {grew} bytes, answer {sent} bytes");
        if grew > sent / 8 + (256 << 10) {
            failures.push(format!("{cmd}: grew {grew} bytes for an answer of {sent}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// RFC 7162 3.2.5.2 and 3.2.6: `SELECT (QRESYNC ...)` and `UID FETCH
/// ... (CHANGEDSINCE m VANISHED)` look at every record of the index for
/// expunges newer than m, but keep none of them: the server's peak
/// memory grows by about what it sends (here nothing changed, so hardly
/// anything) and its read buffer, not by a copy of the 30,000 records.
fn vanished_answers_do_not_copy_the_index(spool: &Path) {
    let mut c = measured_session(spool);
    c.ok("ENABLE QRESYNC");
    let sel = c.ok("SELECT INBOX");
    let (validity, modseq) = (
        number_after(&sel, "UIDVALIDITY "),
        number_after(&sel, "HIGHESTMODSEQ "),
    );
    let mut failures = Vec::new();
    for (t, cmd) in [
        (
            "v1",
            format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)"),
        ),
        (
            "v2",
            format!("SELECT INBOX (QRESYNC ({validity} {modseq} 1:{N}))"),
        ),
    ] {
        let (grew, lines) = peak_growth(&mut c, t, &cmd);
        eprintln!(
            "{cmd}: peak RSS grew by {grew} bytes, {} lines",
            lines.len()
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("VANISHED") && !l.contains("FETCH")),
            "{lines:?}"
        );
        // The index is read 1 MiB at a time (index.rs READ_CHUNK); SELECT
        // builds its view again in the memory of the one it replaces. A
        // copy of the records would be 3.8 MB (measured before the change:
        // 3.9 MB for the FETCH, 2.8 MB for the SELECT).
        if grew > (1 << 20) + (256 << 10) {
            failures.push(format!("{cmd}: grew {grew} bytes"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// STATUS items that count over the messages (RECENT before any session
/// claimed them, RFC 3501 6.3.10; DELETED-STORAGE, RFC 9208 4.3) read the
/// records once and keep none. Run first: no SELECT has claimed the
/// messages' \Recent yet, so RECENT counts them.
fn status_counts_do_not_copy_the_index(spool: &Path) {
    let mut c = measured_session(spool);
    let (grew, lines) = peak_growth(&mut c, "s", "STATUS INBOX (RECENT DELETED-STORAGE)");
    eprintln!("STATUS (RECENT DELETED-STORAGE): peak RSS grew by {grew} bytes, {lines:?}");
    assert_eq!(
        lines,
        [format!("* STATUS \"INBOX\" (RECENT {N} DELETED-STORAGE 0)")]
    );
    // The 1 MiB read buffer (index.rs READ_CHUNK) and the arena's slack;
    // a copy of the records would be about 3 MB.
    assert!(grew <= (1 << 20) + (512 << 10), "grew {grew} bytes");
}

/// IDLE (RFC 2177) on a big mailbox: once the session has idled a while,
/// its view keeps only UIDs and MODSEQs (`SessionView::compact`); at DONE
/// it is built again from the index. Built straight from one read of the
/// records, DONE's peak memory is the new view and the read buffer; a
/// copy of the index and a vector of the view before its chunks (as
/// before) would add about twice the view.
fn leaving_idle_does_not_copy_the_index(spool: &Path) {
    let mut c = measured_session(spool);
    c.ok("SELECT INBOX");
    let pid = c.pid();
    // The view of N messages, as the session holds it while not idling
    // (an entry is a record of the index and a flag: about 104 bytes).
    let view = u64::from(N) * 104;
    let selected = vm_kib(pid, "VmRSS:") * 1024;
    c.send("i IDLE\r\n");
    assert!(c.line().starts_with('+'), "IDLE not accepted");
    // Compact after 60 us per message (imap/idle.rs): 1.8 s here. The
    // RSS then falls by what glibc gives back of the freed view once the
    // heap is trimmed: 1.43-1.89 MB of the 3.1 MB in runs of this test
    // (session 15; it asked for half the view and failed 1 run in 3 to 6,
    // before and after that session's changes). A view not made compact
    // gives back nothing, so a third tells the two apart.
    let start = std::time::Instant::now();
    let idled = loop {
        let now = vm_kib(pid, "VmRSS:") * 1024;
        if selected.saturating_sub(now) > view / 3 {
            break now;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the view was not made compact while idling ({selected} -> {now} bytes)"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = vm_kib(pid, "VmRSS:") * 1024;
    c.send("DONE\r\n");
    let lines = answer_of(&mut c, "i", "IDLE");
    let grew = (vm_kib(pid, "VmHWM:") * 1024).saturating_sub(before);
    eprintln!("DONE after compacting ({selected} -> {idled} bytes): peak RSS grew by {grew} bytes");
    assert!(lines.is_empty(), "{lines:?}");
    // The new view, the 1 MiB read buffer (index.rs READ_CHUNK), slack.
    let bound = view + (1 << 20) + (512 << 10);
    assert!(
        grew <= bound,
        "DONE grew the peak RSS by {grew} bytes (bound {bound})"
    );
}

/// The first flag change of a boot in a mailbox recounts the header's
/// counters from every record (PROTOCOL.md §4, "Which records are
/// read"): the test's mailbox is made as one made in an earlier boot
/// (its count stamp zeroed). The records are counted as they are read, one chunk at a
/// time, and the one named is found by binary search: no copy of the
/// index (before: the whole index, a copy to change and a copy to count,
/// about 9 MB here).
fn a_recounting_store_does_not_copy_the_index(spool: &Path) {
    // The count stamp (FORMAT.md §2, offset 2056, 20 bytes): the new
    // index had this boot's; zeroed, as a reboot voids it, so this STORE
    // recounts; written by it.
    use std::os::unix::fs::FileExt;
    let index = spool.join("alice/INBOX/.index");
    let stamp = || {
        let f = std::fs::File::open(&index).unwrap();
        let mut b = [0u8; 20];
        f.read_exact_at(&mut b, 2056).unwrap();
        b
    };
    assert_ne!(stamp(), [0u8; 20], "a new index carries the count stamp");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    f.write_all_at(&[0u8; 20], 2056).unwrap();
    let mut c = measured_session(spool);
    c.ok("SELECT INBOX");
    let pid = c.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = vm_kib(pid, "VmRSS:") * 1024;
    let lines = answer(&mut c, "f", "UID STORE 7 +FLAGS (\\Flagged)");
    let grew = (vm_kib(pid, "VmHWM:") * 1024).saturating_sub(before);
    eprintln!("first UID STORE: peak RSS grew by {grew} bytes, {lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\\Flagged"), "{lines:?}");
    // The 1 MiB read buffer (index.rs READ_CHUNK) and the arena's slack
    // (measured 1.1-1.2 MB; a copy of the records would be about 9 MB).
    assert!(grew <= (1 << 20) + (512 << 10), "grew {grew} bytes");
    // Counted right: the header still counts every message.
    let status = c.ok("STATUS INBOX (MESSAGES)");
    assert!(status[0].contains(&format!("MESSAGES {N}")), "{status:?}");
    assert_ne!(stamp(), [0u8; 20], "the recount left no stamp");
}

/// A stdio session of alice's whose big blocks are mapped (and unmapped)
/// from 64 KiB up, so that what a command holds shows in the peak RSS.
fn measured_session(spool: &Path) -> Client {
    let mut cmd = std::process::Command::new(server());
    cmd.args(["serve", "--spool"])
        .arg(spool)
        .args(["-d", "alice", "--stdio"])
        .env("MALLOC_MMAP_THRESHOLD_", "65536");
    Client::preauth(cmd)
}

/// Runs `cmd` twice (the first run may leave caches: headers, buffers);
/// returns how many bytes the second raised the peak RSS by, and its
/// untagged lines.
fn peak_growth(c: &mut Client, tag: &str, cmd: &str) -> (u64, Vec<String>) {
    let pid = c.pid();
    answer(c, tag, cmd);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = vm_kib(pid, "VmRSS:");
    let lines = answer(c, tag, cmd);
    (vm_kib(pid, "VmHWM:").saturating_sub(before) * 1024, lines)
}

/// The number after `key` in the first of `lines` that has it.
fn number_after(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            let at = l.find(key)? + key.len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

/// The server under test (OLD_IMAPD: another build, to compare).
fn server() -> String {
    std::env::var("OLD_IMAPD").unwrap_or_else(|_| IMAPD.to_string())
}
