//! Reading a tree: the root file, its includes, variable declarations and values.
//!
//! Variable values come from, weakest first: the declaration's `default`, the environment
//! (`IMGBAKE_VAR_name`), `--var-file` files (in order), `--var name=value` (in order).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::VariableDecl;
use crate::source::{SourceMap, Span};
use crate::suggest::did_you_mean;

/// Prefix of environment variables that set tree variables.
pub const ENV_PREFIX: &str = "IMGBAKE_VAR_";

/// How to load a tree.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `--var name=value`, in order (later wins).
    pub vars: Vec<(String, String)>,
    /// `--var-file FILE`, in order (later wins; `--var` beats them all).
    pub var_files: Vec<PathBuf>,
    /// The environment `{{env}}` and `IMGBAKE_VAR_*` read (defaults to the process environment).
    pub env: BTreeMap<String, String>,
    /// Check that the local files the tree names (scripts, files, disks) exist. On by default; off
    /// for what only needs the tree's shape (`imgbake graph` draws a tree before its files exist).
    pub check_files: bool,
    /// The builders `builder = "..."` may name, with their settings (none by default: the library
    /// facade `imgbake` gives the ones it is built with).
    pub schemas: crate::Schemas,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            vars: Vec::new(),
            var_files: Vec::new(),
            env: std::env::vars().collect(),
            check_files: true,
            schemas: crate::Schemas::default(),
        }
    }
}

/// What role a loaded file plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileRole {
    Root,
    Included,
    VarFile,
}

/// A resolved variable.
#[derive(Clone, Debug)]
pub(crate) struct Variable {
    pub value: toml::Value,
    /// The value as TOML text, re-parsed when a whole string is `{{ var.NAME }}` of a non-string value.
    pub toml_text: String,
    pub sensitive: bool,
}

/// A loaded tree before rendering: its files and variable values. Render it with
/// [`Project::render`](crate::Project::render).
#[derive(Debug)]
pub struct Project {
    pub(crate) sources: Arc<SourceMap>,
    pub(crate) roles: Vec<FileRole>,
    pub(crate) vars: IndexMap<String, Variable>,
    pub(crate) env: Arc<BTreeMap<String, String>>,
    pub(crate) schemas: crate::Schemas,
    pub(crate) root: PathBuf,
    pub(crate) check_files: bool,
}

/// Parse one file's text and move its spans into the shared span space. Syntax errors go to `diags`.
pub(crate) fn parse_shifted<'a>(text: &'a str, base: usize, diags: &mut Vec<Diagnostic>) -> DeTable<'a> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in errors {
        let span = e.span().map(|r| Span::new(r.start + base..r.end + base));
        diags.push(Diagnostic::at(span, format!("TOML syntax error: {}", e.message().trim())));
    }
    let mut table = doc.into_inner();
    shift_table(&mut table, base);
    table
}

pub(crate) fn shift_table(t: &mut DeTable<'_>, base: usize) {
    let old = std::mem::take(t);
    for (k, mut v) in old {
        let ks = k.span();
        shift(&mut v, base);
        t.insert(Spanned::new(ks.start + base..ks.end + base, k.into_inner()), v);
    }
}

pub(crate) fn shift(v: &mut Spanned<DeValue<'_>>, base: usize) {
    let s = v.span();
    let inner = std::mem::replace(v.get_mut(), DeValue::Boolean(false));
    *v = Spanned::new(s.start + base..s.end + base, inner);
    match v.get_mut() {
        DeValue::Array(a) => a.iter_mut().for_each(|e| shift(e, base)),
        DeValue::Table(t) => shift_table(t, base),
        _ => {}
    }
}

/// Give every value inside `v` the span `span` (for values substituted from variables).
pub(crate) fn respan(v: &mut Spanned<DeValue<'_>>, span: std::ops::Range<usize>) {
    let inner = std::mem::replace(v.get_mut(), DeValue::Boolean(false));
    *v = Spanned::new(span.clone(), inner);
    match v.get_mut() {
        DeValue::Array(a) => a.iter_mut().for_each(|e| respan(e, span.clone())),
        DeValue::Table(t) => {
            let old = std::mem::take(t);
            for (k, mut val) in old {
                respan(&mut val, span.clone());
                t.insert(Spanned::new(span.clone(), k.into_inner()), val);
            }
        }
        _ => {}
    }
}

pub(crate) fn span_of<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

