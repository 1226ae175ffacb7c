//! Durations as users write them in flags and files: `250ms`, `5s`, `1.5s`, `1m`, `2h`.

use std::time::Duration;

/// Parses a number followed by a unit (`ms`, `s`, `m`, `h`); whole milliseconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (write e.g. 250ms, 5s, 1m, 2h)");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = number * seconds_per_unit;
    if !seconds.is_finite() || seconds > 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_millis((seconds * 1000.0).round() as u64))
}

/// Like [`parse`], but zero is refused: for intervals, where zero would be a busy loop.
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    parse(s).and_then(|d| {
        if d.is_zero() {
            Err(format!("{s:?}: must be more than zero"))
        } else {
            Ok(d)
        }
    })
}

/// The time since the Unix epoch (zero for a clock set before it).
pub fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `interval` ±10%, so that replicas and sources spread their requests over time. Taken from the
/// clock's nanoseconds: no random generator is needed for this.
pub fn jitter(interval: Duration) -> Duration {
    let nanos = since_epoch().subsec_nanos();
    let fraction = (nanos % 2001) as f64 / 10_000.0 - 0.1; // -0.1 ..= 0.1
    interval.mul_f64(1.0 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let ms = |s: &str| parse(s).unwrap().as_millis();
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("5s"), 5000);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("2h"), 7_200_000);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(30));
            assert!(
                d >= Duration::from_secs(27) && d <= Duration::from_secs(33),
                "{d:?}"
            );
        }
    }

    #[test]
    fn rejects_nonsense() {
        for s in ["", "5", "s", "5 s", "5sec", "-1s", "1e3s", "1.2.3s"] {
            assert!(parse(s).is_err(), "{s:?} was accepted");
        }
    }
}
