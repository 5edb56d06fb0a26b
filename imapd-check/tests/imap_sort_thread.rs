//! ESEARCH (RFC 4731), SORT (RFC 5256 3, RFC 5957) and THREAD (RFC 5256
//! 3) through the real server.

mod imap_common;

use imap_common::*;
use storage::AppendOptions;

/// A store for `user` whose INBOX holds `msgs` (header lines, internal
/// date, sent date as stored by delivery: 0 when there is none).
fn mailbox(user: &str, msgs: &[(String, i64, i64)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let raw = msgs.iter().map(|(header, internal, sent)| {
        let opts = AppendOptions {
            internal_date: Some(*internal),
            sent_date: *sent,
            ..Default::default()
        };
        (format!("{header}\r\n\r\nbody\r\n").into_bytes(), opts)
    });
    seed_raw(&spool, user, raw);
    (tmp, spool)
}

/// The one untagged line starting with `prefix`.
fn untagged(lines: &[String], prefix: &str) -> String {
    let found: Vec<&String> = lines.iter().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "{prefix}: {lines:?}");
    found[0].clone()
}

/// The one `* ESEARCH` line of a command that must succeed (and send no
/// `* SEARCH` or `* SORT`), its tag written `(TAG)`.
fn esearch(c: &mut Client, q: &str) -> String {
    let (lines, tagged) = c.cmd(q);
    let tag = tagged.split(' ').next().unwrap().to_string();
    assert!(tagged.starts_with(&format!("{tag} OK")), "{q}: {tagged}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("* SEARCH") || l.starts_with("* SORT")),
        "{lines:?}"
    );
    untagged(&lines, "* ESEARCH ").replace(&format!("(TAG \"{tag}\")"), "(TAG)")
}

