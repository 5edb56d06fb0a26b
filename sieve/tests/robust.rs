//! Arbitrary scripts and messages never panic the compiler or the
//! interpreter (every field from outside is bounded, errors are values).

use proptest::prelude::*;
use sieve::{Envelope, NoHost, RunOptions, Script};

const WORDS: &[&str] = &[
    "require",
    "\"fileinto\"",
    "\"variables\"",
    "\"regex\"",
    "\"date\"",
    "\"body\"",
    "if",
    "elsif",
    "else",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "header",
    "address",
    "envelope",
    "body",
    "date",
    "string",
    "set",
    "fileinto",
    "keep",
    "discard",
    "stop",
    "redirect",
    ":matches",
    ":contains",
    ":is",
    ":regex",
    ":count",
    ":value",
    "\"ge\"",
    ":index",
    "1",
    ":last",
    "anyof",
    "allof",
    "not",
    "true",
    "false",
    "exists",
    "size",
    ":over",
    "10K",
    "\"subject\"",
    "\"*a?*\"",
    "\"${1}\"",
    "\"${hex:41}\"",
    "\"(a+)+$\"",
    "text:\n.x\n.\n",
    "#c\n",
    "/* c */",
    ":zone",
    "\"+0100\"",
    "\"date\"",
    "\"hour\"",
    "\"from\"",
    "\"x@y\"",
    ":comparator",
    "\"i;ascii-numeric\"",
];

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"Subject: a?b*c =?utf-8?q?=C3=A9?=\r\n".to_vec()),
            Just(b"From: <x@y>, bad <<@>\r\n".to_vec()),
            Just(b"Date: Tue, 99 Foo 0000 99:99:99 +9999\r\n".to_vec()),
            Just(b"Content-Type: multipart/mixed; boundary=\"b\"\r\n".to_vec()),
            Just(b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

const TESTS: &[&str] = &[
    "header :matches \"subject\" \"*?*\"",
    "header :regex \"subject\" \"^(.*)$\"",
    "address :domain :contains [\"from\", \"to\"] \"y\"",
    "address :detail \"to\" \"*\"",
    "envelope :user \"to\" \"c\"",
    "body :text :contains \"hi\"",
    "body :content \"multipart\" :matches \"*\"",
    "date :zone \"+0100\" \"date\" \"std11\" \"*\"",
    "date :index 1 :last :originalzone \"date\" \"julian\" \"1\"",
    "currentdate :value \"ge\" \"year\" \"2000\"",
    "header :count \"gt\" :comparator \"i;ascii-numeric\" \"received\" \"0\"",
    "string :matches \"${1}${2}\" \"*\"",
    "hasflag :contains \"\\\\\"",
    "exists [\"from\", \"x\"]",
    "size :over 1",
];
const ACTIONS: &[&str] = &[
    "fileinto :create \"${1}x\";",
    "keep :flags \"\\\\Seen ${0}\";",
    "addflag \"$a\";",
    "set :upper :length \"v\" \"${1}\";",
    "redirect :copy \"r@example.org\";",
    "discard;",
    "stop;",
    "vacation :days 1 \"away\";",
    "reject \"no\";",
];
const REQUIRE: &str = "require [\"fileinto\", \"mailbox\", \"imap4flags\", \"variables\", \"regex\", \"body\", \"date\", \"index\", \"relational\", \"comparator-i;ascii-numeric\", \"subaddress\", \"envelope\", \"copy\", \"vacation\", \"reject\"];";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,200}") {
        let _ = Script::compile(&src);
    }

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(WORDS), 0..40), msg in message()) {
        let src = words.join(" ");
        if let Ok(script) = Script::compile(&src) {
            let env = Envelope { from: "a@b".into(), to: "c+d@e".into() };
            let _ = script.evaluate(&msg, &env, &RunOptions::default(), &NoHost);
        }
    }

    #[test]
    fn valid_rules_on_arbitrary_messages(
        rules in prop::collection::vec((prop::sample::select(TESTS), prop::sample::select(ACTIONS)), 1..8),
        msg in message(),
    ) {
        let body: String = rules.iter().map(|(t, a)| format!("if {t} {{ {a} }}\n")).collect();
        let script = Script::compile(&format!("{REQUIRE}\n{body}")).unwrap();
        let env = Envelope { from: "a@b".into(), to: "c+d@e".into() };
        let o = script.evaluate(&msg, &env, &RunOptions::default(), &NoHost);
        // Never empty-handed by accident: an error means exactly the keep.
        if o.error.is_some() {
            prop_assert_eq!(o.actions.len(), 1);
        }
    }
}
