//! Version numbers as Vagrant orders them, and the schemes that pick the next one.
//!
//! Vagrant 2.3.4 parses every `version` of a catalog with RubyGems' `Gem::Version` and offers
//! the greatest one to `vagrant box outdated` / `vagrant box update`. [`GemVersion`] reproduces
//! that parser and ordering exactly (numeric segments compare as numbers, so `2024.0612.0`
//! equals `2024.612.0`; a letter makes a pre-release: `1.0.a` < `1.0`), so that "newest" here
//! means what it means to Vagrant.

use std::cmp::Ordering;
use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::error::CatalogError;

/// How the version of a new release is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionScheme {
    /// `YYYY.MMDD.N` from the UTC date of the build: `2024.0612.0`, then `2024.0612.1` for a
    /// second build the same day. If the catalog already holds a version at least as new (same
    /// day, or a clock that went backwards), the newest version's last segment is bumped
    /// instead, so versions only ever grow.
    #[default]
    Date,
    /// The newest version with its patch (third) segment bumped: `1.4.2` → `1.4.3`, `1.4` →
    /// `1.4.1`; a pre-release `2.0.0.rc1` → `2.0.0`. `1.0.0` for an empty catalog.
    Semver,
    /// This exact version; refused unless it is newer than every version of the catalog.
    Exact(String),
}

/// A version parsed and ordered like RubyGems' `Gem::Version`, which is what Vagrant uses.
#[derive(Debug, Clone)]
pub struct GemVersion {
    text: String,
    canonical: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Digits without leading zeros ("0" for zero), compared as a number of any size.
    Num(String),
    Str(String),
}

impl GemVersion {
    /// Parses `text` with `Gem::Version`'s rules (`[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?`,
    /// surrounding blanks allowed). An empty string is refused here, though RubyGems reads it as `0`.
    pub fn parse(text: &str) -> Result<GemVersion, CatalogError> {
        let invalid = |reason: &str| CatalogError::InvalidVersion { version: text.to_owned(), reason: reason.into() };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if !valid_pattern(trimmed) {
            return Err(invalid(
                "it must start with a number, then `.`-separated letters/digits, optionally a `-pre.release` part",
            ));
        }
        Ok(GemVersion { text: trimmed.to_owned(), canonical: canonical_segments(trimmed) })
    }

    /// The version as written (blanks trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether RubyGems calls it a pre-release (it holds a letter, like `1.0.rc1`).
    pub fn is_prerelease(&self) -> bool {
        self.text.bytes().any(|b| b.is_ascii_alphabetic())
    }
}

impl fmt::Display for GemVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for GemVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for GemVersion {}

