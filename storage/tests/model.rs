//! Property-based model test: random operation sequences run against a
//! real mailbox and an in-memory model, compared after every step.
//!
//! Besides the handle doing the operations, a second long-lived handle
//! follows along with `changes_since` only, applying what it is told to
//! its own copy of the records; that copy must always equal the index.
//!
//! Case count: 64 by default (about two seconds), `PROPTEST_CASES=N` overrides.

use std::collections::{BTreeMap, BTreeSet};

use mailstore::format::{Flags, Record};
use mailstore::mailbox::{FlagOp, Mailbox, ViewMark};
use mailstore::{AppendOptions, Durability, Error, MailboxName, Options, Store, UserName};
use proptest::prelude::*;

/// Keyword names the generator picks from (distinct ignoring case).
const POOL: &[&str] = &["$Junk", "$NotJunk", "Work", "todo", "$Forwarded", "k6"];
const MAX_UID_PICK: u32 = 48;

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Append {
        flags: u32,
        kws: Vec<usize>,
        len: usize,
    },
    /// An append whose keyword list also holds an invalid keyword: must
    /// fail and change nothing, not even the keyword table.
    BadAppend {
        kws: Vec<usize>,
    },
    Store {
        op: u8,
        flags: u32,
        kws: Vec<usize>,
        uids: Vec<u32>,
    },
    BadStore {
        kws: Vec<usize>,
        uids: Vec<u32>,
    },
    ExpungeDeleted,
    ExpungeUids {
        uids: Vec<u32>,
        require_deleted: bool,
    },
    Repack,
    Reopen,
}

fn kws() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..POOL.len(), 0..3)
}
fn uids() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1..=MAX_UID_PICK, 0..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..3).prop_map(Op::Create),
        8 => (0u32..32, kws(), 0usize..3000).prop_map(|(flags, kws, len)| Op::Append { flags, kws, len }),
        1 => kws().prop_map(|kws| Op::BadAppend { kws }),
        6 => (0u8..3, 0u32..32, kws(), uids()).prop_map(|(op, flags, kws, uids)| Op::Store { op, flags, kws, uids }),
        1 => (kws(), uids()).prop_map(|(kws, uids)| Op::BadStore { kws, uids }),
        2 => Just(Op::ExpungeDeleted),
        2 => (uids(), any::<bool>()).prop_map(|(uids, require_deleted)| Op::ExpungeUids { uids, require_deleted }),
        2 => Just(Op::Repack),
        2 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    flags: Flags,
    keywords: BTreeSet<String>,
    bytes: Vec<u8>,
    expunged: bool,
}

#[derive(Default)]
struct Model {
    /// Every record still in the index (expunged ones until repack).
    msgs: BTreeMap<u32, Msg>,
    last_uid: u32,
    /// Files of repacked messages are gone.
    repacked: BTreeSet<u32>,
    mailboxes: BTreeSet<String>,
}

fn message_bytes(uid_hint: u32, len: usize) -> Vec<u8> {
    let mut v = format!("Subject: model {uid_hint}\r\nX-Len: {len}\r\n\r\n").into_bytes();
    v.extend((0..len).map(|i| b'a' + ((i * 7 + uid_hint as usize) % 26) as u8));
    v
}

fn kw_names(idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| POOL[i].to_string()).collect()
}

fn system(flags: u32) -> Flags {
    Flags(flags).intersect(Flags::SYSTEM)
}

/// Follows the mailbox through `changes_since` only.
struct Watcher {
    mbox: Mailbox,
    mark: ViewMark,
    records: BTreeMap<u32, Record>,
    keywords: Vec<String>,
}

impl Watcher {
    fn sync(&mut self) {
        let Some(ch) = self.mbox.changes_since(&self.mark).unwrap() else {
            return;
        };
        if ch.full {
            self.records.clear();
        }
        for r in ch.records {
            self.records.insert(r.uid, r);
        }
        if let Some(meta) = ch.meta {
            self.keywords = meta.keywords;
        }
        self.mark = self.mbox.mark_of(&ch.header);
    }
}

fn names_of(r: &Record, table: &[String]) -> BTreeSet<String> {
    r.keywords
        .iter()
        .map(|i| {
            table
                .get(i)
                .unwrap_or_else(|| {
                    panic!("UID {}: keyword bit {i} has no name in {table:?}", r.uid)
                })
                .clone()
        })
        .collect()
}

