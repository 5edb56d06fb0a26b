//! ENVELOPE, BODYSTRUCTURE and BODY[section] from a parsed message.
//!
//! mail-parser gives each MIME part its byte offsets (header start, body
//! start, end) in the raw message; everything here slices those bytes, so
//! what a client fetches is exactly what is stored.

use mail_parser::{Address, HeaderValue, Message, MessagePart, MimeHeaders, PartType};

use super::wire::{nstring, string};

/// A MIME part: the message that holds it and its index there.
#[derive(Clone, Copy)]
pub struct Node<'m, 'x> {
    pub msg: &'m Message<'x>,
    pub id: usize,
}

impl<'m, 'x> Node<'m, 'x> {
    pub fn root(msg: &'m Message<'x>) -> Self {
        Node { msg, id: 0 }
    }
    fn part(&self) -> &'m MessagePart<'x> {
        &self.msg.parts[self.id]
    }
    fn raw(&self) -> &'m [u8] {
        self.msg.raw_message.as_ref()
    }
    fn slice(&self, a: u32, b: u32) -> &'m [u8] {
        let raw = self.raw();
        let b = (b as usize).min(raw.len());
        raw.get((a as usize).min(b)..b).unwrap_or_default()
    }
    pub fn header_bytes(&self) -> &'m [u8] {
        let p = self.part();
        self.slice(p.offset_header, p.offset_body)
    }
    pub fn body_bytes(&self) -> &'m [u8] {
        let p = self.part();
        self.slice(p.offset_body, p.offset_end)
    }
    fn children(&self) -> Option<Vec<Node<'m, 'x>>> {
        match &self.part().body {
            PartType::Multipart(ids) => Some(
                ids.iter()
                    .filter(|&&i| (i as usize) < self.msg.parts.len())
                    .map(|&i| Node {
                        msg: self.msg,
                        id: i as usize,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
    /// The encapsulated message of a message/rfc822 part.
    fn inner(&self) -> Option<Node<'m, 'x>> {
        match &self.part().body {
            PartType::Message(m) if !m.parts.is_empty() => Some(Node::root(m)),
            _ => None,
        }
    }

    /// Follows a section part path (`1.2.3`). `None` if it names no part.
    pub fn find(self, path: &[u32]) -> Option<Node<'m, 'x>> {
        let mut cur = self;
        for (depth, &n) in path.iter().enumerate() {
            let base = if depth == 0 {
                cur
            } else {
                cur.inner().unwrap_or(cur)
            };
            cur = match base.children() {
                Some(kids) => *kids.get((n as usize).checked_sub(1)?)?,
                None if n == 1 => {
                    // A non-multipart's only part is itself; a nested
                    // message's part 1 is its body.
                    if depth > 0 && cur.inner().is_some() {
                        base
                    } else {
                        cur
                    }
                }
                None => return None,
            };
        }
        Some(cur)
    }

    /// The node whose header/text `HEADER`/`TEXT` name: the message
    /// itself at the top, the encapsulated message of a message/rfc822 part.
    pub fn as_message(self, top: bool) -> Option<Node<'m, 'x>> {
        if top { Some(self) } else { self.inner() }
    }

    fn raw_header(&self, name: &str) -> Option<&'m [u8]> {
        let p = self.part();
        let h = p
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
        Some(trim(self.slice(h.offset_start, h.offset_end)))
    }
    fn header_value(&self, name: &str) -> Option<&'m HeaderValue<'x>> {
        let p = self.part();
        p.headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| &h.value)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e]
}

/// Removes folding (CRLF before whitespace).
fn unfold(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect()
}

fn nstring_unfolded(out: &mut Vec<u8>, v: Option<&[u8]>) {
    nstring(out, v.map(unfold).as_deref());
}

pub fn envelope(out: &mut Vec<u8>, n: Node) {
    out.push(b'(');
    nstring_unfolded(out, n.raw_header("Date"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Subject"));
    let from = n.header_value("From");
    for (i, name) in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"]
        .iter()
        .enumerate()
    {
        out.push(b' ');
        let v = n
            .header_value(name)
            .or(if (1..=2).contains(&i) { from } else { None });
        addresses(out, v);
    }
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("In-Reply-To"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Message-ID"));
    out.push(b')');
}

fn address(out: &mut Vec<u8>, name: Option<&str>, addr: Option<&str>) {
    out.push(b'(');
    nstring(out, name.map(str::as_bytes));
    out.extend_from_slice(b" NIL ");
    let (mbox, host) = match addr {
        Some(a) => match a.rsplit_once('@') {
            Some((m, h)) => (Some(m), Some(h)),
            None => (Some(a), None),
        },
        None => (None, None),
    };
    nstring(out, mbox.map(str::as_bytes));
    out.push(b' ');
    nstring(out, host.map(str::as_bytes));
    out.push(b')');
}

fn addresses(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    let before = out.len();
    out.push(b'(');
    match v {
        Some(HeaderValue::Address(Address::List(list))) => {
            for a in list {
                address(out, a.name.as_deref(), a.address.as_deref());
            }
        }
        Some(HeaderValue::Address(Address::Group(groups))) => {
            for g in groups {
                if let Some(gname) = &g.name {
                    // RFC 3501 group syntax: start marker, members, end marker.
                    out.extend_from_slice(b"(NIL NIL ");
                    string(out, gname.as_bytes());
                    out.extend_from_slice(b" NIL)");
                }
                for a in &g.addresses {
                    address(out, a.name.as_deref(), a.address.as_deref());
                }
                if g.name.is_some() {
                    out.extend_from_slice(b"(NIL NIL NIL NIL)");
                }
            }
        }
        _ => {}
    }
    if out.len() == before + 1 {
        out.truncate(before);
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b')');
    }
}

fn params(
    out: &mut Vec<u8>,
    attrs: Option<&Vec<mail_parser::Attribute>>,
    default: &[(&str, &str)],
) {
    let list: Vec<(String, String)> = match attrs {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|a| (a.name.to_string(), a.value.to_string()))
            .collect(),
        _ => default
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in list.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

fn extension(out: &mut Vec<u8>, n: Node) {
    let p = n.part();
    out.push(b' ');
    match p.content_disposition() {
        Some(d) => {
            out.push(b'(');
            string(out, d.c_type.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            params(out, d.attributes.as_ref(), &[]);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Content-Language"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Content-Location"));
}

/// BODYSTRUCTURE (`extended`) or BODY.
pub fn body_structure(out: &mut Vec<u8>, n: Node, extended: bool) {
    let p = n.part();
    let ct = p.content_type();
    out.push(b'(');
    if let Some(kids) = n.children() {
        for k in &kids {
            body_structure(out, *k, extended);
        }
        if kids.is_empty() {
            // An empty multipart still needs one body for the syntax.
            out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        }
        out.push(b' ');
        let sub = ct.and_then(|c| c.c_subtype.as_deref()).unwrap_or("MIXED");
        string(out, sub.to_ascii_uppercase().as_bytes());
        if extended {
            out.push(b' ');
            params(out, ct.and_then(|c| c.attributes.as_ref()), &[]);
            extension(out, n);
        }
        out.push(b')');
        return;
    }
    let (ty, sub) = match ct {
        Some(c) => (
            c.c_type.to_ascii_uppercase(),
            c.c_subtype
                .as_deref()
                .unwrap_or("PLAIN")
                .to_ascii_uppercase(),
        ),
        None => ("TEXT".to_string(), "PLAIN".to_string()),
    };
    string(out, ty.as_bytes());
    out.push(b' ');
    string(out, sub.as_bytes());
    out.push(b' ');
    let default: &[(&str, &str)] = if ty == "TEXT" {
        &[("CHARSET", "US-ASCII")]
    } else {
        &[]
    };
    params(out, ct.and_then(|c| c.attributes.as_ref()), default);
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Content-ID"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Content-Description"));
    out.push(b' ');
    let enc = n
        .raw_header("Content-Transfer-Encoding")
        .map(|e| String::from_utf8_lossy(&unfold(e)).to_ascii_uppercase())
        .unwrap_or_else(|| "7BIT".to_string());
    string(out, enc.as_bytes());
    let body = n.body_bytes();
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    if let Some(inner) = n.inner().filter(|_| ty == "MESSAGE") {
        out.push(b' ');
        envelope(out, inner);
        out.push(b' ');
        body_structure(out, inner, extended);
        out.extend_from_slice(format!(" {lines}").as_bytes());
    } else if ty == "TEXT" {
        out.extend_from_slice(format!(" {lines}").as_bytes());
    }
    if extended {
        out.push(b' ');
        nstring_unfolded(out, n.raw_header("Content-MD5"));
        extension(out, n);
    }
    out.push(b')');
}

/// The header lines of `header` whose field name is (`not == false`) or
/// is not (`not == true`) in `names`, followed by the blank line.
pub fn header_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = trim(name);
            let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    const MULTI: &[u8] = b"From: A <a@x.org>\r\nTo: b@y.org\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn sections_slice_the_raw_message() {
        let m = MessageParser::default().parse(MULTI).unwrap();
        let root = Node::root(&m);
        assert_eq!(root.find(&[1]).unwrap().body_bytes(), b"one");
        assert_eq!(
            root.find(&[1]).unwrap().header_bytes(),
            b"Content-Type: text/plain\r\n\r\n"
        );
        let msg = root.find(&[2]).unwrap();
        assert_eq!(msg.body_bytes(), b"Subject: inner\r\n\r\ninner body");
        let inner = msg.as_message(false).unwrap();
        assert_eq!(inner.header_bytes(), b"Subject: inner\r\n\r\n");
        assert_eq!(inner.body_bytes(), b"inner body");
        assert_eq!(root.find(&[2, 1]).unwrap().body_bytes(), b"inner body");
        assert!(root.find(&[3]).is_none());
        let mut o = Vec::new();
        envelope(&mut o, root);
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "(NIL \"hi\" ((\"A\" NIL \"a\" \"x.org\")) ((\"A\" NIL \"a\" \"x.org\")) ((\"A\" NIL \"a\" \"x.org\")) ((NIL NIL \"b\" \"y.org\")) NIL NIL NIL NIL)"
        );
        let mut o = Vec::new();
        body_structure(&mut o, root, false);
        let s = String::from_utf8(o).unwrap();
        assert!(
            s.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3 0)"),
            "{s}"
        );
        assert!(s.ends_with(" \"MIXED\")"), "{s}");
    }

    #[test]
    fn single_part_numbering() {
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let m = MessageParser::default().parse(&raw[..]).unwrap();
        let root = Node::root(&m);
        assert_eq!(root.find(&[1]).unwrap().body_bytes(), b"body\r\n");
        assert_eq!(root.header_bytes(), b"Subject: x\r\n\r\n");
        assert_eq!(
            header_fields(root.header_bytes(), &[b"subject".to_vec()], false),
            b"Subject: x\r\n\r\n"
        );
    }
}
