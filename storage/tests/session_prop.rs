//! Property: random interleavings of two or three sessions (each its own
//! handle and view, with a simulated client) and a writer. After every
//! check, each client, having applied exactly the updates it was given,
//! knows the index (held expunges aside); after a final NOOP, exactly.
//! Sessions go in and out of IDLE, where the view is compact
//! (`SessionView::compact`, `expand`): the same property holds. The second
//! session reports expunges as VANISHED (RFC 7162 3.2.10).

mod session_support;

use mailstore::Mailbox;
use mailstore::format::Flags;
use mailstore::mailbox::{BatchOp, BatchOutcome, FlagOp};
use mailstore::session::{Allow, SessionView, SharedView};
use proptest::prelude::*;
use session_support::{Client, append, open, store};

#[derive(Clone, Debug)]
enum Actor {
    Writer,
    Session(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    Store {
        actor: Actor,
        uids: Vec<u32>,
        op: FlagOp,
        flag: u8,
        keyword: Option<u8>,
    },
    Expunge {
        actor: Actor,
        uids: Vec<u32>,
        allow_all: bool,
    },
    Repack(Actor),
    Check {
        session: usize,
        allow_all: bool,
    },
    /// IDLE (the view made compact) or DONE (expanded again).
    Idle(usize),
    /// SELECT of the same mailbox again (`SessionView::reopen`).
    Reselect(usize),
    /// The session's view offered to the others (`SessionView::share`),
    /// replacing the one offered before.
    Share(usize),
    /// The session selects the mailbox afresh through a new handle,
    /// starting from the view last offered (`SharedView::open`).
    Join(usize),
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![Just(Actor::Writer), (0usize..3).prop_map(Actor::Session)]
}

fn op() -> impl Strategy<Value = Op> {
    let uids = prop::collection::vec(1u32..30, 1..4);
    prop_oneof![
        3 => (1usize..4).prop_map(Op::Append),
        3 => (
            actor(),
            uids.clone(),
            prop_oneof![Just(FlagOp::Add), Just(FlagOp::Remove), Just(FlagOp::Replace)],
            0u8..5,
            prop::option::of(0u8..4)
        )
            .prop_map(|(actor, uids, op, flag, keyword)| Op::Store {
                actor,
                uids,
                op,
                flag,
                keyword
            }),
        2 => (actor(), uids, any::<bool>()).prop_map(|(actor, uids, allow_all)| Op::Expunge {
            actor,
            uids,
            allow_all
        }),
        1 => actor().prop_map(Op::Repack),
        5 => (0usize..3, any::<bool>()).prop_map(|(session, allow_all)| Op::Check {
            session,
            allow_all
        }),
        2 => (0usize..3).prop_map(Op::Idle),
        1 => (0usize..3).prop_map(Op::Reselect),
        1 => (0usize..3).prop_map(Op::Share),
        1 => (0usize..3).prop_map(Op::Join),
    ]
}

struct Session {
    mbox: Mailbox,
    view: SessionView,
    client: Client,
}

impl Session {
    /// DONE: the view is full again before any other command, and the
    /// client is told what changed since its last look (RFC 2177: before
    /// the tagged OK, any update may go out).
    /// With a view another session offered, from that view
    /// (`SessionView::expand_from`) when it can; else by reading.
    fn done(&mut self, offered: Option<&SharedView>) {
        if self.view.is_compact() {
            let from_shared = match offered.map(|o| o.open(&mut self.mbox).unwrap()) {
                Some(Some(fresh)) => self.view.expand_from(fresh).unwrap(),
                _ => None,
            };
            let u = match from_shared {
                Some(u) => u,
                None => self.view.expand(&mut self.mbox).unwrap(),
            };
            assert!(!self.view.is_compact());
            self.client.apply(&self.view, &u);
            assert_eq!(self.view.held_expunges(), 0);
            self.client.assert_matches_index(&self.view, &mut self.mbox);
        }
    }
}

fn allow(all: bool) -> Allow {
    if all {
        Allow::AllUpdates
    } else {
        Allow::NoExpunge
    }
}

fn run(n_sessions: usize, initial: usize, ops: Vec<Op>) {
    let (_t, s) = store();
    let mut writer = open(&s);
    append(&mut writer, initial);
    let mut sessions: Vec<Session> = (0..n_sessions)
        .map(|i| {
            let mut mbox = open(&s);
            let mut view = SessionView::open(&mut mbox).unwrap();
            // The second session has QRESYNC on: VANISHED, not EXPUNGE.
            view.report_vanished(i == 1);
            let client = Client::select(&view);
            Session { mbox, view, client }
        })
        .collect();
    let mut offered: Option<SharedView> = None;
    for op in ops {
        match op {
            Op::Append(n) => {
                append(&mut writer, n);
            }
            Op::Store {
                actor,
                uids,
                op,
                flag,
                keyword,
            } => {
                let flags = Flags(1 << flag);
                let kw: Vec<String> = keyword.iter().map(|k| format!("$k{k}")).collect();
                match actor {
                    Actor::Writer => {
                        writer.store(&uids, op, flags, &kw, None).unwrap();
                    }
                    Actor::Session(i) => {
                        let ss = &mut sessions[i % n_sessions];
                        ss.done(offered.as_ref());
                        // Flags only: a commit of this step alone, as the
                        // IMAP server's group commit makes when no other
                        // session writes (its span lets the view follow).
                        let out = if kw.is_empty() {
                            let step = BatchOp::Store {
                                uids,
                                op,
                                flags,
                                unchanged_since: None,
                            };
                            match ss.mbox.write_batch(|| vec![step]).unwrap().pop() {
                                Some(BatchOutcome::Store(o)) => o,
                                other => panic!("{other:?}"),
                            }
                        } else {
                            ss.mbox.store(&uids, op, flags, &kw, None).unwrap()
                        };
                        let u = ss.view.apply_own_store(&ss.mbox, &out);
                        ss.client.apply(&ss.view, &u);
                        assert_first_unseen(&mut ss.view);
                    }
                }
            }
            Op::Expunge {
                actor,
                uids,
                allow_all,
            } => match actor {
                Actor::Writer => {
                    writer.expunge(Some(&uids), false).unwrap();
                }
                Actor::Session(i) => {
                    let ss = &mut sessions[i % n_sessions];
                    ss.done(offered.as_ref());
                    let step = BatchOp::Expunge {
                        uids: Some(uids),
                        require_deleted: false,
                        hint: Vec::new(),
                    };
                    let Some(BatchOutcome::Expunge { gone, span }) =
                        ss.mbox.write_batch(|| vec![step]).unwrap().pop()
                    else {
                        panic!("not an expunge's outcome")
                    };
                    assert!(span.is_some(), "one step: the whole commit");
                    let u = ss
                        .view
                        .apply_own_expunge_commit(&gone, span, allow(allow_all));
                    ss.client.apply(&ss.view, &u);
                }
            },
            Op::Repack(actor) => match actor {
                Actor::Writer => {
                    writer.repack().unwrap();
                }
                Actor::Session(i) => {
                    let ss = &mut sessions[i % n_sessions];
                    ss.done(offered.as_ref());
                    ss.mbox.repack().unwrap();
                }
            },
            Op::Check { session, allow_all } => {
                let ss = &mut sessions[session % n_sessions];
                // Idling, only IDLE's own checks (every update allowed).
                let allow_all = allow_all || ss.view.is_compact();
                let u = ss.view.check(&mut ss.mbox, allow(allow_all)).unwrap();
                ss.client.apply(&ss.view, &u);
                if allow_all {
                    assert_eq!(ss.view.held_expunges(), 0);
                }
                ss.client.assert_matches_index(&ss.view, &mut ss.mbox);
                if !ss.view.is_compact() {
                    assert_first_unseen(&mut ss.view);
                }
            }
            Op::Idle(session) => {
                let ss = &mut sessions[session % n_sessions];
                if ss.view.is_compact() {
                    ss.done(offered.as_ref());
                } else {
                    // IDLE's first look sends the held expunges; then the
                    // view is compact.
                    let u = ss.view.check(&mut ss.mbox, Allow::AllUpdates).unwrap();
                    ss.client.apply(&ss.view, &u);
                    assert!(ss.view.compact());
                    ss.client.assert_matches_index(&ss.view, &mut ss.mbox);
                }
            }
            Op::Share(session) => {
                let ss = &sessions[session % n_sessions];
                if let Some(v) = ss.view.share(&ss.mbox).unwrap() {
                    offered = Some(v);
                }
            }
            Op::Join(session) => {
                let i = session % n_sessions;
                let Some(shared) = &offered else { continue };
                let mut mbox = open(&s);
                let fresh = SessionView::open(&mut open(&s)).unwrap();
                let Some(mut view) = shared.open(&mut mbox).unwrap() else {
                    // Not the file it was read from: repacked since.
                    continue;
                };
                assert_same_view(&view, &fresh);
                assert_first_unseen(&mut view);
                view.report_vanished(i == 1);
                let client = Client::select(&view);
                client.assert_matches_index(&view, &mut mbox);
                sessions[i] = Session { mbox, view, client };
            }
            Op::Reselect(session) => {
                let i = session % n_sessions;
                let Session { mut mbox, view, .. } = sessions.remove(i);
                let fresh = SessionView::open(&mut open(&s)).unwrap();
                let mut view = view.reopen(&mut mbox).unwrap();
                assert_same_view(&view, &fresh);
                assert_first_unseen(&mut view);
                view.report_vanished(i == 1);
                let client = Client::select(&view);
                client.assert_matches_index(&view, &mut mbox);
                sessions.insert(i, Session { mbox, view, client });
            }
        }
    }
    for ss in &mut sessions {
        ss.done(offered.as_ref());
        let u = ss.view.check(&mut ss.mbox, Allow::AllUpdates).unwrap();
        ss.client.apply(&ss.view, &u);
        assert_eq!(ss.view.held_expunges(), 0);
        ss.client.assert_matches_index(&ss.view, &mut ss.mbox);
        // A second NOOP right after has nothing to say.
        assert_eq!(
            ss.view.check(&mut ss.mbox, Allow::AllUpdates).unwrap(),
            vec![]
        );
    }
}

/// `first_unseen`, which starts where its last call stopped, finds what
/// a walk from the first message finds.
fn assert_first_unseen(view: &mut SessionView) {
    let walk = view
        .iter()
        .find(|m| !m.record.flags.contains(Flags::SEEN))
        .map(|m| m.seq);
    assert_eq!(view.first_unseen(), walk);
}

/// Everything a client can learn from two views is the same.
fn assert_same_view(a: &SessionView, b: &SessionView) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.held_expunges(), 0);
    assert_eq!(a.uidvalidity(), b.uidvalidity());
    assert_eq!(a.uid_next(), b.uid_next());
    assert_eq!(a.highest_modseq(), b.highest_modseq());
    assert_eq!(a.keywords(), b.keywords());
    assert_eq!(a.deleted_uids(), b.deleted_uids());
    let (ma, mb) = (a.mark(), b.mark());
    assert_eq!(
        (ma.generation, ma.num_records, ma.highestmodseq),
        (mb.generation, mb.num_records, mb.highestmodseq)
    );
    for (x, y) in a.iter().zip(b.iter()) {
        assert_eq!((x.seq, x.uid, x.expunged), (y.seq, y.uid, y.expunged));
        assert_eq!(x.record, y.record, "message {}", x.seq);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn clients_applying_updates_track_the_index(
        n_sessions in 2usize..=3,
        initial in 0usize..6,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(n_sessions, initial, ops);
    }
}

