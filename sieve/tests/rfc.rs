//! Scripts from the RFCs (and their rules) run against small messages.

use sieve::{Action, Envelope, Limits, NoHost, Outcome, RunOptions, Script};

fn run_with(script: &str, msg: &str, from: &str, to: &str, limits: &Limits) -> Outcome {
    let s = Script::compile(script).unwrap_or_else(|e| panic!("{e}"));
    let raw = msg.replace('\n', "\r\n");
    let env = Envelope {
        from: from.into(),
        to: to.into(),
    };
    let mut opts = RunOptions {
        now: 1_700_000_000,
        limits: limits.clone(),
        ..RunOptions::default()
    };
    opts.environment.insert("location".into(), "MDA".into());
    opts.environment.insert("phase".into(), "during".into());
    s.evaluate(raw.as_bytes(), &env, &opts, &NoHost)
}

fn run(script: &str, msg: &str) -> Outcome {
    run_with(
        script,
        msg,
        "sender@example.org",
        "bob+box@example.com",
        &Limits::default(),
    )
}

fn keep() -> Action {
    Action::Keep { flags: vec![] }
}
fn fileinto(m: &str) -> Action {
    Action::FileInto {
        mailbox: m.into(),
        flags: vec![],
        create: false,
    }
}

const MSG: &str = "Return-Path: <coyote@desert.example.org>\nFrom: \"Wile E. Coyote\" <coyote@desert.example.org>\nTo: roadrunner@acme.example.com, bob+box@example.com\nCc: Group: a@x.example, b@y.example;\nSubject: I have a present for you\nX-Caffeine: C8H10N4O2\nDate: Tue, 14 Nov 2023 22:13:20 +0100\nReceived: from a by b; Tue, 14 Nov 2023 20:00:00 +0000\nReceived: from c by d; Mon, 13 Nov 2023 10:00:00 -0500\n\nLook, I'm sorry about the whole anvil thing, and I really\ndidn't mean to try and drop it on you from the top of the\ncliff.  I want to try to make it up to you.  I've got some\ngreat birdseed over here at my place--top of the line\nstuff--and if you come by, I'll have it all wrapped up\nfor you.  I'm really sorry for all the problems I've caused.\n";

/// RFC 5228 2.10.2: no action at all gives the implicit keep.
#[test]
fn implicit_keep() {
    let o = run("", MSG);
    assert_eq!(o.actions, [keep()]);
    assert!(o.implicit_keep);
}

/// RFC 5228 4.1, 4.2, 2.10.3: fileinto and discard cancel the implicit keep; no folder twice.
#[test]
fn fileinto_discard() {
    let o = run("require \"fileinto\"; fileinto \"A\"; fileinto \"A\";", MSG);
    assert_eq!(o.actions, [fileinto("A")]);
    let o = run("discard;", MSG);
    assert!(o.actions.is_empty());
    let o = run("keep; discard;", MSG);
    assert_eq!(o.actions, [keep()]);
}

/// RFC 5228 3.1 and 3.3: if/elsif/else and stop.
#[test]
fn control() {
    let s = "require \"fileinto\";\nif header :contains \"subject\" \"nothing\" { fileinto \"A\"; }\nelsif header :contains \"subject\" \"PRESENT\" { fileinto \"B\"; stop; }\nelse { fileinto \"C\"; }\nfileinto \"D\";";
    assert_eq!(run(s, MSG).actions, [fileinto("B")]);
}

