//! A scheduling hint for connection threads: short CPU slices while a
//! session answers cheap commands, the kernel's default for heavy ones.
//!
//! On a busy server every command waits for a CPU, and a LIST or STATUS
//! that needs 50 µs of it may wait a millisecond behind threads parsing
//! messages or scanning bodies. Linux's EEVDF scheduler (6.12 and later)
//! lets a thread ask for a shorter time slice (`sched_setattr` with
//! `sched_runtime`, 0.1 ms to 100 ms, no privilege needed): it then gets an
//! earlier deadline, so it runs sooner when it wakes, and is preempted
//! sooner, while its share of the CPU stays the same (the scheduler keeps
//! the lag fair). So a connection thread asks for [`SHORT`] while it waits
//! for its client (the next command is most likely a cheap one) and goes
//! back to the default slice before a command that works for long (see
//! `conn.rs`). It asks for the short slice again before that command's
//! reply is written, not after: a thread that just worked for long has
//! used more than its share, and the scheduler makes it wait that off at
//! the next point it can; before the reply, that wait is the heavy
//! command's, while after it, the client's next command would sit unread
//! in the socket through it (measured in docs/BENCHMARKS.md, session 11:
//! STATUS after SEARCH). Older kernels ignore the field for normal
//! threads; if the call fails, nothing changes. `imapd.short_slices =
//! off` turns it off.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// `imapd.short_slices`: whether connection threads ask for short slices.
pub static ENABLED: AtomicBool = AtomicBool::new(true);

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
    /// This thread's nice value and the slice last asked for (0: default),
    /// or `None` before the first call or after a refusal.
    static STATE: Cell<Option<(i32, u64)>> = const { Cell::new(None) };
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

/// Asks for a slice of `runtime_ns` nanoseconds (0: the kernel's default)
/// for the calling thread, if it is a normal (SCHED_OTHER) thread; a no-op
/// when the slice is already that.
fn set(runtime_ns: u64) {
    if BROKEN.with(Cell::get) || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let nice = match STATE.with(Cell::get) {
        Some((_, cur)) if cur == runtime_ns => return,
        Some((nice, _)) => nice,
        None => match get_attr() {
            Some(a) if a.policy == SCHED_OTHER => a.nice,
            _ => {
                BROKEN.with(|b| b.set(true));
                return;
            }
        },
    };
    let a = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: SCHED_OTHER,
        nice,
        runtime: runtime_ns,
        ..Default::default()
    };
    // SAFETY: a is a valid sched_attr of the size it states.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0) };
    if r == 0 {
        STATE.with(|s| s.set(Some((nice, runtime_ns))));
    } else {
        BROKEN.with(|b| b.set(true));
    }
}

/// Short slices for the calling thread (between commands, cheap commands).
pub fn short() {
    set(SHORT.as_nanos() as u64);
}

/// The kernel's default slice for the calling thread (a heavy command).
pub fn default() {
    set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_is_asked_for_and_the_nice_value_kept() {
        std::thread::spawn(|| {
            let before = get_attr().expect("sched_getattr");
            short();
            let a = get_attr().unwrap();
            assert_eq!(a.nice, before.nice, "nice kept");
            assert_eq!(a.policy, SCHED_OTHER);
            if !BROKEN.with(Cell::get) {
                // Kernels with custom slices report the one asked for.
                assert!(a.runtime == SHORT.as_nanos() as u64 || a.runtime == before.runtime);
            }
            default();
            assert_eq!(get_attr().unwrap().nice, before.nice);
        })
        .join()
        .unwrap();
    }
}
