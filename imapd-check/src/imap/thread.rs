//! THREAD (RFC 5256 3): ORDEREDSUBJECT and REFERENCES, and UID THREAD.
//!
//! imap-codec parses the command (`CommandBody::Thread`). The messages
//! are those a SEARCH with the same criteria finds; each one's header
//! keys (`sort::KeySource`: from the mailbox's `.sortkeys` file, else its
//! header) are reduced to a fixed-size record (sequence number, UID,
//! sent date, a keyed 64-bit hash of the digest of its casemapped base
//! subject) and, for REFERENCES, its Message-ID and references go
//! straight into the container table as 64-bit hashes of their digests
//! (keyed afresh for every command). So a mailbox of a million messages
//! costs a few dozen bytes per message and per referenced id, never their
//! headers.
//!
//! Trees are kept as index-linked containers (parent, first child, next
//! sibling) and every walk over them uses an explicit stack: a chain of
//! a million replies does not recurse.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;

use super::conn::{Done, Fail, Session, bad, ok};
use super::search::Candidate;
use super::sort::{KeySource, sent_date};
use super::sortkeys::{Digest, KeysRef};

const NONE: u32 = u32::MAX;

/// Steps up a parent chain when checking for a loop.
const MAX_WALK: usize = 100_000;

/// What a matching message leaves for threading.
#[derive(Clone, Copy, Debug)]
struct Msg {
    seq: u32,
    uid: u32,
    date: i64,
    /// Hash of the casemapped base subject; `None` when it is empty.
    subject: Option<u64>,
    reply: bool,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    msg: u32,
    parent: u32,
    first: u32,
    last: u32,
    prev: u32,
    next: u32,
}

impl Node {
    fn new(msg: u32) -> Node {
        Node {
            msg,
            parent: NONE,
            first: NONE,
            last: NONE,
            prev: NONE,
            next: NONE,
        }
    }
}

/// Keyed hashes for one command, of the digests `.sortkeys` keeps
/// (sortkeys.rs): equal ids or subjects, equal hashes.
struct Hashing(RandomState);

impl Hashing {
    fn key(&self, d: &Digest) -> u64 {
        self.0.hash_one(d)
    }
}

/// The message's facts for threading, from its header keys.
fn facts(c: &Candidate, k: &KeysRef, hashing: &Hashing) -> Msg {
    Msg {
        seq: c.seq,
        uid: c.rec.uid,
        date: sent_date(c.rec),
        subject: k.subject_digest.map(|d| hashing.key(d)),
        reply: k.reply,
    }
}

/// Containers of the REFERENCES algorithm.
#[derive(Default)]
struct Tree {
    nodes: Vec<Node>,
    msgs: Vec<Msg>,
    by_id: HashMap<u64, u32>,
}

impl Tree {
    fn node(&mut self, msg: u32) -> u32 {
        self.nodes.push(Node::new(msg));
        (self.nodes.len() - 1) as u32
    }

    fn for_id(&mut self, id: u64) -> u32 {
        if let Some(&n) = self.by_id.get(&id) {
            return n;
        }
        let n = self.node(NONE);
        self.by_id.insert(id, n);
        n
    }

    /// Is `a` `b` or above it? A chain longer than [`MAX_WALK`] counts
    /// as yes: such a link is not made (bounds the time a mailbox built
    /// to make every link check walk far can take).
    fn is_ancestor(&self, a: u32, mut b: u32) -> bool {
        if self.nodes[a as usize].first == NONE {
            // Nothing hangs below `a`.
            return a == b;
        }
        for _ in 0..MAX_WALK {
            if b == NONE {
                return false;
            }
            if b == a {
                return true;
            }
            b = self.nodes[b as usize].parent;
        }
        true
    }

    fn children(&self, n: u32) -> Vec<u32> {
        let mut v = Vec::new();
        let mut c = self.nodes[n as usize].first;
        while c != NONE {
            v.push(c);
            c = self.nodes[c as usize].next;
        }
        v
    }