/// RFC 5228 section 9 (the "Extended Example"), run on the RFC's message of 5.7.
#[test]
fn rfc5228_extended_example() {
    let s = r#"
     require "fileinto";
     if header :is "Sender" "owner-ietf-mta-filters@imc.org"
             {
             fileinto "filter";  # move to "filter" mailbox
             }
     elsif address :DOMAIN :is ["From", "To"] "example.com"
             {
             keep;               # keep in "In" mailbox
             }
     elsif anyof (NOT address :all :contains
                    ["To", "Cc", "Bcc"] "me@example.com",
                  header :matches "subject"
                    ["*make*money*fast*", "*university*dipl*mas*"])
             {
             fileinto "spam";   # move to "spam" mailbox
             }
     else
             {
             fileinto "personal";
             }
    "#;
    // To has bob+box@example.com: the domain test is true.
    assert_eq!(run(s, MSG).actions, [keep()]);
    let other = MSG.replace("bob+box@example.com", "x@else.example");
    assert_eq!(run(s, &other).actions, [fileinto("spam")]);
    let sender = format!("Sender: owner-ietf-mta-filters@imc.org\n{MSG}");
    assert_eq!(run(s, &sender).actions, [fileinto("filter")]);
}

/// RFC 5228 5.1 (address), 5.5 (exists), 5.6 (false), 5.9 (size), 5.8 (not).
#[test]
fn base_tests() {
    let t = |test: &str| {
        let s = format!("require \"fileinto\"; if {test} {{ fileinto \"Y\"; }}");
        run(&s, MSG).actions == [fileinto("Y")]
    };
    assert!(t("address :is :localpart \"from\" \"coyote\""));
    assert!(t("address :domain :is \"From\" \"DESERT.example.org\""));
    assert!(t("address :all :is \"cc\" \"b@y.example\""));
    assert!(!t("address :all :is \"from\" \"Wile E. Coyote\""));
    assert!(t("exists [\"From\", \"Date\"]"));
    assert!(!t("exists [\"From\", \"X-Nope\"]"));
    assert!(!t("false"));
    assert!(t("not false"));
    assert!(t("size :over 100"));
    assert!(!t("size :under 100"));
    assert!(t("size :under 1M"));
    assert!(t("header :is \"X-Caffeine\" \"c8h10n4o2\""));
    assert!(!t(
        "header :comparator \"i;octet\" :is \"X-Caffeine\" \"c8h10n4o2\""
    ));
    assert!(t("header :contains \"X-Caffeine\" \"\""));
    assert!(!t("header :contains \"X-None\" \"\""));
    assert!(t("allof (true, header :matches \"subject\" \"I have*\")"));
    assert!(!t("anyof (false, not true)"));
}

/// RFC 5228 5.4 and 2.10.2: envelope tests and a null sender.
#[test]
fn envelope() {
    let s = "require [\"envelope\", \"fileinto\"]; if envelope :all :is \"from\" \"\" { fileinto \"null\"; } elsif envelope :domain :is \"to\" \"example.com\" { fileinto \"to\"; }";
    assert_eq!(run(s, MSG).actions, [fileinto("to")]);
    let o = run_with(s, MSG, "", "b@x", &Limits::default());
    assert_eq!(o.actions, [fileinto("null")]);
}

/// RFC 5228 3.2: require comes first, unknown extensions and tags are errors with a position.
#[test]
fn validation_errors() {
    let e = Script::compile("keep;\nrequire \"fileinto\";").unwrap_err();
    assert_eq!(e.pos.line, 2);
    let e = Script::compile("require \"x-nope\";").unwrap_err();
    assert!(e.message.contains("x-nope"));
    let e = Script::compile("fileinto \"a\";").unwrap_err();
    assert!(e.message.contains("require"));
    let e = Script::compile("if header :frob \"a\" \"b\" {}").unwrap_err();
    assert_eq!((e.pos.line, e.pos.col), (1, 11));
    assert!(Script::compile("if header :is :contains \"a\" \"b\" {}").is_err());
    assert!(Script::compile("elsif true {}").is_err());
    assert!(Script::compile("redirect \"not an address\";").is_err());
    assert!(Script::compile("if header :comparator \"i;nope\" \"a\" \"b\" {}").is_err());
}

