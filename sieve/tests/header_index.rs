//! Scripts without a body test find header fields with the crate's own
//! header index instead of mail-parser's header-only parse (issue 18,
//! "Speed"). These tests run scripts both ways, the index (`evaluate`)
//! and mail-parser's header-only parse handed in as `Context::message`
//! (what `evaluate` did before), on messages made of the pieces that
//! matter to the split and to the value decoding, and require the same
//! outcome.

use std::collections::HashMap;

use proptest::prelude::*;
use sieve::{Context, Envelope, NoHost, RunOptions, Script};

/// mail-parser's header-only parse with every value ignored, as
/// `evaluate` used it before the index.
fn old_parse(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    mail_parser::MessageParser::new()
        .ignore_header(mail_parser::HeaderName::ContentType)
        .default_header_ignore()
        .parse_headers(raw)
}

fn env() -> Envelope {
    Envelope {
        from: "a@b".into(),
        to: "c+d@e".into(),
    }
}

/// The outcome through the index, and through the old parse (`None`: it
/// found no header field, the run is a "could not be parsed" error).
fn both(script: &Script, raw: &[u8]) -> (String, String) {
    let opts = RunOptions::default();
    let new = script.evaluate(raw, &env(), &opts, &NoHost);
    let old = match old_parse(raw) {
        Some(m) => {
            let environment = HashMap::new();
            let envelope = env();
            let ctx = Context {
                raw,
                message: Some(&m),
                envelope: &envelope,
                environment: &environment,
                delimiter: "+",
                now: 0,
                local_offset: 0,
            };
            format!("{:?}", script.run(&ctx, &NoHost, &opts.limits))
        }
        None => "unparsed".into(),
    };
    let new = match &new.error {
        Some(e) if e.0 == "message could not be parsed" => "unparsed".into(),
        _ => format!("{new:?}"),
    };
    (new, old)
}

const REQUIRE: &str = "require [\"fileinto\", \"variables\", \"regex\", \"date\", \"index\", \"relational\", \"comparator-i;ascii-numeric\", \"subaddress\", \"imap4flags\", \"duplicate\"];";

/// Header, address, exists, date and duplicate tests over the names the
/// pieces below use; each match files into a mailbox named after it.
const TESTS: &[&str] = &[
    "header :matches \"subject\" \"*\"",
    "header :contains \"Subject\" \"a\"",
    "header :is \"SUBJECT\" \"\"",
    "header :matches \"sub ject\" \"*\"",
    "header :matches \"x-y\" \"*\"",
    "header :matches \"x-\u{fffd}\" \"*\"",
    "header :matches \"x-\u{e9}t\u{e9}\" \"*\"",
    "header :regex \"list-id\" \"^(.*)$\"",
    "header :count \"ge\" :comparator \"i;ascii-numeric\" \"received\" \"2\"",
    "header :index 2 :matches \"received\" \"*\"",
    "header :index 1 :last :matches \"received\" \"*\"",
    "address :all :matches \"from\" \"*\"",
    "address :domain :matches [\"to\", \"cc\"] \"*\"",
    "address :localpart :is \"from\" \"a\"",
    "address :user :matches \"to\" \"*\"",
    "address :detail :matches \"to\" \"*\"",
    "address :index 1 :last :all :matches \"to\" \"*\"",
    "exists [\"from\", \"x-y\"]",
    "exists \"sub ject\"",
    "date :originalzone :matches \"date\" \"std11\" \"*\"",
    "date :index 1 :last :zone \"+0100\" :matches \"received\" \"iso8601\" \"*\"",
    "duplicate :header \"message-id\"",
];

