//! Commands on messages of the selected mailbox: FETCH, STORE, SEARCH,
//! COPY/MOVE, EXPUNGE (and their UID forms).

use std::collections::HashSet;

use imap_codec::imap_types::command::{FetchModifier, StoreModifier};
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox as WireMailbox;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage::mailbox::FlagOp;
use storage::session::{Allow, SeqSet, SeqSetError};
use storage::{Error, Flags};

use super::binary;
use super::conn::{Done, Fail, Session, Stop, bad, no, ok, ok_code};
use super::criteria;
use super::emit::{Broken, Emitter};
use super::fetch::{self, Plan};
use super::groupcommit;
use super::mailboxes::{mailbox_name, split_flags};
use super::msgfile::MessageFile;
use super::search::{self, Candidate};
use super::searchres;
use super::seqranges::SeqRanges;

/// A message that matched a SEARCH, SORT or THREAD, with its key.
pub(super) struct Hit<K> {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
    pub key: K,
}

/// Where [`Session::scan`] puts each match as it finds it.
pub(super) trait Sink<K> {
    /// Before the first message is looked at.
    fn start(&mut self, _em: &mut Emitter) -> std::io::Result<()> {
        Ok(())
    }
    /// One match, in sequence order.
    fn hit(&mut self, em: &mut Emitter, h: Hit<K>) -> std::io::Result<()>;
    /// After the last message.
    fn finish(&mut self, _em: &mut Emitter) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps every match (SORT and THREAD need them all; SAVE keeps them).
struct Collect<K>(Vec<Hit<K>>);

impl<K> Sink<K> for Collect<K> {
    fn hit(&mut self, _: &mut Emitter, h: Hit<K>) -> std::io::Result<()> {
        self.0.push(h);
        Ok(())
    }
}

fn seqset_string(s: &SequenceSet) -> String {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => n.to_string(),
        SeqOrUid::Asterisk => "*".to_string(),
    };
    s.0.as_ref()
        .iter()
        .map(|q| match q {
            Sequence::Single(a) => v(a),
            Sequence::Range(a, b) => format!("{}:{}", v(a), v(b)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `1:3,7` from ascending numbers.
pub(super) fn compact(nums: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            nums[i].to_string()
        } else {
            format!("{}:{}", nums[i], nums[j])
        });
        i = j + 1;
    }
    out.join(",")
}

impl super::conn::Selected {
    /// What `*` stands for in this view: the largest sequence number and
    /// the largest UID (one lookup, not a walk of the view).
    pub(super) fn star(&self) -> (u32, u32) {
        (self.view.len(), self.view.last_uid().unwrap_or(0))
    }

    /// The search candidate of the view's message `m`: its keywords by
    /// name and its `\Recent` in this session; its file opened by `open`
    /// when a key needs it.
    pub(super) fn candidate<'a>(
        &'a self,
        m: &storage::session::Message<'a>,
        star: (u32, u32),
        open: &'a dyn Fn(&storage::Record) -> Result<MessageFile, Error>,
    ) -> Candidate<'a> {
        let mut c = Candidate::new(
            m.seq,
            m.record,
            self.view.keyword_names(&m.record.keywords),
            star,
            open,
        );
        c.recent = self.recent.contains(m.uid);
        c
    }
}

impl Session {
    /// The (seq, uid) pairs a set names in this session's view.
    fn targets(&mut self, set: &SequenceSet, uid: bool) -> Result<Vec<(u32, u32)>, Fail> {
        if self.dollar && searchres::is_mark(set) {
            self.selected()?;
            return Ok(self.dollar_targets());
        }
        let parsed: SeqSet = seqset_string(set)
            .parse()
            .map_err(|e: SeqSetError| Fail::Bad(e.to_string()))?;
        let view = &self.selected()?.view;
        if uid {
            return Ok(view.resolve_uids(&parsed));
        }
        match view.resolve_seqs(&parsed) {
            Ok(seqs) => Ok(seqs
                .into_iter()
                .filter_map(|s| Some((s, view.uid(s)?)))
                .collect()),
            Err(SeqSetError::Empty) => Ok(Vec::new()),
            Err(e) => bad(&e.to_string()),
        }
    }

