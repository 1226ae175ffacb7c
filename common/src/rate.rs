//! The one token bucket of the tools: a rate of requests per second and a burst. Callers keep
//! it under their own lock, one per limit (AWS calls of a kind) or one per key (a source
//! address), and either refuse what finds it empty or wait for their turn.
//!
//! Why not the `governor` crate: its waiting (`until_ready`) checks again after each sleep, so
//! waiters are not served in the order they came and a poll can be passed over by later ones
//! until its timeout; the discovery limiter needs each waiter to take its place in turn and a
//! cancelled wait to give its place back ([`TokenBucket::take_in_turn`],
//! [`TokenBucket::give_back`]). What remains (refill, burst, one bucket per key) is the few
//! lines below, and a dependency would not make them fewer.

use std::time::{Duration, Instant};

/// Tokens and when they were counted; it refills at `rate` per second up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at `now`.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            at: now,
        }
    }

    /// The tokens at `now`, without counting them.
    fn level(&self, rate: f64, burst: f64, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(burst)
    }

    /// Takes one token if there is one at `now`; false (and nothing taken) when it is empty.
    pub fn try_take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let level = self.level(rate, burst, now);
        let taken = level >= 1.0;
        *self = TokenBucket {
            tokens: if taken { level - 1.0 } else { level },
            at: now,
        };
        taken
    }

    /// Takes one token, in advance when there is none: how long the taker must wait for it
    /// (zero when it was there). A taker that gives up waiting calls [`TokenBucket::give_back`].
    pub fn take_in_turn(&mut self, rate: f64, burst: f64, now: Instant) -> Duration {
        let tokens = self.level(rate, burst, now) - 1.0;
        *self = TokenBucket { tokens, at: now };
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / rate)
        }
    }

    /// Returns a token taken in turn that was never used.
    pub fn give_back(&mut self) {
        self.tokens += 1.0;
    }

    /// Whether the bucket is full at `now`, so forgetting it changes nothing.
    pub fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.level(rate, burst, now) >= burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_period() {
        let now = Instant::now();
        let mut b = TokenBucket::full(3.0, now);
        for _ in 0..3 {
            assert!(b.try_take(0.05, 3.0, now));
        }
        assert!(!b.try_take(0.05, 3.0, now));
        assert!(!b.is_full(0.05, 3.0, now));
        // 3 a minute: one more 20 s later, and no more at once.
        let later = now + Duration::from_secs(21);
        assert!(b.try_take(0.05, 3.0, later));
        assert!(!b.try_take(0.05, 3.0, later));
        assert!(b.is_full(0.05, 3.0, later + Duration::from_secs(60)));
    }

    #[test]
    fn taking_in_turn_says_how_long_to_wait_and_a_token_given_back_is_there_again() {
        let now = Instant::now();
        let mut b = TokenBucket::full(1.0, now);
        assert_eq!(b.take_in_turn(2.0, 1.0, now), Duration::ZERO);
        assert_eq!(b.take_in_turn(2.0, 1.0, now), Duration::from_millis(500));
        assert_eq!(b.take_in_turn(2.0, 1.0, now), Duration::from_secs(1));
        b.give_back();
        b.give_back();
        assert_eq!(b.take_in_turn(2.0, 1.0, now), Duration::from_millis(500));
    }

    #[test]
    fn a_refill_never_goes_above_the_burst() {
        let now = Instant::now();
        let mut b = TokenBucket::full(2.0, now);
        let hour = now + Duration::from_secs(3600);
        assert!(b.try_take(10.0, 2.0, hour));
        assert!(b.try_take(10.0, 2.0, hour));
        assert!(!b.try_take(10.0, 2.0, hour));
    }
}
