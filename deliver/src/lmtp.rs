//! LMTP server mode (RFC 2033).

use crate::delivery::Settings;
use crate::status::Failure;

pub struct LmtpOptions {
    pub full_address: bool,
    pub max_connections: usize,
    pub socket_mode: u32,
}

pub fn serve_stdio(_s: Settings, _o: LmtpOptions) -> Result<(), Failure> {
    Err(Failure::usage("LMTP not implemented yet"))
}

pub fn serve_listen(_s: Settings, _o: LmtpOptions, _addr: &str) -> Result<(), Failure> {
    Err(Failure::usage("LMTP not implemented yet"))
}
