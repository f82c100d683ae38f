//! The pacing of one destination: a token bucket (its rate), exponential backoff with full
//! jitter that honours `Retry-After`, and a circuit breaker. Plain state machines over
//! [`Instant`]s, no IO: the worker sleeps for what they say.

use std::time::{Duration, Instant};

use jiff::Timestamp;

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Taking more than there
/// is goes into debt, and the caller waits until the debt is paid back.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// `rate` tokens a second (positive and finite), `burst` at most saved (at least 1).
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Klaviyo's published limit of an endpoint: `burst` a second, `per_minute` steady.
    pub fn klaviyo(burst: f64, per_minute: f64, now: Instant) -> TokenBucket {
        TokenBucket::new(per_minute / 60.0, burst, now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `n` tokens; how long to wait before acting on them.
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// How long to wait before attempt `attempt + 1` (`attempt` ≥ 1 failures so far): a uniform
/// random delay up to `min(cap, base · 2^(attempt-1))` ("full jitter"); a `Retry-After` the
/// receiver gave wins (up to `retry_after_cap`).
pub fn backoff(
    attempt: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
    retry_after_cap: Duration,
) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(retry_after_cap);
    }
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cap);
    let fraction: f64 = rand::random::<f64>();
    ceiling.mul_f64(fraction)
}

/// Reads a `Retry-After` value: seconds, or an HTTP date (RFC 9110 IMF-fixdate, e.g.
/// `Wed, 21 Oct 2015 07:28:00 GMT`) measured against `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(now);
    Some(if wait.is_negative() {
        Duration::ZERO
    } else {
        wait.unsigned_abs()
    })
}

/// The breaker's state, as [`crate::Circuit`] reports it.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failed attempts, for `open_for`; then lets one
    /// probe through (half-open): a success closes it, a failure opens it again.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    pub fn success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures >= self.threshold {
            self.open_until = Some(now + self.open_for);
        }
    }

    /// How long until a request may go (zero when closed or half-open).
    pub fn wait(&self, now: Instant) -> Duration {
        self.open_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default()
    }

    pub fn state(&self, now: Instant) -> crate::model::Circuit {
        match self.open_until {
            None => crate::model::Circuit::Closed,
            Some(until) if until > now => crate::model::Circuit::Open,
            Some(_) => crate::model::Circuit::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Circuit;

    #[test]
    fn bucket_paces_after_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 10.0, t0);
        assert_eq!(bucket.take(10.0, t0), Duration::ZERO);
        let wait = bucket.take(5.0, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // After a second, ten more came in: the debt of five is paid, five are left.
        assert_eq!(
            bucket.take(5.0, t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn klaviyo_bucket_is_the_steady_rate_with_a_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::klaviyo(75.0, 700.0, t0);
        for _ in 0..75 {
            assert_eq!(bucket.take(1.0, t0), Duration::ZERO);
        }
        let wait = bucket.take(1.0, t0);
        assert!((wait.as_secs_f64() - 60.0 / 700.0).abs() < 1e-6);
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let base = Duration::from_millis(250);
        let cap = Duration::from_secs(60);
        for attempt in 1..30 {
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(20)).min(cap);
            for _ in 0..20 {
                assert!(backoff(attempt, base, cap, None, cap) <= ceiling);
            }
        }
        let hint = Some(Duration::from_secs(7));
        assert_eq!(
            backoff(1, base, cap, hint, Duration::from_secs(300)),
            Duration::from_secs(7)
        );
        let huge = Some(Duration::from_secs(10_000));
        assert_eq!(
            backoff(1, base, cap, huge, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now: Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn breaker_opens_after_five_then_probes() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(5, Duration::from_secs(30));
        for _ in 0..4 {
            breaker.failure(t0);
        }
        assert_eq!(breaker.state(t0), Circuit::Closed);
        breaker.failure(t0);
        assert_eq!(breaker.state(t0), Circuit::Open);
        assert_eq!(breaker.wait(t0), Duration::from_secs(30));
        let later = t0 + Duration::from_secs(31);
        assert_eq!(breaker.state(later), Circuit::HalfOpen);
        assert_eq!(breaker.wait(later), Duration::ZERO);
        breaker.failure(later);
        assert_eq!(breaker.state(later), Circuit::Open);
        breaker.success();
        assert_eq!(breaker.state(later), Circuit::Closed);
    }
}
