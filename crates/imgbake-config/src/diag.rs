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
    /// The value may be a secret someone typed where it does not belong (a password in a URL):
    /// rendered without its source snippet.
    pub conceal: bool,
}

impl Diagnostic {
    /// A problem at a place.
    pub fn at(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span: span.into(), help: None, related: Vec::new(), conceal: false }
    }

    /// Render it without the source line: the value there may be a secret.
    pub fn concealed(mut self) -> Self {
        self.conceal = true;
        self
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
    /// Values of sensitive variables: never printed, not even in a source snippet.
    secrets: Vec<String>,
}

/// What a sensitive value is printed as.
pub const REDACTED: &str = "<sensitive>";

/// Secrets at least this long are hidden wherever they appear; shorter ones where a value is quoted.
const MIN_FREE_SECRET: usize = 4;

/// Longest quoted value echoed back in a message, in characters; longer ones end in an ellipsis.
const MAX_QUOTED: usize = 80;
/// Longest source line shown as a snippet; longer lines get the one-line form only.
const MAX_SNIPPET_LINE: usize = 400;

/// Cut every `quoted` value longer than [`MAX_QUOTED`] characters: a 2 MB bad value is not echoed back.
fn shorten(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(1024));
    for (i, part) in s.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts are inside backticks: the values echoed back.
        if i % 2 == 1 && part.chars().count() > MAX_QUOTED {
            out.extend(part.chars().take(MAX_QUOTED));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Diagnostics from one mistake repeated for each image (a bad value in `[defaults]`) are one problem.
fn same_problem(a: &Diagnostic, b: &Diagnostic) -> bool {
    fn generic(m: &str) -> String {
        // `image `web`` and `images.web` name the image the mistake was copied into, not the mistake.
        let mut out = String::new();
        let mut rest = m;
        while let Some(i) = rest.find("image") {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let (prefix, after) = if let Some(t) = tail.strip_prefix("images.") {
                ("images.", t)
            } else if let Some(t) = tail.strip_prefix("image `") {
                ("image `", t)
            } else {
                out.push_str("image");
                rest = &tail[5..];
                continue;
            };
            out.push_str(prefix);
            out.push('*');
            let end = after.find(['`', '.', ' ', '[', ':']).unwrap_or(after.len());
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }
    a.span.is_some() && a.span == b.span && generic(&a.message) == generic(&b.message)
}

impl Diagnostics {
    /// Problems in these sources.
    pub fn new(items: Vec<Diagnostic>, sources: Arc<SourceMap>) -> Self {
        let mut kept: Vec<Diagnostic> = Vec::with_capacity(items.len());
        for mut d in items {
            if kept.iter().any(|k| same_problem(k, &d)) {
                continue;
            }
            d.message = shorten(&d.message);
            d.help = d.help.map(|h| shorten(&h));
            d.related.iter_mut().for_each(|(_, n)| *n = shorten(n));
            kept.push(d);
        }
        Diagnostics { items: kept, sources, secrets: Vec::new() }
    }

    /// Never print these values (sensitive variables): they become `<sensitive>`.
    pub fn redacting(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if secret.chars().count() >= MIN_FREE_SECRET {
                out = out.replace(secret.as_str(), REDACTED);
            } else {
                // A very short value would match inside words and line numbers: hide it where a
                // message echoes a value, as a whole `quoted` word.
                out = out.replace(&format!("`{secret}`"), &format!("`{REDACTED}`"));
            }
        }
        out
    }

    /// Whether a snippet of `span` would show too much: a sensitive value or a huge line.
    fn snippet_unsafe(&self, span: Span) -> bool {
        let Some(i) = self.sources.file_index(span) else { return true };
        let f = &self.sources.files()[i];
        let at = (span.start - f.base()).min(f.text.len());
        let end = (span.end - f.base()).min(f.text.len());
        let start = f.text[..at].rfind('\n').map_or(0, |p| p + 1);
        let stop = f.text[end..].find('\n').map_or(f.text.len(), |p| end + p);
        let shown = f.text.get(start..stop).unwrap_or("");
        shown.len() > MAX_SNIPPET_LINE
            || self.secrets.iter().any(|s| s.chars().count() >= MIN_FREE_SECRET && shown.contains(s.as_str()))
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
        // Only the words are redacted: a location never holds a value.
        let mut s = match d.span {
            Some(span) => format!("{}: {}", self.sources.describe(span), self.redact(&d.message)),
            None => self.redact(&d.message),
        };
        if let Some(h) = &d.help {
            s.push_str(&format!(" ({})", self.redact(h)));
        }
        for (span, note) in &d.related {
            s.push_str(&format!("; {}: {}", self.sources.describe(*span), self.redact(note)));
        }
        s
    }

    /// Render with source snippets (rustc style), in colour if asked.
    pub fn render(&self, color: bool) -> String {
        let mut buf = if color { termcolor::Buffer::ansi() } else { termcolor::Buffer::no_color() };
        let styles = term::Styles::default();
        let config = term::Config::default();
        for d in self.sorted() {
            let spans = d.span.iter().chain(d.related.iter().map(|(s, _)| s));
            if d.conceal || spans.into_iter().any(|s| self.snippet_unsafe(*s)) {
                let line = format!("error: {}\n", self.line(d));
                let _ = std::io::Write::write_all(&mut buf, line.as_bytes());
                continue;
            }
            let mut cs = CsDiagnostic::error().with_message(self.redact(&d.message));
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
                    labels
                        .push(Label::secondary(i, span.start - base..span.end - base).with_message(self.redact(note)));
                }
            }
            cs = cs.with_labels(labels);
            if let Some(h) = &d.help {
                cs = cs.with_notes(vec![format!("help: {}", self.redact(h))]);
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