fn check(m: &mut Mailbox, model: &Model, w: &mut Watcher, step: usize, op: &Op) {
    let ctx = format!("after step {step} ({op:?})");
    let snap = m.snapshot().unwrap();
    let h = &snap.header;
    let live: Vec<&Msg> = model.msgs.values().filter(|x| !x.expunged).collect();
    let count = |f: Flags| live.iter().filter(|x| x.flags.contains(f)).count() as u32;
    assert_eq!(h.last_uid, model.last_uid, "last_uid {ctx}");
    assert_eq!(
        h.num_records as usize,
        model.msgs.len(),
        "num_records {ctx}"
    );
    assert_eq!(h.exists as usize, live.len(), "exists {ctx}");
    assert_eq!(h.seen, count(Flags::SEEN), "seen {ctx}");
    assert_eq!(h.deleted, count(Flags::DELETED), "deleted {ctx}");
    assert_eq!(h.flagged, count(Flags::FLAGGED), "flagged {ctx}");
    let bytes: u64 = live.iter().map(|x| x.bytes.len() as u64).sum();
    assert_eq!(h.total_bytes, bytes, "total_bytes {ctx}");

    let uids: Vec<u32> = snap.records.iter().map(|r| r.uid).collect();
    let want: Vec<u32> = model.msgs.keys().copied().collect();
    assert_eq!(uids, want, "record UIDs {ctx}");
    for r in &snap.records {
        let x = &model.msgs[&r.uid];
        assert_eq!(
            r.flags.intersect(Flags::SYSTEM),
            x.flags,
            "UID {} flags {ctx}",
            r.uid
        );
        assert_eq!(r.is_expunged(), x.expunged, "UID {} expunged {ctx}", r.uid);
        assert_eq!(
            names_of(r, &snap.meta.keywords),
            x.keywords,
            "UID {} keywords {ctx}",
            r.uid
        );
        assert_eq!(r.size, x.bytes.len() as u64, "UID {} size {ctx}", r.uid);
        assert_eq!(
            r.message_crc,
            crc32fast::hash(&x.bytes),
            "UID {} crc {ctx}",
            r.uid
        );
        assert!(r.modseq <= h.highestmodseq, "UID {} modseq {ctx}", r.uid);
        assert_eq!(
            m.read_message(r.uid).unwrap(),
            x.bytes,
            "UID {} bytes {ctx}",
            r.uid
        );
    }
    for &uid in &model.repacked {
        assert!(
            matches!(m.read_message(uid), Err(Error::Expunged(u)) if u == uid),
            "UID {uid} file should be gone {ctx}"
        );
    }

    w.sync();
    assert_eq!(w.mark.generation, h.generation, "watcher generation {ctx}");
    let theirs: Vec<&Record> = w.records.values().collect();
    let ours: Vec<&Record> = snap.records.iter().collect();
    assert_eq!(theirs, ours, "watcher records {ctx}");
    for r in w.records.values() {
        assert_eq!(
            names_of(r, &w.keywords),
            model.msgs[&r.uid].keywords,
            "watcher keywords {ctx}"
        );
    }
    // A check right after a sync reports nothing.
    assert!(w.mbox.changes_since(&w.mark).unwrap().is_none(), "{ctx}");
}

fn open(s: &Store) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::inbox()).unwrap()
}
fn user() -> UserName {
    UserName::new("model").unwrap()
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Relaxed,
        ..Options::default()
    };
    let s = Store::open(&tmp.path().join("spool"), opts).unwrap();
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mut model = Model::default();
    model.mailboxes.insert("INBOX".into());
    let mut m = open(&s);
    let mut wm = open(&s);
    let h = wm.header().unwrap();
    let mut w = Watcher {
        mark: wm.mark_of(&h),
        mbox: wm,
        records: BTreeMap::new(),
        keywords: vec![],
    };

    for (step, op) in ops.iter().enumerate() {
        apply(&s, &mut m, &mut model, op);
        check(&mut m, &model, &mut w, step, op);
    }
}