    fn set_children(&mut self, n: u32, kids: &[u32]) {
        self.nodes[n as usize].first = kids.first().copied().unwrap_or(NONE);
        self.nodes[n as usize].last = kids.last().copied().unwrap_or(NONE);
        for (i, &k) in kids.iter().enumerate() {
            let node = &mut self.nodes[k as usize];
            node.parent = n;
            node.prev = if i == 0 { NONE } else { kids[i - 1] };
            node.next = kids.get(i + 1).copied().unwrap_or(NONE);
        }
    }

    /// Takes `c` out of its parent's children.
    fn unlink(&mut self, c: u32) {
        let Node {
            parent, prev, next, ..
        } = self.nodes[c as usize];
        if parent == NONE {
            return;
        }
        match prev {
            NONE => self.nodes[parent as usize].first = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NONE => self.nodes[parent as usize].last = prev,
            n => self.nodes[n as usize].prev = prev,
        }
        let node = &mut self.nodes[c as usize];
        node.parent = NONE;
        node.prev = NONE;
        node.next = NONE;
    }

    /// Appends `c` to `p`'s children (after unlinking it from its parent).
    fn adopt(&mut self, p: u32, c: u32) {
        self.unlink(c);
        let last = self.nodes[p as usize].last;
        if last == NONE {
            self.nodes[p as usize].first = c;
        } else {
            self.nodes[last as usize].next = c;
        }
        self.nodes[p as usize].last = c;
        let node = &mut self.nodes[c as usize];
        node.parent = p;
        node.prev = last;
        node.next = NONE;
    }

    /// Step 1 for one message.
    fn add(&mut self, msg: Msg, id: Option<u64>, refs: &[u64]) {
        self.msgs.push(msg);
        let m = (self.msgs.len() - 1) as u32;
        // 1A: the message's container; a duplicate Message-ID is no ID.
        let me = match id {
            Some(id) => match self.by_id.get(&id) {
                Some(&n) if self.nodes[n as usize].msg == NONE => {
                    self.nodes[n as usize].msg = m;
                    n
                }
                Some(_) => self.node(m),
                None => {
                    let n = self.node(m);
                    self.by_id.insert(id, n);
                    n
                }
            },
            None => self.node(m),
        };
        // 1B: link the references in order, keeping existing links and
        // never making a loop.
        let conts: Vec<u32> = refs.iter().map(|&r| self.for_id(r)).collect();
        for w in conts.windows(2) {
            let (p, c) = (w[0], w[1]);
            if self.nodes[c as usize].parent == NONE && !self.is_ancestor(c, p) {
                self.adopt(p, c);
            }
        }
        // 1C: the last reference is the parent, replacing any presumed one.
        self.unlink(me);
        if let Some(&p) = conts.last()
            && !self.is_ancestor(me, p)
        {
            self.adopt(p, me);
        }
    }

    /// The sent date and sequence number a container sorts by (a dummy:
    /// those of its first child).
    fn sort_key(&self, mut n: u32) -> (i64, u32) {
        loop {
            let node = self.nodes[n as usize];
            if node.msg != NONE {
                let m = self.msgs[node.msg as usize];
                return (m.date, m.seq);
            }
            if node.first == NONE {
                return (i64::MIN, 0);
            }
            n = node.first;
        }
    }

    /// The message a container stands for in subject grouping (a dummy:
    /// its first child's).
    fn subject_msg(&self, n: u32) -> Option<Msg> {
        let node = self.nodes[n as usize];
        let m = if node.msg != NONE {
            node.msg
        } else {
            self.nodes[node.first as usize].msg
        };
        (m != NONE).then(|| self.msgs[m as usize])
    }

    fn is_dummy(&self, n: u32) -> bool {
        self.nodes[n as usize].msg == NONE
    }

    /// Every node below `root`, children before their parent.
    fn post_order(&self, root: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack = vec![(root, false)];
        while let Some((n, done)) = stack.pop() {
            if done {
                out.push(n);
                continue;
            }
            stack.push((n, true));
            let mut c = self.nodes[n as usize].first;
            while c != NONE {
                stack.push((c, false));
                c = self.nodes[c as usize].next;
            }
        }
        out
    }