/// RFC 5228 2.4.2.4: encoded-character only once required.
#[test]
fn encoded_character() {
    let s = "require [\"encoded-character\", \"fileinto\"]; if header :contains \"subject\" \"${hex:70 72 65}sent\" { fileinto \"${unicode:41}\"; }";
    assert_eq!(run(s, MSG).actions, [fileinto("A")]);
    let s = "require \"fileinto\"; fileinto \"${hex:41}\";";
    assert_eq!(run(s, MSG).actions, [fileinto("${hex:41}")]);
}

/// RFC 5232: flags on keep/fileinto and the internal variable; hasflag.
#[test]
fn imap4flags() {
    let s = r#"require ["imap4flags", "fileinto"];
        setflag "\\Seen";
        addflag ["$Work", "\\Flagged $Work"];
        removeflag "\\seen";
        if hasflag :is "$work" { fileinto "W"; }
        fileinto :flags "\\Answered" "X";"#;
    let o = run(s, MSG);
    assert_eq!(
        o.actions,
        [
            Action::FileInto {
                mailbox: "W".into(),
                flags: vec!["$Work".into(), "\\Flagged".into()],
                create: false
            },
            Action::FileInto {
                mailbox: "X".into(),
                flags: vec!["\\Answered".into()],
                create: false
            },
        ]
    );
    // The implicit keep takes the internal flags.
    let o = run("require \"imap4flags\"; addflag \"\\\\Seen\";", MSG);
    assert_eq!(
        o.actions,
        [Action::Keep {
            flags: vec!["\\Seen".into()]
        }]
    );
}

/// RFC 3894: :copy keeps the implicit keep.
#[test]
fn copy() {
    let s =
        "require [\"copy\", \"fileinto\"]; fileinto :copy \"A\"; redirect :copy \"x@example.net\";";
    let o = run(s, MSG);
    assert_eq!(
        o.actions,
        [
            fileinto("A"),
            Action::Redirect {
                address: "x@example.net".into(),
                copy: true
            },
            keep()
        ]
    );
    assert!(Script::compile("require \"fileinto\"; fileinto :copy \"A\";").is_err());
}

/// RFC 5429: reject and ereject; conflicts with keep are runtime errors (kept).
#[test]
fn reject() {
    let o = run("require \"reject\"; reject \"no thanks\";", MSG);
    assert_eq!(
        o.actions,
        [Action::Reject {
            reason: "no thanks".into(),
            extended: false
        }]
    );
    let o = run("require [\"reject\"]; keep; reject \"no\";", MSG);
    assert!(o.error.is_some());
    assert_eq!(o.actions, [keep()]);
    assert!(Script::compile("require \"reject\"; ereject \"x\";").is_err());
}

/// RFC 5229: set with modifiers (section 4's examples), match variables, string test.
#[test]
fn variables() {
    let s = r#"require ["variables", "fileinto", "relational"];
        set "honorific" "Mr";
        set "first_name" "Wile";
        set "last_name" "Coyote";
        set "vacation" text:
Dear ${HONORIFIC} ${last_name},
I'm out, please leave a message after the meep.
.
;
        set :upperfirst "b" "hello";
        set :length "c" "${b}";
        set :upper :lowerfirst "d" "wile";
        set :quotewildcard "e" "a*b?";
        if header :matches "subject" "I * a *" { fileinto "${1}-${2}-${b}-${c}-${d}-${e}"; }
        if string :matches "${vacation}" "Dear Mr Coyote,??I'm out, please leave a message after the meep.??" { fileinto "ok"; }
        if string :count "eq" ["${first_name}", "", "x"] "2" { fileinto "two"; }"#;
    assert_eq!(
        run(s, MSG).actions,
        [
            fileinto("have-present for you-Hello-5-wILE-a\\*b\\?"),
            fileinto("ok"),
            fileinto("two")
        ]
    );
    // RFC 5229 3.2's example.
    let s = r#"require ["variables", "fileinto"];
        if header :matches "Subject" "[*] *" { fileinto "${1}|${2}"; }"#;
    let m = "Subject: [acme-users] [fwd] version 1.0 is out\n\nx\n";
    assert_eq!(
        run(s, m).actions,
        [fileinto("acme-users|[fwd] version 1.0 is out")]
    );
}

