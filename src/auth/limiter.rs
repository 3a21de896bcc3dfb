//! Failed-login limits: per user, an exponential back-off after each failure (the next check
//! of that user is refused outright until it runs out); globally, a token bucket of failures
//! that bounds guessing across all names together. Refusing instead of sleeping keeps the
//! agent's blocking threads free.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The limits; [`RateLimits::default`] is what the agent uses.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// Back-off after a user's first failure; doubles with each further one.
    pub user_backoff: Duration,
    /// The most a user's back-off grows to.
    pub user_backoff_max: Duration,
    /// Failures (all users together) allowed in a burst.
    pub global_burst: u32,
    /// One more failure is allowed per this interval once the burst is spent.
    pub global_refill: Duration,
    /// Users whose failures are remembered at once; past that, new names are refused until
    /// old entries age out (so a flood of random names cannot grow memory).
    pub max_tracked_users: usize,
}

impl Default for RateLimits {
    /// 1 s after a user's first failure, doubling to at most 30 s; 10 failures in a burst
    /// and one more every 2 s after that (at most 43 200 guesses a day over all accounts).
    fn default() -> Self {
        RateLimits {
            user_backoff: Duration::from_secs(1),
            user_backoff_max: Duration::from_secs(30),
            global_burst: 10,
            global_refill: Duration::from_secs(2),
            max_tracked_users: 1024,
        }
    }
}

impl RateLimits {
    /// No limits at all (tests of other behaviour).
    pub fn unlimited() -> RateLimits {
        RateLimits {
            user_backoff: Duration::ZERO,
            user_backoff_max: Duration::ZERO,
            global_burst: u32::MAX,
            global_refill: Duration::ZERO,
            max_tracked_users: usize::MAX,
        }
    }
}

#[derive(Debug)]
struct UserFailures {
    consecutive: u32,
    blocked_until: Instant,
}

#[derive(Debug)]
pub(crate) struct Limiter {
    limits: RateLimits,
    users: HashMap<String, UserFailures>,
    /// Failures still allowed, in units of one failure; refilled lazily.
    tokens: f64,
    refilled_at: Option<Instant>,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Limiter {
        Limiter {
            tokens: f64::from(limits.global_burst),
            limits,
            users: HashMap::new(),
            refilled_at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let burst = f64::from(self.limits.global_burst);
        if let Some(then) = self.refilled_at {
            let elapsed = now.saturating_duration_since(then);
            let gained = if self.limits.global_refill.is_zero() {
                burst
            } else {
                elapsed.as_secs_f64() / self.limits.global_refill.as_secs_f64()
            };
            self.tokens = (self.tokens + gained).min(burst);
        }
        self.refilled_at = Some(now);
    }

    /// Whether `user` may be checked now; otherwise which limit holds and for how long.
    pub(crate) fn check(
        &mut self,
        user: &str,
        now: Instant,
    ) -> Result<(), (&'static str, Duration)> {
        if let Some(f) = self.users.get(user) {
            if now < f.blocked_until {
                return Err(("for this user", f.blocked_until - now));
            }
        }
        self.refill(now);
        if self.tokens < 1.0 {
            let wait = self.limits.global_refill.mul_f64(1.0 - self.tokens);
            return Err(("in total", wait));
        }
        if !self.users.contains_key(user) && self.users.len() >= self.limits.max_tracked_users {
            self.forget_stale(now);
            if self.users.len() >= self.limits.max_tracked_users {
                return Err(("in total", self.limits.user_backoff_max));
            }
        }
        Ok(())
    }

    pub(crate) fn record_failure(&mut self, user: &str, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
        if !self.users.contains_key(user) && self.users.len() >= self.limits.max_tracked_users {
            self.forget_stale(now);
        }
        let limits = &self.limits;
        let f = self.users.entry(user.to_string()).or_insert(UserFailures {
            consecutive: 0,
            blocked_until: now,
        });
        f.consecutive = f.consecutive.saturating_add(1);
        let factor = 1u32 << (f.consecutive - 1).min(16);
        let backoff = limits
            .user_backoff
            .saturating_mul(factor)
            .min(limits.user_backoff_max);
        f.blocked_until = now + backoff;
    }

    pub(crate) fn record_success(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Drops users whose back-off ran out long enough ago that a new failure would start
    /// over anyway.
    fn forget_stale(&mut self, now: Instant) {
        let keep = self.limits.user_backoff_max;
        self.users
            .retain(|_, f| now.saturating_duration_since(f.blocked_until) < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RateLimits {
        RateLimits {
            user_backoff: Duration::from_secs(1),
            user_backoff_max: Duration::from_secs(8),
            global_burst: 3,
            global_refill: Duration::from_secs(2),
            max_tracked_users: 2,
        }
    }

    #[test]
    fn per_user_backoff_doubles_and_resets_on_success() {
        let mut l = Limiter::new(RateLimits {
            global_burst: 100,
            ..limits()
        });
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        l.record_failure("a", t0);
        assert_eq!(
            l.check("a", t0),
            Err(("for this user", Duration::from_secs(1)))
        );
        // Other users are not affected.
        assert!(l.check("b", t0).is_ok());
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.check("a", t1).is_ok());
        l.record_failure("a", t1);
        assert_eq!(
            l.check("a", t1),
            Err(("for this user", Duration::from_secs(2)))
        );
        let mut t = t1;
        for _ in 0..5 {
            t += Duration::from_secs(60);
            l.record_failure("a", t);
        }
        assert_eq!(
            l.check("a", t),
            Err(("for this user", Duration::from_secs(8)))
        );
        l.record_success("a");
        assert!(l.check("a", t).is_ok());
    }

    #[test]
    fn global_bucket_spends_and_refills() {
        let mut l = Limiter::new(RateLimits {
            user_backoff: Duration::ZERO,
            max_tracked_users: 100,
            ..limits()
        });
        let t0 = Instant::now();
        for u in ["a", "b", "a"] {
            assert!(l.check(u, t0).is_ok());
            l.record_failure(u, t0);
        }
        let (scope, wait) = l.check("c", t0).unwrap_err();
        assert_eq!((scope, wait), ("in total", Duration::from_secs(2)));
        assert!(l.check("c", t0 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn tracked_users_are_bounded() {
        let mut l = Limiter::new(RateLimits {
            global_burst: 100,
            ..limits()
        });
        let t0 = Instant::now();
        l.record_failure("a", t0);
        l.record_failure("b", t0);
        assert_eq!(l.check("c", t0).unwrap_err().0, "in total");
        // Once the old entries are stale, room is made.
        assert!(l.check("c", t0 + Duration::from_secs(30)).is_ok());
        assert!(l.users.len() <= 2);
    }
}