fn caps(c: &mut Client) -> Vec<String> {
    let lines = c.ok("CAPABILITY");
    untagged(&lines, "* CAPABILITY ")
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// RFC 4731 3.1: `SEARCH RETURN (...)` answers with one `* ESEARCH`
/// carrying the command's tag, `UID` for UID SEARCH, MIN/MAX/COUNT/ALL
/// as asked; `RETURN ()` is ALL; with no match MIN, MAX and ALL are left
/// out and COUNT is 0. RFC 4466 2.6: an unknown return option is BAD.
#[test]
fn esearch_return_options() {
    let msgs: Vec<(String, i64, i64)> = (1..=6)
        .map(|i| (format!("Subject: m{i}"), 1_000_000 + i, 0))
        .collect();
    let (_tmp, spool) = mailbox("es", &msgs);
    let mut c = Client::spawn(&spool, "es");
    assert!(caps(&mut c).iter().any(|x| x == "ESEARCH"));
    c.ok("SELECT INBOX");
    c.ok("STORE 2:4,6 +FLAGS (\\Seen)");
    assert_eq!(
        esearch(&mut c, "SEARCH RETURN (MIN MAX COUNT ALL) SEEN"),
        "* ESEARCH (TAG) MIN 2 MAX 6 COUNT 4 ALL 2:4,6"
    );
    assert_eq!(
        esearch(&mut c, "SEARCH RETURN (COUNT) UNSEEN"),
        "* ESEARCH (TAG) COUNT 2"
    );
    assert_eq!(
        esearch(&mut c, "UID SEARCH RETURN () 2:5"),
        "* ESEARCH (TAG) UID ALL 2:5"
    );
    assert_eq!(
        esearch(&mut c, "uid search return (max min) charset UTF-8 UNSEEN"),
        "* ESEARCH (TAG) UID MIN 1 MAX 5"
    );
    assert_eq!(
        esearch(&mut c, "SEARCH RETURN (MIN MAX COUNT ALL) DELETED"),
        "* ESEARCH (TAG) COUNT 0"
    );
    assert_eq!(
        esearch(&mut c, "SEARCH RETURN (MIN MAX) DELETED"),
        "* ESEARCH (TAG)"
    );
    let (_, tagged) = c.cmd("SEARCH RETURN (BOGUS) ALL");
    assert!(tagged.contains(" BAD "), "{tagged}");
    // A plain SEARCH after them still answers `* SEARCH`.
    let lines = c.ok("SEARCH UNSEEN");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 1 5");
}

/// RFC 7162 3.1.5: an ESEARCH whose criteria use MODSEQ ends with the
/// highest mod-sequence of the messages it reports.
#[test]
fn esearch_with_modseq() {
    let msgs: Vec<(String, i64, i64)> = (1..=3)
        .map(|i| (format!("Subject: m{i}"), 1_000_000 + i, 0))
        .collect();
    let (_tmp, spool) = mailbox("esm", &msgs);
    let mut c = Client::spawn(&spool, "esm");
    c.ok("SELECT INBOX");
    c.ok("STORE 2 +FLAGS (\\Flagged)");
    // (The first FETCH of MODSEQ turns CONDSTORE on and tells
    // HIGHESTMODSEQ first: RFC 7162 3.1.)
    let lines: Vec<String> = c
        .ok("FETCH 1:3 (MODSEQ)")
        .into_iter()
        .filter(|l| l.contains(" FETCH "))
        .collect();
    let modseq = |n: usize| -> u64 {
        let l = &lines[n];
        l.split("MODSEQ (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let top = (0..3).map(modseq).max().unwrap();
    let (lines, _) = c.cmd("SEARCH RETURN (COUNT) MODSEQ 1");
    let l = untagged(&lines, "* ESEARCH ");
    assert!(l.ends_with(&format!("COUNT 3 MODSEQ {top}")), "{l}");
}

/// A message header with the given fields.
fn h(fields: &[&str]) -> String {
    fields.join("\r\n")
}

/// RFC 5256 3 SORT: each sort key, REVERSE, several criteria, ties in
/// sequence order, UID SORT, the search criteria narrowing the set,
/// and BADCHARSET for an unknown charset. RFC 5957 3: DISPLAYFROM and
/// DISPLAYTO sort by display name, else the address.
#[test]
fn sort_keys() {
    let msgs = vec![
        // 1
        (
            h(&[
                "From: Zed <alpha@x.org>",
                "To: \"Bob B\" <tom@x.org>",
                "Cc: carl@x.org",
                "Subject: Re: Banana",
                "Date: Mon, 1 Jan 2024 10:00:00 +0000",
            ]),
            5_000,
            1_704_103_200,
        ),
        // 2
        (
            h(&[
                "From: adam@x.org",
                "To: sam@x.org",
                "Subject: apple",
                "Date: Mon, 1 Jan 2024 09:00:00 +0000",
            ]),
            4_000,
            1_704_099_600,
        ),
        // 3: no Date: sorts by INTERNALDATE (3_000, the earliest).
        (
            h(&[
                "From: =?UTF-8?Q?=C3=89mile?= <emile@x.org>",
                "To: Anna <zz@x.org>",
                "Cc: Bert <bert@x.org>",
                "Subject: [list] Fwd: cherry (fwd)",
            ]),
            3_000,
            0,
        ),
        // 4
        (
            h(&[
                "From: Bob <Bob@x.org>",
                "To: adam@x.org",
                "Subject: =?UTF-8?B?QmFuYW5h?=",
                "Date: Tue, 2 Jan 2024 10:00:00 +0000",
            ]),
            2_000,
            1_704_189_600,
        ),
    ];
    let (_tmp, spool) = mailbox("so", &msgs);
    let mut c = Client::spawn(&spool, "so");
    let cap = caps(&mut c);
    assert!(cap.iter().any(|x| x == "SORT"), "{cap:?}");
    assert!(cap.iter().any(|x| x == "SORT=DISPLAY"), "{cap:?}");
    c.ok("SELECT INBOX");
    let sort = |c: &mut Client, q: &str| -> String {
        let lines = c.ok(q);
        untagged(&lines, "* SORT")
    };
    assert_eq!(sort(&mut c, "SORT (ARRIVAL) UTF-8 ALL"), "* SORT 4 3 2 1");
    assert_eq!(sort(&mut c, "SORT (DATE) UTF-8 ALL"), "* SORT 3 2 1 4");
    assert_eq!(
        sort(&mut c, "SORT (REVERSE DATE) UTF-8 ALL"),
        "* SORT 4 1 2 3"
    );
    // Base subjects: apple, Banana, cherry, Banana; equal ones by seq.
    assert_eq!(sort(&mut c, "SORT (SUBJECT) UTF-8 ALL"), "* SORT 2 1 4 3");
    assert_eq!(
        sort(&mut c, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL"),
        "* SORT 2 4 1 3"
    );
    assert_eq!(
        sort(&mut c, "SORT (REVERSE SUBJECT) UTF-8 ALL"),
        "* SORT 3 1 4 2"
    );
    // FROM: mailboxes alpha, adam, emile, Bob (case folded).
    assert_eq!(sort(&mut c, "SORT (FROM) UTF-8 ALL"), "* SORT 2 1 4 3");
    // TO: tom, sam, zz, adam.
    assert_eq!(sort(&mut c, "SORT (TO) UTF-8 ALL"), "* SORT 4 2 1 3");
    // CC: no Cc (empty) first, in sequence order; then bert, carl.
    assert_eq!(sort(&mut c, "SORT (CC) UTF-8 ALL"), "* SORT 2 4 3 1");
    // DISPLAYFROM: Zed, adam@x.org, Émile, Bob -> adam, Bob, Émile, Zed.
    assert_eq!(
        sort(&mut c, "SORT (DISPLAYFROM) UTF-8 ALL"),
        "* SORT 2 4 3 1"
    );
    // DISPLAYTO: Bob B, sam@x.org, Anna, adam@x.org.
    assert_eq!(sort(&mut c, "SORT (DISPLAYTO) UTF-8 ALL"), "* SORT 4 3 1 2");
    let sizes: Vec<usize> = msgs.iter().map(|m| m.0.len()).collect();
    let mut by_size: Vec<usize> = (1..=4).collect();
    by_size.sort_by_key(|&i| (sizes[i - 1], i));
    let want: Vec<String> = by_size.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        sort(&mut c, "SORT (SIZE) US-ASCII ALL"),
        format!("* SORT {}", want.join(" "))
    );
    assert_eq!(
        sort(&mut c, "UID SORT (DATE) UTF-8 NOT FROM bob"),
        "* SORT 3 2 1"
    );
    assert_eq!(sort(&mut c, "SORT (DATE) UTF-8 DELETED"), "* SORT");
    let (_, tagged) = c.cmd("SORT (DATE) KOI8-R ALL");
    assert!(tagged.contains("NO [BADCHARSET"), "{tagged}");
}

/// RFC 5256 3 THREAD=ORDEREDSUBJECT: one thread per base subject, by
/// sent date; the first message is the parent of the others; threads
/// ordered by their first message's sent date.
#[test]
fn thread_ordered_subject() {
    let msgs = vec![
        (h(&["Subject: cats"]), 10, 100),
        (h(&["Subject: Re: dogs"]), 20, 50),
        (h(&["Subject: re: CATS"]), 30, 300),
        (h(&["Subject: dogs"]), 40, 200),
        (h(&["Subject: [x] Cats"]), 50, 150),
        (h(&["Subject: birds"]), 60, 400),
    ];
    let (_tmp, spool) = mailbox("os", &msgs);
    let mut c = Client::spawn(&spool, "os");
    assert!(caps(&mut c).iter().any(|x| x == "THREAD=ORDEREDSUBJECT"));
    c.ok("SELECT INBOX");
    let lines = c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL");
    assert_eq!(untagged(&lines, "* THREAD"), "* THREAD (2 4)(1 (5)(3))(6)");
    let lines = c.ok("UID THREAD ORDEREDSUBJECT UTF-8 NOT 6");
    assert_eq!(untagged(&lines, "* THREAD"), "* THREAD (2 4)(1 (5)(3))");
    let lines = c.ok("THREAD ORDEREDSUBJECT UTF-8 DELETED");
    assert_eq!(untagged(&lines, "* THREAD"), "* THREAD");
}

/// RFC 5256 3 THREAD=REFERENCES: parents from References (else the
/// first In-Reply-To id), missing parents as dummies pruned away
/// (step 4), a dummy with several children kept at the top and shown
/// as a nested list, a duplicate Message-ID treated as none (1A),
/// threads of the same base subject gathered (step 5: a reply under the
/// original, two originals under a dummy), siblings and threads by sent
/// date (step 6; no Date: means INTERNALDATE).
#[test]
fn thread_references() {
    let msgs = vec![
        // 1: a thread root.
        (h(&["Message-ID: <a@x>", "Subject: plans"]), 10, 1000),
        // 2: reply to 1.
        (
            h(&[
                "Message-ID: <b@x>",
                "References: <a@x>",
                "Subject: Re: plans",
            ]),
            20,
            2000,
        ),
        // 3: reply to 2 via In-Reply-To only.
        (
            h(&[
                "Message-ID: <c@x>",
                "In-Reply-To: <b@x> (from bob)",
                "Subject: Re: plans",
            ]),
            30,
            3000,
        ),
        // 4: reply to 1, earlier than 2: sorts first among 1's replies.
        (
            h(&[
                "Message-ID: <d@x>",
                "References: <a@x>",
                "Subject: Re: plans",
            ]),
            40,
            1500,
        ),
        // 5, 6: replies to a message not in the mailbox (<gone@x>).
        (
            h(&[
                "Message-ID: <e@x>",
                "References: <gone@x>",
                "Subject: Re: party",
            ]),
            50,
            500,
        ),
        (
            h(&[
                "Message-ID: <f@x>",
                "References: <gone@x>",
                "Subject: Re: party",
            ]),
            60,
            600,
        ),
        // 7: same Message-ID as 1: no ID; subject "plans" not a reply.
        (h(&["Message-ID: <a@x>", "Subject: other"]), 70, 7000),
        // 8: reply to a missing message, alone: the dummy goes.
        (
            h(&[
                "Message-ID: <h@x>",
                "References: <missing@x> <also-missing@x>",
                "Subject: Re: lunch",
            ]),
            80,
            8000,
        ),
        // 9: a new thread whose subject is a reply to "lunch": step 5
        // leaves 8 (also a reply) and 9 (not) -> 8 under 9.
        (h(&["Message-ID: <i@x>", "Subject: lunch"]), 90, 9000),
        // 10, 11: two originals with one subject: a dummy above them.
        (h(&["Message-ID: <j@x>", "Subject: news"]), 100, 0),
        (h(&["Message-ID: <k@x>", "Subject: News"]), 110, 11000),
    ];
    let (_tmp, spool) = mailbox("tr", &msgs);
    let mut c = Client::spawn(&spool, "tr");
    assert!(caps(&mut c).iter().any(|x| x == "THREAD=REFERENCES"));
    c.ok("SELECT INBOX");
    let lines = c.ok("THREAD REFERENCES UTF-8 ALL");
    assert_eq!(
        untagged(&lines, "* THREAD"),
        "* THREAD ((10)(11))((5)(6))(1 (4)(2 3))(7)(9 8)"
    );
    // Without 1, 7 holds the Message-ID <a@x> alone: it fills the
    // container 2 and 4 hang below. UID THREAD answers with UIDs.
    c.ok("STORE 1 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    let lines = c.ok("UID THREAD REFERENCES UTF-8 ALL");
    assert_eq!(
        untagged(&lines, "* THREAD"),
        "* THREAD ((10)(11))((5)(6))(7 (4)(2 3))(9 8)"
    );
    let lines = c.ok("THREAD REFERENCES UTF-8 ALL");
    assert_eq!(
        untagged(&lines, "* THREAD"),
        "* THREAD ((9)(10))((4)(5))(6 (3)(1 2))(8 7)"
    );
    let (_, tagged) = c.cmd("THREAD FOO UTF-8 ALL");
    assert!(
        tagged.contains(" BAD ") || tagged.contains(" NO "),
        "{tagged}"
    );
}

/// RFC 5182: `SEARCH RETURN (SAVE)` keeps the result and answers no
/// ESEARCH (2.4); `$` then stands for it in FETCH, UID FETCH, STORE,
/// COPY, MOVE and in SEARCH/SORT criteria (2.1), by message, so an
/// expunged one drops out; with MIN alone only the lowest is kept
/// (2.4); a failed SEARCH ... SAVE empties it, and so does SELECT (2.1).
/// `SUBJECT $` is the string `$`, not the saved set.
#[test]
fn searchres_saves_and_reuses() {
    let msgs: Vec<(String, i64, i64)> = (1..=6)
        .map(|i| {
            (
                format!("Subject: m{i}{}", if i == 6 { " $" } else { "" }),
                1_000_000 + i,
                0,
            )
        })
        .collect();
    let (_tmp, spool) = mailbox("sr", &msgs);
    let mut c = Client::spawn(&spool, "sr");
    assert!(caps(&mut c).iter().any(|x| x == "SEARCHRES"));
    c.ok("CREATE Other");
    c.ok("SELECT INBOX");
    c.ok("STORE 2,4,5 +FLAGS (\\Seen)");
    let lines = c.ok("SEARCH RETURN (SAVE) SEEN");
    assert!(lines.is_empty(), "{lines:?}");
    let fetch = |c: &mut Client, q: &str| -> Vec<String> {
        c.ok(q)
            .into_iter()
            .filter(|l| l.contains(" FETCH "))
            .map(|l| l.split(" FETCH").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(fetch(&mut c, "FETCH $ (FLAGS)"), ["* 2", "* 4", "* 5"]);
    let lines = c.ok("UID FETCH $ (FLAGS)");
    assert!(lines.iter().all(|l| l.contains("UID ")), "{lines:?}");
    c.ok("STORE $ +FLAGS.SILENT (\\Flagged)");
    let lines = c.ok("SEARCH FLAGGED");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 2 4 5");
    let lines = c.ok("SEARCH NOT $");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 1 3 6");
    let lines = c.ok("UID SEARCH UID $ 4:*");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 4 5");
    let lines = c.ok("SEARCH SUBJECT $");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 6");
    let lines = c.ok("SORT (REVERSE ARRIVAL) UTF-8 $");
    assert_eq!(untagged(&lines, "* SORT"), "* SORT 5 4 2");
    c.ok("COPY $ Other");
    let lines = c.ok("STATUS Other (MESSAGES)");
    assert!(lines[0].contains("MESSAGES 3"), "{lines:?}");
    // 4 goes: `$` is now 2 and 5, which are 2 and 4 by number.
    c.ok("UID MOVE 4 Other");
    assert_eq!(fetch(&mut c, "FETCH $ (FLAGS)"), ["* 2", "* 4"]);
    // SAVE with MIN alone keeps only the lowest.
    let (lines, _) = c.cmd("SEARCH RETURN (SAVE MIN) UNSEEN");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("MIN 1"), "{lines:?}");
    assert_eq!(fetch(&mut c, "FETCH $ (FLAGS)"), ["* 1"]);
    // A failed SAVE empties `$`: FETCH $ finds nothing, and says OK.
    let (_, tagged) = c.cmd("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL");
    assert!(tagged.contains(" NO "), "{tagged}");
    assert!(fetch(&mut c, "FETCH $ (FLAGS)").is_empty());
    c.ok("SEARCH RETURN (SAVE) ALL");
    assert_eq!(fetch(&mut c, "FETCH $ (UID)").len(), 5);
    c.ok("SELECT INBOX");
    assert!(fetch(&mut c, "FETCH $ (UID)").is_empty());
    c.ok("SEARCH RETURN (SAVE) ALL");
    c.ok("MOVE $ Other");
    let lines = c.ok("STATUS Other (MESSAGES)");
    assert!(lines[0].contains("MESSAGES 9"), "{lines:?}");
}

/// RFC 5267 3 (ESORT): `SORT RETURN (...)` answers one `* ESEARCH` whose
/// MIN and MAX are the first and last in sort order and whose ALL keeps
/// the sort order; `RETURN ()` is ALL; with SAVE the sorted result is
/// kept for `$` (RFC 5182). RFC 7162 3.1.5: a SORT whose criteria use
/// MODSEQ ends with `(MODSEQ n)`.
#[test]
fn esort_and_sort_modseq() {
    let msgs: Vec<(String, i64, i64)> = [5, 3, 4, 1, 2, 6]
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("Subject: m{i}"), 1_000_000 + i as i64, 1_000 * d))
        .collect();
    let (_tmp, spool) = mailbox("esort", &msgs);
    let mut c = Client::spawn(&spool, "esort");
    assert!(caps(&mut c).iter().any(|x| x == "ESORT"));
    c.ok("SELECT INBOX");
    // By date: 4 5 2 3 1 6.
    assert_eq!(
        esearch(&mut c, "SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL"),
        "* ESEARCH (TAG) MIN 4 MAX 6 COUNT 6 ALL 4:5,2:3,1,6"
    );
    assert_eq!(
        esearch(&mut c, "UID SORT RETURN () (REVERSE DATE) UTF-8 NOT 6"),
        "* ESEARCH (TAG) UID ALL 1,3,2,5,4"
    );
    assert_eq!(
        esearch(&mut c, "SORT RETURN (COUNT MIN) (DATE) UTF-8 DELETED"),
        "* ESEARCH (TAG) COUNT 0"
    );
    let lines = c.ok("SORT RETURN (SAVE MAX) (DATE) UTF-8 1:3");
    assert!(lines[0].ends_with("MAX 1"), "{lines:?}");
    let lines = c.ok("SEARCH $");
    assert_eq!(untagged(&lines, "* SEARCH"), "* SEARCH 1");
    c.ok("STORE 2 +FLAGS (\\Flagged)");
    let lines: Vec<String> = c
        .ok("FETCH 2 (MODSEQ)")
        .into_iter()
        .filter(|l| l.contains(" FETCH "))
        .collect();
    let top = lines[0]
        .split("MODSEQ (")
        .nth(1)
        .unwrap()
        .trim_end_matches("))");
    let lines = c.ok("SORT (DATE) UTF-8 MODSEQ 1");
    assert_eq!(
        untagged(&lines, "* SORT"),
        format!("* SORT 4 5 2 3 1 6 (MODSEQ {top})")
    );
}

/// RFC 5256 3 REFERENCES step 1 with RFC 5322 3.6.4 msg-ids: `<bad>`
/// (no `@`) is no Message-ID and links nothing, so 1 is free to hang
/// below 2 when 3 says so (as Dovecot threads it).
#[test]
fn thread_references_ignores_invalid_ids() {
    let msgs = vec![
        (
            h(&["Message-ID: <a@x>", "References: <bad>", "Subject: one"]),
            10,
            0,
        ),
        (h(&["Message-ID: <z@x>", "Subject: two"]), 20, 0),
        (
            h(&[
                "Message-ID: <c@x>",
                "References: <z@x> <a@x>",
                "Subject: three",
            ]),
            30,
            0,
        ),
    ];
    let (_tmp, spool) = mailbox("badid", &msgs);
    let mut c = Client::spawn(&spool, "badid");
    c.ok("SELECT INBOX");
    let lines = c.ok("THREAD REFERENCES UTF-8 ALL");
    assert_eq!(untagged(&lines, "* THREAD"), "* THREAD (2 1 3)");
}

/// APPEND takes a message's sent date as delivery and imports do
/// (`storage::sent_date`): a `Date:` without a zone is UTC, not "unknown,
/// use INTERNALDATE" (RFC 5256 2.2 falls back only when it cannot be
/// read), so SORT (DATE) and SENTBEFORE see the date the message says.
#[test]
fn appended_dates_without_a_zone_sort_by_their_date() {
    let (_tmp, spool) = mailbox("app", &[]);
    let mut c = Client::spawn(&spool, "app");
    for (date, internal) in [
        ("Mon, 1 Jan 2007 10:00:00", "01-Jan-2009 00:00:00 +0000"),
        (
            "Tue, 1 Jan 2008 10:00:00 +0000",
            "01-Jan-2001 00:00:00 +0000",
        ),
        ("Sat, 1 Jan 2005 02:00 PST", "01-Jan-2010 00:00:00 +0000"),
    ] {
        let msg = format!("Date: {date}\r\nSubject: s\r\n\r\nbody\r\n");
        c.ok(&format!(
            "APPEND INBOX \"{internal}\" {{{}+}}\r\n{msg}",
            msg.len()
        ));
    }
    c.ok("SELECT INBOX");
    assert_eq!(
        untagged(&c.ok("SORT (DATE) UTF-8 ALL"), "* SORT"),
        "* SORT 3 1 2"
    );
    assert_eq!(
        untagged(&c.ok("SEARCH SENTBEFORE 1-Jan-2008"), "* SEARCH"),
        "* SEARCH 1 3"
    );
}