/// RFC 5231: relational :count and :value with i;ascii-numeric.
#[test]
fn relational() {
    let t = |test: &str| {
        let s = format!(
            "require [\"relational\", \"comparator-i;ascii-numeric\", \"fileinto\"]; if {test} {{ fileinto \"Y\"; }}"
        );
        run(&s, MSG).actions == [fileinto("Y")]
    };
    assert!(t(
        "address :count \"ge\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] [\"3\"]"
    ));
    assert!(!t(
        "address :count \"gt\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] [\"4\"]"
    ));
    assert!(!t(
        "header :value \"lt\" :comparator \"i;ascii-numeric\" \"x-nothing\" \"1\""
    ));
    assert!(t(
        "header :value \"gt\" :comparator \"i;ascii-casemap\" \"subject\" \"H\""
    ));
    assert!(t("header :count \"eq\" \"received\" \"2\""));
    // The count is a string compared by the comparator: "2" > "10" for i;ascii-casemap.
    assert!(t("header :count \"gt\" \"received\" \"10\""));
    assert!(!t(
        "header :count \"gt\" :comparator \"i;ascii-numeric\" \"received\" \"10\""
    ));
    assert!(Script::compile("require [\"comparator-i;ascii-numeric\"]; if header :contains :comparator \"i;ascii-numeric\" \"a\" \"1\" {}").is_err());
}

/// RFC 5233: :user and :detail with the "+" delimiter.
#[test]
fn subaddress() {
    let s = "require [\"subaddress\", \"envelope\", \"fileinto\", \"variables\"]; if envelope :detail :matches \"to\" \"*\" { fileinto \"${1}\"; } if envelope :user :is \"to\" \"bob\" { fileinto \"user\"; } if address :detail :is \"from\" \"\" { fileinto \"never\"; }";
    assert_eq!(run(s, MSG).actions, [fileinto("box"), fileinto("user")]);
}

/// RFC 5173: body :contains on text, :raw, :content.
#[test]
fn body() {
    let t = |test: &str, m: &str| {
        let s = format!("require [\"body\", \"fileinto\"]; if {test} {{ fileinto \"Y\"; }}");
        run(&s, m).actions == [fileinto("Y")]
    };
    assert!(t("body :contains \"birdseed\"", MSG));
    assert!(!t("body :contains \"Coyote\"", MSG));
    let mime = "From: a@b\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nbWVldCBtZQ==\n--XX\nContent-Type: application/octet-stream\n\nsecret\n--XX--\n";
    assert!(t("body :text :contains \"meet me\"", mime));
    assert!(t("body :raw :contains \"bWVldCBtZQ==\"", mime));
    assert!(!t("body :text :contains \"secret\"", mime));
    assert!(t(
        "body :content \"application\" :contains \"secret\"",
        mime
    ));
    // RFC 5173 5.2: a multipart entity is tested on its prologue and epilogue only.
    let prologue = mime.replace("\n\n--XX\n", "\n\nThis is a MIME message.\n--XX\n");
    assert!(t(
        "body :content \"multipart\" :contains \"MIME message\"",
        &prologue
    ));
    assert!(!t(
        "body :content \"multipart\" :contains \"octet-stream\"",
        &prologue
    ));
}

