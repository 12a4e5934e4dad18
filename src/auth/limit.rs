//! Per-user token buckets (`[api] rate_per_user`, `burst_per_user`): each user may make
//! `burst` requests at once and `rate` per second after that; over it the API answers 429
//! with `Retry-After`. The system class (nodes, the admin credential that controllers and
//! operators use) never draws from a user's bucket, so no user can starve it.
//!
//! Pure over an explicit clock (`Instant` passed in), so the tests drive virtual time.
//! Hand-written rather than `governor`: a dozen lines of arithmetic, and the one map of
//! buckets is pruned of idle users here (a full bucket carries no state worth keeping).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::RateSettings;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    settings: RateSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets are forgotten once this many users hold one and the bucket is full again.
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    pub fn new(settings: RateSettings) -> RateLimiter {
        RateLimiter {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `user`'s bucket, or says how long until one is there.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let RateSettings { rate, burst } = self.settings;
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if rate <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
    }
}

/// The `Retry-After` header value: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_users_apart() {
        let l = RateLimiter::new(RateSettings {
            rate: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("alice", t0).is_ok());
        }
        let wait = l.take("alice", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another user has a bucket of their own.
        assert!(l.take("bob", t0).is_ok());
        // Half a second gives alice one more request, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take("alice", t1).is_ok());
        assert!(l.take("alice", t1).is_err());
    }
}
