//! A 100 MiB message is delivered with a peak RSS under 16 MiB. Alone in
//! its test binary so that RUSAGE_CHILDREN only sees this one child.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::Spool;

const SIZE: usize = 100 << 20;
const LINE: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\n";

#[test]
fn hundred_mib_message_in_constant_memory() {
    let s = Spool::with_users(&["alice"]);
    let mut child = s
        .command()
        .args(["-d", "alice", "-f", "bob@example.org", "--unsafe-no-fsync"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Streamed from a writer thread: the test holds one 64 KiB chunk.
    let writer = std::thread::spawn(move || {
        stdin.write_all(b"From bob@example.org Sun Nov 22 19:05:09 2026\n")?;
        stdin.write_all(b"Subject: big\nMessage-ID: <big@x>\n\n")?;
        let chunk: Vec<u8> = LINE.iter().copied().cycle().take(64 * 1024).collect();
        let mut sent = 0;
        while sent < SIZE {
            stdin.write_all(&chunk)?;
            sent += chunk.len();
        }
        Ok::<usize, std::io::Error>(sent)
    });
    let out = child.wait_with_output().unwrap();
    let sent = writer.join().unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: getrusage only writes into the struct we pass.
    let maxrss_kib = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru), 0);
        ru.ru_maxrss
    };
    eprintln!("peak RSS of deliver for a {sent}-byte message: {maxrss_kib} KiB");
    assert!(maxrss_kib > 0);
    assert!(
        maxrss_kib < 16 * 1024,
        "peak RSS {maxrss_kib} KiB is not under 16 MiB"
    );
    // Every LF became CRLF: one more byte per line of the body.
    let dir = s.mailbox_dir("alice", "INBOX");
    let stored = std::fs::metadata(dir.join("1.")).unwrap().len();
    let header = b"Return-Path: <bob@example.org>\r\nSubject: big\r\nMessage-ID: <big@x>\r\n\r\n";
    let (chunks, lf_per_chunk) = (sent / (64 * 1024), (64 * 1024) / LINE.len());
    assert_eq!(stored as usize, header.len() + sent + chunks * lf_per_chunk);
}
