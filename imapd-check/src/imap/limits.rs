//! What one client, address or user may cost the server: connection
//! counts (total, per IP address, per user), login failures per address
//! (a growing delay, then a lock-out for a while), and how many password
//! hashes run at once (Argon2 takes 19 MiB or more each: a login storm
//! waits for a slot instead of taking the memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most `max` hashes at once; the others wait their turn.
pub struct HashGate {
    busy: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl HashGate {
    pub fn new(max: usize) -> HashGate {
        HashGate {
            busy: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut busy = lock(&self.busy);
        while *busy >= self.max {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        drop(busy);
        struct Release<'a>(&'a HashGate);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *lock(&self.0.busy) -= 1;
                self.0.freed.notify_one();
            }
        }
        let _r = Release(self);
        f()
    }
}

/// The address a limit is counted under: IPv4 as is, IPv6 by its /64
/// (one customer's prefix; counting single addresses would let one host
/// take a whole /64's worth of slots).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

/// Live connection counts. Slots are given back when dropped.
#[derive(Default)]
pub struct ConnSlots {
    counts: Mutex<Counts>,
}

/// Which limit refused a connection or login.
#[derive(Debug, PartialEq, Eq)]
pub enum Over {
    Total,
    Ip,
    User,
}

pub struct IpSlot {
    slots: Arc<ConnSlots>,
    ip: IpAddr,
}

pub struct UserSlot {
    slots: Arc<ConnSlots>,
    user: String,
}

impl ConnSlots {
    /// A new connection from `ip`, within `max_total` and `max_ip`.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_ip: usize,
    ) -> Result<IpSlot, Over> {
        let ip = ip_key(ip);
        let mut c = lock(&self.counts);
        if c.total >= max_total {
            return Err(Over::Total);
        }
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= max_ip {
            return Err(Over::Ip);
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(IpSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// A session logging in as `user`, within `max_user` sessions.
    pub fn login(self: &Arc<Self>, user: &str, max_user: usize) -> Result<UserSlot, Over> {
        let mut c = lock(&self.counts);
        let n = c.per_user.get(user).copied().unwrap_or(0);
        if n >= max_user {
            return Err(Over::User);
        }
        c.per_user.insert(user.to_string(), n + 1);
        Ok(UserSlot {
            slots: self.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.slots.counts);
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.slots.counts);
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
    }
}

/// Login failure policy.
#[derive(Clone, Copy, Debug)]
pub struct FailPolicy {
    /// Delay before the reply to the first failure; doubles with each
    /// further failure from the address, up to `max_delay`.
    pub delay: Duration,
    pub max_delay: Duration,
    /// Failures from one address within `window` after which its logins
    /// are refused unchecked until `window` has passed since the last.
    pub limit: u32,
    pub window: Duration,
}

struct Record {
    count: u32,
    last: Instant,
}

/// Recent login failures by address (bounded: entries older than the
/// window are dropped, and the table never holds more than `MAX_TRACKED`).
pub struct Failures {
    policy: FailPolicy,
    by_ip: Mutex<HashMap<IpAddr, Record>>,
}

const MAX_TRACKED: usize = 100_000;

impl Failures {
    pub fn new(policy: FailPolicy) -> Failures {
        Failures {
            policy,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// True when logins from `ip` are refused for now.
    pub fn locked_out(&self, ip: IpAddr) -> bool {
        let m = lock(&self.by_ip);
        m.get(&ip_key(ip))
            .is_some_and(|r| r.count >= self.policy.limit && r.last.elapsed() < self.policy.window)
    }

    /// Counts a failure; returns how long to wait before replying.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut m = lock(&self.by_ip);
        let window = self.policy.window;
        if m.len() >= MAX_TRACKED {
            m.retain(|_, r| r.last.elapsed() < window);
            if m.len() >= MAX_TRACKED {
                // Under a spray from that many addresses, forget the
                // table rather than grow it.
                m.clear();
            }
        }
        let r = m.entry(ip_key(ip)).or_insert(Record {
            count: 0,
            last: Instant::now(),
        });
        if r.last.elapsed() >= window {
            r.count = 0;
        }
        r.count = r.count.saturating_add(1);
        r.last = Instant::now();
        let shift = (r.count - 1).min(20);
        self.policy
            .delay
            .saturating_mul(1 << shift)
            .min(self.policy.max_delay)
    }

    /// A successful login clears the address's record.
    pub fn succeeded(&self, ip: IpAddr) {
        lock(&self.by_ip).remove(&ip_key(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_given_back() {
        let s = Arc::new(ConnSlots::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = s.admit(ip, 10, 2).unwrap();
        let _b = s.admit(ip, 10, 2).unwrap();
        assert_eq!(s.admit(ip, 10, 2).err(), Some(Over::Ip));
        drop(a);
        let _c = s.admit(ip, 10, 2).unwrap();
        // Two addresses of one /64 count as one.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let _d = s.admit(v6a, 10, 1).unwrap();
        assert_eq!(s.admit(v6b, 10, 1).err(), Some(Over::Ip));
        let u = s.login("alice", 1).unwrap();
        assert_eq!(s.login("alice", 1).err(), Some(Over::User));
        drop(u);
        assert!(s.login("alice", 1).is_ok());
    }

    #[test]
    fn failure_delay_grows_then_locks_out() {
        let f = Failures::new(FailPolicy {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            limit: 4,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let delays: Vec<_> = (0..4).map(|_| f.failed(ip).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert!(f.locked_out(ip));
        f.succeeded(ip);
        assert!(!f.locked_out(ip));
    }
}