/// RFC 5260: date and currentdate, :zone, :originalzone, :index/:last.
#[test]
fn date_index() {
    let t = |test: &str| {
        let s = format!(
            "require [\"date\", \"index\", \"relational\", \"fileinto\"]; if {test} {{ fileinto \"Y\"; }}"
        );
        run(&s, MSG).actions == [fileinto("Y")]
    };
    assert!(t("date :originalzone \"date\" \"hour\" \"22\""));
    assert!(t("date :zone \"+0000\" \"date\" \"hour\" \"21\""));
    assert!(t("date :zone \"+0000\" \"date\" \"date\" \"2023-11-14\""));
    assert!(t("date :originalzone \"date\" \"zone\" \"+0100\""));
    assert!(t("date :zone \"+0000\" \"date\" \"weekday\" \"2\""));
    assert!(t("date :zone \"+0000\" \"date\" \"julian\" \"60262\""));
    assert!(t(
        "date :zone \"+0000\" \"date\" \"iso8601\" \"2023-11-14T21:13:20Z\""
    ));
    assert!(t(
        "date :index 2 :zone \"+0000\" \"received\" \"date\" \"2023-11-13\""
    ));
    assert!(t(
        "date :index 1 :last :originalzone \"received\" \"zone\" \"-0500\""
    ));
    assert!(t("currentdate :zone \"+0000\" \"date\" \"2023-11-14\""));
    assert!(t("header :index 1 :last :contains \"received\" \"from c\""));
    assert!(!t("header :index 3 :contains \"received\" \"from\""));
}

/// RFC 5183 environment; RFC 5463 ihave; RFC 5490 mailbox.
#[test]
fn environment_ihave_mailbox() {
    let s = "require [\"environment\", \"ihave\", \"mailbox\", \"fileinto\"]; if environment :is \"location\" \"MDA\" { fileinto :create \"E\"; } if ihave \"vacation\" { fileinto \"V\"; } if ihave \"x-nope\" { fileinto \"N\"; } if mailboxexists \"INBOX\" { fileinto \"M\"; }";
    let o = run(s, MSG);
    assert_eq!(
        o.actions,
        [
            Action::FileInto {
                mailbox: "E".into(),
                flags: vec![],
                create: true
            },
            fileinto("V")
        ]
    );
}

/// RFC 5463 4: behind ihave an extension is usable without require, and a
/// block behind an unknown capability is not validated (it never runs).
#[test]
fn ihave_guards_blocks() {
    let s = r#"require "ihave";
        if ihave "fileinto" { fileinto "A"; }
        if ihave "x-unknown" { xunknowncommand :frob; } elsif ihave ["fileinto", "comparator-i;octet"] { fileinto "B"; }"#;
    assert_eq!(run(s, MSG).actions, [fileinto("A"), fileinto("B")]);
    assert!(Script::compile("require \"ihave\"; if true { fileinto \"A\"; }").is_err());
    // RFC 5463 5: error ends the run (the implicit keep applies).
    let o = run(
        "require [\"ihave\", \"fileinto\"]; fileinto \"A\"; error \"no way\";",
        MSG,
    );
    assert!(o.error.unwrap().0.contains("no way"));
    assert_eq!(o.actions, [keep()]);
}

/// RFC 5463 4 with RFC 5173: a body test turned on behind `ihave` (no
/// `require "body"`) sees the body, as Pigeonhole's does (the script
/// runs without a parse of the body up front; the test makes one).
#[test]
fn body_behind_ihave() {
    let s = r#"require ["ihave", "fileinto"];
        if ihave "body" { if body :contains "birdseed" { fileinto "B"; } }
        if header :contains "subject" "present" { fileinto "S"; }"#;
    assert_eq!(run(s, MSG).actions, [fileinto("B"), fileinto("S")]);
    let s = r#"require ["ihave", "fileinto"];
        if ihave "body" { if body :raw :contains "anvil thing" { fileinto "R"; } }"#;
    assert_eq!(run(s, MSG).actions, [fileinto("R")]);
}

/// The regex draft: :regex with captures, linear-time engine.
#[test]
fn regex() {
    let s = r#"require ["regex", "variables", "fileinto"];
        if header :regex "subject" "^I (have) a ([a-z]+)" { fileinto "${1}-${2}"; }"#;
    assert_eq!(run(s, MSG).actions, [fileinto("have-present")]);
    assert!(Script::compile("require \"regex\"; if header :regex \"s\" \"(\" {}").is_err());
    // A pattern that backtracks exponentially elsewhere is linear here.
    let s = "require [\"regex\", \"fileinto\"]; if header :regex \"subject\" \"^(a+)+$\" { fileinto \"Y\"; }";
    let m = format!("Subject: {}b\n\nx\n", "a".repeat(5000));
    assert!(run(s, &m).actions == [keep()]);
}

