//! Source files and spans: every value of a tree keeps where it came from.
//!
//! All files of a tree share one span space: each file gets a base offset (like a compiler's source
//! map), so a merged value — a default from `tree.toml` inside an image from an included file — still
//! knows its file, line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A byte range in the tree's shared span space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from a range.
    pub fn new(range: Range<usize>) -> Self {
        Span { start: range.start, end: range.end }
    }
}

impl From<Range<usize>> for Span {
    fn from(r: Range<usize>) -> Self {
        Span::new(r)
    }
}

/// A file:line:column position, 1-based, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// One loaded file.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as given (relative paths stay relative, for short messages).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    base: usize,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// The offset of this file in the shared span space.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The directory relative paths in this file resolve against.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    fn line_col(&self, local: usize) -> (usize, usize) {
        let local = local.min(self.text.len());
        let line = match self.line_starts.binary_search(&local) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text.get(start..local).map(|s| s.chars().count()).unwrap_or(local - start);
        (line + 1, col + 1)
    }
}

/// Every file of a tree, in one span space.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// Add a file; returns its index and base offset.
    pub fn add(&mut self, path: PathBuf, text: String) -> (usize, usize) {
        // One byte of gap so an end-of-file span never touches the next file.
        let base = self.files.last().map(|f| f.base + f.text.len() + 1).unwrap_or(0);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(SourceFile { path, text, base, line_starts });
        (self.files.len() - 1, base)
    }

    /// All files.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// The index of the file a span belongs to.
    pub fn file_index(&self, span: Span) -> Option<usize> {
        let i = self.files.partition_point(|f| f.base <= span.start);
        i.checked_sub(1).filter(|&i| span.start <= self.files[i].base + self.files[i].text.len())
    }

    /// The file a span belongs to.
    pub fn file(&self, span: Span) -> Option<&SourceFile> {
        self.file_index(span).map(|i| &self.files[i])
    }

    /// Where a span starts, for people.
    pub fn locate(&self, span: Span) -> Option<Location> {
        let f = self.file(span)?;
        let (line, column) = f.line_col(span.start - f.base);
        Some(Location { path: f.path.clone(), line, column })
    }

    /// `file:line:col` of a span, or `<unknown>`.
    pub fn describe(&self, span: Span) -> String {
        self.locate(span).map(|l| l.to_string()).unwrap_or_else(|| "<unknown location>".into())
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> Option<&str> {
        let f = self.file(span)?;
        f.text.get(span.start - f.base..span.end.saturating_sub(f.base).min(f.text.len()))
    }

    /// Resolve `path` against the directory of the file `span` is in (absolute paths stay as they are).
    pub fn resolve(&self, span: Span, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.file(span) {
            Some(f) => f.dir().join(p),
            None => p.to_path_buf(),
        }
    }
}

impl<'a> codespan_reporting::files::Files<'a> for SourceMap {
    type FileId = usize;
    type Name = String;
    type Source = &'a str;

    fn name(&'a self, id: usize) -> Result<String, codespan_reporting::files::Error> {
        self.files.get(id).map(|f| f.path.display().to_string()).ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn source(&'a self, id: usize) -> Result<&'a str, codespan_reporting::files::Error> {
        self.files.get(id).map(|f| f.text.as_str()).ok_or(codespan_reporting::files::Error::FileMissing)
    }

    fn line_index(&'a self, id: usize, byte_index: usize) -> Result<usize, codespan_reporting::files::Error> {
        let f = self.files.get(id).ok_or(codespan_reporting::files::Error::FileMissing)?;
        Ok(f.line_col(byte_index).0 - 1)
    }

    fn line_range(&'a self, id: usize, line_index: usize) -> Result<Range<usize>, codespan_reporting::files::Error> {
        let f = self.files.get(id).ok_or(codespan_reporting::files::Error::FileMissing)?;
        let start = *f.line_starts.get(line_index).ok_or(codespan_reporting::files::Error::LineTooLarge {
            given: line_index,
            max: f.line_starts.len() - 1,
        })?;
        let end = f.line_starts.get(line_index + 1).copied().unwrap_or(f.text.len());
        Ok(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_back_to_their_file() {
        let mut sm = SourceMap::default();
        let (_, a) = sm.add("tree.toml".into(), "a = 1\nbé = 2\n".into());
        let (_, b) = sm.add("sub/more.toml".into(), "x = 'y'\n".into());
        assert_eq!(a, 0);
        assert!(b > 13);
        let l = sm.locate(Span::new(a + 11..a + 12)).unwrap();
        assert_eq!((l.line, l.column), (2, 5), "column counts characters, not bytes");
        let l = sm.locate(Span::new(b + 4..b + 7)).unwrap();
        assert_eq!(l.to_string(), "sub/more.toml:1:5");
        assert_eq!(sm.snippet(Span::new(b + 4..b + 7)), Some("'y'"));
        assert_eq!(sm.resolve(Span::new(b..b + 1), "s.sh"), PathBuf::from("sub/s.sh"));
        assert_eq!(sm.resolve(Span::new(a..a + 1), "s.sh"), PathBuf::from("./s.sh"));
    }
}
