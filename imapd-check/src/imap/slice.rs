//! A scheduling hint for connection threads: short CPU slices while a
//! session answers cheap commands; the kernel's default slice and a lower
//! priority for heavy ones.
//!
//! On a busy server every command waits for a CPU, and a LIST or STATUS
//! that needs 50 µs of it may wait a millisecond behind threads parsing
//! messages or scanning bodies. Two hints shorten that wait:
//!
//! - **Short slices.** Linux's EEVDF scheduler (6.12 and later) lets a
//!   thread ask for a shorter time slice (`sched_setattr` with
//!   `sched_runtime`, 0.1 ms to 100 ms, no privilege needed): it then gets
//!   an earlier deadline, so it runs sooner when it wakes, and is preempted
//!   sooner, while its share of the CPU stays the same (the scheduler keeps
//!   the lag fair). So a connection thread asks for [`SHORT`] while it
//!   waits for its client (the next command is most likely a cheap one)
//!   and goes back to the default slice before a command that works for
//!   long (see `conn.rs`). Older kernels ignore the field for normal
//!   threads. `imapd.short_slices = off` turns it off.
//! - **A lower priority for heavy commands.** For the length of a command
//!   that works for long, the thread's nice value is raised by
//!   `imapd.heavy_nice` (default [`HEAVY_NICE`]): its weight drops, so a
//!   thread that wakes with a cheap command takes the CPU from it at once,
//!   and the heavy command takes the rest. While it holds an index lock
//!   (the store's lock hooks), the thread is back at its own priority:
//!   writers and deliveries of other processes wait for that lock.
//!   Fairness between heavy commands is unchanged (they all run at the
//!   same nice value), and none starves: cheap commands hold the CPU
//!   only for microseconds each. Going back to
//!   the normal priority afterwards needs CAP_SYS_NICE or an
//!   `RLIMIT_NICE` that allows it (systemd: `LimitNICE=+0`); the server
//!   raises its soft limit to what it needs at start and checks, in a
//!   throw-away thread, that a thread can go down and back up. If it
//!   cannot, the hint is off and a warning says why (a thread stuck at the
//!   lower priority would make every later command of its client wait).
//!
//! Both are asked for again before a heavy command's reply is written, not
//! after: a thread that just worked for long has used more than its share,
//! and the scheduler makes it wait that off at the next point it can;
//! before the reply, that wait is the heavy command's, while after it, the
//! client's next command would sit unread in the socket through it
//! (measured in docs/BENCHMARKS.md, session 11: STATUS after SEARCH). If a
//! call fails, the thread stops asking and keeps what it has.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use storage::internals::lock;

/// `imapd.short_slices`: whether connection threads ask for short slices.
pub static ENABLED: AtomicBool = AtomicBool::new(true);

/// The default of `imapd.heavy_nice`. Measured in docs/BENCHMARKS.md
/// (session 12): 5, 12 and 19 all cut the mean of STATUS and LIST in the
/// closed-loop mix; 10 leaves a heavy command a tenth of a busy CPU.
pub const HEAVY_NICE: i32 = 10;

/// How much heavy commands raise their thread's nice value (0: not at
/// all); set by [`configure`].
static HEAVY: AtomicI32 = AtomicI32::new(0);

/// The slice asked for between commands and during cheap ones.
pub const SHORT: std::time::Duration = std::time::Duration::from_micros(100);

/// `struct sched_attr` (include/uapi/linux/sched/types.h), first version
/// (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_OTHER: u32 = 0;

thread_local! {
    /// This thread's own nice value and whether it is now in a heavy
    /// command, or `None` before the first call.
    static STATE: Cell<Option<(i32, bool)>> = const { Cell::new(None) };
    static BROKEN: Cell<bool> = const { Cell::new(false) };
}

fn get_attr() -> Option<SchedAttr> {
    let mut a = SchedAttr::default();
    // SAFETY: a is a valid, writable sched_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut a as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    (r == 0).then_some(a)
}

