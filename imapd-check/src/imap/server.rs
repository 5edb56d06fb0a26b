//! The TCP side: listeners (plain with STARTTLS, and implicit TLS), one
//! thread per connection, the limits checked at accept, and what each
//! connection knows about where it comes from.

use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use storage::{Options, Store};

use super::auth::PasswdFile;
use super::config::ServerConfig;
use super::conn::Session;
use super::limits::{ConnSlots, Failures, IpSlot, Over, UserSlot};
use super::stream::Shared;
use super::tls::TlsSource;

/// What every connection of one server shares.
pub struct Server {
    pub cfg: Arc<ServerConfig>,
    pub root: PathBuf,
    pub passwd: PasswdFile,
    pub tls: Option<TlsSource>,
    pub slots: Arc<ConnSlots>,
    pub failures: Failures,
}

/// A network connection's context (absent on stdio).
pub struct Net {
    pub server: Arc<Server>,
    pub peer: IpAddr,
    /// From `imapd.trusted_networks`: may log in without TLS.
    pub trusted: bool,
    /// From `imapd.exempt_networks`: no failure lock-out, no growing delay.
    pub exempt: bool,
    /// Failed logins on this connection.
    pub failures: u32,
    pub user_slot: Option<UserSlot>,
    _ip_slot: IpSlot,
}

impl Server {
    /// Accepts on `listener` until it fails; `implicit_tls` for the
    /// port-993-style listener.
    pub fn accept_loop(self: Arc<Self>, listener: TcpListener, implicit_tls: bool) {
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    // EMFILE and the like: do not spin.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            // Counted before a thread is started for it: a connection over
            // a limit costs no thread.
            let Some((peer, slot)) = self.admit(&stream, implicit_tls) else {
                continue;
            };
            let server = self.clone();
            let spawned = std::thread::Builder::new()
                .name("imap-conn".into())
                .stack_size(super::CONN_STACK)
                .spawn(move || {
                    server.connection(stream, peer, slot, implicit_tls);
                    super::trim_heap();
                });
            if let Err(e) = spawned {
                // Out of threads or memory: this connection is dropped, the
                // server goes on.
                tracing::error!("cannot start a connection thread: {e}");
            }
        }
    }

    /// Takes a connection slot for a new client, or turns it away.
    fn admit(&self, stream: &TcpStream, implicit_tls: bool) -> Option<(IpAddr, IpSlot)> {
        let peer = stream.peer_addr().ok()?.ip();
        let cfg = &self.cfg;
        let max_ip = if cfg.is_exempt(peer) {
            usize::MAX
        } else {
            cfg.max_connections_per_ip
        };
        match self.slots.admit(peer, cfg.max_connections, max_ip) {
            Ok(slot) => Some((peer, slot)),
            Err(over) => {
                tracing::warn!(%peer, ?over, "connection refused: over the limit");
                // On the TLS port a plaintext line would only confuse. The
                // line fits an empty socket buffer; never wait for it.
                if !implicit_tls && stream.set_nonblocking(true).is_ok() {
                    let text = match over {
                        Over::Ip => "* BYE Too many connections from your address\r\n",
                        _ => "* BYE Server busy, try again later\r\n",
                    };
                    let _ = (&*stream).write_all(text.as_bytes());
                }
                None
            }
        }
    }

    fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: IpAddr,
        slot: IpSlot,
        implicit_tls: bool,
    ) {
        let cfg = self.cfg.clone();
        let run = || -> std::io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(cfg.send_timeout))?;
            let rd: OwnedFd = stream.as_fd().try_clone_to_owned()?;
            let shared = Shared::new(rd, OwnedFd::from(stream));
            let login_deadline = Instant::now() + cfg.login_timeout;
            if implicit_tls {
                let tls = self
                    .tls
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("no TLS"))?;
                let mut s = shared.lock();
                s.set_deadline(Some(login_deadline));
                s.start_tls(tls.session()?)?;
            }
            let store =
                Store::open(&self.root, Options::default()).map_err(std::io::Error::other)?;
            let net = Net {
                server: self.clone(),
                peer,
                trusted: cfg.is_trusted(peer),
                exempt: cfg.is_exempt(peer),
                failures: 0,
                user_slot: None,
                _ip_slot: slot,
            };
            let result = Session::new(store, None, Some(net), cfg.clone(), shared.clone())
                .with_login_deadline(login_deadline)
                .run();
            shared.lock().close();
            result
        };
        if let Err(e) = run() {
            tracing::info!(%peer, "connection ended: {e}");
        }
    }
}
