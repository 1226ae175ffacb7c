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

#[cfg(test)]
mod tests {
    use super::*;

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
