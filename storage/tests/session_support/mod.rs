//! A simulated IMAP client for the session tests: it knows only what the
//! updates told it, applied one by one as a real client would.

use std::collections::HashMap;

use mailstore::format::Flags;
use mailstore::session::{SessionView, Update};
use mailstore::{Mailbox, MailboxName, Options, Store, UserName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub modseq: u64,
}

#[derive(Debug, Default)]
pub struct Client {
    pub uids: Vec<u32>,
    pub state: HashMap<u32, Known>,
    /// Messages that appeared while the view was compact (IDLE): the
    /// client fetches their flags once it may (after DONE).
    pub pending: Vec<u32>,
}

impl Client {
    /// SELECT: `* n EXISTS` and a FETCH 1:* of UID and FLAGS.
    pub fn select(view: &SessionView) -> Client {
        let mut c = Client::default();
        for m in view.iter() {
            c.learn(view, m.seq);
        }
        c
    }

    fn learn(&mut self, view: &SessionView, seq: u32) {
        if view.is_compact() {
            let uid = view.uid(seq).expect("seq in view");
            self.uids.push(uid);
            self.pending.push(uid);
            let unknown = Known {
                flags: Flags::empty(),
                keywords: Vec::new(),
                modseq: 0,
            };
            self.state.insert(uid, unknown);
            return;
        }
        let r = view.record(seq).expect("seq in view");
        self.uids.push(r.uid);
        self.state.insert(
            r.uid,
            Known {
                flags: r.flags.intersect(Flags::SYSTEM),
                keywords: view.keyword_names(&r.keywords),
                modseq: r.modseq,
            },
        );
    }

    /// Applies updates in order, checking each is valid where it lands;
    /// afterwards the client's list must equal the view's.
    pub fn apply(&mut self, view: &SessionView, updates: &[Update]) {
        let mut saw_exists = false;
        for u in updates {
            match u {
                Update::Expunge(seq) => {
                    assert!(
                        !saw_exists,
                        "EXPUNGE after EXISTS in one batch: {updates:?}"
                    );
                    let seq = *seq as usize;
                    assert!(
                        seq >= 1 && seq <= self.uids.len(),
                        "EXPUNGE {seq} out of range 1..={} in {updates:?}",
                        self.uids.len()
                    );
                    let uid = self.uids.remove(seq - 1);
                    self.state.remove(&uid);
                }
                Update::Exists(n) => {
                    saw_exists = true;
                    let n = *n as usize;
                    assert!(
                        n > self.uids.len(),
                        "EXISTS {n} does not grow {}",
                        self.uids.len()
                    );
                    // The client FETCHes UID FLAGS for the new numbers.
                    for seq in self.uids.len() + 1..=n {
                        self.learn(view, seq as u32);
                    }
                }
                Update::Fetch {
                    seq,
                    uid,
                    flags,
                    keywords,
                    modseq,
                } => {
                    let i = *seq as usize - 1;
                    assert_eq!(self.uids.get(i), Some(uid), "FETCH {seq} names another UID");
                    let k = self.state.get_mut(uid).unwrap();
                    assert!(*modseq > k.modseq, "FETCH without a newer MODSEQ: {u:?}");
                    *k = Known {
                        flags: *flags,
                        keywords: keywords.clone(),
                        modseq: *modseq,
                    };
                }
                Update::Flags(_) => {}
                Update::Vanished(uids) => {
                    assert!(
                        !saw_exists,
                        "VANISHED after EXISTS in one batch: {updates:?}"
                    );
                    for uid in uids {
                        let i = self.uids.iter().position(|u| u == uid);
                        assert!(i.is_some(), "VANISHED {uid} not known in {updates:?}");
                        self.uids.remove(i.unwrap());
                        self.state.remove(uid);
                    }
                }
            }
        }
        if !view.is_compact() {
            // FETCH UID FLAGS of what appeared while idling.
            for uid in std::mem::take(&mut self.pending) {
                if let Some(seq) = view.seq(uid) {
                    let r = view.record(seq).unwrap();
                    let k = Known {
                        flags: r.flags.intersect(Flags::SYSTEM),
                        keywords: view.keyword_names(&r.keywords),
                        modseq: r.modseq,
                    };
                    self.state.insert(uid, k);
                }
            }
        }
        let view_uids: Vec<u32> = view.uids().collect();
        assert_eq!(
            self.uids, view_uids,
            "client and view disagree after {updates:?}"
        );
    }

    /// The client's knowledge equals the index (held expunges excepted).
    pub fn assert_matches_index(&self, view: &SessionView, mbox: &mut Mailbox) {
        let snap = mbox.snapshot().unwrap();
        let live: Vec<u32> = snap.live_uids();
        let mine: Vec<u32> = self
            .uids
            .iter()
            .copied()
            .filter(|u| !view.is_expunged(view.seq(*u).unwrap()))
            .collect();
        assert_eq!(mine, live, "client's messages differ from the index");
        for r in snap.records.iter().filter(|r| !r.is_expunged()) {
            let names: Vec<String> = r
                .keywords
                .iter()
                .map(|i| snap.meta.keywords[i].clone())
                .collect();
            let want = Known {
                flags: r.flags.intersect(Flags::SYSTEM),
                keywords: names,
                modseq: r.modseq,
            };
            if self.pending.contains(&r.uid) {
                continue; // not fetched yet
            }
            assert_eq!(self.state.get(&r.uid), Some(&want), "UID {} state", r.uid);
        }
    }
}

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        &dir.path().join("spool"),
        Options {
            durability: mailstore::Durability::Relaxed,
            ..Options::default()
        },
    )
    .unwrap();
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    (dir, s)
}

pub fn user() -> UserName {
    UserName::new("alice").unwrap()
}

pub fn open(s: &Store) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::inbox()).unwrap()
}

pub fn append(m: &mut Mailbox, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            m.append(
                format!("Subject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
                Default::default(),
            )
            .unwrap()
        })
        .collect()
}