fn valid_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl Project {
    /// Read `path` and everything it includes, and resolve variables. Reports every problem found.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Project, Diagnostics> {
        let mut sources = SourceMap::default();
        let mut roles = Vec::new();
        let mut diags = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        // (path, role, span of the include entry that named it, the files that led to it)
        type Queued = (PathBuf, FileRole, Option<Span>, Vec<PathBuf>);
        let mut queue: Vec<Queued> = vec![(path.to_path_buf(), FileRole::Root, None, Vec::new())];
        while let Some((p, role, named_at, chain)) = queue.pop() {
            let key = p.canonicalize().unwrap_or_else(|_| p.clone());
            if let Some(pos) = chain.iter().position(|c| *c == key) {
                let mut shown: Vec<String> = chain[pos..].iter().map(|c| short(c)).collect();
                shown.push(short(&key));
                diags.push(
                    Diagnostic::at(named_at, format!("include cycle: {}", shown.join(" → ")))
                        .help("a tree file cannot include itself, directly or through other files; remove this entry"),
                );
                continue;
            }
            if !seen.insert(key.clone()) {
                continue;
            }
            let text = match read_tree_file(&p, named_at) {
                Ok(t) => t,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let bad_utf8 = std::str::from_utf8(&text).err().map(|e| e.valid_up_to());
            let (_, base) = sources.add(p.clone(), String::from_utf8_lossy(&text).into_owned());
            roles.push(role);
            if let Some(at) = bad_utf8 {
                // The lossy text matches the file up to the first bad byte, so this span is exact.
                diags.push(
                    Diagnostic::at(
                        Span::new(base + at..base + at + 1),
                        "tree file is not valid UTF-8 (first bad byte here)",
                    )
                    .help("save the file as UTF-8"),
                );
                continue;
            }
            let text = &sources.files()[sources.files().len() - 1].text;
            if let Some(d) = too_deep(text, base) {
                diags.push(d);
                continue;
            }
            let table = parse_shifted(text, base, &mut diags);
            let Some(inc) = table.get("include") else { continue };
            let dir = sources.files()[sources.files().len() - 1].dir().to_path_buf();
            let entries: Vec<&Spanned<DeValue>> = match inc.get_ref() {
                DeValue::Array(a) => a.iter().collect(),
                DeValue::String(_) => vec![inc],
                other => {
                    diags.push(Diagnostic::at(
                        span_of(inc),
                        format!("`include` must be a list of file patterns, found {}", other.type_str()),
                    ));
                    continue;
                }
            };
            let mut found = Vec::new();
            for e in entries {
                let Some(pattern) = e.get_ref().as_str() else {
                    diags.push(Diagnostic::at(
                        span_of(e),
                        "`include` entries must be strings (file paths or glob patterns)",
                    ));
                    continue;
                };
                let full = dir.join(pattern);
                let mut matched: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
                    Ok(paths) => paths.filter_map(Result::ok).collect(),
                    Err(err) => {
                        diags.push(Diagnostic::at(span_of(e), format!("bad include pattern `{pattern}`: {err}")));
                        continue;
                    }
                };
                matched.sort();
                if matched.is_empty() {
                    diags.push(
                        Diagnostic::at(span_of(e), format!("include `{pattern}` matches no file"))
                            .help(format!("paths are relative to {}", dir.display())),
                    );
                }
                let mut chain = chain.clone();
                chain.push(key.clone());
                found.extend(matched.into_iter().map(|m| (m, FileRole::Included, Some(span_of(e)), chain.clone())));
            }
            // Reverse so that popping keeps the written order.
            queue.extend(found.into_iter().rev());
        }
        if !diags.is_empty() {
            return Err(Diagnostics::new(diags, Arc::new(sources)));
        }

        // Variable declarations (root file only).
        let mut decls: IndexMap<String, (VariableDecl, Span)> = IndexMap::new();
        {
            let root = &sources.files()[0];
            let table = parse_shifted(&root.text, root.base(), &mut Vec::new());
            if let Some(vars) = table.get("variables") {
                match vars.get_ref() {
                    DeValue::Table(t) => {
                        for (k, v) in t {
                            let name = k.get_ref().to_string();
                            let kspan = span_of(k);
                            if !valid_ident(&name) {
                                diags.push(Diagnostic::at(kspan, format!("variable name `{name}` must be letters, digits and _ (not starting with a digit)")));
                                continue;
                            }
                            let decl = match v.get_ref() {
                                DeValue::Table(_) => match <VariableDecl as serde::Deserialize>::deserialize(
                                    toml::de::ValueDeserializer::from(v.clone()),
                                ) {
                                    Ok(d) => d,
                                    Err(e) => {
                                        diags.push(crate::render::serde_diag(
                                            &e,
                                            span_of(v),
                                            &format!("variables.{name}"),
                                        ));
                                        continue;
                                    }
                                },
                                // Shorthand: `region = "eu-west-1"` is a default.
                                _ => match <toml::Value as serde::Deserialize>::deserialize(
                                    toml::de::ValueDeserializer::from(v.clone()),
                                ) {
                                    Ok(val) => VariableDecl { default: Some(val), ..Default::default() },
                                    Err(e) => {
                                        diags.push(Diagnostic::at(span_of(v), e.message().to_string()));
                                        continue;
                                    }
                                },
                            };
                            decls.insert(name, (decl, kspan));
                        }
                    }
                    other => diags.push(Diagnostic::at(
                        span_of(vars),
                        format!("`variables` must be a table, found {}", other.type_str()),
                    )),
                }
            }
        }

        // Values: default < env < var files < --var.
        let mut values: IndexMap<String, (toml::Value, Span)> = IndexMap::new();
        for (name, (decl, span)) in &decls {
            if let Some(d) = &decl.default {
                values.insert(name.clone(), (d.clone(), *span));
            }
            if let Some(v) = opts.env.get(&format!("{ENV_PREFIX}{name}")) {
                match coerce(v, decl.default.as_ref()) {
                    Ok(val) => {
                        values.insert(name.clone(), (val, *span));
                    }
                    Err(msg) => {
                        diags.push(Diagnostic::at(*span, format!("environment variable {ENV_PREFIX}{name}: {msg}")))
                    }
                }
            }
        }
        let names: Vec<&str> = decls.keys().map(String::as_str).collect();
        for vf in &opts.var_files {
            let text = match std::fs::read(vf) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::at(None, format!("cannot read var file {}: {e}", vf.display())));
                    continue;
                }
            };
            let bad_utf8 = std::str::from_utf8(&text).err().map(|e| e.valid_up_to());
            let (_, base) = sources.add(vf.clone(), String::from_utf8_lossy(&text).into_owned());
            roles.push(FileRole::VarFile);
            if let Some(at) = bad_utf8 {
                diags.push(Diagnostic::at(
                    Span::new(base + at..base + at + 1),
                    "var file is not valid UTF-8 (first bad byte here)",
                ));
                continue;
            }
            let text = &sources.files()[sources.files().len() - 1].text;
            if let Some(d) = too_deep(text, base) {
                diags.push(d);
                continue;
            }
            let table = parse_shifted(text, base, &mut diags);
            for (k, v) in table {
                let name = k.get_ref().to_string();
                if !decls.contains_key(&name) {
                    diags.push(undeclared(&name, Some(span_of(&k)), &names));
                    continue;
                }
                let span = span_of(&v);
                match <toml::Value as serde::Deserialize>::deserialize(toml::de::ValueDeserializer::from(v)) {
                    Ok(val) => {
                        values.insert(name, (val, span));
                    }
                    Err(e) => diags.push(Diagnostic::at(span, e.message().to_string())),
                }
            }
        }
        for (name, raw) in &opts.vars {
            let Some((decl, span)) = decls.get(name) else {
                diags.push(undeclared(name, None, &names));
                continue;
            };
            match coerce(raw, decl.default.as_ref()) {
                Ok(val) => {
                    values.insert(name.clone(), (val, *span));
                }
                Err(msg) => diags.push(Diagnostic::at(*span, format!("--var {name}: {msg}"))),
            }
        }
        let mut vars = IndexMap::new();
        for (name, (decl, span)) in &decls {
            match values.shift_remove(name) {
                Some((value, _)) => {
                    let toml_text = toml_inline(&value);
                    vars.insert(name.clone(), Variable { value, toml_text, sensitive: decl.sensitive });
                }
                None => diags.push(
                    Diagnostic::at(*span, format!("variable `{name}` has no value"))
                        .help(format!("pass --var {name}=..., put it in a --var-file, or set {ENV_PREFIX}{name}")),
                ),
            }
        }
        let root = path.to_path_buf();
        let sources = Arc::new(sources);
        if !diags.is_empty() {
            // Whatever was given for a sensitive variable, even a value that was refused, stays hidden.
            let mut secrets = Vec::new();
            for (name, (decl, _)) in decls.iter().filter(|(_, (d, _))| d.sensitive) {
                opts.vars.iter().filter(|(n, _)| n == name).for_each(|(_, v)| secrets.push(v.clone()));
                secrets.extend(opts.env.get(&format!("{ENV_PREFIX}{name}")).cloned());
                if let Some(v) = vars.get(name) {
                    collect_strings(&v.value, &mut secrets);
                }
                if let Some(d) = &decl.default {
                    collect_strings(d, &mut secrets);
                }
            }
            return Err(Diagnostics::new(diags, sources).redacting(secrets));
        }
        Ok(Project {
            sources,
            roles,
            vars,
            env: Arc::new(opts.env.clone()),
            schemas: opts.schemas.clone(),
            root,
            check_files: opts.check_files,
        })
    }

    /// The files of the tree (and var files).
    pub fn sources(&self) -> &Arc<SourceMap> {
        &self.sources
    }

    /// The root tree file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Values of variables marked `sensitive` (to redact from output).
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.vars.values().filter(|v| v.sensitive) {
            collect_strings(&v.value, &mut out);
        }
        out
    }

    /// Variable values as JSON, for templates.
    pub(crate) fn vars_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.vars {
            m.insert(k.clone(), serde_json::to_value(&v.value).unwrap_or(serde_json::Value::Null));
        }
        serde_json::Value::Object(m)
    }
}