    /// Steps 2 to 6; returns the root whose children are the threads.
    fn finish(mut self) -> (Tree, u32) {
        // 2: the root set, in the order the containers were made.
        let root = self.node(NONE);
        let top: Vec<u32> = (0..root)
            .filter(|&n| self.nodes[n as usize].parent == NONE)
            .collect();
        self.set_children(root, &top);
        // 3: the id table is no longer needed.
        self.by_id = HashMap::new();
        // 4: prune dummies, children first.
        for n in self.post_order(root) {
            let mut kept = Vec::new();
            for c in self.children(n) {
                if !self.is_dummy(c) {
                    kept.push(c);
                    continue;
                }
                let grand = self.children(c);
                if grand.is_empty() {
                    continue;
                }
                if n != root || grand.len() == 1 {
                    kept.extend(grand);
                } else {
                    kept.push(c);
                }
            }
            self.set_children(n, &kept);
        }
        // 5: gather threads with the same base subject. A dummy's subject
        // is its first child's: the earliest, as Dovecot takes it (RFC 5256
        // does not say in which order), so siblings are sorted first.
        self.sort_siblings(root);
        // The root set is
        // worked on as a list (`NONE` where one was taken away).
        let mut top = self.children(root);
        for &c in &top {
            let node = &mut self.nodes[c as usize];
            node.parent = NONE;
            node.prev = NONE;
            node.next = NONE;
        }
        let mut table: HashMap<u64, usize> = HashMap::new();
        for (i, &c) in top.iter().enumerate() {
            let Some(m) = self.subject_msg(c) else {
                continue;
            };
            let Some(s) = m.subject else { continue };
            match table.get(&s).copied() {
                None => {
                    table.insert(s, i);
                }
                Some(ti) => {
                    let t = top[ti];
                    let t_reply = self.subject_msg(t).is_some_and(|m| m.reply);
                    // A dummy in the table stays (so Dovecot does).
                    let t_dummy = self.is_dummy(t);
                    if !t_dummy && (self.is_dummy(c) || (t_reply && !m.reply)) {
                        table.insert(s, i);
                    }
                }
            }
        }
        for i in 0..top.len() {
            let c = top[i];
            if c == NONE {
                continue;
            }
            let Some(m) = self.subject_msg(c) else {
                continue;
            };
            let Some(s) = m.subject else { continue };
            let Some(&ti) = table.get(&s) else { continue };
            let t = top[ti];
            if ti == i {
                continue;
            }
            let t_reply = self.subject_msg(t).is_some_and(|m| m.reply);
            match (self.is_dummy(t), self.is_dummy(c)) {
                (true, true) => {
                    for k in self.children(c) {
                        self.adopt(t, k);
                    }
                    top[i] = NONE;
                }
                (true, false) => {
                    self.adopt(t, c);
                    top[i] = NONE;
                }
                (false, true) => {
                    self.adopt(c, t);
                    top[ti] = NONE;
                    table.insert(s, i);
                }
                (false, false) if !t_reply && m.reply => {
                    self.adopt(t, c);
                    top[i] = NONE;
                }
                (false, false) => {
                    let d = self.node(NONE);
                    self.adopt(d, t);
                    self.adopt(d, c);
                    top[ti] = d;
                    top[i] = NONE;
                }
            }
        }
        top.retain(|&n| n != NONE);
        self.set_children(root, &top);
        // 6: siblings by sent date.
        self.sort_siblings(root);
        (self, root)
    }

    /// Orders every set of siblings by sent date (a dummy: its first
    /// child's, once sorted), ties in sequence order.
    fn sort_siblings(&mut self, root: u32) {
        for n in self.post_order(root) {
            let mut kids = self.children(n);
            if kids.len() > 1 {
                kids.sort_by_key(|&k| self.sort_key(k));
                self.set_children(n, &kids);
            }
        }
    }

