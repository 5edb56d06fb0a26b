//! `deliver-load`: the timed part of bench/deliver_bench.py.
//!
//! The Python driver generates the messages and prints the tables; this
//! program only sends them, in K concurrent loops, and prints the rate.
//! It exists because a Python client costs more CPU per message than our
//! LMTP server does: on a 2-CPU machine the load generator then competes
//! with the server it measures and caps the faster system first.
//!
//! Input: a file of messages, each as `<byte length>\n<bytes>`.
//! Output: one line of JSON, `{"messages":N,"seconds":S,"rate":R}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Concurrent loops (processes) or sessions.
    #[arg(short = 'k', long, default_value_t = 1)]
    concurrency: usize,
    /// Messages, each as `<byte length>\n<bytes>`.
    #[arg(long)]
    messages: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// One process per message: runs ARGV with the message on stdin and
    /// fails on any non-zero exit.
    Process {
        #[arg(required = true, trailing_var_arg = true)]
        argv: Vec<String>,
    },
    /// LMTP sessions on a unix socket, one recipient per transaction;
    /// MAIL, RCPT and DATA are pipelined (RFC 2033 requires PIPELINING).
    Lmtp {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        rcpt: String,
        #[arg(long, default_value = "bench-sender@example.org")]
        sender: String,
    },
    /// LMTP to several recipients interleaved: the messages are sent in
    /// batches, each batch to every recipient in turn (the order rotated
    /// every batch: AB, BA, AB, ... for two), K sessions per recipient;
    /// every recipient gets every message once. Prints each recipient's
    /// rate over its own batches' time, so that cells compared see the
    /// same moments of a busy machine.
    LmtpPaired {
        #[arg(long)]
        socket: PathBuf,
        /// A recipient (at least two).
        #[arg(long = "rcpt", required = true, num_args = 1)]
        rcpts: Vec<String>,
        /// Messages per batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value = "bench-sender@example.org")]
        sender: String,
    },
}

/// Sends `payloads` (one transaction each) on an open session.
fn send_all(s: &mut Session, envelope: &str, payloads: &[&Vec<u8>]) -> Result<(), String> {
    for p in payloads {
        s.send(envelope.as_bytes())?;
        s.expect(250, "MAIL")?;
        s.expect(250, "RCPT")?;
        s.expect(354, "DATA")?;
        s.send(p)?;
        s.expect(250, "after DATA")?;
    }
    Ok(())
}

/// The `lmtp-paired` mode (see [`Mode::LmtpPaired`]).
fn run_paired(
    msgs: &[Vec<u8>],
    k: usize,
    socket: &PathBuf,
    rcpts: &[String],
    batch: usize,
    sender: &str,
) -> Result<String, String> {
    let payloads: Vec<Vec<u8>> = msgs.iter().map(|m| lmtp_payload(m)).collect();
    // Connecting and LHLO are not timed.
    let mut sessions: Vec<Vec<Session>> = rcpts
        .iter()
        .map(|_| (0..k).map(|_| Session::connect(socket)).collect())
        .collect::<Result<_, _>>()?;
    let envelopes: Vec<String> = rcpts
        .iter()
        .map(|r| format!("MAIL FROM:<{sender}>\r\nRCPT TO:<{r}>\r\nDATA\r\n"))
        .collect();
    let mut secs = vec![0f64; rcpts.len()];
    for (j, chunk) in payloads.chunks(batch.max(1)).enumerate() {
        for step in 0..rcpts.len() {
            let c = (j + step) % rcpts.len();
            let env = &envelopes[c];
            let t0 = Instant::now();
            std::thread::scope(|scope| -> Result<(), String> {
                let handles: Vec<_> = sessions[c]
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| {
                        let mine: Vec<&Vec<u8>> = chunk.iter().skip(i).step_by(k).collect();
                        scope.spawn(move || send_all(s, env, &mine))
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap_or_else(|_| Err("worker panicked".into()))?;
                }
                Ok(())
            })?;
            secs[c] += t0.elapsed().as_secs_f64();
        }
    }
    for list in &mut sessions {
        for s in list {
            s.send(b"QUIT\r\n")?;
            s.expect(221, "QUIT")?;
        }
    }
    let cells: Vec<String> = rcpts
        .iter()
        .zip(&secs)
        .map(|(r, t)| {
            format!(
                "{{\"rcpt\":\"{r}\",\"seconds\":{t:.6},\"rate\":{:.1}}}",
                msgs.len() as f64 / t
            )
        })
        .collect();
    Ok(format!(
        "{{\"messages\":{},\"cells\":[{}]}}",
        msgs.len(),
        cells.join(",")
    ))
}

