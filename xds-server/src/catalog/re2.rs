//! What Envoy's RE2 refuses in a route's `regex`, checked without RE2.
//!
//! Envoy compiles every regex with RE2 and refuses (NACKs) one whose compiled program has more
//! than 100 instructions (`re2.max_program_size.error_level`), or that repeats anything more than
//! 1000 times. Rust's regex crate is not RE2 and has neither limit, so both are estimated here
//! from the regex as `regex-syntax` parses it.
//!
//! # The size estimate
//!
//! Envoy 1.40 builds RE2 so that it reads a pattern as Latin-1: each byte of the pattern's UTF-8
//! text is one character (`\x{100}` is refused, `\pL` matches only Latin-1 letters). The pattern
//! is therefore re-read byte by byte as Latin-1 characters before it is parsed, as ASCII (`\w`,
//! `\d`, `\s`, `\b` are ASCII in RE2), falling back to Unicode classes cut down to Latin-1 when a
//! class names non-ASCII characters. Then, following RE2's compiler, after RE2 has expanded
//! counted repetitions (`x{2,4}` is `xx(x(x)?)?`):
//!
//! - a literal, one instruction per byte of the pattern's text (RE2 reads each byte as a
//!   character); bytes over 0x7F count twice, as the estimate sees them re-encoded;
//! - a character class, one instruction per range of it within Latin-1; a class that treats
//!   upper and lower case ASCII letters alike drops its ranges within `A-Z` (RE2 matches them
//!   case-insensitively through the lower case ones);
//! - an assertion (`^`, `$`, `\b`), one;
//! - a capture group, two (where it starts and ends) plus its content;
//! - `x*`, `x+`, `x?`: `x` plus one; `x{n}`: n times `x`; `x{n,}`: n times `x` plus one;
//!   `x{n,m}`: m times `x` plus one for each of the m - n optional copies;
//! - an alternation of k branches: the branches plus k - 1;
//! - the program itself: four (its fail and match instructions and the unanchored `.*?` loop).
//!
//! RE2 then flattens its program, which removes most of the instructions that only join others
//! (those of alternations and `*`), and it factors common prefixes out of alternations; neither
//! is modelled, so the estimate is an upper bound that is exact for plain patterns and at most a
//! little over for others. Measured against Envoy 1.40 (see the tests): `/big/(abc|def)` is 17
//! (estimated 18), `/api/v[0-9]+/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
//! is 87 (estimated 87), `/big/(abc|def|ghi){40}` is 449 (estimated 529).
//!
//! # The repetition limit
//!
//! RE2 refuses a count over 1000 (`x{1001}`), and nested counts whose product is over 1000
//! (`(x{100}){100}`): it divides 1000 by each count on the way down (`x{n,m}` counts m, `x{n,}`
//! counts n; `*`, `+` and `?` do not count).

use regex_syntax::ParserBuilder;
use regex_syntax::hir::{Class, Hir, HirKind};

/// Envoy's default limit on the size of a compiled RE2 program.
pub const MAX_PROGRAM_SIZE: u64 = 100;

/// RE2's limit on repetition counts, alone or multiplied by those they are nested in.
pub const MAX_REPEAT: u64 = 1000;

/// Instructions every program has besides its pattern's.
const PROGRAM_OVERHEAD: u64 = 4;

/// Why RE2 (in Envoy) would refuse a regex that Rust's regex crate accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A repetition count, or nested counts multiplied, over [`MAX_REPEAT`].
    Repetition(u64),
    /// The estimated program size, over [`MAX_PROGRAM_SIZE`].
    ProgramSize(u64),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Repetition(n) => write!(
                f,
                "repeats {n} times (nested counts multiply); RE2, which Envoy uses, allows at most {MAX_REPEAT}"
            ),
            Refusal::ProgramSize(n) => write!(
                f,
                "compiles to about {n} RE2 instructions (estimated), over Envoy's limit of {MAX_PROGRAM_SIZE}: \
                 use fewer repetitions and alternatives, or `prefix`/`path` matches"
            ),
        }
    }
}

/// The pattern as RE2 in Latin-1 mode reads it: each byte one character.
fn as_latin1(pattern: &str) -> String {
    pattern.bytes().map(char::from).collect()
}