/// `first_unseen` after a call that found every message \Seen: each way a
/// message below where it stopped loses \Seen (the session's own STORE,
/// another session's seen at a check, one seen at a re-SELECT) is found.
#[test]
fn first_unseen_finds_a_message_that_lost_seen_below_where_it_stopped() {
    let (_t, s) = store();
    let mut other = open(&s);
    let uids = append(&mut other, 5);
    other
        .store(&uids, FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let mut mbox = open(&s);
    let mut view = SessionView::open(&mut mbox).unwrap();
    assert_eq!(view.first_unseen(), None);
    let out = mbox
        .store(&[3], FlagOp::Remove, Flags::SEEN, &[], None)
        .unwrap();
    view.fold_own_store(&mbox, &out);
    assert_eq!(view.first_unseen(), Some(3));
    other
        .store(&[3], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    view.check(&mut mbox, Allow::AllUpdates).unwrap();
    assert_eq!(view.first_unseen(), None);
    other
        .store(&[2], FlagOp::Remove, Flags::SEEN, &[], None)
        .unwrap();
    view.check(&mut mbox, Allow::AllUpdates).unwrap();
    assert_eq!(view.first_unseen(), Some(2));
    other
        .store(&[2], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    other
        .store(&[4], FlagOp::Remove, Flags::SEEN, &[], None)
        .unwrap();
    let mut view = view.reopen(&mut mbox).unwrap();
    assert_eq!(view.first_unseen(), Some(4));
    // Appended unseen messages come after; the first stays the first.
    append(&mut other, 1);
    view.check(&mut mbox, Allow::AllUpdates).unwrap();
    assert_eq!(view.first_unseen(), Some(4));
}

/// A re-SELECT after more changes than it merges (over 1,024 and one
/// record in 16) reads the mailbox afresh, held expunges and all, and
/// gives the fresh view too.
#[test]
fn reopen_after_many_changes_is_a_fresh_view() {
    let (_t, s) = store();
    let mut other = open(&s);
    let uids = append(&mut other, 3000);
    let mut mbox = open(&s);
    let mut view = SessionView::open(&mut mbox).unwrap();
    other
        .store(&uids[..2000], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    other.expunge(Some(&uids[10..20]), false).unwrap();
    view.check(&mut mbox, Allow::NoExpunge).unwrap();
    assert_eq!(view.held_expunges(), 10);
    other
        .store(&uids[100..1500], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    append(&mut other, 2);
    let mut view = view.reopen(&mut mbox).unwrap();
    assert_same_view(&view, &SessionView::open(&mut open(&s)).unwrap());
    assert_eq!(view.first_unseen(), Some(1991));
}