fn set_attr(nice: i32, runtime_ns: u64) -> bool {
    let a = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: SCHED_OTHER,
        nice,
        runtime: runtime_ns,
        ..Default::default()
    };
    // SAFETY: a is a valid sched_attr of the size it states.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0) };
    r == 0
}

/// The slice (ns, 0: the kernel's default) and nice value a thread whose
/// own nice value is `base` asks for in a heavy or a cheap command.
fn wanted(base: i32, heavy: bool) -> (i32, u64) {
    let slice = if !heavy && ENABLED.load(Ordering::Relaxed) {
        SHORT.as_nanos() as u64
    } else {
        0
    };
    let nice = if heavy {
        (base + HEAVY.load(Ordering::Relaxed)).min(19)
    } else {
        base
    };
    (nice, slice)
}

/// Puts the calling thread, if it is a normal (SCHED_OTHER) thread, in
/// the heavy or the cheap state; a no-op when it is in it already.
fn set(heavy: bool) {
    if BROKEN.with(Cell::get)
        || (!ENABLED.load(Ordering::Relaxed) && HEAVY.load(Ordering::Relaxed) == 0)
    {
        return;
    }
    let base = match STATE.with(Cell::get) {
        Some((_, cur)) if cur == heavy => return,
        Some((base, _)) => base,
        None => match get_attr() {
            Some(a) if a.policy == SCHED_OTHER => a.nice,
            _ => {
                BROKEN.with(|b| b.set(true));
                return;
            }
        },
    };
    let (mut nice, slice) = wanted(base, heavy);
    if heavy && lock::held_by_this_thread() {
        // Lowered when the last lock goes (lock_released).
        nice = base;
    }
    if set_attr(nice, slice) {
        STATE.with(|s| s.set(Some((base, heavy))));
    } else {
        BROKEN.with(|b| b.set(true));
    }
}

/// Short slices and the thread's own priority (between commands, cheap
/// commands).
pub fn short() {
    set(false);
}

/// The kernel's default slice and the lower priority (a heavy command).
pub fn heavy() {
    set(true);
}

/// A lock hook: the thread took its first index lock. A heavy command
/// holds none at its lower priority (writers and deliveries wait for the
/// lock; the scheduler must not keep its holder waiting).
fn lock_taken() {
    if let Some((base, true)) = STATE.with(Cell::get)
        && !BROKEN.with(Cell::get)
        && !set_attr(base, 0)
    {
        BROKEN.with(|b| b.set(true));
    }
}

/// A lock hook: the thread released its last index lock.
fn lock_released() {
    if let Some((base, true)) = STATE.with(Cell::get)
        && !BROKEN.with(Cell::get)
    {
        let (nice, slice) = wanted(base, true);
        if !set_attr(nice, slice) {
            BROKEN.with(|b| b.set(true));
        }
    }
}

