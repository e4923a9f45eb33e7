//! Throttling of failed authentication per client address: after
//! [`MAX_FAILURES`] wrong keys or dashboard credentials within a minute, every
//! further attempt from that address gets 429 until the minute is over.
//! Requests without credentials do not count, because every browser sends
//! one before it prompts for the password. IPv6 addresses count per /64
//! network, as for the rate limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ip_key::bucket;

pub const MAX_FAILURES: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct AuthFailures {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthFailures {
    /// Returns how long `ip` stays blocked, or `None` when it may try.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let ip = bucket(ip);
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.get(&ip)?;
        let elapsed = window.started.elapsed();
        (window.failures >= MAX_FAILURES && elapsed < WINDOW).then(|| WINDOW - elapsed)
    }

    /// Counts a failed attempt and returns the number of failures of `ip`'s
    /// bucket in its current window.
    pub fn record(&self, ip: IpAddr) -> u32 {
        let ip = bucket(ip);
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let window = windows.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
        window.failures
    }

    /// Drops windows that are over, so that memory follows recent traffic only.
    pub fn purge(&self) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.retain(|_, window| window.started.elapsed() < WINDOW);
        windows.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.windows.lock().map_or(0, |windows| windows.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures() {
        let failures = AuthFailures::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            failures.record(ip);
        }
        assert!(failures.blocked_for(ip).is_none());
        failures.record(ip);
        let blocked = failures.blocked_for(ip).unwrap();
        assert!(blocked <= WINDOW);
        assert!(blocked > WINDOW - Duration::from_secs(5));
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        assert!(failures.blocked_for(other).is_none());
    }

    #[test]
    fn purge_keeps_current_windows() {
        let failures = AuthFailures::default();
        failures.record("198.51.100.7".parse().unwrap());
        failures.purge();
        assert_eq!(failures.len(), 1);
    }
}