    /// What a FETCH names, as ranges of sequence numbers.
    fn fetch_ranges(&mut self, set: &SequenceSet, uid: bool) -> Result<SeqRanges, Fail> {
        if self.dollar && searchres::is_mark(set) {
            self.selected()?;
            let pairs = self.dollar_targets().into_iter().map(|(s, _)| (s, s));
            return Ok(SeqRanges::from_pairs(pairs.collect()));
        }
        let view = &self.selected()?.view;
        match SeqRanges::resolve(view, set, uid) {
            Ok(r) => Ok(r),
            Err(SeqSetError::Empty) => Ok(SeqRanges::default()),
            Err(e) => bad(&e.to_string()),
        }
    }

    pub(super) fn fetch(
        &mut self,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) -> Result<Done, Fail> {
        self.selected()?;
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        // Taken before the check, so that it leaves out what the check
        // reports as VANISHED just below (RFC 7162 3.2.6).
        let earlier = if vanished {
            self.fetch_vanished(set, uid, changed_since)?
        } else {
            Vec::new()
        };
        // UID FETCH may report expunges (RFC 3501 7.4.1).
        let allow = if uid {
            Allow::AllUpdates
        } else {
            Allow::NoExpunge
        };
        // Reading needs no lock: what a writer is committing now is
        // reported after a later command (RFC 3501 section 7).
        self.look(allow).map_err(Fail::Stop)?;
        super::qresync::vanished_lines(&mut self.buf, true, &earlier);
        let alias = std::mem::take(&mut self.binary_alias);
        // With QRESYNC every FETCH response carries the UID (RFC 7162 3.2.4).
        let plan = Plan::new(items, uid || self.qresync, changed_since.is_some(), alias)
            .map_err(|u| Fail::Bad(u.0.into()))?;
        // MODSEQ asked for, or added for CHANGEDSINCE: CONDSTORE is on.
        if plan.items.contains(&MessageDataItemName::ModSeq) {
            self.enable_condstore();
        }
        // Ranges of sequence numbers, not a list of the messages: FETCH
        // 1:* walks the view as it writes.
        let ranges = self.fetch_ranges(set, uid)?;
        let condstore = self.condstore;
        let sel = self.sel.as_mut().expect("selected");
        let wanted = |seq: u32| match changed_since {
            Some(since) => sel.view.record(seq).is_some_and(|r| r.modseq > since),
            None => true,
        };
        // A body fetch without PEEK sets \Seen first, so the FLAGS sent
        // with it are the new ones.
        let mut seen_now = HashSet::new();
        if plan.sets_seen && !sel.read_only {
            let unseen: Vec<u32> = ranges
                .iter()
                .filter(|&seq| wanted(seq) && !sel.view.is_expunged(seq))
                .filter_map(|seq| {
                    let r = sel.view.record(seq)?;
                    (!r.flags.contains(Flags::SEEN)).then_some(r.uid)
                })
                .collect();
            if !unseen.is_empty() {
                let outcome = sel
                    .mbox
                    .store(&unseen, FlagOp::Add, Flags::SEEN, &[], None)?;
                let flag_ups = sel.view.fold_own_store(&sel.mbox, &outcome);
                seen_now.extend(outcome.changed.iter().map(|r| r.uid));
                self.write_updates(flag_ups.as_slice());
            }
        }
        let sel = self.sel.as_mut().expect("selected");
        let mut gone = false;
        let mut corrupt = Vec::new();
        let mut unknown_cte = Vec::new();
        let mut em = Emitter::with_buf(&mut self.out, std::mem::take(&mut self.buf));
        for seq in ranges.iter() {
            if changed_since
                .is_some_and(|since| sel.view.record(seq).is_none_or(|r| r.modseq <= since))
            {
                continue;
            }
            let Some(rec) = sel.view.record(seq).cloned() else {
                continue;
            };
            let uid = rec.uid;
            let prepared = if plan.needs_body {
                match fetch::prepare(&sel.mbox, &rec, &plan) {
                    Ok(p) if plan.binary => {
                        match binary::check(&p.0, &p.1, &plan.items, &plan.alias) {
                            Ok(Ok(())) => Some(p),
                            Ok(Err(binary::UnknownCte)) => {
                                // RFC 3516 4.2: refused before a byte of it.
                                unknown_cte.push(uid);
                                continue;
                            }
                            Err(e) => {
                                self.buf = em.into_buf();
                                return Err(Error::Io {
                                    op: "read",
                                    path: p.0.path.clone(),
                                    source: e,
                                }
                                .into());
                            }
                        }
                    }
                    Ok(p) => Some(p),
                    Err(Error::Expunged(_)) => {
                        // RFC 2180 4.1.1: removed by another session and
                        // repacked; answer NO rather than invent data.
                        gone = true;
                        continue;
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        // Checked before a byte of it is sent: refuse this
                        // one, serve the others, say NO at the end.
                        tracing::error!(uid, "FETCH refused: {e}");
                        corrupt.push(uid);
                        continue;
                    }
                    Err(e) => {
                        self.buf = em.into_buf();
                        return Err(e.into());
                    }
                }
            } else {
                None
            };
            let kw = sel.view.keyword_names(&rec.keywords);
            let with_flags;
            let items = if seen_now.contains(&uid) {
                with_flags = plan.with_flags(condstore);
                &with_flags[..]
            } else {
                &plan.items[..]
            };
            let body = prepared
                .as_ref()
                .map(|(file, structure)| fetch::Body { file, structure });
            if let Err(broken) = fetch::render(
                &mut em,
                seq,
                &rec,
                (&kw, sel.recent.contains(uid)),
                items,
                &plan.alias,
                body,
            ) {
                drop(em);
                let path = prepared.as_ref().map(|(f, _)| f.path.clone());
                return Err(self.broken_literal(broken, uid, path));
            }
        }
        self.buf = em.into_buf();
        // A message that was not sent is not read: take back the \Seen
        // this FETCH set on it.
        let unsent: Vec<u32> = corrupt
            .iter()
            .chain(&unknown_cte)
            .copied()
            .filter(|u| seen_now.contains(u))
            .collect();
        if !unsent.is_empty() {
            let sel = self.sel.as_mut().expect("selected");
            let outcome = sel
                .mbox
                .store(&unsent, FlagOp::Remove, Flags::SEEN, &[], None)?;
            sel.view.fold_own_store(&sel.mbox, &outcome);
        }
        let refused = [
            (
                &corrupt,
                "CORRUPTION",
                "Stored data of UID {} does not match its index record; not sent",
            ),
            // RFC 3516 4.2.
            (
                &unknown_cte,
                "UNKNOWN-CTE",
                "Content-Transfer-Encoding of UID {} cannot be decoded; not sent",
            ),
        ];
        if let Some((uids, code, text)) = refused.into_iter().find(|r| !r.0.is_empty()) {
            return no(Some(code), &text.replace("{}", &compact(uids)));
        }
        if gone {
            return no(
                Some("EXPUNGEISSUED"),
                "Some messages were expunged by another session",
            );
        }
        ok("FETCH completed")
    }

