//! How long to wait after a failure: one rule for every poller of the toolkit.

use std::time::Duration;

/// The next delay of an exponential backoff: `first` after the first failure (`previous` is
/// zero), then twice the previous delay, never more than `cap`.
pub fn next(previous: Duration, first: Duration, cap: Duration) -> Duration {
    if previous.is_zero() {
        first.min(cap)
    } else {
        previous.saturating_mul(2).min(cap)
    }
}

/// The delay after one more throttled answer, for a poller that runs every `interval`: 2×, 4×,
/// … the interval, up to `max`, and never less than the interval (throttling must not make a
/// poller ask more often). `previous` is the last such delay, zero when the answer before was
/// not throttled; keep it only while throttling goes on.
pub fn after_throttle(previous: Duration, interval: Duration, max: Duration) -> Duration {
    next(previous, interval.saturating_mul(2), max.max(interval))
}

/// The delays of a poller that runs every `interval` and backs off while AWS throttles it (see
/// [`after_throttle`]): ecs-sd's refreshes and each of xds-server's discovery sources.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    interval: Duration,
    max: Duration,
    current: Duration,
}

impl Throttle {
    /// A poller that runs every `interval`, backing off up to `max` while throttled.
    pub fn new(interval: Duration, max: Duration) -> Self {
        Self {
            interval,
            max,
            current: Duration::ZERO,
        }
    }

    /// After a poll (`throttled`: whether AWS throttled it), the delay before the next one: the
    /// grown backoff while throttling goes on, else the interval with jitter (any other outcome
    /// ends the backoff).
    pub fn after(&mut self, throttled: bool) -> Duration {
        if throttled {
            self.current = after_throttle(self.current, self.interval, self.max);
            self.current
        } else {
            self.current = Duration::ZERO;
            crate::duration::jitter(self.interval)
        }
    }

    /// The current backoff, zero when the last poll was not throttled (for a metric).
    pub fn current(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_poller_backs_off_and_any_other_outcome_ends_it() {
        let interval = secs(60);
        let mut t = Throttle::new(interval, secs(300));
        let within_jitter = |d: Duration| d >= secs(54) && d <= secs(66);
        assert!(within_jitter(t.after(false)));
        assert_eq!(t.current(), Duration::ZERO);
        let grown: Vec<u64> = (0..4).map(|_| t.after(true).as_secs()).collect();
        assert_eq!(grown, [120, 240, 300, 300]);
        assert_eq!(t.current(), secs(300));
        assert!(within_jitter(t.after(false)));
        assert_eq!(t.current(), Duration::ZERO);
        // Throttled again: it starts over from twice the interval.
        assert_eq!(t.after(true), secs(120));
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            d = next(d, secs(2), secs(30));
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next(Duration::ZERO, secs(2), secs(1)), secs(1));
    }

    #[test]
    fn throttling_grows_from_twice_the_interval_and_never_polls_faster() {
        let (interval, max) = (secs(60), secs(600));
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..5 {
            d = after_throttle(d, interval, max);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [120, 240, 480, 600, 600]);
        // A maximum below the interval still waits the interval.
        assert_eq!(after_throttle(Duration::ZERO, secs(60), secs(10)), secs(60));
        assert_eq!(after_throttle(secs(60), secs(60), secs(10)), secs(60));
        // A maximum between one and two intervals.
        assert_eq!(after_throttle(Duration::ZERO, secs(60), secs(90)), secs(90));
    }
}