/// The pattern parsed the way RE2 reads it, if it parses.
fn parse(pattern: &str) -> Option<Hir> {
    let latin1 = as_latin1(pattern);
    // ASCII classes first, as RE2's \w, \d, \s and \b are; bytes, not UTF-8.
    let ascii = ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&latin1);
    match ascii {
        Ok(hir) => Some(hir),
        Err(_) => ParserBuilder::new().build().parse(&latin1).ok(),
    }
}

/// The estimated size of the RE2 program of `pattern` (see the module documentation), or `None`
/// when it does not parse.
pub fn program_size(pattern: &str) -> Option<u64> {
    parse(pattern).map(|hir| size(&hir).saturating_add(PROGRAM_OVERHEAD))
}

/// What RE2 in Envoy would refuse in a pattern that parses; `None` when nothing (or when it does
/// not parse: that is reported on its own).
pub fn refusal(pattern: &str) -> Option<Refusal> {
    let hir = parse(pattern)?;
    let repeat = max_repeat(&hir);
    if repeat > MAX_REPEAT {
        return Some(Refusal::Repetition(repeat));
    }
    let size = size(&hir).saturating_add(PROGRAM_OVERHEAD);
    (size > SURELY_OVER).then_some(Refusal::ProgramSize(size))
}

/// The estimate errs high, by at most a quarter plus 4 (measured against Envoy): above this,
/// the real program is surely over [`MAX_PROGRAM_SIZE`]; between the two it may not be, so a
/// catalog valid before stays valid and gets a warning instead.
const SURELY_OVER: u64 = MAX_PROGRAM_SIZE + MAX_PROGRAM_SIZE / 4 + 4;

/// An estimate over Envoy's limit that is not surely over it (see [`SURELY_OVER`]).
pub fn may_be_too_big(pattern: &str) -> Option<u64> {
    let hir = parse(pattern)?;
    let size = size(&hir).saturating_add(PROGRAM_OVERHEAD);
    (size > MAX_PROGRAM_SIZE && size <= SURELY_OVER).then_some(size)
}

/// Instructions of one class: its ranges within Latin-1, those within `A-Z` dropped when the
/// class folds ASCII case (RE2's `FoldsASCII`).
fn class_size(ranges: impl Iterator<Item = (u32, u32)>) -> u64 {
    let ranges: Vec<(u32, u32)> = ranges
        .filter(|(lo, _)| *lo <= 0xFF)
        .map(|(lo, hi)| (lo, hi.min(0xFF)))
        .collect();
    let has = |c: u32| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
    let folds_ascii = (u32::from(b'a')..=u32::from(b'z')).all(|c| has(c) == has(c - 32));
    let n = ranges
        .iter()
        .filter(|(lo, hi)| !(folds_ascii && *lo >= u32::from(b'A') && *hi <= u32::from(b'Z')))
        .count() as u64;
    n.max(1)
}

fn size(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(lit) => lit.0.len() as u64,
        HirKind::Class(Class::Unicode(c)) => class_size(
            c.ranges()
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        HirKind::Class(Class::Bytes(c)) => class_size(
            c.ranges()
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        HirKind::Look(_) => 1,
        HirKind::Repetition(r) => {
            let sub = size(&r.sub);
            let min = u64::from(r.min);
            match r.max {
                None => min.max(1).saturating_mul(sub).saturating_add(1),
                Some(max) => {
                    let max = u64::from(max);
                    max.saturating_mul(sub).saturating_add(max - min)
                }
            }
        }
        HirKind::Capture(c) => size(&c.sub).saturating_add(2),
        HirKind::Concat(subs) => subs.iter().map(size).fold(0, u64::saturating_add),
        HirKind::Alternation(subs) => subs
            .iter()
            .map(size)
            .fold(subs.len().saturating_sub(1) as u64, u64::saturating_add),
    }
}

/// The largest product of nested repetition counts, as RE2 counts them.
fn max_repeat(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Repetition(r) => {
            let count = u64::from(r.max.unwrap_or(r.min)).max(1);
            count.saturating_mul(max_repeat(&r.sub))
        }
        HirKind::Capture(c) => max_repeat(&c.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().map(max_repeat).max().unwrap_or(1)
        }
        _ => 1,
    }
}