/// Deepest nesting of arrays and inline tables a tree file may have. Real trees nest a few levels;
/// the limit keeps a hostile file (a million `[{`) from costing time and memory in the parser.
pub(crate) const MAX_DEPTH: usize = 64;

/// The first place where arrays and inline tables nest deeper than [`MAX_DEPTH`], found in one pass
/// without parsing (strings and comments are skipped).
fn too_deep(text: &str, base: usize) -> Option<Diagnostic> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = b[i..].starts_with(&[q, q, q]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple && b[i..].starts_with(&[q, q, q]) {
                        i += 2;
                        break;
                    }
                    if !triple && (b[i] == q || b[i] == b'\n') {
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(
                        Diagnostic::at(
                            Span::new(base + i..base + i + 1),
                            format!("arrays and inline tables nest deeper than {MAX_DEPTH} levels"),
                        )
                        .help("flatten the value; tree files never need this much nesting"),
                    );
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Read a tree file, refusing what is not a regular file (a directory, a device, a FIFO).
fn read_tree_file(p: &Path, named_at: Option<Span>) -> Result<Vec<u8>, Diagnostic> {
    let cannot = |why: String| Diagnostic::at(named_at, format!("cannot read tree file {}: {why}", p.display()));
    let meta = std::fs::metadata(p).map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    std::fs::read(p).map_err(|e| cannot(e.to_string()))
}

fn short(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

fn collect_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| collect_strings(x, out)),
        other => out.push(other.to_string()),
    }
}

