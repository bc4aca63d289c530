//! Diagnostics: what is wrong with a tree, where, and how to fix it.

use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::term::{self, termcolor};

use crate::source::{SourceMap, Span};

/// One problem found in a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong.
    pub message: String,
    /// The value it is about, if any.
    pub span: Option<Span>,
    /// How to fix it, if we can tell.
    pub help: Option<String>,
    /// Other places that matter (e.g. the first definition of a duplicate).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    /// A problem at a place.
    pub fn at(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span: span.into(), help: None, related: Vec::new() }
    }

    /// Add a hint on how to fix it.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Point at another place as well.
    pub fn related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related.push((span, note.into()));
        self
    }
}

/// A set of problems, with the files they point into. Displayed as
/// `file:line:col: error: message` lines; [`Diagnostics::render`] adds source snippets.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    sources: Arc<SourceMap>,
}

impl Diagnostics {
    /// Problems in these sources.
    pub fn new(items: Vec<Diagnostic>, sources: Arc<SourceMap>) -> Self {
        Diagnostics { items, sources }
    }

    /// The problems, in the order found (sorted by position when rendered).
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// The files they point into.
    pub fn sources(&self) -> &Arc<SourceMap> {
        &self.sources
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// None at all?
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn sorted(&self) -> Vec<&Diagnostic> {
        let mut v: Vec<&Diagnostic> = self.items.iter().collect();
        v.sort_by_key(|d| d.span.map(|s| s.start).unwrap_or(usize::MAX));
        v
    }

    /// The one-line form of a diagnostic: `file:line:col: message (help)`.
    pub fn line(&self, d: &Diagnostic) -> String {
        let mut s = match d.span {
            Some(span) => format!("{}: {}", self.sources.describe(span), d.message),
            None => d.message.clone(),
        };
        if let Some(h) = &d.help {
            s.push_str(&format!(" ({h})"));
        }
        for (span, note) in &d.related {
            s.push_str(&format!("; {}: {note}", self.sources.describe(*span)));
        }
        s
    }

    /// Render with source snippets (rustc style), in colour if asked.
    pub fn render(&self, color: bool) -> String {
        let mut buf = if color { termcolor::Buffer::ansi() } else { termcolor::Buffer::no_color() };
        let styles = term::Styles::default();
        let config = term::Config::default();
        for d in self.sorted() {
            let mut cs = CsDiagnostic::error().with_message(&d.message);
            let mut labels = Vec::new();
            if let Some(span) = d.span
                && let Some(i) = self.sources.file_index(span)
            {
                let base = self.sources.files()[i].base();
                labels.push(Label::primary(i, span.start - base..span.end - base));
            }
            for (span, note) in &d.related {
                if let Some(i) = self.sources.file_index(*span) {
                    let base = self.sources.files()[i].base();
                    labels.push(Label::secondary(i, span.start - base..span.end - base).with_message(note));
                }
            }
            cs = cs.with_labels(labels);
            if let Some(h) = &d.help {
                cs = cs.with_notes(vec![format!("help: {h}")]);
            }
            let mut writer = term::StylesWriter::new(&mut buf, &styles);
            if term::emit_to_write_style(&mut writer, &config, self.sources.as_ref(), &cs).is_err() {
                // Rendering only fails on a span outside its file; fall back to the plain line.
                let line = format!("error: {}\n", self.line(d));
                let _ = std::io::Write::write_all(&mut buf, line.as_bytes());
            }
        }
        String::from_utf8_lossy(buf.as_slice()).into_owned()
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.items.len();
        for d in self.sorted() {
            writeln!(f, "{}", self.line(d))?;
        }
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}
