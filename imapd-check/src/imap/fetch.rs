//! FETCH: which items a command asks for, and rendering one message's
//! response from its index record and (when needed) its bytes.

use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use storage::Record;

use super::binary;
use super::emit::{Broken, Emitter};
use super::mime::{self, Headers};
use super::msgfile::MessageFile;
use super::structure::{self, Mem, Source, Structure};
use super::wire;

/// What a FETCH command asks for, with the items the server adds.
pub struct Plan {
    pub items: Vec<MessageDataItemName<'static>>,
    /// Some item needs the message bytes.
    pub needs_body: bool,
    /// Some body item is not .PEEK: fetching sets \Seen.
    pub sets_seen: bool,
    /// Some item needs the MIME structure below the top header.
    pub needs_structure: bool,
    /// Some item is the whole message (its CRC32 is checked first).
    pub full_body: bool,
    /// Some item is BINARY or BINARY.SIZE (encodings checked first).
    pub binary: bool,
    /// For each BODY item in order: the BINARY item it stands for
    /// (`binary::rewrite_fetch`).
    pub alias: Vec<Option<binary::Flavor>>,
}

/// Why an item cannot be served.
#[derive(Debug)]
pub struct Unsupported(pub &'static str);

impl Plan {
    pub fn new(
        m: MacroOrMessageDataItemNames<'static>,
        uid_cmd: bool,
        want_modseq: bool,
        alias: Vec<Option<binary::Flavor>>,
    ) -> Result<Plan, Unsupported> {
        let mut items = match m {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().into_iter().map(to_static).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
        };
        let mut needs_body = false;
        let mut sets_seen = false;
        let mut full_body = false;
        let mut binary = alias.iter().any(Option::is_some);
        // Decoding a TEXT needs the parts below it.
        let mut needs_structure = binary;
        for it in &items {
            match it {
                MessageDataItemName::Binary { peek, .. } => {
                    needs_body = true;
                    needs_structure = true;
                    binary = true;
                    sets_seen |= !peek;
                }
                MessageDataItemName::BinarySize { .. } => {
                    needs_body = true;
                    needs_structure = true;
                    binary = true;
                }
                MessageDataItemName::BodyExt {
                    section,
                    partial,
                    peek,
                } => {
                    needs_body = true;
                    sets_seen |= !peek;
                    needs_structure |= section.as_ref().is_some_and(has_part);
                    full_body |= section.is_none() && partial.is_none();
                }
                MessageDataItemName::Rfc822 => {
                    needs_body = true;
                    sets_seen = true;
                    full_body = true;
                }
                MessageDataItemName::Rfc822Text => {
                    needs_body = true;
                    sets_seen = true;
                }
                MessageDataItemName::Rfc822Header | MessageDataItemName::Envelope => {
                    needs_body = true
                }
                MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                    needs_body = true;
                    needs_structure = true;
                }
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
            needs_structure,
            full_body,
            binary,
            alias,
        })
    }

    /// Adds FLAGS (a FETCH that set \Seen reports the new flags), and
    /// with CONDSTORE on the UID and MODSEQ as well (RFC 7162 3.1: a
    /// FETCH that sets \Seen is a flag change like any other).
    pub fn with_flags(&self, condstore: bool) -> Vec<MessageDataItemName<'static>> {
        let mut v = self.items.clone();
        if !v.contains(&MessageDataItemName::Flags) {
            v.push(MessageDataItemName::Flags);
        }
        if condstore {
            if !v.contains(&MessageDataItemName::Uid) {
                v.insert(0, MessageDataItemName::Uid);
            }
            if !v.contains(&MessageDataItemName::ModSeq) {
                v.push(MessageDataItemName::ModSeq);
            }
        }
        v
    }
}

fn to_static(i: MessageDataItemName<'_>) -> MessageDataItemName<'static> {
    use imap_codec::imap_types::IntoStatic;
    i.into_static()
}

/// Does a section name a part below the top level?
fn has_part(s: &Section) -> bool {
    match s {
        Section::Part(_) | Section::Mime(_) => true,
        Section::Header(p)
        | Section::Text(p)
        | Section::HeaderFields(p, _)
        | Section::HeaderFieldsNot(p, _) => p.is_some(),
    }
}

/// A message's checked bytes and structure, ready to render.
pub struct Body<'a> {
    pub file: &'a MessageFile,
    pub structure: &'a Structure,
}