fn read_messages(path: &PathBuf) -> Result<Vec<Vec<u8>>, String> {
    let mut r =
        BufReader::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(out);
        }
        let len: usize = line
            .trim()
            .parse()
            .map_err(|_| format!("bad length line {line:?}"))?;
        let mut m = vec![0; len];
        r.read_exact(&mut m).map_err(|e| e.to_string())?;
        out.push(m);
    }
}

/// CRLF line ends, dot-stuffed, terminated by `.` on a line of its own.
fn lmtp_payload(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 32 + 8);
    let body = msg.strip_suffix(b"\n").unwrap_or(msg);
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

struct Session {
    w: UnixStream,
    r: BufReader<UnixStream>,
    line: String,
}

impl Session {
    fn connect(path: &PathBuf) -> Result<Self, String> {
        let w =
            UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
        let r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
        let mut s = Session {
            w,
            r,
            line: String::new(),
        };
        s.expect(220, "greeting")?;
        s.send(b"LHLO bench.example.org\r\n")?;
        s.expect(250, "LHLO")?;
        Ok(s)
    }

    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.w.write_all(b).map_err(|e| format!("send: {e}"))
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, code: u16, what: &str) -> Result<(), String> {
        loop {
            self.line.clear();
            if self
                .r
                .read_line(&mut self.line)
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err(format!("{what}: server closed the connection"));
            }
            let got: u16 = self.line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if got != code {
                return Err(format!("{what}: {}", self.line.trim_end()));
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
}

fn run_process(argv: &[String], msg: &[u8]) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A failing child may exit before reading everything; its exit code
    // is the error worth reporting, not EPIPE.
    let _ = stdin.write_all(msg);
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}: {}",
            argv[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let msgs = match read_messages(&cli.messages) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => return fail("no messages"),
        Err(e) => return fail(&e),
    };
    let k = cli.concurrency.max(1);
    if let Mode::LmtpPaired {
        socket,
        rcpts,
        batch,
        sender,
    } = &cli.mode
    {
        return match run_paired(&msgs, k, socket, rcpts, *batch, sender) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let parts: Vec<Vec<Vec<u8>>> = (0..k)
        .map(|i| msgs.iter().skip(i).step_by(k).cloned().collect())
        .collect();
    let barrier = Arc::new(Barrier::new(k + 1));
    let mode = Arc::new(cli.mode);
    let workers: Vec<_> = parts
        .into_iter()
        .map(|part| {
            let barrier = Arc::clone(&barrier);
            let mode = Arc::clone(&mode);
            std::thread::spawn(move || -> Result<(), String> {
                match &*mode {
                    Mode::Process { argv } => {
                        barrier.wait();
                        part.iter().try_for_each(|m| run_process(argv, m))
                    }
                    Mode::Lmtp {
                        socket,
                        rcpt,
                        sender,
                    } => {
                        let payloads: Vec<_> = part.iter().map(|m| lmtp_payload(m)).collect();
                        let payloads: Vec<_> = payloads.iter().collect();
                        let envelope =
                            format!("MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
                        // Connecting and LHLO are not timed.
                        let session = Session::connect(socket);
                        barrier.wait();
                        let mut s = session?;
                        send_all(&mut s, &envelope, &payloads)?;
                        s.send(b"QUIT\r\n")?;
                        s.expect(221, "QUIT")
                    }
                    Mode::LmtpPaired { .. } => unreachable!("handled before the workers"),
                }
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let results: Vec<_> = workers
        .into_iter()
        .map(|w| w.join().unwrap_or_else(|_| Err("worker panicked".into())))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return fail(&e);
    }
    println!(
        "{{\"messages\":{},\"seconds\":{secs:.6},\"rate\":{:.1}}}",
        msgs.len(),
        msgs.len() as f64 / secs
    );
    ExitCode::SUCCESS
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("deliver-load: {msg}");
    ExitCode::FAILURE
}
