//! BINARY (RFC 3516) through the real server: FETCH BINARY[section],
//! BINARY.PEEK, BINARY.SIZE, partial fetches, literal8 responses and
//! APPEND with a literal8.

mod imap_common;

use imap_common::*;

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The attachment of the test message: bytes with NULs in them.
fn attachment(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn multipart(att: &[u8]) -> String {
    format!(
        "From: a@x.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n\
         --zz\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         caf=C3=A9 au lait=\r\n, soft break\r\n\
         --zz\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: BASE64\r\n\r\n{}\r\n\
         --zz\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n\
         --zz\r\nContent-Type: text/plain\r\n\r\nplain 7bit\r\n\
         --zz--\r\n",
        b64(att)
    )
}

/// RFC 3516 4.2/4.3: BINARY[n] is part n with its Content-Transfer-
/// Encoding undone (quoted-printable, base64 in any case, 7bit as is);
/// content with a NUL comes as a `~{n}` literal8, other content as a
/// literal; `<origin.len>` cuts the decoded bytes and the response names
/// the origin; BINARY.SIZE is the decoded size; BINARY.PEEK leaves \Seen
/// alone while BINARY sets it (RFC 3501 6.4.5); an unknown encoding is
/// `NO [UNKNOWN-CTE]`; a part that does not exist is NIL.
#[test]
fn binary_sections() {
    let att = attachment(3000);
    let (_tmp, spool) = store_with("bin", &[multipart(&att).into_bytes()]);
    let mut c = Client::spawn(&spool, "bin");
    let caps = c.ok("CAPABILITY");
    assert!(caps[0].split(' ').any(|x| x == "BINARY"), "{caps:?}");
    c.ok("SELECT INBOX");

    // The CRLF before a boundary delimiter belongs to the delimiter.
    let text = "caf\u{e9} au lait, soft break".as_bytes();
    let LiteralFetch {
        before: first,
        crc,
        len: n,
        after,
    } = fetch_literal(&mut c, "a1", "FETCH 1 (BINARY.PEEK[1])");
    assert_eq!(first, format!("* 1 FETCH (BINARY[1] {{{}}}", text.len()));
    assert_eq!((crc, n), (crc32fast::hash(text), text.len() as u64));
    assert_eq!(after[0], ")");

    let lines = c.ok("FETCH 1 (FLAGS BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[4])");
    assert_eq!(
        lines[0],
        format!(
            "* 1 FETCH (FLAGS (\\Recent) BINARY.SIZE[1] {} BINARY.SIZE[2] {} BINARY.SIZE[4] 10)",
            text.len(),
            att.len()
        )
    );

    let LiteralFetch {
        before: first,
        crc,
        len: n,
        after,
    } = fetch_literal(&mut c, "a2", "FETCH 1 (BINARY[2])");
    assert_eq!(first, format!("* 1 FETCH (BINARY[2] ~{{{}}}", att.len()));
    assert_eq!((crc, n), (crc32fast::hash(&att), att.len() as u64));
    assert!(after[0].contains("FLAGS (\\Seen \\Recent)"), "{after:?}");

    // A window with a NUL (att[0] is 0) and one without.
    let LiteralFetch {
        before: first, crc, ..
    } = fetch_literal(&mut c, "a3", "FETCH 1 (BINARY.PEEK[2]<0.5>)");
    assert_eq!(first, "* 1 FETCH (BINARY[2]<0> ~{5}");
    assert_eq!(crc, crc32fast::hash(&att[..5]));
    let LiteralFetch {
        before: first, crc, ..
    } = fetch_literal(&mut c, "a4", "FETCH 1 (BINARY.PEEK[2]<1.10>)");
    assert_eq!(first, "* 1 FETCH (BINARY[2]<1> {10}");
    assert_eq!(crc, crc32fast::hash(&att[1..11]));
    let LiteralFetch {
        before: first,
        len: n,
        ..
    } = fetch_literal(&mut c, "a5", "FETCH 1 (BINARY.PEEK[2]<5000.10>)");
    assert_eq!((first.as_str(), n), ("* 1 FETCH (BINARY[2]<5000> {0}", 0));

    let LiteralFetch {
        before: first, crc, ..
    } = fetch_literal(&mut c, "a6", "FETCH 1 (BINARY.PEEK[4])");
    assert_eq!(first, "* 1 FETCH (BINARY[4] {10}");
    assert_eq!(crc, crc32fast::hash(b"plain 7bit"));

    let (lines, tagged) = c.cmd("FETCH 1 (BINARY.PEEK[3])");
    assert!(tagged.contains("NO [UNKNOWN-CTE]"), "{tagged} {lines:?}");
    let (_, tagged) = c.cmd("FETCH 1 (BINARY.SIZE[3])");
    assert!(tagged.contains("NO [UNKNOWN-CTE]"), "{tagged}");

    // As Dovecot: a part that does not exist is empty.
    let lines = c.ok("FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])");
    assert_eq!(lines, ["* 1 FETCH (BINARY[9] {0}", " BINARY.SIZE[9] 0)"]);
}

/// RFC 3516 4.2 on a composite section (as Dovecot does it): every leaf
/// below it is decoded and its Content-Transfer-Encoding field says
/// `binary`; headers, boundaries and 7bit/8bit parts are sent as they
/// are. BINARY[] is the whole message so; a message/rfc822 part is its
/// message so. An unknown encoding anywhere below is `NO [UNKNOWN-CTE]`.
#[test]
fn binary_of_composite_parts_decodes_their_leaves() {
    let inner = "Subject: inner\r\nContent-Type: text/plain\r\n\
                 Content-Transfer-Encoding: base64\r\nX-After: 1\r\n\r\naGVsbG8AIHdvcmxk";
    let outer = format!(
        "Subject: outer\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n\
         --b\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n\
         --b\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nx=3Dy\r\n\
         --b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n=3D\r\n--b--\r\n"
    );
    let bad = "Subject: bad\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
               --b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nabc\r\n--b--\r\n";
    let (_tmp, spool) = store_with("comp", &[outer.into_bytes(), bad.as_bytes().to_vec()]);
    let mut c = Client::spawn(&spool, "comp");
    c.ok("SELECT INBOX");
    // The field moves to the end of the header, as Dovecot puts it.
    let inner_bin: &[u8] = b"Subject: inner\r\nContent-Type: text/plain\r\n\
        X-After: 1\r\nContent-Transfer-Encoding: binary\r\n\r\nhello\0 world";
    let LiteralFetch {
        before, crc, len, ..
    } = fetch_literal(&mut c, "c1", "FETCH 1 (BINARY.PEEK[1])");
    assert_eq!(
        before,
        format!("* 1 FETCH (BINARY[1] ~{{{}}}", inner_bin.len())
    );
    assert_eq!(
        (crc, len),
        (crc32fast::hash(inner_bin), inner_bin.len() as u64)
    );
    let mut whole = b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n\
        --b\r\nContent-Type: message/rfc822\r\n\r\n"
        .to_vec();
    whole.extend_from_slice(inner_bin);
    whole.extend_from_slice(
        b"\r\n--b\r\nContent-Transfer-Encoding: binary\r\n\r\nx=y\r\n\
          --b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n=3D\r\n--b--\r\n",
    );
    let lines = c.ok("FETCH 1 (BINARY.SIZE[] BINARY.SIZE[1.1])");
    assert_eq!(
        lines[0],
        format!(
            "* 1 FETCH (BINARY.SIZE[] {} BINARY.SIZE[1.1] 12)",
            whole.len()
        )
    );
    let LiteralFetch { crc, len, .. } = fetch_literal(&mut c, "c2", "FETCH 1 (BINARY.PEEK[])");
    assert_eq!((crc, len), (crc32fast::hash(&whole), whole.len() as u64));
    let (_, tagged) = c.cmd("FETCH 2 (BINARY.SIZE[])");
    assert!(tagged.contains("NO [UNKNOWN-CTE]"), "{tagged}");
}

/// RFC 3516 4.2: a base64 part of a message too big to be held in
/// memory (over 1 MiB, read from disk in 64 KiB chunks) is decoded as it
/// is streamed, and its size is the decoded size.
#[test]
fn binary_of_a_large_part_streams() {
    let att = attachment(1_500_000);
    let (_tmp, spool) = store_with("big", &[multipart(&att).into_bytes()]);
    let mut c = Client::spawn(&spool, "big");
    c.ok("SELECT INBOX");
    let lines = c.ok("FETCH 1 (BINARY.SIZE[2])");
    assert_eq!(
        lines[0],
        format!("* 1 FETCH (BINARY.SIZE[2] {})", att.len())
    );
    let LiteralFetch {
        before: first,
        crc,
        len: n,
        ..
    } = fetch_literal(&mut c, "b1", "FETCH 1 (BINARY.PEEK[2])");
    assert_eq!(first, format!("* 1 FETCH (BINARY[2] ~{{{}}}", att.len()));
    assert_eq!((crc, n), (crc32fast::hash(&att), att.len() as u64));
    let LiteralFetch { crc, len: n, .. } =
        fetch_literal(&mut c, "b2", "FETCH 1 (BINARY.PEEK[2]<1000000.70000>)");
    assert_eq!(
        (crc, n),
        (crc32fast::hash(&att[1_000_000..1_070_000]), 70_000)
    );
}

/// RFC 3516 4.4: APPEND takes a `~{n}` literal8, whose content may hold
/// NULs; BINARY[] gives the message back as a literal8.
#[test]
fn append_with_literal8() {
    let (_tmp, spool) = store_with("app", &[]);
    let mut c = Client::spawn(&spool, "app");
    let msg = b"Subject: nul\r\nContent-Type: application/octet-stream\r\n\r\na\0b\r\n";
    c.send(&format!("p1 APPEND INBOX ~{{{}}}\r\n", msg.len()));
    let cont = c.line();
    assert!(cont.starts_with('+'), "{cont}");
    c.send(std::str::from_utf8(msg).unwrap());
    c.send("\r\n");
    let done = c.line();
    assert!(done.starts_with("p1 OK"), "{done}");
    c.ok("SELECT INBOX");
    let LiteralFetch {
        before: first,
        crc,
        len: n,
        ..
    } = fetch_literal(&mut c, "p2", "FETCH 1 (BINARY.PEEK[])");
    assert_eq!(first, format!("* 1 FETCH (BINARY[] ~{{{}}}", msg.len()));
    assert_eq!((crc, n), (crc32fast::hash(msg), msg.len() as u64));
    let LiteralFetch {
        before: first, crc, ..
    } = fetch_literal(&mut c, "p3", "FETCH 1 (BINARY.PEEK[1])");
    assert_eq!(first, "* 1 FETCH (BINARY[1] ~{5}");
    assert_eq!(crc, crc32fast::hash(b"a\0b\r\n"));
    // A literal cannot carry NUL (RFC 3501 9): BODY sends it as 0x80,
    // the size unchanged, the whole message (checked against its CRC as
    // stored) too.
    let LiteralFetch {
        before: first, crc, ..
    } = fetch_literal(&mut c, "p4", "FETCH 1 (BODY.PEEK[1])");
    assert_eq!(first, "* 1 FETCH (BODY[1] {5}");
    assert_eq!(crc, crc32fast::hash(b"a\x80b\r\n"));
    let sent: Vec<u8> = msg.iter().map(|&b| if b == 0 { 0x80 } else { b }).collect();
    let LiteralFetch {
        before: first,
        crc,
        len,
        ..
    } = fetch_literal(&mut c, "p5", "FETCH 1 (BODY.PEEK[])");
    assert_eq!(first, format!("* 1 FETCH (BODY[] {{{}}}", msg.len()));
    assert_eq!((crc, len), (crc32fast::hash(&sent), msg.len() as u64));
}

/// BINARY with a section beyond part numbers, as Dovecot takes it (and
/// test suites written against it send): `BINARY[TEXT]` decodes the
/// message text (each leaf below it), `BINARY[n.MIME]`, `[n.HEADER]` and
/// `[n.HEADER.FIELDS (...)]` are the header bytes, BINARY.SIZE of each is
/// its length, and `<origin>` without a length runs to the end. BINARY
/// (not PEEK) sets \Seen (RFC 3501 6.4.5).
#[test]
fn binary_of_header_and_text_sections() {
    let msg = "From: a@x.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n\
               --b\r\nContent-Type: message/rfc822\r\n\r\n\
               Subject: in\r\nX-Y: z\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n\
               --b--\r\n";
    let (_tmp, spool) = store_with("hdr", &[msg.as_bytes().to_vec()]);
    let mut c = Client::spawn(&spool, "hdr");
    c.ok("SELECT INBOX");
    let text = "pre\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n\
                Subject: in\r\nX-Y: z\r\nContent-Transfer-Encoding: binary\r\n\r\nhi\r\n--b--\r\n";
    let r = fetch_literal(&mut c, "h1", "FETCH 1 (BINARY.PEEK[TEXT])");
    assert_eq!(
        r.before,
        format!("* 1 FETCH (BINARY[TEXT] {{{}}}", text.len())
    );
    assert_eq!(r.crc, crc32fast::hash(text.as_bytes()));
    let r = fetch_literal(&mut c, "h2", "FETCH 1 (BINARY.PEEK[1.TEXT])");
    assert_eq!(
        (r.before.as_str(), r.crc),
        ("* 1 FETCH (BINARY[1.TEXT] {2}", crc32fast::hash(b"hi"))
    );
    let mime = "Content-Type: message/rfc822\r\n\r\n";
    let r = fetch_literal(&mut c, "h3", "FETCH 1 (BINARY.PEEK[1.MIME])");
    assert_eq!(r.crc, crc32fast::hash(mime.as_bytes()));
    let r = fetch_literal(&mut c, "h4", "FETCH 1 (BINARY.PEEK[1.HEADER.FIELDS (X-Y)])");
    assert_eq!(r.before, "* 1 FETCH (BINARY[1.HEADER.FIELDS (X-Y)] {10}");
    assert_eq!(r.crc, crc32fast::hash(b"X-Y: z\r\n\r\n"));
    let lines = c.ok("FETCH 1 (BINARY.SIZE[TEXT] BINARY.SIZE[1.MIME] BINARY.SIZE[1.TEXT])");
    assert_eq!(
        lines[0],
        format!(
            "* 1 FETCH (BINARY.SIZE[TEXT] {} BINARY.SIZE[1.MIME] {} BINARY.SIZE[1.TEXT] 2)",
            text.len(),
            mime.len()
        )
    );
    let r = fetch_literal(&mut c, "h5", "FETCH 1 (BINARY.PEEK[TEXT]<5>)");
    assert_eq!(
        r.before,
        format!("* 1 FETCH (BINARY[TEXT]<5> {{{}}}", text.len() - 5)
    );
    assert_eq!(r.crc, crc32fast::hash(&text.as_bytes()[5..]));
    let r = fetch_literal(&mut c, "h6", "FETCH 1 (BINARY[1.TEXT])");
    assert!(r.after[0].contains("\\Seen"), "{:?}", r.after);
}

/// RFC 3516 4.4: a binary literal's `binary` part is stored in base64
/// (as Dovecot does): BODYSTRUCTURE and BODY[1] show base64 in 76-column
/// lines, BINARY[1] and BINARY.SIZE[1] the octets sent.
#[test]
fn append_of_a_binary_part_stores_it_in_base64() {
    let (_tmp, spool) = store_with("bp", &[]);
    let mut c = Client::spawn(&spool, "bp");
    let part: Vec<u8> = (0u8..100).collect();
    let mut msg = b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    msg.extend_from_slice(&part);
    msg.extend_from_slice(b"\r\n--xx--\r\n");
    c.send_bytes(
        &[
            format!("p1 APPEND INBOX ~{{{}+}}\r\n", msg.len()).as_bytes(),
            &msg,
            b"\r\n",
        ]
        .concat(),
    );
    let done = c.line();
    assert!(done.starts_with("p1 OK"), "{done}");
    c.ok("SELECT INBOX");
    let s = c.ok("FETCH 1 (BODYSTRUCTURE)").join(" ");
    assert!(s.contains("\"BASE64\" 138"), "{s}");
    let LiteralFetch { before, crc, .. } = fetch_literal(&mut c, "p2", "FETCH 1 (BODY.PEEK[1])");
    assert_eq!(before, "* 1 FETCH (BODY[1] {138}");
    let b64 = b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\nOTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==";
    assert_eq!(crc, crc32fast::hash(b64));
    let LiteralFetch { before, crc, .. } =
        fetch_literal(&mut c, "p3", "FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])");
    assert_eq!(before, "* 1 FETCH (BINARY[1] ~{100}");
    assert_eq!(crc, crc32fast::hash(&part));
}
