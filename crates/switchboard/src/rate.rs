//! Per-connection message rate limit: a token bucket, plus a strike count that closes
//! clients who keep sending while limited.

use std::time::Instant;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
    max_strikes: u32,
}

/// What to do with one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop it and answer `rate_limited`.
    Limit,
    /// The client keeps flooding: close it with 4008.
    Close,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32, max_strikes: u32) -> RateLimiter {
        RateLimiter {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: Instant::now(),
            strikes: 0,
            max_strikes,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= self.burst {
            // The client has calmed down: forgive its earlier strikes.
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes >= self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_limits_then_closes() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 3);
        for _ in 0..5 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
        assert_eq!(r.check(t0), Verdict::Limit);
        assert_eq!(r.check(t0), Verdict::Limit);
        assert_eq!(r.check(t0), Verdict::Close);
    }

    #[test]
    fn refills_at_the_rate_and_forgives_after_a_calm_period() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 2, 3);
        assert_eq!(r.check(t0), Verdict::Allow);
        assert_eq!(r.check(t0), Verdict::Allow);
        assert_eq!(r.check(t0), Verdict::Limit);
        assert_eq!(r.check(t0), Verdict::Limit);
        // 100 ms later one token is back.
        assert_eq!(r.check(t0 + Duration::from_millis(100)), Verdict::Allow);
        // A full bucket later, the strikes are forgiven.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(r.check(later), Verdict::Allow);
        assert_eq!(r.check(later), Verdict::Allow);
        assert_eq!(r.check(later), Verdict::Limit);
        assert_eq!(r.check(later), Verdict::Limit);
    }
}