    /// A literal could not be sent whole and right; part of it is out, so
    /// the connection ends (BYE on a line of its own, never a tagged OK).
    fn broken_literal(
        &mut self,
        broken: Broken,
        uid: u32,
        path: Option<std::path::PathBuf>,
    ) -> Fail {
        let path = path.unwrap_or_default();
        match broken {
            Broken::Client(e) => return Fail::Stop(Stop::Io(e)),
            Broken::Source(e) => {
                tracing::error!(uid, path = %path.display(), "reading message for FETCH: {e}")
            }
            Broken::Changed { expected, actual } => tracing::error!(
                uid,
                path = %path.display(),
                "message file changed while sent: CRC32 {actual:08x}, record {expected:08x}"
            ),
        }
        if let Err(e) = self.out.write_all(b"\r\n") {
            return Fail::Stop(Stop::Io(e));
        }
        Fail::Stop(Stop::Bye(
            "[CORRUPTION] Message data changed or failed while being sent".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag],
        uid: bool,
        modifiers: &[StoreModifier],
    ) -> Result<Done, Fail> {
        if self.selected()?.read_only {
            return no(Some("READ-ONLY"), "Mailbox is read-only");
        }
        self.check(Allow::NoExpunge).map_err(Fail::Stop)?;
        let unchanged_since = modifiers
            .iter()
            .map(|StoreModifier::UnchangedSince(n)| *n)
            .next();
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let (fl, kw) = split_flags(flags)?;
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let targets = self.targets(set, uid)?;
        let sel = self.sel.as_mut().expect("selected");
        let live: Vec<(u32, u32)> = targets
            .into_iter()
            .filter(|(s, _)| !sel.view.is_expunged(*s))
            .collect();
        let uids: Vec<u32> = live.iter().map(|(_, u)| *u).collect();
        let outcome = if kw.is_empty() {
            // Flags only: committed together with other sessions' writes
            // to this mailbox (groupcommit.rs).
            groupcommit::store(&mut sel.mbox, uids, op, fl, unchanged_since)?
        } else {
            sel.mbox.store(&uids, op, fl, &kw, unchanged_since)?
        };
        // The answer's FETCH lines come from the view below.
        let flag_ups = sel.view.fold_own_store(&sel.mbox, &outcome);
        let modified: HashSet<u32> = outcome.modified.iter().copied().collect();
        self.write_updates(flag_ups.as_slice());
        let sel = self.sel.as_mut().expect("selected");
        if response == StoreResponse::Answer {
            for (seq, u) in &live {
                if modified.contains(u) {
                    continue;
                }
                let Some(rec) = sel.view.record(*seq) else {
                    continue;
                };
                let mut line = format!("* {seq} FETCH (").into_bytes();
                // With CONDSTORE on, every FETCH about flags carries the
                // UID and MODSEQ (RFC 7162 3.1).
                if uid || self.qresync || self.condstore {
                    line.extend_from_slice(format!("UID {u} ").as_bytes());
                }
                line.extend_from_slice(b"FLAGS ");
                super::wire::message_flags(
                    &mut line,
                    rec.flags,
                    sel.recent.contains(*u),
                    &sel.view.keyword_names(&rec.keywords),
                );
                if self.condstore {
                    line.extend_from_slice(format!(" MODSEQ ({})", rec.modseq).as_bytes());
                }
                line.extend_from_slice(b")\r\n");
                self.buf.extend_from_slice(&line);
            }
        }
        if !modified.is_empty() {
            let mut ids: Vec<u32> = live
                .iter()
                .filter(|(_, u)| modified.contains(u))
                .map(|(s, u)| if uid { *u } else { *s })
                .collect();
            ids.sort_unstable();
            return ok_code(
                format!("MODIFIED {}", compact(&ids)),
                "Conditional STORE failed for some messages",
            );
        }
        ok("STORE completed")
    }

    /// The messages of the selected mailbox that match `criteria`, in
    /// sequence order, each with what `key` makes of it while its file
    /// is at hand (SORT and THREAD read their keys from the same pass).
    pub(super) fn matching<K>(
        &mut self,
        charset: Option<&str>,
        criteria: &[SearchKey],
        key: impl FnMut(&Candidate) -> K,
    ) -> Result<Vec<Hit<K>>, Fail> {
        let mut hits = Collect(Vec::new());
        self.scan(charset, criteria, key, &mut hits)?;
        Ok(hits.0)
    }

    /// Runs `criteria` over the selected mailbox, handing each match to
    /// `sink` as it is found, with the connection's output: what the sink
    /// writes goes to the client through the bounded buffer, so an answer
    /// is never held whole. After the session's own check and before the
    /// first message, `sink.start` writes the head of its line. When the
    /// search fails (a message cannot be read), what the sink wrote is
    /// taken back if none of it has gone out yet; otherwise its line is
    /// ended there (the NO that follows says the answer is not valid).
    pub(super) fn scan<K>(
        &mut self,
        charset: Option<&str>,
        criteria: &[SearchKey],
        mut key: impl FnMut(&Candidate) -> K,
        sink: &mut dyn Sink<K>,
    ) -> Result<(), Fail> {
        self.selected()?;
        if let Some(c) = charset
            && !c.eq_ignore_ascii_case("US-ASCII")
            && !c.eq_ignore_ascii_case("UTF-8")
        {
            return no(Some("BADCHARSET (US-ASCII UTF-8)"), "Unsupported charset");
        }
        if self.rev2 && super::rev2::uses_recent(criteria) {
            return bad("RECENT, NEW and OLD are not search keys in IMAP4rev2");
        }
        self.look(Allow::NoExpunge).map_err(Fail::Stop)?;
        let Session {
            sel,
            saved,
            dollar,
            out,
            buf,
            cfg,
            ..
        } = self;
        let sel = sel.as_ref().expect("selected");
        let star = sel.star();
        let crit = criteria::compile(criteria, star, *dollar);
        let mbox = &sel.mbox;
        let open = |r: &storage::Record| MessageFile::open(mbox, r);
        let headers = super::headercache::Source::of(mbox, sel.view.uidvalidity());
        let filter = super::ftsfilter::prepare(&cfg.fts, &crit, mbox, &sel.view);
        let mark = buf.len();
        let mut em = Emitter::with_buf(out, std::mem::take(buf));
        let io = |e: std::io::Error| Fail::Stop(Stop::Io(e));
        let mut failed = None;
        let mut run = || -> Result<(), Fail> {
            sink.start(&mut em).map_err(io)?;
            // Only the messages the criteria's sequence and UID sets
            // leave (all of them without such sets).
            let (lo, hi) = crit.seq_bounds(star.0, &|a, b| sel.view.seqs_of_uid_range(a, b));
            for m in sel.view.iter_seqs(lo, hi).filter(|m| !m.expunged) {
                if filter.as_ref().is_some_and(|f| !f.may_match(m.uid)) {
                    continue;
                }
                let mut c = sel.candidate(&m, star, &open);
                c.headers = headers;
                c.fts = filter.as_ref();
                let hit = crit.matches(&c, saved);
                let k = hit.then(|| key(&c));
                if let Some(e) = c.failed.into_inner() {
                    failed = Some((m.uid, e));
                    return Ok(());
                }
                if let Some(key) = k {
                    let h = Hit {
                        seq: m.seq,
                        uid: m.uid,
                        modseq: m.record.modseq,
                        key,
                    };
                    sink.hit(&mut em, h).map_err(io)?;
                }
            }
            sink.finish(&mut em).map_err(io)
        };
        let r = run();
        let sent = em.sent();
        *buf = em.into_buf();
        r?;
        let Some((uid, e)) = failed else {
            return Ok(());
        };
        if sent {
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.truncate(mark);
        }
        // A message that could not be read (or does not match its record)
        // makes the answer unknowable: no results.
        if matches!(e, Error::Corrupt { .. }) {
            tracing::error!(uid, "SEARCH refused: {e}");
            return no(
                Some("CORRUPTION"),
                &format!("Stored data of UID {uid} does not match its index record"),
            );
        }
        Err(e.into())
    }

    pub(super) fn search(
        &mut self,
        tag: &str,
        charset: Option<&str>,
        criteria: &[SearchKey],
        uid: bool,
    ) -> Result<Done, Fail> {
        // IMAP4rev2 answers every SEARCH with ESEARCH; no RETURN is ALL
        // (RFC 9051 6.4.4).
        let ret = self
            .search_return
            .take()
            .or(self.rev2.then(|| super::esearch::ReturnOpts {
                all: true,
                ..Default::default()
            }));
        let with_modseq = criteria.iter().any(search::uses_modseq);
        if with_modseq {
            self.enable_condstore();
        }
        if ret.is_some_and(|o| o.save) {
            // SEARCHRES keeps the result: it is collected.
            let hits = self.matching_for(ret, charset, criteria, |_| ())?;
            self.answer_search(tag, "SEARCH", uid, ret, &hits, with_modseq)
                .map_err(|e| Fail::Stop(Stop::Io(e)))?;
        } else {
            // Written as it is found (RFC 3501 7.2.5: one line).
            let mut line = super::esearch::Answer::new(tag, "SEARCH", uid, ret, with_modseq);
            self.scan(charset, criteria, |_| (), &mut line)?;
        }
        ok("SEARCH completed")
    }

    pub(super) fn expunge(&mut self, set: Option<&SequenceSet>) -> Result<Done, Fail> {
        if self.selected()?.read_only {
            return no(Some("READ-ONLY"), "Mailbox is read-only");
        }
        let only = match set {
            Some(s) => Some(
                self.targets(s, true)?
                    .into_iter()
                    .map(|(_, u)| u)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        let sel = self.sel.as_mut().expect("selected");
        let hint = if only.is_none() {
            sel.view.deleted_uids()
        } else {
            Vec::new()
        };
        let (gone, span) = groupcommit::expunge(&mut sel.mbox, only, true, hint)?;
        let ups = sel
            .view
            .apply_own_expunge_commit(&gone, span, Allow::AllUpdates);
        // RFC 7162 (CONDSTORE/QRESYNC EXPUNGE): with CONDSTORE on, the OK
        // carries HIGHESTMODSEQ, read before the check that follows this
        // command reports every change up to it.
        let top = if self.condstore {
            Some(sel.mbox.header()?.highestmodseq)
        } else {
            None
        };
        super::repack::after_expunge(&mut sel.mbox);
        self.write_updates(&ups);
        match top {
            Some(m) => ok_code(format!("HIGHESTMODSEQ {m}"), "EXPUNGE completed"),
            None => ok("EXPUNGE completed"),
        }
    }

    /// COPY and MOVE through `storage::transfer`: a copy is one commit in
    /// the target; a move is atomic for every session of both mailboxes.
    pub(super) fn copy(
        &mut self,
        set: &SequenceSet,
        dest: &WireMailbox,
        uid: bool,
        mv: bool,
    ) -> Result<Done, Fail> {
        let user = self.user()?;
        if mv && self.selected()?.read_only {
            return no(Some("READ-ONLY"), "Mailbox is read-only");
        }
        self.check(Allow::NoExpunge).map_err(Fail::Stop)?;
        let dest_name = mailbox_name(dest)?;
        let targets = self.targets(set, uid)?;
        let mut target = match self.store.open_mailbox(&user, &dest_name) {
            Err(Error::NoSuchMailbox(_)) => return no(Some("TRYCREATE"), "No such mailbox"),
            r => r?,
        };
        // A MOVE within one user's store frees what it adds.
        let quota = if mv { None } else { self.quota(&user)? };
        let sel = self.sel.as_mut().expect("selected");
        let uids: Vec<u32> = targets.iter().map(|(_, u)| *u).collect();
        if uids.is_empty() {
            return ok(if mv {
                "MOVE completed (nothing to move)"
            } else {
                "COPY completed (nothing to copy)"
            });
        }
        let result = if mv {
            storage::transfer::move_messages(&mut sel.mbox, &uids, &mut target, None)
        } else {
            storage::transfer::copy(&mut sel.mbox, &uids, &mut target, quota)
        };
        let outcome = match result {
            Err(Error::OverQuota { .. }) => return no(Some("OVERQUOTA"), "Over quota"),
            Err(Error::Expunged(_)) => {
                return no(
                    Some("EXPUNGEISSUED"),
                    "Some messages were expunged by another session",
                );
            }
            r => r?,
        };
        let code = format!(
            "COPYUID {} {} {}",
            outcome.uidvalidity,
            compact(&outcome.source_uids()),
            compact(&outcome.dest_uids())
        );
        if !mv {
            return ok_code(code, "COPY completed");
        }
        self.buf
            .extend_from_slice(format!("* OK [{code}] Moved\r\n").as_bytes());
        let sel = self.sel.as_mut().expect("selected");
        let ups = sel
            .view
            .apply_own_expunge(&outcome.source_uids(), Allow::AllUpdates);
        self.write_updates(&ups);
        ok("MOVE completed")
    }
}

use std::io::Write as _;
