//! The import report: every key of every template, and what became of it.

use std::fmt;

use crate::model::Loc;

/// What became of one Packer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Carried over as `to`.
    Mapped,
    /// Carried over, but it behaves differently in imgbake: read the note.
    Changed,
    /// Not needed in imgbake (the note says why).
    Dropped,
    /// No imgbake equivalent yet: the note suggests what to do. Makes `import` exit 1 unless
    /// `--allow-unmapped`.
    Unmapped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Mapped => "mapped",
            Outcome::Changed => "changed",
            Outcome::Dropped => "dropped",
            Outcome::Unmapped => "UNMAPPED",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub outcome: Outcome,
    /// Where the key is in the Packer file.
    pub loc: Loc,
    /// The Packer key, e.g. `builders[0].spot_price` shown as `amazon-ebs.spot_price`.
    pub key: String,
    /// The imgbake key it became (`images.web.aws.region`), for mapped and changed keys.
    pub to: Option<String>,
    /// Why it was dropped, how it differs, or what to do instead.
    pub note: String,
}

/// Everything the import did, in the order of the Packer files.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub entries: Vec<Entry>,
}

impl Report {
    pub(crate) fn push(
        &mut self,
        outcome: Outcome,
        loc: &Loc,
        key: impl Into<String>,
        to: Option<String>,
        note: impl Into<String>,
    ) {
        self.entries.push(Entry { outcome, loc: loc.clone(), key: key.into(), to, note: note.into() });
    }

    /// The keys that could not be carried over.
    pub fn unmapped(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.outcome == Outcome::Unmapped)
    }

    /// How many keys had each outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.entries.iter().filter(|e| e.outcome == outcome).count()
    }
}

impl fmt::Display for Report {
    /// One line per key (`file:line:col  outcome  key → to: note`), sorted by place, then a summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.loc.cmp(&b.loc));
        for e in entries {
            write!(f, "{}  {:<8}  {}", e.loc, e.outcome.label(), e.key)?;
            if let Some(to) = &e.to {
                write!(f, " → {to}")?;
            }
            if !e.note.is_empty() {
                write!(f, ": {}", e.note)?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "{} mapped, {} changed, {} dropped, {} unmapped",
            self.count(Outcome::Mapped),
            self.count(Outcome::Changed),
            self.count(Outcome::Dropped),
            self.count(Outcome::Unmapped)
        )
    }
}
