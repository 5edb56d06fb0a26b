//! Getting in: the capabilities a client is shown before and after,
//! STARTTLS (RFC 3501 6.2.1, RFC 8314), LOGIN and AUTHENTICATE PLAIN
//! (RFC 3501 6.2.2-6.2.3, RFC 4616) with LOGINDISABLED and
//! `[PRIVACYREQUIRED]` (RFC 5530) outside TLS and trusted networks,
//! login failure delays and lock-outs, the per-user session limit, and
//! COMPRESS=DEFLATE (RFC 4978).

use std::net::IpAddr;

use imap_codec::AuthenticateDataCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::extensions::compress::CompressionAlgorithm;
use storage::UserName;

use super::auth::parse_plain;
use super::conn::{CAPS, Done, Fail, Session, Stop, bad, no, ok, ok_code};
use super::server::Server;

/// What a password check decided.
pub(crate) enum Check {
    /// The address is locked out: no check was made.
    LockedOut,
    Passed,
    /// Wrong user or password: answer after this delay.
    Failed(std::time::Duration),
}

/// A layer to switch on once the tagged OK has been sent.
pub(super) enum Switch {
    StartTls,
    Deflate,
}

impl Server {
    /// The password check every protocol of this server makes (IMAP and
    /// ManageSieve): lock-out, check and failure count in one turn of the
    /// hash gate, so parallel guesses from one address stop at the limit
    /// too. A pass clears the address's failures.
    pub(crate) fn check_password(
        &self,
        peer: IpAddr,
        exempt: bool,
        user: &str,
        pass: &[u8],
    ) -> Check {
        let outcome = self.passwd.gated(|db| {
            if !exempt && self.failures.locked_out(peer) {
                Check::LockedOut
            } else if db.verify(user, pass) {
                Check::Passed
            } else if exempt {
                // One address for many users (a webmail): the base delay,
                // never a growing one or a lock-out for all of them.
                Check::Failed(self.cfg.fail.delay)
            } else {
                Check::Failed(self.failures.failed(peer))
            }
        });
        if let Check::Passed = outcome {
            self.failures.succeeded(peer);
        }
        outcome
    }
}

impl Session {
    fn tls_active(&self) -> bool {
        self.stream.lock().is_tls()
    }

    /// May this connection log in now (TLS, a trusted network, or stdio)?
    fn login_allowed(&self) -> bool {
        match &self.net {
            None => true,
            Some(n) => n.trusted || self.tls_active(),
        }
    }

    /// The capability list for the connection's current state.
    pub(super) fn capabilities(&self) -> String {
        let mut c = CAPS.to_string();
        if self.user.is_none() {
            if let Some(n) = &self.net
                && n.server.tls.is_some()
                && !self.tls_active()
            {
                c.push_str(" STARTTLS");
            }
            if self.login_allowed() {
                c.push_str(" AUTH=PLAIN");
            } else {
                c.push_str(" LOGINDISABLED");
            }
        } else if self.cfg.compress && !self.stream.lock().is_compressed() {
            c.push_str(" COMPRESS=DEFLATE");
        }
        c
    }

    /// The size limits for reading the next command. Before login no
    /// command may carry more than a small literal (APPEND needs a login,
    /// but its literal is read before the command is parsed), so an
    /// unauthenticated client cannot make the server buffer megabytes.
    pub(super) fn read_limits(&self) -> super::io::Limits {
        let mut l = self.limits;
        if self.user.is_none() {
            l.append = l.other_literal;
            l.swallow = l.other_literal;
        }
        l
    }

    pub(super) fn starttls(&mut self) -> Result<Done, Fail> {
        let Some(net) = &self.net else {
            return bad("STARTTLS is for network connections");
        };
        if net.server.tls.is_none() {
            return bad("TLS is not configured");
        }
        if self.tls_active() {
            return bad("TLS is already active");
        }
        if self.user.is_some() {
            return bad("Already authenticated");
        }
        self.switch = Some(Switch::StartTls);
        ok("Begin TLS negotiation now")
    }

    pub(super) fn compress(&mut self, alg: &CompressionAlgorithm) -> Result<Done, Fail> {
        if !self.cfg.compress {
            return bad("COMPRESS is disabled");
        }
        self.user()?;
        if self.stream.lock().is_compressed() {
            return no(Some("COMPRESSIONACTIVE"), "DEFLATE is already active");
        }
        if !matches!(alg, CompressionAlgorithm::Deflate) {
            return bad("Only DEFLATE is supported");
        }
        self.switch = Some(Switch::Deflate);
        ok("DEFLATE active")
    }