/// Pieces of header blocks: fields, folds, malformed lines, odd names,
/// encoded words, address forms, line ends, the blank line.
const PIECES: &[&[u8]] = &[
    b"Subject: a b\r\n",
    b"subject:  two  spaces \r\n",
    b" folded line\r\n",
    b"\tfolded tab\n",
    b"Sub ject: spaced known\n",
    b"X-Y : before colon\n",
    b":X-Y: leading colon\n",
    b"X-\xc3\xa9t\xc3\xa9: utf-8 name\n",
    b"X-\xff: bad byte name\n",
    b"no colon line\n",
    b"Subject: =?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=\r\n",
    b"Subject: caf\xc3\xa9 \xff\r\n",
    b"From: A B <a@b.example>\r\n",
    b"From: a@b\n",
    b"From: a@b",
    b"To: A <x@y>",
    b"From: \"Doe, J\" <\"j.d\"@x>\n",
    b"From: a@b (c)\n",
    b"To: c+d@e, f@g\r\n",
    b"To: grp: x+y@z, w@v;\n",
    b"To: <c+d@e>\n",
    b"Cc: =?utf-8?q?J=C3=B6?= <jo@x>\n",
    b"List-Id: Rust <rust.lists.example>\n",
    b"Received: from a by b; Tue, 14 Nov 2023 20:00:00 +0000\n",
    b"Received: from c\r\n by d; Mon, 13 Nov 2023 10:00:00 -0500\r\n",
    b"Date: Tue, 14 Nov 2023 22:13:20 +0100\n",
    b"Message-ID: <id@x>\n",
    b"\r\n",
    b"\n",
    b" ",
    b"\r",
    b"body text\n",
];

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(PIECES).prop_map(|p| p.to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ],
        0..14,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// The same outcome through the index as through the old parse.
    #[test]
    fn index_as_old_parse(
        tests in prop::collection::vec(prop::sample::select(TESTS), 1..6),
        msg in message(),
    ) {
        let body: String = tests
            .iter()
            .enumerate()
            .map(|(i, t)| format!("if {t} {{ fileinto \"r{i}-${{1}}\"; addflag \"f{i}\"; }}\n"))
            .collect();
        let script = Script::compile(&format!("{REQUIRE}\n{body}")).unwrap();
        let (new, old) = both(&script, &msg);
        prop_assert_eq!(new, old, "{:?}", String::from_utf8_lossy(&msg));
    }
}

/// Every test above on the messages of the differential corpus.
#[test]
fn corpus_as_old_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sieve/messages");
    for e in std::fs::read_dir(dir).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        let crlf = String::from_utf8_lossy(&raw)
            .replace('\n', "\r\n")
            .into_bytes();
        for t in TESTS {
            let script =
                Script::compile(&format!("{REQUIRE}\nif {t} {{ fileinto \"r-${{1}}\"; }}"))
                    .unwrap();
            for m in [&raw, &crlf] {
                let (new, old) = both(&script, m);
                assert_eq!(new, old, "{t}");
            }
        }
    }
}

/// Hostile header blocks: tens of thousands of fields, a field of
/// megabytes, a block without a blank line. The index is built once per
/// run and each lookup passes over the fields once, so the runs stay
/// quick, and they agree with the old parse.
#[test]
fn hostile_headers_bounded() {
    let mut many = Vec::new();
    for i in 0..50_000 {
        many.extend_from_slice(format!("X-{}: v{i}\r\n", i % 7).as_bytes());
    }
    many.extend_from_slice(b"Subject: last\r\n\r\nbody\r\n");
    let mut long = b"Subject: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 4 << 20));
    long.extend_from_slice(b"\r\n");
    long.extend(std::iter::repeat_n(b"\t x\r\n".as_slice(), 100_000).flatten());
    long.extend_from_slice(b"From: a@b\r\n\r\n");
    let names = "Name-".repeat(200_000) + ": v\n";
    let colons = ":".repeat(1 << 20) + "\n";
    let script = Script::compile(&format!(
        "{REQUIRE}\n\
         if header :contains \"subject\" \"last\" {{ fileinto \"s\"; }}\n\
         if header :count \"ge\" :comparator \"i;ascii-numeric\" \"x-3\" \"1\" {{ fileinto \"c\"; }}\n\
         if address :domain :is \"from\" \"b\" {{ fileinto \"f\"; }}\n\
         if exists \"x-nope\" {{ fileinto \"n\"; }}\n\
         if header :index 7000 :contains \"x-1\" \"v\" {{ fileinto \"i\"; }}"
    ))
    .unwrap();
    for m in [many, long, names.into_bytes(), colons.into_bytes()] {
        let t = std::time::Instant::now();
        let (new, old) = both(&script, &m);
        assert_eq!(new, old);
        assert!(t.elapsed().as_secs() < 60, "{:?}", t.elapsed());
    }
}
