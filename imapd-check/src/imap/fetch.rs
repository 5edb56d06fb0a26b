//! FETCH: which items a command asks for, and rendering one message's
//! response from its index record and (when needed) its bytes.

use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use mail_parser::MessageParser;
use storage::Record;

use super::mime::{self, Node};
use super::wire;

/// What a FETCH command asks for, with the items the server adds.
pub struct Plan {
    pub items: Vec<MessageDataItemName<'static>>,
    /// Some item needs the message bytes.
    pub needs_body: bool,
    /// Some body item is not .PEEK: fetching sets \Seen.
    pub sets_seen: bool,
}

/// Why an item cannot be served.
#[derive(Debug)]
pub struct Unsupported(pub &'static str);

impl Plan {
    pub fn new(
        m: MacroOrMessageDataItemNames<'static>,
        uid_cmd: bool,
        want_modseq: bool,
    ) -> Result<Plan, Unsupported> {
        let mut items = match m {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().into_iter().map(to_static).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
        };
        let mut needs_body = false;
        let mut sets_seen = false;
        for it in &items {
            match it {
                MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                    return Err(Unsupported("BINARY is not supported"));
                }
                MessageDataItemName::BodyExt { peek, .. } => {
                    needs_body = true;
                    sets_seen |= !peek;
                }
                MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => {
                    needs_body = true;
                    sets_seen = true;
                }
                MessageDataItemName::Rfc822Header
                | MessageDataItemName::Envelope
                | MessageDataItemName::Body
                | MessageDataItemName::BodyStructure => needs_body = true,
                _ => {}
            }
        }
        if uid_cmd && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        if want_modseq && !items.contains(&MessageDataItemName::ModSeq) {
            items.push(MessageDataItemName::ModSeq);
        }
        Ok(Plan {
            items,
            needs_body,
            sets_seen,
        })
    }

    /// Adds FLAGS (a FETCH that set \Seen reports the new flags).
    pub fn with_flags(&self) -> Vec<MessageDataItemName<'static>> {
        let mut v = self.items.clone();
        if !v.contains(&MessageDataItemName::Flags) {
            v.push(MessageDataItemName::Flags);
        }
        v
    }
}

fn to_static(i: MessageDataItemName<'_>) -> MessageDataItemName<'static> {
    use imap_codec::imap_types::IntoStatic;
    i.into_static()
}

/// Renders `* seq FETCH (...)` for one message.
pub fn render(
    out: &mut Vec<u8>,
    seq: u32,
    rec: &Record,
    keywords: &[String],
    items: &[MessageDataItemName],
    body: Option<&[u8]>,
) {
    let parsed = body.and_then(|b| {
        let needs_parse = items.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::Envelope
                    | MessageDataItemName::Body
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::BodyExt {
                        section: Some(_),
                        ..
                    }
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
            )
        });
        needs_parse
            .then(|| MessageParser::default().parse(b))
            .flatten()
    });
    let root = parsed.as_ref().map(Node::root);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let raw = body.unwrap_or_default();
        match item {
            MessageDataItemName::Flags => {
                out.extend_from_slice(b"FLAGS ");
                wire::flag_list(out, rec.flags, keywords);
            }
            MessageDataItemName::Uid => {
                out.extend_from_slice(format!("UID {}", rec.uid).as_bytes())
            }
            MessageDataItemName::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE ");
                wire::internal_date(out, rec.internal_date);
            }
            MessageDataItemName::Rfc822Size => {
                out.extend_from_slice(format!("RFC822.SIZE {}", rec.size).as_bytes())
            }
            MessageDataItemName::ModSeq => {
                out.extend_from_slice(format!("MODSEQ ({})", rec.modseq).as_bytes())
            }
            MessageDataItemName::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                match root {
                    Some(r) => mime::envelope(out, r),
                    None => out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
                }
            }
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                let ext = *item == MessageDataItemName::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                match root {
                    Some(r) => mime::body_structure(out, r, ext),
                    None => out.extend_from_slice(
                        format!("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" {} 0)", raw.len())
                            .as_bytes(),
                    ),
                }
            }
            MessageDataItemName::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                wire::literal(out, raw);
            }
            MessageDataItemName::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                wire::literal(out, root.map_or(raw, |r| r.header_bytes()));
            }
            MessageDataItemName::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                wire::literal(out, root.map_or(&[][..], |r| r.body_bytes()));
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                out.extend_from_slice(b"BODY[");
                if let Some(s) = section {
                    section_spec(out, s);
                }
                out.push(b']');
                let data: Option<Vec<u8>> = match section {
                    None => Some(raw.to_vec()),
                    Some(s) => root.and_then(|r| section_data(r, s)),
                };
                match (data, partial) {
                    (None, _) => out.extend_from_slice(b" NIL"),
                    (Some(d), None) => {
                        out.push(b' ');
                        wire::literal(out, &d);
                    }
                    (Some(d), Some((origin, len))) => {
                        let start = (*origin as usize).min(d.len());
                        let end = start.saturating_add(len.get() as usize).min(d.len());
                        out.extend_from_slice(format!("<{origin}> ").as_bytes());
                        wire::literal(out, &d[start..end]);
                    }
                }
            }
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                // Refused in Plan::new.
            }
        }
    }
    out.extend_from_slice(b")\r\n");
}

fn part_path(p: &Part) -> Vec<u32> {
    p.0.as_ref().iter().map(|n| n.get()).collect()
}

fn write_part(out: &mut Vec<u8>, p: &Part) {
    let s: Vec<String> = part_path(p).iter().map(u32::to_string).collect();
    out.extend_from_slice(s.join(".").as_bytes());
}

fn section_spec(out: &mut Vec<u8>, s: &Section) {
    let prefix = |out: &mut Vec<u8>, p: &Option<Part>| {
        if let Some(p) = p {
            write_part(out, p);
            out.push(b'.');
        }
    };
    match s {
        Section::Part(p) => write_part(out, p),
        Section::Header(p) => {
            prefix(out, p);
            out.extend_from_slice(b"HEADER");
        }
        Section::Text(p) => {
            prefix(out, p);
            out.extend_from_slice(b"TEXT");
        }
        Section::Mime(p) => {
            write_part(out, p);
            out.extend_from_slice(b".MIME");
        }
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            prefix(out, p);
            out.extend_from_slice(if matches!(s, Section::HeaderFields(..)) {
                b"HEADER.FIELDS ("
            } else {
                b"HEADER.FIELDS.NOT ("
            });
            for (i, n) in names.as_ref().iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                let b: &[u8] = n.as_ref();
                if !b.is_empty()
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
                {
                    out.extend_from_slice(b);
                } else {
                    wire::string(out, b);
                }
            }
            out.push(b')');
        }
    }
}

/// The bytes a section names; `None` when the part does not exist.
fn section_data(root: Node, s: &Section) -> Option<Vec<u8>> {
    let locate = |p: &Option<Part>| -> Option<Node> {
        match p {
            None => Some(root),
            Some(p) => root.find(&part_path(p))?.as_message(false),
        }
    };
    Some(match s {
        Section::Part(p) => root.find(&part_path(p))?.body_bytes().to_vec(),
        Section::Mime(p) => root.find(&part_path(p))?.header_bytes().to_vec(),
        Section::Header(p) => locate(p)?.header_bytes().to_vec(),
        Section::Text(p) => locate(p)?.body_bytes().to_vec(),
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            let names: Vec<Vec<u8>> = names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect();
            let not = matches!(s, Section::HeaderFieldsNot(..));
            mime::header_fields(locate(p)?.header_bytes(), &names, not)
        }
    })
}
