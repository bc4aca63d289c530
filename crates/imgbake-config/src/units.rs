//! Durations (`30s`, `10m`, `1h30m`, `7d`) and sizes (`20GiB`, `512MB`) in tree files.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text: `90s`, `10m`, `1h 30m`, `7d`. Parsed with `humantime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The standard library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// From seconds.
    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration `{s}`: {e}; write it like `30s`, `10m`, `1h30m` or `7d`"))
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes written as text: `20GiB`, `512MiB`, `10G` (binary and decimal units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole GiB, or `None` when not a whole number of GiB.
    pub fn whole_gib(self) -> Option<u64> {
        self.0.is_multiple_of(1 << 30).then_some(self.0 >> 30)
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let err = || format!("invalid size `{s}`; write it like `20GiB`, `512MiB` or `10G`");
        if t.is_empty() || t.starts_with('-') {
            return Err(err());
        }
        let b = t.parse::<bytesize::ByteSize>().map_err(|_| err())?;
        // The parser saturates: a size past u64 (16 EiB) would silently become 16 EiB.
        if b.as_u64() == u64::MAX {
            return Err(format!("size `{s}` is too large (at most 16EiB)"));
        }
        Ok(Size(b.as_u64()))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", bytesize::ByteSize::b(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Duration>().unwrap().get().as_secs(), 90);
        assert_eq!("1h30m".parse::<Duration>().unwrap().get().as_secs(), 5400);
        assert_eq!("7d".parse::<Duration>().unwrap().get().as_secs(), 7 * 86400);
        let e = "10 parsecs".parse::<Duration>().unwrap_err();
        assert!(e.contains("invalid duration `10 parsecs`"), "{e}");
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("20GiB".parse::<Size>().unwrap().whole_gib(), Some(20));
        assert_eq!("1.5GiB".parse::<Size>().unwrap().whole_gib(), None);
        assert_eq!("512MiB".parse::<Size>().unwrap().bytes(), 512 << 20);
        assert_eq!("10G".parse::<Size>().unwrap().bytes(), 10_000_000_000);
        assert!("-1G".parse::<Size>().is_err());
        assert!("lots".parse::<Size>().is_err());
        assert!("99999999999999999999EiB".parse::<Size>().unwrap_err().contains("too large"));
    }
}