impl PartialOrd for GemVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GemVersion {
    /// `Gem::Version#<=>`: segment by segment, a missing segment counts as `0`, a string
    /// segment is less than a number.
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = Segment::Num("0".into());
        let len = self.canonical.len().max(other.canonical.len());
        for i in 0..len {
            let l = self.canonical.get(i).unwrap_or(&zero);
            let r = other.canonical.get(i).unwrap_or(&zero);
            let ord = match (l, r) {
                (Segment::Num(a), Segment::Num(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
                (Segment::Str(a), Segment::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
                (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

/// `Gem::Version::ANCHORED_VERSION_PATTERN` on an already trimmed, non-empty string.
fn valid_pattern(s: &str) -> bool {
    let (release, pre) = match s.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (s, None),
    };
    let mut parts = release.split('.');
    let first_ok = parts.next().is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !first_ok || !parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return false;
    }
    match pre {
        None => true,
        Some(pre) => pre.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
    }
}

/// `Gem::Version#canonical_segments`: `-` becomes `.pre.`, segments are runs of digits or of
/// letters, and trailing zeros of the release part and of the pre-release part are dropped.
fn canonical_segments(s: &str) -> Vec<Segment> {
    let s = s.replace('-', ".pre.");
    let mut segments = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = s[start..i].trim_start_matches('0');
            segments.push(Segment::Num(if digits.is_empty() { "0".into() } else { digits.into() }));
        } else if bytes[i].is_ascii_alphabetic() {
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            segments.push(Segment::Str(s[start..i].into()));
        } else {
            i += 1;
        }
    }
    let split = segments.iter().position(|s| matches!(s, Segment::Str(_))).unwrap_or(segments.len());
    let strings = segments.split_off(split);
    let mut out = drop_trailing_zeros(segments);
    out.extend(drop_trailing_zeros(strings));
    out
}

fn drop_trailing_zeros(mut segments: Vec<Segment>) -> Vec<Segment> {
    while matches!(segments.last(), Some(Segment::Num(n)) if n == "0") {
        segments.pop();
    }
    segments
}

/// The version after `newest` when bumping its patch segment (see [`VersionScheme::Semver`]).
pub(crate) fn bump_patch(newest: &GemVersion) -> String {
    let text = newest.as_str();
    // The release part: leading all-digit segments (before a `-` or a segment with a letter).
    let release_text = text.split('-').next().unwrap_or(text);
    let mut release: Vec<String> = release_text
        .split('.')
        .take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    while release.len() < 3 {
        release.push("0".into());
    }
    if !newest.is_prerelease() {
        // A pre-release is older than its release; a release needs the bump.
        if let Some(last) = release.last_mut() {
            *last = increment_decimal(last);
        }
    }
    release.join(".")
}

/// `digits` + 1, keeping its width when it has leading zeros (`0612` → `0613`, `9` → `10`).
fn increment_decimal(digits: &str) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    let mut i = out.len();
    loop {
        if i == 0 {
            out.insert(0, b'1');
            break;
        }
        i -= 1;
        if out[i] == b'9' {
            out[i] = b'0';
        } else {
            out[i] += 1;
            break;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| "1".into())
}

/// `YYYY.MMDD.0` for a date.
pub(crate) fn date_version(today: NaiveDate) -> String {
    format!("{:04}.{:02}{:02}.0", today.year(), today.month(), today.day())
}

/// The version a release gets in a catalog whose newest version is `newest`.
pub(crate) fn next_version(
    scheme: &VersionScheme,
    newest: Option<&GemVersion>,
    today: NaiveDate,
) -> Result<GemVersion, CatalogError> {
    let next = match scheme {
        VersionScheme::Exact(text) => GemVersion::parse(text)?,
        VersionScheme::Semver => match newest {
            None => GemVersion::parse("1.0.0")?,
            Some(newest) => GemVersion::parse(&bump_patch(newest))?,
        },
        VersionScheme::Date => {
            let candidate = GemVersion::parse(&date_version(today))?;
            match newest {
                Some(newest) if candidate <= *newest => GemVersion::parse(&bump_patch(newest))?,
                _ => candidate,
            }
        }
    };
    if let Some(newest) = newest
        && next <= *newest
    {
        return Err(CatalogError::VersionNotNewer { version: next.text, newest: newest.text.clone() });
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> GemVersion {
        GemVersion::parse(s).unwrap()
    }

    #[test]
    fn orders_like_rubygems() {
        // Each pair checked against `ruby -e 'p Gem::Version.new(a) <=> Gem::Version.new(b)'` (Ruby 3.1).
        assert_eq!(v("2024.0612.0"), v("2024.612.0"));
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("1.0.0"), v("1"));
        assert!(v("1.0.a") < v("1.0"));
        assert!(v("1.0-rc1") < v("1.0"));
        assert!(v("1.0.0.rc1") < v("1.0.0"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("2024.1231.0") < v("2025.0101.0"));
        assert!(v("2024.0612.10") > v("2024.0612.9"));
        assert!(v("99999999999999999999999.0") > v("99999999999999999999998.9"));
        assert!(v("1.0.b") > v("1.0.a"));
        assert!(v("1.0.a1") > v("1.0.a"));
    }

    #[test]
    fn refuses_what_rubygems_refuses() {
        for bad in ["", "  ", "v1.0", "1..2", "1.0.", "1_0", "abc", "1.0 beta"] {
            assert!(GemVersion::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["1", "1.0", " 1.2.3 ", "1.0-rc.1", "1.0.beta2", "2024.0612.0"] {
            assert!(GemVersion::parse(good).is_ok(), "{good:?} should parse");
        }
    }

    #[test]
    fn bumps_patch() {
        assert_eq!(bump_patch(&v("1.4.2")), "1.4.3");
        assert_eq!(bump_patch(&v("1.4")), "1.4.1");
        assert_eq!(bump_patch(&v("7")), "7.0.1");
        assert_eq!(bump_patch(&v("1.2.9")), "1.2.10");
        assert_eq!(bump_patch(&v("2024.0612.3")), "2024.0612.4");
        assert_eq!(bump_patch(&v("2.0.0.rc1")), "2.0.0");
        assert_eq!(bump_patch(&v("2.0.0-rc1")), "2.0.0");
        assert_eq!(bump_patch(&v("1.2.3.4")), "1.2.3.5");
        assert!(v(&bump_patch(&v("2.0.0.rc1"))) > v("2.0.0.rc1"));
    }

    #[test]
    fn date_versions_are_monotonic() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let first = next_version(&VersionScheme::Date, None, day(2024, 6, 12)).unwrap();
        assert_eq!(first.as_str(), "2024.0612.0");
        let second = next_version(&VersionScheme::Date, Some(&first), day(2024, 6, 12)).unwrap();
        assert_eq!(second.as_str(), "2024.0612.1");
        // The clock went back a day: still newer.
        let third = next_version(&VersionScheme::Date, Some(&second), day(2024, 6, 11)).unwrap();
        assert_eq!(third.as_str(), "2024.0612.2");
        let next_day = next_version(&VersionScheme::Date, Some(&third), day(2024, 6, 13)).unwrap();
        assert_eq!(next_day.as_str(), "2024.0613.0");
        let new_year = next_version(&VersionScheme::Date, Some(&v("2024.1231.4")), day(2025, 1, 1)).unwrap();
        assert_eq!(new_year.as_str(), "2025.0101.0");
        assert!(new_year > v("2024.1231.4"));
    }

    #[test]
    fn exact_must_be_newer() {
        let today = NaiveDate::from_ymd_opt(2024, 6, 12).unwrap();
        let err = next_version(&VersionScheme::Exact("1.0".into()), Some(&v("1.0.0")), today).unwrap_err();
        assert!(matches!(err, CatalogError::VersionNotNewer { .. }), "{err}");
        let ok = next_version(&VersionScheme::Exact("1.0.1".into()), Some(&v("1.0.0")), today).unwrap();
        assert_eq!(ok.as_str(), "1.0.1");
    }
}