/// RFC 5230: vacation parameters and the rules that forbid an answer.
#[test]
fn vacation() {
    let s = "require \"vacation\"; vacation :days 3 :subject \"Away\" :addresses \"roadrunner@acme.example.com\" \"gone\";";
    let o = run(s, MSG);
    let Action::Vacation {
        to,
        period,
        suppressed,
        subject,
        ..
    } = &o.actions[0]
    else {
        panic!()
    };
    assert_eq!(
        (to.as_str(), *period, suppressed, subject.as_deref()),
        ("sender@example.org", 259200, &None, Some("Away"))
    );
    assert_eq!(o.actions[1], keep());
    let list = format!("List-Id: <x.lists.example>\n{MSG}");
    let o = run(s, &list);
    let Action::Vacation { suppressed, .. } = &o.actions[0] else {
        panic!()
    };
    assert!(suppressed.is_some());
    let o = run_with(
        s,
        MSG,
        "MAILER-DAEMON@x.example",
        "bob@x",
        &Limits::default(),
    );
    let Action::Vacation { suppressed, .. } = &o.actions[0] else {
        panic!()
    };
    assert!(suppressed.is_some());
    let s2 = "require \"vacation-seconds\"; vacation :seconds 60 \"gone\";";
    let o = run(s2, MSG);
    let Action::Vacation { period, .. } = &o.actions[0] else {
        panic!()
    };
    assert_eq!(*period, 60);
}

/// RFC 5230 4.5 (no reply to mailing lists, bulk or junk mail,
/// auto-submitted messages, or MAILER-DAEMON / owner- / -request senders)
/// and 4.6 (only when the user's address, or one of :addresses, is in a
/// recipient header): each rule alone suppresses the reply, and the same
/// message without that one detail gets it.
#[test]
fn vacation_suppression_rules() {
    let s = "require \"vacation\"; vacation :addresses \"roadrunner@acme.example.com\" \"gone\";";
    let suppressed = |msg: &str, from: &str| {
        let o = run_with(s, msg, from, "bob+box@example.com", &Limits::default());
        let Action::Vacation { suppressed, .. } = &o.actions[0] else {
            panic!("{:?}", o.actions)
        };
        suppressed.clone()
    };
    assert_eq!(suppressed(MSG, "sender@example.org"), None);
    for header in [
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-replied",
        "List-Unsubscribe: <mailto:leave@lists.example>",
        "List-Post: <mailto:list@lists.example>",
    ] {
        let m = format!("{header}\n{MSG}");
        assert!(suppressed(&m, "sender@example.org").is_some(), "{header}");
    }
    // Auto-Submitted: no is a person's message.
    let m = format!("Auto-Submitted: no\n{MSG}");
    assert_eq!(suppressed(&m, "sender@example.org"), None);
    for from in [
        "",
        "MAILER-DAEMON@example.org",
        "owner-list@example.org",
        "list-request@example.org",
        "LISTSERV@example.org",
        "majordomo@example.org",
    ] {
        assert!(suppressed(MSG, from).is_some(), "sender {from:?}");
    }
    // 4.6: neither the recipient nor an :addresses entry in To/Cc/Bcc.
    let other = MSG
        .replace(
            "To: roadrunner@acme.example.com, bob+box@example.com",
            "To: someone@else.example",
        )
        .replace("Cc: Group: a@x.example, b@y.example;", "Cc: c@z.example");
    assert!(suppressed(&other, "sender@example.org").is_some());
    let bcc = format!("Bcc: Bob <bob+box@example.com>\n{other}");
    assert_eq!(suppressed(&bcc, "sender@example.org"), None);
}