/// Opens and checks a message for `plan` (see msgfile.rs for what is
/// checked when). Nothing has been sent for it yet when this fails.
pub fn prepare(
    mbox: &storage::Mailbox,
    rec: &Record,
    plan: &Plan,
) -> Result<(MessageFile, Structure), storage::Error> {
    let mut file = MessageFile::open(mbox, rec)?;
    let structure = file.structure(plan.needs_structure)?;
    if plan.full_body {
        file.verify()?;
    }
    Ok((file, structure))
}

/// What a section names.
enum Data {
    /// A byte range of the message.
    Range(u64, u64),
    /// Bytes made from it (HEADER.FIELDS).
    Made(Vec<u8>),
}

/// Renders `* seq FETCH (...)` for one message. Literals are copied from
/// the message file in chunks; a full body is checked against the CRC32
/// as it goes.
pub fn render(
    em: &mut Emitter,
    seq: u32,
    rec: &Record,
    (keywords, recent): (&[String], bool),
    items: &[MessageDataItemName],
    alias: &[Option<binary::Flavor>],
    body: Option<Body>,
) -> Result<(), Broken> {
    let mut body_ext = 0;
    em.buf
        .extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    let empty = Mem(&[]);
    let (src, st): (&dyn Source, Option<&Structure>) = match &body {
        Some(b) => (b.file, Some(b.structure)),
        None => (&empty, None),
    };
    // Only a file on disk can change after the check.
    let whole_crc = body
        .as_ref()
        .filter(|b| b.file.streams())
        .map(|b| b.file.expected_crc());
    let root = st.map(|s| &s.parts[0]);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            em.buf.push(b' ');
        }
        let out = &mut em.buf;
        match item {
            MessageDataItemName::Flags => {
                out.extend_from_slice(b"FLAGS ");
                wire::message_flags(out, rec.flags, recent, keywords);
            }
            MessageDataItemName::Uid => {
                out.extend_from_slice(format!("UID {}", rec.uid).as_bytes())
            }
            MessageDataItemName::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE ");
                wire::internal_date(out, rec.internal_date, rec.internal_zone);
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
                    Some(r) => {
                        let block = structure::header_block(src, r).map_err(Broken::Source)?;
                        mime::envelope(out, &Headers::parse(&block));
                    }
                    None => out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
                }
            }
            MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                let ext = *item == MessageDataItemName::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                match st {
                    Some(s) => mime::body_structure(em, src, s, 0, ext).map_err(Broken::Source)?,
                    None => out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)"),
                }
            }
            MessageDataItemName::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                em.literal(src, 0, src.size(), whole_crc)?;
            }
            MessageDataItemName::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                let (o, l) = root.map_or((0, 0), |r| r.header());
                em.literal(src, o, l, None)?;
            }
            MessageDataItemName::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                let (o, l) = root.map_or((0, 0), |r| r.body());
                em.literal(src, o, l, None)?;
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } if alias.get(body_ext).copied().flatten().is_some() => {
                let flavor = alias[body_ext].expect("checked");
                body_ext += 1;
                render_alias(em, src, st, section.as_ref(), *partial, flavor)?;
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                body_ext += 1;
                out.extend_from_slice(b"BODY[");
                if let Some(s) = section {
                    section_spec(out, s);
                }
                out.push(b']');
                let data = match (section, st) {
                    (None, _) => Some(Data::Range(0, src.size())),
                    (Some(s), Some(st)) => section_data(src, st, s).map_err(Broken::Source)?,
                    (Some(_), None) => None,
                };
                let made: Mem;
                let made_bytes;
                let (src, offset, len): (&dyn Source, u64, u64) = match data {
                    None => {
                        out.extend_from_slice(b" NIL");
                        continue;
                    }
                    Some(Data::Range(o, l)) => (src, o, l),
                    Some(Data::Made(v)) => {
                        made_bytes = v;
                        made = Mem(&made_bytes);
                        (&made, 0, made_bytes.len() as u64)
                    }
                };
                match partial {
                    None => {
                        out.push(b' ');
                        let crc = whole_crc.filter(|_| section.is_none());
                        em.literal(src, offset, len, crc)?;
                    }
                    Some((origin, plen)) => {
                        let start = (*origin as u64).min(len);
                        let n = (plen.get() as u64).min(len - start);
                        out.extend_from_slice(format!("<{origin}> ").as_bytes());
                        em.literal(src, offset + start, n, None)?;
                    }
                }
            }
            MessageDataItemName::Binary {
                section, partial, ..
            } => match st {
                Some(st) => binary::render(em, src, st, section, *partial)?,
                None => out.extend_from_slice(b"NIL"),
            },
            MessageDataItemName::BinarySize { section } => match st {
                Some(st) => binary::render_size(out, src, st, section)?,
                None => out.extend_from_slice(b"NIL"),
            },
        }
    }
    em.buf.extend_from_slice(b")\r\n");
    em.maybe_flush().map_err(Broken::Client)
}