    /// Switches on the layer a STARTTLS or COMPRESS asked for, after its
    /// OK went out. Pipelined plaintext after STARTTLS is dropped (an
    /// attacker's injected commands, CVE-2011-0411); bytes after COMPRESS
    /// are the first compressed ones and are kept.
    pub(super) fn apply_switch(&mut self, sw: Switch) -> std::io::Result<()> {
        self.out.flush()?;
        let rest = self.input.take_buffered();
        match sw {
            Switch::StartTls => {
                if !rest.is_empty() {
                    tracing::warn!(
                        bytes = rest.len(),
                        "dropped plaintext pipelined after STARTTLS"
                    );
                }
                let tls = self
                    .net
                    .as_ref()
                    .and_then(|n| n.server.tls.as_ref())
                    .ok_or_else(|| std::io::Error::other("no TLS"))?;
                let session = tls.session()?;
                self.stream.lock().start_tls(session)
            }
            Switch::Deflate => {
                self.stream.lock().start_deflate(rest);
                Ok(())
            }
        }
    }

    pub(super) fn login(&mut self, user: &str, pass: &[u8]) -> Result<Done, Fail> {
        if self.user.is_some() {
            return bad("Already authenticated");
        }
        if !self.login_allowed() {
            return no(
                Some("PRIVACYREQUIRED"),
                "Log in over TLS: use STARTTLS or the TLS port",
            );
        }
        let Some(net) = self.net.as_mut() else {
            return no(None, "No password file configured");
        };
        let server = net.server.clone();
        let peer = net.peer;
        let outcome = server.check_password(peer, net.exempt, user, pass);
        if let Check::LockedOut = outcome {
            tracing::warn!(%peer, "login refused: too many failures from this address");
            return self.refuse_and_close(
                "NO [UNAVAILABLE] Too many failed logins from your address; try again later",
            );
        }
        if let Check::Failed(delay) = outcome {
            tracing::info!(user, %peer, "authentication failed");
            std::thread::sleep(delay);
            net.failures += 1;
            if net.failures >= self.cfg.max_login_failures_per_connection {
                return self.refuse_and_close("NO [AUTHENTICATIONFAILED] Authentication failed");
            }
            return no(Some("AUTHENTICATIONFAILED"), "Authentication failed");
        }
        let name = UserName::new(user)
            .map_err(|e| Fail::No(Some("AUTHENTICATIONFAILED"), e.to_string()))?;
        match server
            .slots
            .login(name.as_str(), self.cfg.max_connections_per_user)
        {
            Ok(slot) => net.user_slot = Some(slot),
            Err(_) => {
                tracing::warn!(user, %peer, "login refused: too many sessions for this user");
                return no(Some("LIMIT"), "Too many sessions for this user");
            }
        }
        tracing::info!(user, %peer, "logged in");
        self.ensure_inbox(&name);
        self.user = Some(name);
        ok_code(format!("CAPABILITY {}", self.capabilities()), "Logged in")
    }

    /// Sends the tagged refusal, then BYE, and ends the connection.
    fn refuse_and_close(&mut self, tagged: &str) -> Result<Done, Fail> {
        let tag = self.tag.clone();
        self.buf
            .extend_from_slice(format!("{tag} {tagged}\r\n").as_bytes());
        self.flush_buf()?;
        Err(Fail::Stop(Stop::Bye("Too many failed logins".into())))
    }

    pub(super) fn authenticate(
        &mut self,
        mech: &AuthMechanism,
        ir: Option<Vec<u8>>,
    ) -> Result<Done, Fail> {
        if self.user.is_some() {
            return bad("Already authenticated");
        }
        if !matches!(mech, AuthMechanism::Plain) {
            return no(Some("CANNOT"), "Only PLAIN is supported");
        }
        if !self.login_allowed() {
            return no(
                Some("PRIVACYREQUIRED"),
                "Authenticate over TLS: use STARTTLS or the TLS port",
            );
        }
        let msg = match ir {
            Some(m) => m,
            None => {
                self.buf.extend_from_slice(b"+ \r\n");
                self.flush_buf()?;
                self.out.flush()?;
                let Some(line) = self.input.read_line(self.limits.line).map_err(Fail::from)? else {
                    return Err(Fail::Stop(Stop::Logout));
                };
                let line = super::io::crlf(line);
                match AuthenticateDataCodec::default().decode(&line) {
                    Ok((_, AuthenticateData::Continue(s))) => s.declassify().to_vec(),
                    Ok((_, AuthenticateData::Cancel)) => return bad("Authentication cancelled"),
                    Err(_) => return bad("Invalid base64"),
                }
            }
        };
        let Some((user, pass)) = parse_plain(&msg) else {
            return no(Some("AUTHENTICATIONFAILED"), "Authentication failed");
        };
        self.login(&user, &pass)
    }
}
