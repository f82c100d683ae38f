//! The sign-in rate limit: failures counted per email and per client address over a sliding
//! window, in memory (a restart forgets them).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Failures are counted over this window.
pub const FAILURE_WINDOW: SignedDuration = SignedDuration::from_mins(15);
/// Failed attempts for one email within the window before it is refused.
pub const EMAIL_FAILURES: usize = 5;
/// Failed attempts from one address within the window before it is refused (higher than per
/// email: people behind one NAT share an address).
pub const ADDRESS_FAILURES: usize = 20;
/// Keys tracked at most; past it, keys without failures in the window are dropped, and if
/// that is not enough, new emails are no longer tracked (addresses still are).
const MAX_KEYS: usize = 50_000;

/// What an attempt is counted under: its email, and its address when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Email(String),
    Address(IpAddr),
}

impl LimitKey {
    fn max_failures(&self) -> usize {
        match self {
            LimitKey::Email(_) => EMAIL_FAILURES,
            LimitKey::Address(_) => ADDRESS_FAILURES,
        }
    }
}

pub(crate) fn keys(email: &str, client: Option<IpAddr>) -> Vec<LimitKey> {
    let mut keys = vec![LimitKey::Email(email.to_owned())];
    if let Some(ip) = client {
        keys.push(LimitKey::Address(ip));
    }
    keys
}

/// Recent failures per key.
#[derive(Debug, Default)]
pub struct RateLimit {
    failures: HashMap<LimitKey, VecDeque<Timestamp>>,
}

impl RateLimit {
    /// How long to wait, when any key has reached its limit within the window.
    pub fn blocked(&mut self, keys: &[LimitKey], now: Timestamp) -> Option<Duration> {
        let mut wait: Option<SignedDuration> = None;
        for key in keys {
            let Some(times) = self.failures.get_mut(key) else {
                continue;
            };
            forget_old(times, now);
            if times.len() >= key.max_failures() {
                // Free again once enough of the failures have left the window.
                let freeing = times[times.len() - key.max_failures()];
                let until = (freeing + FAILURE_WINDOW).duration_since(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        // Whole seconds, rounded up, at least one.
        wait.map(|w| {
            let secs = w.as_secs() + i64::from(w.subsec_nanos() > 0);
            Duration::from_secs(secs.max(1) as u64)
        })
    }

    pub fn record_failure(&mut self, keys: &[LimitKey], now: Timestamp) {
        if self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, times| {
                forget_old(times, now);
                !times.is_empty()
            });
        }
        for key in keys {
            let full = self.failures.len() >= MAX_KEYS;
            if full && matches!(key, LimitKey::Email(_)) && !self.failures.contains_key(key) {
                continue;
            }
            let times = self.failures.entry(key.clone()).or_default();
            forget_old(times, now);
            times.push_back(now);
            while times.len() > key.max_failures() {
                times.pop_front();
            }
        }
    }

    /// After a success: the email's failures are forgotten (the address's stay).
    pub fn clear(&mut self, keys: &[LimitKey]) {
        for key in keys {
            if matches!(key, LimitKey::Email(_)) {
                self.failures.remove(key);
            }
        }
    }
}

fn forget_old(times: &mut VecDeque<Timestamp>, now: Timestamp) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_block_the_email_until_the_first_leaves_the_window() {
        let mut limit = RateLimit::default();
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let keys = keys("a@example.com", None);
        for i in 0..EMAIL_FAILURES {
            assert_eq!(limit.blocked(&keys, start), None, "attempt {i}");
            limit.record_failure(&keys, start + SignedDuration::from_secs(i as i64));
        }
        let now = start + SignedDuration::from_secs(10);
        let wait = limit.blocked(&keys, now).expect("blocked");
        assert_eq!(wait, Duration::from_secs(15 * 60 - 10));
        let other = super::keys("b@example.com", None);
        assert_eq!(limit.blocked(&other, now), None);
        assert_eq!(limit.blocked(&keys, start + FAILURE_WINDOW), None);
    }

    #[test]
    fn an_address_is_blocked_across_emails() {
        let mut limit = RateLimit::default();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..ADDRESS_FAILURES {
            limit.record_failure(&keys(&format!("{i}@example.com"), Some(ip)), now);
        }
        assert!(limit
            .blocked(&keys("new@example.com", Some(ip)), now)
            .is_some());
        assert!(limit.blocked(&keys("new@example.com", None), now).is_none());
    }

    #[test]
    fn success_forgets_the_email() {
        let mut limit = RateLimit::default();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let keys = keys("a@example.com", None);
        for _ in 0..EMAIL_FAILURES {
            limit.record_failure(&keys, now);
        }
        limit.clear(&keys);
        assert_eq!(limit.blocked(&keys, now), None);
    }
}
