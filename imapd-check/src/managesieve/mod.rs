//! ManageSieve (RFC 5804): users upload, list, activate and delete their
//! Sieve scripts (docs/FORMAT.md §9) over the network, the way Roundcube,
//! Thunderbird's sieve add-on and `sieve-connect` expect (port 4190).
//!
//! Served by the same `imapd-check serve` process as IMAP, on its own
//! listener (`imapd.managesieve_listen`, or `--managesieve-listen`):
//! Dovecot runs managesieve as a separate process but from the same
//! configuration, and one process here means one password file (reloaded
//! alike), one TLS certificate, one table of login failures (a lock-out
//! earned on one protocol holds on the other) and one count of
//! connections, all of `crate::imap`. Scripts are validated with the
//! `sieve` crate on upload, and written through `storage::scriptdir`,
//! the code `sieve-check` uses.

pub mod config;
pub mod scripts;
pub mod session;
pub mod wire;

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::imap::limits::Over;
use crate::imap::server::Server;
use crate::imap::stream::Shared;

/// Accepts ManageSieve connections on `listener` until it fails, one
/// thread per connection, within the server's connection limits.
pub fn accept_loop(server: Arc<Server>, listener: TcpListener) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("managesieve accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr().map(|a| a.ip()) else {
            continue;
        };
        let cfg = &server.cfg;
        let max_ip = if cfg.is_exempt(peer) {
            usize::MAX
        } else {
            cfg.max_connections_per_ip
        };
        let slot = match server.slots.admit(peer, cfg.max_connections, max_ip) {
            Ok(s) => s,
            Err(over) => {
                tracing::warn!(%peer, ?over, "managesieve connection refused: over the limit");
                // RFC 5804 1.3: a BYE greeting; never wait to send it.
                if stream.set_nonblocking(true).is_ok() {
                    let text = match over {
                        Over::Ip => "Too many connections from your address",
                        _ => "Server busy, try again later",
                    };
                    let _ = (&stream).write_all(&wire::response("BYE", Some("TRYLATER"), text));
                }
                continue;
            }
        };
        let server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("managesieve-conn".into())
            .spawn(move || {
                let run = || -> std::io::Result<()> {
                    stream.set_nodelay(true)?;
                    stream.set_write_timeout(Some(server.cfg.send_timeout))?;
                    let rd: OwnedFd = stream.as_fd().try_clone_to_owned()?;
                    let shared = Shared::new(rd, OwnedFd::from(stream));
                    let result =
                        session::Session::new(server.clone(), shared.clone(), peer, slot).run();
                    shared.lock().close();
                    result
                };
                if let Err(e) = run() {
                    tracing::info!(%peer, "managesieve connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a managesieve connection thread: {e}");
        }
    }
}