    /// `(a b (c)(d))...` for the threads below `root`.
    fn render(&self, root: u32, uid: bool, out: &mut String) {
        enum Task {
            Body(u32),
            Text(&'static str),
        }
        for t in self.children(root) {
            let mut stack = vec![Task::Text(")"), Task::Body(t), Task::Text("(")];
            while let Some(task) = stack.pop() {
                let n = match task {
                    Task::Text(s) => {
                        out.push_str(s);
                        continue;
                    }
                    Task::Body(n) => n,
                };
                let node = self.nodes[n as usize];
                let kids = self.children(n);
                if node.msg != NONE {
                    let m = self.msgs[node.msg as usize];
                    out.push_str(&(if uid { m.uid } else { m.seq }).to_string());
                    if kids.len() == 1 {
                        stack.push(Task::Body(kids[0]));
                        stack.push(Task::Text(" "));
                        continue;
                    }
                    if !kids.is_empty() {
                        out.push(' ');
                    }
                }
                for &k in kids.iter().rev() {
                    stack.push(Task::Text(")"));
                    stack.push(Task::Body(k));
                    stack.push(Task::Text("("));
                }
            }
        }
    }
}

/// ORDEREDSUBJECT (RFC 5256 3): messages with one base subject make one
/// thread, ordered by sent date; the first is the parent of the others;
/// threads are ordered by the sent date of their first message.
fn ordered_subject(mut msgs: Vec<Msg>, uid: bool) -> String {
    msgs.sort_by_key(|m| (m.subject, m.date, m.seq));
    let mut threads: Vec<&[Msg]> = msgs.chunk_by(|a, b| a.subject == b.subject).collect();
    threads.sort_by_key(|t| (t[0].date, t[0].seq));
    let id = |m: &Msg| if uid { m.uid } else { m.seq };
    let mut out = String::new();
    for t in threads {
        out.push('(');
        out.push_str(&id(&t[0]).to_string());
        match &t[1..] {
            [] => {}
            [one] => out.push_str(&format!(" {}", id(one))),
            rest => {
                out.push(' ');
                for m in rest {
                    out.push_str(&format!("({})", id(m)));
                }
            }
        }
        out.push(')');
    }
    out
}

impl Session {
    pub(super) fn thread(
        &mut self,
        algorithm: &ThreadingAlgorithm,
        charset: &str,
        search: &[SearchKey],
        uid: bool,
    ) -> Result<Done, Fail> {
        let references = match algorithm {
            ThreadingAlgorithm::OrderedSubject => false,
            ThreadingAlgorithm::References => true,
            _ => return bad("Unknown threading algorithm"),
        };
        let hashing = Hashing(RandomState::new());
        let mut tree = Tree::default();
        let source = KeySource::open(self.sel.as_ref(), search, &self.saved, self.dollar);
        let hits = self.matching(Some(charset), search, |c| {
            source.with(c, |k| {
                let msg = facts(c, &k, &hashing);
                if !references {
                    return Some(msg);
                }
                let id = k.id.map(|d| hashing.key(d));
                let refs: Vec<u64> = k.refs().map(|d| hashing.key(d)).collect();
                tree.add(msg, id, &refs);
                None
            })
        });
        source.finish();
        let hits = hits?;
        let body = if references {
            let (tree, root) = std::mem::take(&mut tree).finish();
            let mut out = String::new();
            tree.render(root, uid, &mut out);
            out
        } else {
            ordered_subject(hits.into_iter().filter_map(|h| h.key).collect(), uid)
        };
        self.buf.extend_from_slice(b"* THREAD ");
        self.buf.extend_from_slice(body.as_bytes());
        // `* THREAD` with nothing after it when nothing matched.
        if body.is_empty() {
            self.buf.pop();
        }
        self.buf.extend_from_slice(b"\r\n");
        ok("THREAD completed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u32, date: i64, subject: Option<u64>, reply: bool) -> Msg {
        Msg {
            seq,
            uid: seq + 100,
            date,
            subject,
            reply,
        }
    }

    fn render(t: Tree) -> String {
        let (t, root) = t.finish();
        let mut s = String::new();
        t.render(root, false, &mut s);
        s
    }

    /// RFC 5256 3 (REFERENCES step 1): replies hang below what they
    /// reference, a missing parent becomes a dummy that is pruned
    /// (step 4), siblings go by date (step 6).
    #[test]
    fn references_build_trees() {
        let mut t = Tree::default();
        t.add(msg(1, 10, Some(1), false), Some(11), &[]);
        t.add(msg(2, 30, Some(1), true), Some(12), &[11]);
        t.add(msg(3, 20, Some(1), true), Some(13), &[11]);
        t.add(msg(4, 40, Some(1), true), Some(14), &[11, 13]);
        t.add(msg(5, 5, Some(2), false), Some(15), &[99]);
        assert_eq!(render(t), "(5)(1 (3 4)(2))");
    }

    /// Step 4: a dummy root with two children stays, printed as a
    /// nested list without a number; duplicates get no id (1A).
    #[test]
    fn dummies_and_duplicates() {
        let mut t = Tree::default();
        t.add(msg(1, 10, Some(1), true), Some(11), &[99]);
        t.add(msg(2, 20, Some(2), true), Some(12), &[99]);
        t.add(msg(3, 30, Some(3), false), Some(11), &[]);
        assert_eq!(render(t), "((1)(2))(3)");
    }

    /// Step 5: threads with the same base subject are gathered: a reply
    /// below the original; two originals below a new dummy.
    #[test]
    fn subject_gathering() {
        let mut t = Tree::default();
        t.add(msg(1, 10, Some(7), false), Some(11), &[]);
        t.add(msg(2, 20, Some(7), true), Some(12), &[]);
        t.add(msg(3, 30, Some(8), false), Some(13), &[]);
        t.add(msg(4, 40, Some(8), false), Some(14), &[]);
        t.add(msg(5, 50, None, false), Some(15), &[]);
        t.add(msg(6, 60, None, false), Some(16), &[]);
        assert_eq!(render(t), "(1 2)((3)(4))(5)(6)");
    }

    /// Step 5 where RFC 5256 leaves room, as Dovecot does it: a dummy's
    /// subject is that of its earliest child, and a dummy in the subject
    /// table is not replaced by a message; the others join it.
    #[test]
    fn subject_gathering_around_a_dummy() {
        let mut t = Tree::default();
        t.add(msg(1, 8, Some(5), true), Some(11), &[]);
        t.add(msg(2, 25, Some(6), false), Some(12), &[20]);
        t.add(msg(3, 14, Some(5), true), Some(13), &[20]);
        t.add(msg(4, 23, Some(5), false), Some(14), &[]);
        assert_eq!(render(t), "((1)(3)(4)(2))");
    }

    /// Step 1B/1C: a reference loop is not made.
    #[test]
    fn loops_are_refused() {
        let mut t = Tree::default();
        t.add(msg(1, 10, Some(1), false), Some(11), &[12]);
        t.add(msg(2, 20, Some(2), false), Some(12), &[11]);
        t.add(msg(3, 30, Some(3), false), Some(13), &[13]);
        assert_eq!(render(t), "(2 1)(3)");
    }

    /// A chain of 200,000 replies renders without recursion.
    #[test]
    fn deep_chain() {
        let mut t = Tree::default();
        let n = 200_000u32;
        for i in 1..=n {
            let refs: Vec<u64> = if i > 1 { vec![(i - 1) as u64] } else { vec![] };
            t.add(msg(i, i as i64, Some(1), i > 1), Some(i as u64), &refs);
        }
        let s = render(t);
        assert!(s.starts_with("(1 2 3 "));
        assert!(s.ends_with(" 200000)"));
    }

    /// RFC 5256 3 ORDEREDSUBJECT.
    #[test]
    fn ordered_subject_threads() {
        let msgs = vec![
            msg(1, 50, Some(1), false),
            msg(2, 10, Some(2), false),
            msg(3, 60, Some(1), true),
            msg(4, 20, Some(2), true),
            msg(5, 30, Some(2), true),
            msg(6, 5, Some(3), false),
        ];
        assert_eq!(ordered_subject(msgs, false), "(6)(2 (4)(5))(1 3)");
    }
}