fn undeclared(name: &str, span: Option<Span>, names: &[&str]) -> Diagnostic {
    let d = Diagnostic::at(span, format!("variable `{name}` is not declared in [variables]"));
    match did_you_mean(name, names.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help("declare it under [variables] in the tree file"),
    }
}

/// A value given as text (command line, environment) takes the type of the declared default.
fn coerce(raw: &str, default: Option<&toml::Value>) -> Result<toml::Value, String> {
    match default {
        None | Some(toml::Value::String(_)) => Ok(toml::Value::String(raw.to_string())),
        Some(d) => {
            let parsed: toml::Table = toml::from_str(&format!("v = {raw}"))
                .map_err(|_| format!("`{raw}` is not a valid {} (the type of its default)", d.type_str()))?;
            let v = parsed.get("v").cloned().ok_or_else(|| format!("`{raw}` is not a value"))?;
            if v.type_str() != d.type_str() {
                return Err(format!("expected {} like the default, got {} `{raw}`", d.type_str(), v.type_str()));
            }
            Ok(v)
        }
    }
}

fn toml_inline(v: &toml::Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_follows_the_default() {
        assert_eq!(coerce("7", Some(&toml::Value::Integer(1))).unwrap(), toml::Value::Integer(7));
        assert_eq!(coerce("x", None).unwrap(), toml::Value::String("x".into()));
        assert!(coerce("seven", Some(&toml::Value::Integer(1))).unwrap_err().contains("integer"));
        let arr = coerce(r#"["a", "b"]"#, Some(&toml::Value::Array(vec![]))).unwrap();
        assert_eq!(arr.as_array().unwrap().len(), 2);
    }

    #[test]
    fn shifted_spans_point_into_the_shared_space() {
        let mut diags = Vec::new();
        let t = parse_shifted("a = 'x'\n", 100, &mut diags);
        let v = t.get("a").unwrap();
        assert_eq!(v.span(), 104..107);
        assert!(diags.is_empty());
    }
}
