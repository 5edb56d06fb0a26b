//! ID (RFC 2971): the server's name and version for the client's, which
//! is logged. Valid in every state (RFC 2971 §3.1).

use imap_codec::imap_types::core::{IString, NString};

use super::conn::{Done, Fail, Session, bad, ok};
use super::wire;

/// RFC 2971 §3.3: at most 30 field-value pairs, fields of at most 30
/// octets, values of at most 1024.
const MAX_PAIRS: usize = 30;
const MAX_FIELD: usize = 30;
const MAX_VALUE: usize = 1024;

impl Session {
    pub(super) fn id(&mut self, params: Option<&[(IString, NString)]>) -> Result<Done, Fail> {
        let params = params.unwrap_or_default();
        if params.len() > MAX_PAIRS {
            return bad("More than 30 ID field-value pairs (RFC 2971 3.3)");
        }
        let mut client = Vec::with_capacity(params.len());
        for (field, value) in params {
            let field: &[u8] = field.as_ref();
            let value: Option<&[u8]> = value.0.as_ref().map(|v| v.as_ref());
            if field.len() > MAX_FIELD || value.is_some_and(|v| v.len() > MAX_VALUE) {
                return bad("ID field or value too long (RFC 2971 3.3)");
            }
            client.push((
                String::from_utf8_lossy(field).into_owned(),
                value.map(|v| String::from_utf8_lossy(v).into_owned()),
            ));
        }
        tracing::info!(user = ?self.user.as_ref().map(|u| u.to_string()), ?client, "client ID");
        self.buf.extend_from_slice(b"* ID (");
        for (i, (k, v)) in [
            ("name", env!("CARGO_PKG_NAME")),
            ("version", env!("CARGO_PKG_VERSION")),
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                self.buf.push(b' ');
            }
            wire::string(&mut self.buf, k.as_bytes());
            self.buf.push(b' ');
            wire::string(&mut self.buf, v.as_bytes());
        }
        self.buf.extend_from_slice(b")\r\n");
        ok("ID completed")
    }
}
