//! Durations as catalog authors write them: `250ms`, `5s`, `1.5s`, `1m`, `2h`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A non-negative duration, written as a number and a unit (`ms`, `s`, `m`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The standard library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
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
        // Whole milliseconds: Envoy's finest practical granularity, and it keeps output exact.
        let millis = (seconds * 1000.0).round() as u64;
        Ok(Duration(std::time::Duration::from_millis(millis)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().0.as_millis();
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("5s"), 5000);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("2h"), 7_200_000);
    }

    #[test]
    fn rejects_nonsense() {
        for s in ["", "5", "s", "5 s", "5sec", "-1s", "1e3s", "1.2.3s"] {
            assert!(s.parse::<Duration>().is_err(), "{s:?} was accepted");
        }
    }
}
