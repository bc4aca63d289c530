//! What the two Packer syntaxes have in common, once read: templates of builds of sources,
//! provisioners and post-processors, every value with its place in the Packer file.
//!
//! Strings are already in imgbake's template language (`{{ var.x }}`, `{{ timestamp }}`); what has
//! no counterpart there is kept as [`Value::Unmapped`] with the reason, so the report can name it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in a Packer file: shown as `file:line:col`, the file relative to where imgbake runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// Byte offsets to lines and columns (1-based; columns count characters).
pub(crate) struct Lines {
    file: Arc<PathBuf>,
    text: Arc<str>,
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(file: &Path, text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { file: Arc::new(file.to_path_buf()), text: text.into(), starts }
    }

    pub fn loc(&self, offset: usize) -> Loc {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self.text.get(start..offset.min(self.text.len())).map_or(1, |s| s.chars().count() + 1);
        Loc { file: self.file.clone(), line, col }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `#` / `//` comment lines right above the line holding `offset` (HCL), without markers.
    pub fn comment_above(&self, offset: usize) -> Option<String> {
        let line = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let mut lines = Vec::new();
        for l in (0..line).rev() {
            let end = self.starts.get(l + 1).copied().unwrap_or(self.text.len());
            let t = self.text[self.starts[l]..end].trim();
            let body = t.strip_prefix("//").or_else(|| t.strip_prefix('#'));
            match body {
                Some(b) => lines.push(b.trim().to_string()),
                None => break,
            }
        }
        lines.reverse();
        let joined = lines.join("\n").trim().to_string();
        (!joined.is_empty()).then_some(joined)
    }
}

/// A value read from a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string, in imgbake's template language.
    Str(String),
    /// A number as written.
    Num(String),
    Bool(bool),
    Null,
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// Something without an imgbake equivalent: the source text and why.
    Unmapped {
        text: String,
        why: String,
    },
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

impl Node {
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A string, or a number or boolean written as one (`"true"`, `"8"`, as JSON templates do).
    pub fn scalar(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) | Value::Num(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn bool(&self) -> Option<bool> {
        match &self.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" => Some(true),
            Value::Str(s) if s == "false" => Some(false),
            _ => None,
        }
    }

    pub fn list(&self) -> Option<&[Node]> {
        match &self.value {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// A list of strings; a single string counts as a list of one.
    pub fn strings(&self) -> Option<Vec<String>> {
        match &self.value {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::List(l) => l.iter().map(|n| n.scalar()).collect(),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Why this value cannot be carried over, for a value that is or holds an unmapped part.
    pub fn unmapped(&self) -> Option<(String, String)> {
        match &self.value {
            Value::Unmapped { text, why } => Some((text.clone(), why.clone())),
            Value::List(l) => l.iter().find_map(Node::unmapped),
            Value::Map(m) => m.iter().find_map(|(_, n)| n.unmapped()),
            _ => None,
        }
    }
}

/// A block's keys, in file order.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub entries: Vec<(String, Node)>,
}

impl Body {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }
}

/// Removes and returns `key` from a body.
pub fn take(body: &mut Body, key: &str) -> Option<Node> {
    let i = body.entries.iter().position(|(k, _)| k == key)?;
    Some(body.entries.remove(i).1)
}

/// A Packer variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub default: Option<Node>,
    pub description: Option<String>,
    pub sensitive: bool,
    pub loc: Loc,
}

/// A builder (JSON) or source (HCL2): what Packer launches.
#[derive(Debug, Clone)]
pub struct Source {
    /// Packer's builder type, e.g. `amazon-ebs`.
    pub kind: String,
    /// The name `only`/`except` use (`name` in JSON, the label in HCL2; the type when unnamed).
    pub name: String,
    pub body: Body,
    pub loc: Loc,
    pub comment: Option<String>,
}

/// A provisioner or post-processor.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub kind: String,
    pub body: Body,
    pub only: Vec<String>,
    pub except: Vec<String>,
    pub loc: Loc,
    pub comment: Option<String>,
}

/// A data source (HCL2), e.g. `data "amazon-ami" "base"`.
#[derive(Debug, Clone)]
pub struct Data {
    pub kind: String,
    pub name: String,
    pub body: Body,
    pub loc: Loc,
}

/// A build: sources with the provisioners and post-processors that apply to them.
#[derive(Debug, Clone)]
pub struct Build {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Keys of the build block that were not needed, and why.
    pub dropped: Vec<(Loc, String, String)>,
    pub sources: Vec<Source>,
    pub provisioners: Vec<Plugin>,
    /// Sequences of post-processors (JSON's array of arrays; HCL2's `post-processors` blocks).
    pub post: Vec<Vec<Plugin>>,
}

/// One Packer template: a JSON file, or a directory (or single file) of HCL2.
#[derive(Debug, Clone)]
pub struct Template {
    /// The file or directory given on the command line.
    pub path: PathBuf,
    /// The directory relative paths in the template are resolved from (Packer: the working
    /// directory, which teams make the template's own directory).
    pub dir: PathBuf,
    pub variables: Vec<Variable>,
    pub builds: Vec<Build>,
    pub data: Vec<Data>,
    /// Keys the reader met at the top level and did not use (`min_packer_version`, `packer {}`...),
    /// with what to tell the user.
    pub dropped: Vec<(Loc, String, String)>,
    /// `_comment` keys (JSON) and the comment above the first block (HCL2).
    pub comment: Option<String>,
    /// Values of `*.auto.pkrvars.hcl` files in a template directory (Packer loads them by itself).
    pub auto_vars: Vec<(String, Node, PathBuf)>,
}

impl Template {
    /// An empty template read from `path`, whose relative paths are resolved from `dir`.
    pub fn new(path: &Path, dir: PathBuf) -> Template {
        Template {
            path: path.to_path_buf(),
            dir,
            variables: Vec::new(),
            builds: Vec::new(),
            data: Vec::new(),
            dropped: Vec::new(),
            comment: None,
            auto_vars: Vec::new(),
        }
    }

    /// A name for the template's images: its file stem (`win2012r2-template.json` →
    /// `win2012r2-template`), or its directory's name.
    pub fn stem(&self) -> String {
        let p =
            if self.path.is_dir() { self.path.as_path() } else { Path::new(self.path.file_name().unwrap_or_default()) };
        let name = p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let name = name.trim_end_matches(".json").trim_end_matches(".hcl").trim_end_matches(".pkr");
        image_name(name)
    }
}

/// A valid imgbake image name from anything: lowercase letters, digits, `-`, `_`, starting with a
/// letter, at most 64 characters.
pub fn image_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "image-");
    }
    out.truncate(64);
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_valid() {
        assert_eq!(image_name("win2012r2-template"), "win2012r2-template");
        assert_eq!(image_name("Base AMI (v2)"), "base-ami-v2");
        assert_eq!(image_name("2024-base"), "image-2024-base");
    }

    #[test]
    fn lines_and_comments() {
        let l = Lines::new(Path::new("a.pkr.hcl"), "# one\n// two\nsource \"x\" {}\n");
        let off = l.text().find("source").unwrap();
        assert_eq!(l.loc(off).line, 3);
        assert_eq!(l.comment_above(off).as_deref(), Some("one\ntwo"));
    }
}