/// A BINARY item that came through imap-codec as BODY (a section with
/// HEADER, TEXT or MIME): TEXT decoded (`binary::text_segments`), the
/// others as BODY has them; `BINARY[...]` or `BINARY.SIZE[...]`.
fn render_alias(
    em: &mut Emitter,
    src: &dyn Source,
    st: Option<&Structure>,
    section: Option<&Section>,
    partial: Option<(u32, std::num::NonZeroU32)>,
    flavor: binary::Flavor,
) -> Result<(), Broken> {
    em.buf.extend_from_slice(match flavor {
        binary::Flavor::Binary => b"BINARY[".as_slice(),
        binary::Flavor::Size => b"BINARY.SIZE[".as_slice(),
    });
    if let Some(s) = section {
        section_spec(&mut em.buf, s);
    }
    em.buf.push(b']');
    let segs = match (section, st) {
        (Some(Section::Text(p)), Some(st)) => binary::checked_text(src, st, p.as_ref())?,
        (Some(s), Some(st)) => match section_data(src, st, s).map_err(Broken::Source)? {
            None => Vec::new(),
            Some(Data::Range(o, l)) => vec![binary::Seg::Stored(o, l, binary::Cte::Identity)],
            Some(Data::Made(v)) => vec![binary::Seg::Bytes(v)],
        },
        _ => Vec::new(),
    };
    match flavor {
        binary::Flavor::Binary => binary::emit(em, src, &segs, partial),
        binary::Flavor::Size => {
            let n = binary::size(src, &segs)?;
            em.buf.extend_from_slice(format!(" {n}").as_bytes());
            Ok(())
        }
    }
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

/// What a section names; `None` when the part does not exist.
fn section_data(src: &dyn Source, st: &Structure, s: &Section) -> std::io::Result<Option<Data>> {
    let locate = |p: &Option<Part>| -> Option<usize> {
        match p {
            None => Some(0),
            Some(p) => st.inner(st.find(&part_path(p))?),
        }
    };
    let range = |r: (u64, u64)| Some(Data::Range(r.0, r.1));
    Ok(match s {
        Section::Part(p) => st
            .find(&part_path(p))
            .and_then(|i| range(st.parts[i].body())),
        Section::Mime(p) => st
            .find(&part_path(p))
            .and_then(|i| range(st.parts[i].header())),
        Section::Header(p) => locate(p).and_then(|i| range(st.parts[i].header())),
        Section::Text(p) => locate(p).and_then(|i| range(st.parts[i].body())),
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            let Some(i) = locate(p) else {
                return Ok(None);
            };
            let names: Vec<Vec<u8>> = names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect();
            let not = matches!(s, Section::HeaderFieldsNot(..));
            let block = structure::header_block(src, &st.parts[i])?;
            Some(Data::Made(mime::header_fields(&block, &names, not)))
        }
    })
}
