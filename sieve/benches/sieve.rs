//! What a typical script costs per message (issue 18's speed target: LMTP
//! with a 10-rule script at 95% of the throughput without one): parsing
//! the message and running the script, and compiling it (once per change,
//! cached by deliver). `cargo bench -p sieve`.

use criterion::{Criterion, criterion_group, criterion_main};
use sieve::{Envelope, NoHost, RunOptions, Script};

const SCRIPT: &str = r#"require ["fileinto", "imap4flags", "envelope", "subaddress", "variables", "relational", "comparator-i;ascii-numeric", "body"];
if header :contains "list-id" "dev.example.org" { fileinto "Lists/dev"; stop; }
if header :matches "subject" "[*] *" { fileinto "Lists/${1}"; stop; }
if address :domain :is "from" ["bank.example", "shop.example"] { addflag "$Finance"; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "Junk"; stop; }
if envelope :detail "to" "newsletters" { fileinto "Newsletters"; }
if anyof (header :contains "subject" "invoice", header :contains "subject" "receipt") { addflag "\\Flagged"; }
if address :is "from" "boss@work.example" { fileinto :flags "\\Flagged" "Work"; }
if exists "x-mailing-list" { fileinto "Lists/other"; }
if size :over 5M { fileinto "Large"; }
if body :contains "unsubscribe" { addflag "$Bulk"; }
"#;

fn message() -> Vec<u8> {
    let mut m = String::from(
        "Return-Path: <alice@example.org>\r\nReceived: from mx by host; Tue, 14 Nov 2023 22:13:20 +0100\r\n\
         From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Lunch on Friday?\r\n\
         Date: Tue, 14 Nov 2023 22:13:20 +0100\r\nMessage-ID: <lunch@example.org>\r\nX-Spam-Score: 1\r\n\r\n",
    );
    while m.len() < 4000 {
        m.push_str("A line of ordinary text in the body of a typical message.\r\n");
    }
    m.into_bytes()
}

/// The ten kinds of message of `bench/deliver_bench.py` (LF line ends, as
/// deliver normalizes them before the script runs), about 4 KB each.
fn delivery_messages() -> Vec<Vec<u8>> {
    let kinds: [(&str, &str); 10] = [
        ("", "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=9.1\n"),
        (
            "",
            "List-Id: Rust users <rust-users.lists.example.org>\n\
             List-Unsubscribe: <mailto:rust-users-leave@lists.example.org>\nPrecedence: list\n",
        ),
        (
            "",
            "List-Id: <debian-devel.lists.debian.org>\nPrecedence: list\n",
        ),
        ("GitHub <notifications@github.example.com>", ""),
        ("The Boss <boss@example.org>", ""),
        ("", ""),
        ("", ""),
        ("", ""),
        ("", ""),
        ("", ""),
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, (from, extra))| {
            let from = if from.is_empty() {
                "Bench Sender <bench-sender@example.org>"
            } else {
                from
            };
            let mut m = format!(
                "From: {from}\nTo: bench@example.org\n{extra}Subject: benchmark message {i}\n\
                 Date: Sun, 22 Nov 2026 12:00:00 +0000\nMessage-ID: <bench.{i}@example.org>\n\
                 MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
            );
            while m.len() < 4096 {
                m.push_str(
                    "The quick brown fox jumps over the lazy dog, again and again. 0123456789\n",
                );
            }
            m.into_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let delivery = Script::compile(include_str!("../../bench/deliver_bench.sieve")).unwrap();
    let msgs = delivery_messages();
    let env = Envelope {
        from: "bench-sender@example.org".into(),
        to: "bench@example.org".into(),
    };
    let opts = RunOptions::default();
    c.bench_function("evaluate bench/deliver_bench.sieve, 10 messages", |b| {
        b.iter(|| {
            for m in &msgs {
                std::hint::black_box(delivery.evaluate(m, &env, &opts, &NoHost));
            }
        })
    });

    let script = Script::compile(SCRIPT).unwrap();
    let msg = message();
    let env = Envelope {
        from: "alice@example.org".into(),
        to: "bob@example.com".into(),
    };
    c.bench_function("evaluate 10 rules on 4 KB", |b| {
        b.iter(|| script.evaluate(&msg, &env, &opts, &NoHost))
    });
    c.bench_function("compile 10 rules", |b| {
        b.iter(|| Script::compile(SCRIPT).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