/// Limits: actions, redirects, CPU budget; each falls back to keep with an error.
#[test]
fn limits() {
    let many: String = (0..40).map(|i| format!("fileinto \"m{i}\";")).collect();
    let o = run(&format!("require \"fileinto\"; {many}"), MSG);
    assert!(o.error.unwrap().0.contains("actions"));
    assert_eq!(o.actions, [keep()]);
    let r: String = (0..5)
        .map(|i| format!("redirect \"r{i}@example.net\";"))
        .collect();
    let o = run(&r, MSG);
    assert!(o.error.unwrap().0.contains("redirects"));
    let tight = Limits {
        budget: 30,
        ..Limits::default()
    };
    let o = run_with(
        "if header :matches \"subject\" \"*a*b*c*d*e*f*\" { discard; }",
        MSG,
        "a@b",
        "c@d",
        &tight,
    );
    assert!(o.error.unwrap().0.contains("CPU"));
    assert_eq!(o.actions, [keep()]);
}

/// Hostile scripts: huge lists and nesting are compile errors; a script
/// that burns CPU on long headers stops at the budget, quickly, and keeps.
#[test]
fn hostile_scripts_are_bounded() {
    let list: Vec<String> = (0..2000).map(|i| format!("\"k{i}\"")).collect();
    let e = Script::compile(&format!(
        "if header :is \"subject\" [{}] {{ discard; }}",
        list.join(",")
    ))
    .unwrap_err();
    assert!(e.message.contains("too long"), "{e}");
    let deep =
        "if ".to_string() + &"allof(".repeat(40) + "true" + &")".repeat(40) + " { discard; }";
    assert!(Script::compile(&deep).is_err());
    let big = format!("Subject: {}\n\nx\n", "ab".repeat(10_000));
    let rules: String = (0..500)
        .map(|i| format!("if header :matches \"subject\" \"*a*b*a*b*{i}*\" {{ discard; }}\n"))
        .collect();
    let start = std::time::Instant::now();
    let o = run(&rules, &big);
    assert!(start.elapsed().as_secs() < 60, "did not hang");
    assert!(o.error.unwrap().0.contains("CPU"));
    assert_eq!(o.actions, [keep()]);
}

/// Scripts by (global, name), for include.
struct Scripts(Vec<(bool, &'static str, &'static str)>);

impl sieve::Host for Scripts {
    fn mailbox_exists(&self, _: &str) -> bool {
        false
    }
    fn include(&self, global: bool, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .iter()
            .find(|(g, n, _)| *g == global && *n == name)
            .map(|(_, _, s)| s.to_string()))
    }
}

fn run_host(script: &str, host: &Scripts) -> Outcome {
    let s = Script::compile(script).unwrap_or_else(|e| panic!("{e}"));
    let env = Envelope {
        from: "a@example.org".into(),
        to: "b@example.com".into(),
    };
    s.evaluate(
        MSG.replace('\n', "\r\n").as_bytes(),
        &env,
        &RunOptions::default(),
        host,
    )
}