fn apply(s: &Store, m: &mut Mailbox, model: &mut Model, op: &Op) {
    match op {
        Op::Create(i) => {
            let name = format!("Folder{i}");
            let r = s.create_mailbox(&user(), &MailboxName::new(&name).unwrap());
            if model.mailboxes.insert(name) {
                r.unwrap();
            } else {
                assert!(matches!(r, Err(Error::MailboxExists(_))), "{r:?}");
            }
            let listed: BTreeSet<String> = s
                .list_mailboxes(&user())
                .unwrap()
                .iter()
                .map(|n| n.as_str().to_string())
                .collect();
            assert_eq!(listed, model.mailboxes);
        }
        Op::Append { flags, kws, len } => {
            let bytes = message_bytes(model.last_uid + 1, *len);
            let opts = AppendOptions {
                flags: Flags(*flags),
                keywords: kw_names(kws),
                ..Default::default()
            };
            let uid = m.append(&bytes[..], opts).unwrap();
            assert_eq!(uid, model.last_uid + 1);
            model.last_uid = uid;
            model.msgs.insert(
                uid,
                Msg {
                    flags: system(*flags),
                    keywords: kw_names(kws).into_iter().collect(),
                    bytes,
                    expunged: false,
                },
            );
        }
        Op::BadAppend { kws } => {
            let mut k = kw_names(kws);
            k.push("bad keyword".into());
            let opts = AppendOptions {
                keywords: k,
                ..Default::default()
            };
            let r = m.append(&b"Subject: x\r\n\r\n"[..], opts);
            assert!(matches!(r, Err(Error::InvalidKeyword(_))), "{r:?}");
        }
        Op::Store {
            op,
            flags,
            kws,
            uids,
        } => {
            let fop = [FlagOp::Add, FlagOp::Remove, FlagOp::Replace][*op as usize];
            let names = kw_names(kws);
            let out = m.store(uids, fop, Flags(*flags), &names, None).unwrap();
            let set: BTreeSet<String> = names.iter().cloned().collect();
            let mut changed = BTreeSet::new();
            let mut missing = Vec::new();
            let mut once = BTreeSet::new();
            for &uid in uids.iter().filter(|u| once.insert(**u)) {
                match model.msgs.get_mut(&uid) {
                    Some(x) if !x.expunged => {
                        let f = system(*flags);
                        let (nf, nk) = match fop {
                            FlagOp::Add => {
                                (x.flags.union(f), x.keywords.union(&set).cloned().collect())
                            }
                            FlagOp::Remove => (
                                x.flags.minus(f),
                                x.keywords.difference(&set).cloned().collect(),
                            ),
                            FlagOp::Replace => (f, set.clone()),
                        };
                        if nf != x.flags || nk != x.keywords {
                            changed.insert(uid);
                        }
                        x.flags = nf;
                        x.keywords = nk;
                    }
                    _ => missing.push(uid),
                }
            }
            let got: Vec<u32> = out.changed.iter().map(|r| r.uid).collect();
            assert_eq!(
                got,
                Vec::from_iter(changed.iter().copied()),
                "changed UIDs, ascending"
            );
            missing.sort_unstable();
            assert_eq!(out.missing, missing, "missing UIDs, ascending");
            if !changed.is_empty() {
                let h = m.header().unwrap();
                assert!(out.changed.iter().all(|r| r.modseq == h.highestmodseq));
            }
        }
        Op::BadStore { kws, uids } => {
            let mut k = kw_names(kws);
            k.push("bad(kw".into());
            let r = m.store(uids, FlagOp::Add, Flags::SEEN, &k, None);
            assert!(matches!(r, Err(Error::InvalidKeyword(_))), "{r:?}");
        }
        Op::ExpungeDeleted => {
            let got = m.expunge(None, true).unwrap();
            let want = expunge_model(model, |x| x.flags.contains(Flags::DELETED));
            assert_eq!(got, want);
        }
        Op::ExpungeUids {
            uids,
            require_deleted,
        } => {
            let got = m.expunge(Some(uids), *require_deleted).unwrap();
            let set: BTreeSet<u32> = uids.iter().copied().collect();
            let mut want = Vec::new();
            for (&uid, x) in model.msgs.iter_mut() {
                if set.contains(&uid)
                    && !x.expunged
                    && (!require_deleted || x.flags.contains(Flags::DELETED))
                {
                    x.expunged = true;
                    want.push(uid);
                }
            }
            assert_eq!(got, want);
        }
        Op::Repack => {
            let out = m.repack().unwrap();
            let gone: Vec<u32> = model
                .msgs
                .iter()
                .filter(|(_, x)| x.expunged)
                .map(|(u, _)| *u)
                .collect();
            assert_eq!(out.removed, gone);
            for u in gone {
                model.msgs.remove(&u);
                model.repacked.insert(u);
            }
            assert_eq!(out.kept as usize, model.msgs.len());
        }
        Op::Reopen => {
            *m = open(s);
        }
    }
}

fn expunge_model(model: &mut Model, pred: impl Fn(&Msg) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for (&uid, x) in model.msgs.iter_mut() {
        if !x.expunged && pred(x) {
            x.expunged = true;
            out.push(uid);
        }
    }
    out
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mailbox_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
