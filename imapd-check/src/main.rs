//! imapd-check: the reader side. Subcommands dispatch to their modules;
//! this file only parses arguments and maps errors to an exit code.

mod imap;
mod legacy;
mod managesieve;
mod race;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "imapd-check", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Race W delivering writers against R polling readers (seed 002).
    Race(race::RaceArgs),
    /// Internal: one writer process of `race`.
    #[command(hide = true)]
    RaceWriter(race::WriterArgs),
    /// Internal: one reader process of `race`.
    #[command(hide = true)]
    RaceReader(race::ReaderArgs),
    /// IMAP server over the store (stdio preauth, or TCP with STARTTLS and TLS).
    Serve(imap::ServeArgs),
    /// Print a `USER:HASH` password-file line for the password on stdin.
    Passwd(imap::PasswdArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Race(a) => race::run(a),
        Cmd::RaceWriter(a) => race::writer(a),
        Cmd::RaceReader(a) => race::reader(a),
        Cmd::Serve(a) => imap::serve(a),
        Cmd::Passwd(a) => imap::passwd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imapd-check: {e}");
            // EX_SOFTWARE: the harness itself failed (not a race result).
            ExitCode::from(70)
        }
    }
}
