//! Sizes as users write them (`--max-size`): bytes, or a number and a unit, `10MiB`, `10 MiB`,
//! `512KiB`, `1.5GB`. KiB, MiB and GiB are powers of 1024; kB, MB and GB powers of 1000.

/// The units, longest first, with their factors; matched without regard to case.
const UNITS: &[(&str, u64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("B", 1),
];

/// Parses a size in bytes: `10485760`, `10MiB`, `10 MiB`, `1.5GB` (whole bytes, rounded down).
pub fn parse(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a size (write e.g. 10MiB, 512KiB, 1GB or a number of bytes)");
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start();
    let factor = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, f)| *f)
            .ok_or_else(bad)?
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(factor).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A size for people: `10 MiB` when it is a whole number of MiB (or GiB, KiB), else bytes.
pub fn display(bytes: u64) -> String {
    for (name, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {name}", bytes / factor);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_as_the_docs_write_them() {
        for (text, bytes) in [
            ("10MiB", 10 << 20),
            ("10 MiB", 10 << 20),
            ("10mib", 10 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1.5MiB", 3 << 19),
            ("2MB", 2_000_000),
            ("2kB", 2_000),
            ("100B", 100),
            ("10485760", 10 << 20),
        ] {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
        for text in [
            "",
            "MiB",
            "10 M",
            "10 Mb/s",
            "-1MiB",
            ".5MiB",
            "1.MiB",
            "1e3",
            "99999999999GiB",
        ] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn displays_whole_units() {
        assert_eq!(display(10 << 20), "10 MiB");
        assert_eq!(display(1 << 30), "1 GiB");
        assert_eq!(display(1536), "1536 bytes");
        assert_eq!(display(2048), "2 KiB");
        assert_eq!(display(1000), "1000 bytes");
    }
}