/// Turns on the lower priority of heavy commands (`imapd.heavy_nice`) if
/// threads can come back from it; returns why not otherwise. Raises the
/// soft `RLIMIT_NICE` to what coming back needs when the hard one allows.
pub fn configure(heavy_nice: i32) -> Result<(), String> {
    HEAVY.store(0, Ordering::Relaxed);
    if heavy_nice <= 0 {
        return Ok(());
    }
    let check = std::thread::Builder::new().name("nice-check".into());
    let check = check.spawn(move || {
        let a = get_attr().ok_or("sched_getattr failed")?;
        if a.policy != SCHED_OTHER {
            return Err("the server does not run under the normal scheduler".to_string());
        }
        // A nice value n may be set back only if RLIMIT_NICE >= 20 - n
        // (or with CAP_SYS_NICE).
        let need = (20 - a.nice) as u64;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: lim is a valid, writable rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } == 0 && lim.rlim_cur < need {
            let raised = libc::rlimit {
                rlim_cur: need.min(lim.rlim_max).max(lim.rlim_cur),
                rlim_max: lim.rlim_max,
            };
            // SAFETY: raised is a valid rlimit; failure leaves the limit.
            unsafe { libc::setrlimit(libc::RLIMIT_NICE, &raised) };
        }
        let low = (a.nice + heavy_nice).min(19);
        if !set_attr(low, 0) {
            return Err(format!("cannot set nice {low}"));
        }
        if !set_attr(a.nice, 0) {
            return Err(format!(
                "a thread cannot go back from nice {low} to {} (needs CAP_SYS_NICE or \
                 RLIMIT_NICE >= {need}; systemd: LimitNICE=+{})",
                a.nice, a.nice
            ));
        }
        Ok(())
    });
    check
        .map_err(|e| format!("no thread to check with: {e}"))?
        .join()
        .map_err(|_| "the check thread panicked".to_string())??;
    HEAVY.store(heavy_nice.min(39), Ordering::Relaxed);
    lock::set_hold_hooks(lock::HoldHooks {
        first_taken: lock_taken,
        last_released: lock_released,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_and_the_priority_are_asked_for_and_the_nice_value_restored() {
        // Root (CI) may always come back; elsewhere configure says why not.
        let heavy_ok = configure(HEAVY_NICE).is_ok();
        std::thread::spawn(move || {
            let before = get_attr().expect("sched_getattr");
            short();
            let a = get_attr().unwrap();
            assert_eq!(a.nice, before.nice, "nice kept");
            assert_eq!(a.policy, SCHED_OTHER);
            if !BROKEN.with(Cell::get) {
                // Kernels with custom slices report the one asked for.
                assert!(a.runtime == SHORT.as_nanos() as u64 || a.runtime == before.runtime);
            }
            heavy();
            let low = if heavy_ok {
                (before.nice + HEAVY_NICE).min(19)
            } else {
                before.nice
            };
            assert_eq!(get_attr().unwrap().nice, low);
            // No index lock is held at the lower priority.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index");
            std::fs::write(&path, b"x").unwrap();
            let t = std::time::Duration::from_secs(5);
            let g = lock::hold(&path, lock::LockKind::Shared, t).unwrap();
            assert_eq!(
                get_attr().unwrap().nice,
                before.nice,
                "own priority while locked"
            );
            let g2 = lock::hold(&path, lock::LockKind::Shared, t).unwrap();
            drop(g);
            assert_eq!(
                get_attr().unwrap().nice,
                before.nice,
                "a lock is still held"
            );
            drop(g2);
            assert_eq!(get_attr().unwrap().nice, low, "lower again after the last");
            short();
            assert_eq!(get_attr().unwrap().nice, before.nice, "nice restored");
            heavy();
            short();
            assert_eq!(get_attr().unwrap().nice, before.nice, "nice restored again");
        })
        .join()
        .unwrap();
        configure(0).unwrap();
    }

    #[test]
    fn heavy_nice_is_refused_where_a_thread_could_not_come_back() {
        // In a child process without CAP_SYS_NICE and with RLIMIT_NICE 0
        // (hard), configure must refuse, and a thread there keeps its own
        // priority whatever it does.
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls in the child; _exit never returns.
            unsafe {
                libc::setrlimit(libc::RLIMIT_NICE, &zero);
                if libc::getuid() == 0 {
                    // Drop root's capabilities (CAP_SYS_NICE among them).
                    libc::setgid(65534);
                    libc::setuid(65534);
                }
                let code = match configure(HEAVY_NICE) {
                    Err(e) if e.contains("LimitNICE") => {
                        let before = get_attr().map(|a| a.nice);
                        heavy();
                        short();
                        if get_attr().map(|a| a.nice) == before {
                            0
                        } else {
                            2
                        }
                    }
                    _ => 1,
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: pid is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: not refused, 2: nice changed"
        );
    }
}