/// RFC 6609 3.2-3.5: include (personal and global), :once, :optional,
/// return, stop, global variables, loops and depth as runtime errors.
#[test]
fn include() {
    let host = Scripts(vec![
        (
            false,
            "lists",
            "require [\"fileinto\", \"include\"]; if header :contains \"subject\" \"present\" { fileinto \"presents\"; return; } fileinto \"never\";",
        ),
        (
            true,
            "spam",
            "require [\"fileinto\", \"include\", \"variables\"]; global \"verdict\"; set \"verdict\" \"ham\"; set \"local\" \"x\";",
        ),
        (false, "loop", "require \"include\"; include \"loop\";"),
        (false, "stopper", "stop;"),
        (false, "bad", "fileinto \"x\";"),
        (false, "deep", "require \"include\"; include \"deep2\";"),
        (false, "deep2", "require \"include\"; include \"deep\";"),
    ]);
    let o = run_host(
        r#"require ["include", "variables", "fileinto"];
        global "verdict";
        include :personal "lists";
        include :global "spam";
        include :once :global "spam";
        include :optional "missing";
        fileinto "v-${verdict}-${local}-${global.verdict}";"#,
        &host,
    );
    assert_eq!(o.error, None);
    assert_eq!(o.actions, [fileinto("presents"), fileinto("v-ham--ham")]);
    // stop in an included script ends everything (implicit keep stays).
    let o = run_host(
        "require [\"include\", \"fileinto\"]; include \"stopper\"; fileinto \"after\";",
        &host,
    );
    assert_eq!(o.actions, [keep()]);
    for (script, err) in [
        ("require \"include\"; include \"loop\";", "loop"),
        ("require \"include\"; include \"deep\";", "loop"),
        ("require \"include\"; include \"missing\";", "not found"),
        ("require \"include\"; include \"bad\";", "require"),
    ] {
        let o = run_host(script, &host);
        let e = o.error.unwrap_or_else(|| panic!("{script}"));
        assert!(e.0.contains(err), "{script}: {e}");
        assert_eq!(o.actions, [keep()]);
    }
    assert!(Script::compile("require \"include\"; include \"a/b\";").is_err());
    assert!(Script::compile("include \"a\";").is_err());
    assert!(Script::compile("require \"include\"; global \"x\";").is_err());
}

/// Remembers keys, as a store would between deliveries.
struct Seen(std::cell::RefCell<Vec<(String, u64)>>);

impl sieve::Host for Seen {
    fn mailbox_exists(&self, _: &str) -> bool {
        false
    }
    fn duplicate_seen(&self, key: &str, _seconds: u64) -> bool {
        self.0.borrow().iter().any(|(k, _)| k == key)
    }
}

/// RFC 7352 3: duplicate by Message-ID, :header, :uniqueid, :handle; the
/// marks to record are handed back, and only when the test was not a
/// duplicate (or with :last).
#[test]
fn duplicate() {
    let seen = Seen(std::cell::RefCell::new(Vec::new()));
    let script = Script::compile(
        r#"require ["duplicate", "fileinto", "variables"];
        if duplicate { fileinto "dups"; }
        if duplicate :handle "subj" :header "subject" :seconds 60 { fileinto "same-subject"; }
        if duplicate :uniqueid "${hex}" { fileinto "never"; }"#,
    )
    .unwrap();
    let env = Envelope {
        from: "a@b".into(),
        to: "c@d".into(),
    };
    let msg = MSG.replace('\n', "\r\n");
    let o = script.evaluate(msg.as_bytes(), &env, &RunOptions::default(), &seen);
    assert_eq!(o.actions, [keep()]);
    // Message-ID absent in MSG: not tracked; the subject and the (empty) uniqueid.
    assert_eq!(o.duplicates.len(), 1, "{:?}", o.duplicates);
    assert_eq!(o.duplicates[0].seconds, 60);
    for d in &o.duplicates {
        seen.0.borrow_mut().push((d.key.clone(), d.seconds));
    }
    let o = script.evaluate(msg.as_bytes(), &env, &RunOptions::default(), &seen);
    assert_eq!(o.actions, [fileinto("same-subject")]);
    assert!(o.duplicates.is_empty());
    let with_id = format!("Message-ID: <x@y>\r\n{msg}");
    let o = script.evaluate(with_id.as_bytes(), &env, &RunOptions::default(), &seen);
    assert_eq!(o.actions, [fileinto("same-subject")]);
    assert_eq!(o.duplicates.len(), 1);
    assert_eq!(o.duplicates[0].seconds, sieve::DUPLICATE_DEFAULT_SECONDS);
    assert!(
        Script::compile("require \"duplicate\"; if duplicate :header \"a\" :uniqueid \"b\" {}")
            .is_err()
    );
}
