//! Sieve's outgoing mail: `redirect` (RFC 5228 4.2) and `vacation`
//! replies (RFC 5230), sent through the configured sendmail command
//! (`--sendmail`, e.g. Postfix's `/usr/sbin/sendmail`).
//!
//! Both are remembered in the user's `.sieve/.dedup` (FORMAT.md §9): a
//! redirect of the same message to the same address is not sent again by
//! a retry of the delivery; a vacation reply goes to one sender at most
//! once per period (`:days`/`:seconds`), across restarts.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use storage::UserName;
use storage::dedup::Key;

use crate::delivery::Settings;
use crate::status::Failure;

/// How long a redirect is remembered (longer than Postfix retries).
const REDIRECT_WINDOW: u64 = 6 * 86400;
/// The header a redirect adds, naming the recipient whose script sent it.
pub const REDIRECTED_HEADER: &str = "X-Sieve-Redirected-From";
/// Longest wait for the sendmail command.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest vacation period honoured (longer ones are cut to it).
pub const MAX_VACATION_PERIOD: u64 = 30 * 86400;

fn key(parts: &[&[u8]]) -> Key {
    let mut h = Blake2b::<U16>::new();
    for p in parts {
        h.update(p);
        h.update(b"\0");
    }
    Key(h.finalize().into())
}

/// Runs `sendmail -i -f FROM -- TO` with `message` on stdin.
fn sendmail(cmd: &[String], from: &str, to: &str, message: &[u8]) -> Result<(), String> {
    let (prog, args) = cmd.split_first().ok_or("empty --sendmail command")?;
    let mut child = Command::new(prog)
        .args(args)
        .args(["-i", "-f", from, "--", to])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = message.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > SENDMAIL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{prog}: no answer in {}s",
                SENDMAIL_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wrote = writer.join().map_err(|_| "writer panicked".to_string())?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = (&mut e).take(4096).read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("{prog} failed ({status}): {}", err.trim()));
    }
    wrote.map_err(|e| format!("{prog}: writing the message: {e}"))
}

/// Whether `message` was already redirected by `recipient`'s script (it
/// came back: a loop), or has passed through redirects too often.
pub fn redirect_loops(message: &[u8], recipient: &str) -> bool {
    let head_end = memfind(message, b"\r\n\r\n").unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..head_end]);
    let mut count = 0;
    for line in head.split("\r\n") {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case(REDIRECTED_HEADER)
        {
            count += 1;
            let v = value.trim().trim_start_matches('<').trim_end_matches('>');
            if v.eq_ignore_ascii_case(recipient) {
                return true;
            }
        }
    }
    count >= 5
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The message without the `Return-Path:` lines deliver put first (the
/// next hop adds its own).
fn without_return_path(message: &[u8]) -> &[u8] {
    let mut m = message;
    while m.len() >= 12 && m[..12].eq_ignore_ascii_case(b"Return-Path:") {
        match memfind(m, b"\r\n") {
            Some(i) => m = &m[i + 2..],
            None => break,
        }
    }
    m
}

/// Sends one redirect (unless this message already went to `address`):
/// the original sender stays the envelope sender, and a
/// `X-Sieve-Redirected-From` header is added for loop detection. A
/// failure is temporary: the delivery is retried as a whole.
pub fn redirect(
    settings: &Settings,
    cmd: &[String],
    user: &UserName,
    recipient: &str,
    sender: &str,
    message: &[u8],
    address: &str,
) -> Result<(), Failure> {
    let k = key(&[
        b"sieve-redirect",
        user.as_str().as_bytes(),
        address.to_ascii_lowercase().as_bytes(),
        message,
    ]);
    let now = storage::internals::fsutil::now();
    if crate::filter::seen(&settings.store, user, &k, now, REDIRECT_WINDOW) {
        tracing::info!(user = %user, to = %address, "sieve: redirect already sent by an earlier attempt");
        return Ok(());
    }
    let mut out = format!("{REDIRECTED_HEADER}: <{recipient}>\r\n").into_bytes();
    out.extend_from_slice(without_return_path(message));
    sendmail(cmd, sender, address, &out)
        .map_err(|e| Failure::temp("4.3.0", format!("sieve redirect to {address}: {e}")))?;
    crate::filter::remember(&settings.store, user, &[k], now);
    tracing::info!(user = %user, to = %address, "sieve: redirected");
    Ok(())
}

/// The parts of the original message a vacation reply refers to.
pub struct Original<'a> {
    pub subject: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub references: Option<&'a str>,
}

/// RFC 2047 encoded-word for a header value that is not plain ASCII.
fn header_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        return clean;
    }
    format!("=?utf-8?b?{}?=", base64(clean.as_bytes()))
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends a vacation reply (RFC 5230 4-5) unless the rules forbid it or
/// this sender already had one within the period. Never fails the
/// delivery: problems are logged.
#[allow(clippy::too_many_arguments)]
pub fn vacation(
    settings: &Settings,
    cmd: &[String],
    user: &UserName,
    recipient: &str,
    original: &Original<'_>,
    action: &sieve::Action,
    hostname: &str,
) {
    let sieve::Action::Vacation {
        to,
        period,
        subject,
        from,
        mime,
        handle,
        reason,
        suppressed,
    } = action
    else {
        return;
    };
    if let Some(why) = suppressed {
        tracing::info!(user = %user, to = %to, "sieve: vacation reply not sent: {why}");
        return;
    }
    let period = (*period).min(MAX_VACATION_PERIOD);
    let k = key(&[
        b"sieve-vacation",
        user.as_str().as_bytes(),
        handle.as_bytes(),
        to.to_ascii_lowercase().as_bytes(),
    ]);
    let now = storage::internals::fsutil::now();
    if crate::filter::seen(&settings.store, user, &k, now, period) {
        tracing::info!(user = %user, to = %to, "sieve: vacation reply not sent: already answered within the period");
        return;
    }
    let from = from.as_deref().unwrap_or(recipient);
    let subject = subject
        .clone()
        .unwrap_or_else(|| format!("Auto: {}", original.subject.unwrap_or("Your message")));
    let mut m = String::new();
    m.push_str(&format!("From: {}\r\n", header_text(from)));
    m.push_str(&format!("To: <{to}>\r\n"));
    m.push_str(&format!("Subject: {}\r\n", header_text(&subject)));
    m.push_str(&format!(
        "Date: {}\r\n",
        mail_parser::DateTime::from_timestamp(now).to_rfc822()
    ));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    m.push_str(&format!(
        "Message-ID: <vacation.{now}.{nanos}.{}@{hostname}>\r\n",
        std::process::id()
    ));
    if let Some(id) = original.message_id {
        m.push_str(&format!("In-Reply-To: {id}\r\n"));
        let refs = original
            .references
            .map(|r| format!("{r} "))
            .unwrap_or_default();
        m.push_str(&format!("References: {}{id}\r\n", header_text(&refs)));
    }
    m.push_str("Auto-Submitted: auto-replied (vacation)\r\nMIME-Version: 1.0\r\n");
    let body = reason.replace("\r\n", "\n").replace('\n', "\r\n");
    if *mime {
        // The reason is a MIME entity: its own headers, a blank line, the body.
        m.push_str(&body);
    } else {
        m.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        m.push_str(&body);
        if !body.ends_with("\r\n") {
            m.push_str("\r\n");
        }
    }
    // RFC 5230 5.1: the envelope sender of a reply is empty.
    match sendmail(cmd, "", to, m.as_bytes()) {
        Ok(()) => {
            crate::filter::remember(&settings.store, user, &[k], now);
            tracing::info!(user = %user, to = %to, "sieve: vacation reply sent");
        }
        Err(e) => tracing::warn!(user = %user, to = %to, "sieve: vacation reply not sent: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_headers() {
        assert_eq!(base64(b"Gr\xc3\xbc\xc3\x9fe"), "R3LDvMOfZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(header_text("plain\r\nx"), "plain  x");
        assert_eq!(header_text("Grüße"), "=?utf-8?b?R3LDvMOfZQ==?=");
    }

    #[test]
    fn loops() {
        let m = b"X-Sieve-Redirected-From: <bob@x>\r\nSubject: a\r\n\r\nX-Sieve-Redirected-From: <carol@x>\r\n";
        assert!(redirect_loops(m, "bob@x"));
        assert!(
            !redirect_loops(m, "carol@x"),
            "only the header block counts"
        );
        assert_eq!(
            without_return_path(b"Return-Path: <a>\r\nX: y\r\n"),
            b"X: y\r\n"
        );
    }
}
