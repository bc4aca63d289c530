//! # imgbake-import
//!
//! `imgbake import packer`: Packer templates — legacy JSON and HCL2 (a directory of `*.pkr.hcl` is
//! one template) — become one `tree.toml`, with a [`Report`] of every key: mapped, changed (carried
//! over but behaving differently: read the note), dropped (not needed, with why) or unmapped (no
//! equivalent yet, with `file:line:col` in the Packer file and what to do instead).
//!
//! Several templates become one tree; chains are found where one template's source AMI filter
//! matches another's AMI name, or given as `chains` (parent template, child template).
//!
//! ```
//! use imgbake_import::{ImportParams, Outcome, import};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("base.json"), r#"{
//!   "variables": { "region": "eu-west-1" },
//!   "builders": [{
//!     "type": "amazon-ebs", "region": "{{user `region`}}", "instance_type": "t3.small",
//!     "source_ami_filter": { "filters": { "name": "debian-12-amd64-*" }, "owners": ["136693071363"], "most_recent": true },
//!     "ssh_username": "admin", "ami_name": "base-{{timestamp}}", "spot_price": "auto"
//!   }],
//!   "provisioners": [{ "type": "shell", "inline": ["sudo apt-get -y upgrade"], "pause_before": "10s" }]
//! }"#).unwrap();
//!
//! let params = ImportParams {
//!     inputs: vec![dir.path().join("base.json")],
//!     output: dir.path().join("tree.toml"),
//!     ..Default::default()
//! };
//! let imported = import(&params).unwrap();
//! assert!(imported.tree.contains("[images.base]"));
//! assert!(imported.tree.contains("ami_name = \"base-{{ timestamp }}\""));
//! // Spot instances have no equivalent yet: named with their place in the file.
//! let unmapped: Vec<_> = imported.report.unmapped().collect();
//! assert_eq!(unmapped.len(), 1);
//! assert_eq!(unmapped[0].key, "amazon-ebs.spot_price");
//! assert_eq!(unmapped[0].loc.line, 6);
//! assert!(imported.report.entries.iter().any(|e| e.outcome == Outcome::Mapped && e.key == "amazon-ebs.region"));
//! ```

mod chain;
mod error;
mod gotmpl;
mod hcl;
mod json;
mod model;
mod report;
mod translate;
mod tree;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

pub use error::Error;
pub use model::Loc;
pub use report::{Entry, Outcome, Report};

use model::{Node, Template};
use translate::Tx;
use tree::{Tree, Var};

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportParams {
    /// Packer templates: `*.json` files, `*.pkr.hcl` files, directories of `*.pkr.hcl` files.
    pub inputs: Vec<PathBuf>,
    /// Var-files (`*.pkrvars.hcl`, `*.json`): their values become the variables' defaults.
    pub var_files: Vec<PathBuf>,
    /// (parent template, child template) pairs: the child is built from the parent's artifact.
    pub chains: Vec<(PathBuf, PathBuf)>,
    /// Where the tree file will be written: paths in it are relative to its directory.
    pub output: PathBuf,
    /// The tree's name (default: the output directory's name).
    pub name: Option<String>,
}

/// The tree file's text and the report.
#[derive(Debug, Clone)]
pub struct Imported {
    pub tree: String,
    pub report: Report,
}

/// Reads the templates and writes the tree (as text: the caller decides where it goes).
pub fn import(params: &ImportParams) -> Result<Imported, Error> {
    if params.inputs.is_empty() {
        return Err(Error::Usage("no Packer template given".into()));
    }
    let templates: Vec<Template> = params.inputs.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    let mut given = Vec::new();
    for f in &params.var_files {
        given.extend(var_file(f)?.into_iter().map(|(k, n)| (k, n, f.clone())));
    }
    let out_dir = params
        .output
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut report = Report::default();
    let mut variables: IndexMap<String, Var> = IndexMap::new();
    let mut images = Vec::new();
    let mut taken = Vec::new();
    for t in &templates {
        // Later var-files win, as in Packer: auto-loaded ones first, then those given.
        let mut values: Vec<(String, Node, PathBuf)> = t.auto_vars.clone();
        values.extend(given.iter().cloned());
        values.reverse();
        variables_of(t, &values, &mut variables, &mut report);
        let defaults = variables
            .iter()
            .filter_map(|(k, v)| v.default.as_ref().and_then(|d| d.as_str()).map(|d| (k.clone(), d.to_string())))
            .collect();
        let mut tx = Tx {
            report: &mut report,
            out_dir: out_dir.clone(),
            template_dir: t.dir.clone(),
            data: t.data.clone(),
            vars: defaults,
            path_vars: Default::default(),
        };
        images.extend(translate::template(t, &mut taken, &mut tx));
        let path_vars = tx.path_vars.take();
        rebase_path_variables(t, path_vars, &out_dir, &mut variables, &mut report);
    }
    inline_template_variables(&mut images, &mut variables, &templates, &mut report);
    chain::link_all(&mut images, &variables, &params.chains, &mut report)?;
    let name = params.name.clone().unwrap_or_else(|| {
        std::path::absolute(&out_dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "imported".into())
    });
    let mut tree = Tree {
        header: vec![
            format!(
                "Imported from Packer by `imgbake import packer` from: {}",
                params.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            "Check it with `imgbake validate`; the import report lists every key and what became of it.".into(),
        ],
        name,
        id: tree_id(),
        variables,
        images: chain::order(images),
        ..Default::default()
    };
    tree.factor_defaults();
    drop_unused_variables(&mut tree, &templates, &mut report);
    dedupe(&mut report);
    // What is missing heads the file, so nobody builds the tree without reading it.
    for e in report.unmapped() {
        tree.header.push(format!("TODO(import): {}: {}: {}", e.loc, e.key, e.note));
    }
    Ok(Imported { tree: tree.render(), report })
}

/// A variable that is a whole path: Packer resolved its default from the template's directory;
/// the tree resolves it from its own.
fn rebase_path_variables(
    t: &Template,
    names: Vec<String>,
    out_dir: &Path,
    variables: &mut IndexMap<String, Var>,
    report: &mut Report,
) {
    for name in names {
        let Some(var) = variables.get_mut(&name) else { continue };
        let Some(toml::Value::String(d)) = &var.default else { continue };
        if d.contains("{{") || d.contains("://") || Path::new(d).is_absolute() || !t.dir.join(d).exists() {
            continue;
        }
        let rebased = translate::rebase(d, &t.dir, out_dir);
        if let Some(v) = t.variables.iter().find(|v| v.name == name) {
            report.push(
                Outcome::Changed,
                &v.loc,
                format!("variable {name}"),
                None,
                format!("its default is a path, now relative to the tree file: `{rebased}`"),
            );
        }
        var.default = Some(toml::Value::String(rebased));
    }
}

fn read(path: &Path) -> Result<Template, Error> {
    let name = path.to_string_lossy();
    if path.is_dir() || name.ends_with(".pkr.hcl") {
        return hcl::read(path);
    }
    if name.ends_with(".pkr.json") {
        return Err(Error::Usage(format!(
            "{name}: HCL2 written as JSON (`.pkr.json`) is not supported; convert it with `packer hcl2_upgrade` or write it as .pkr.hcl"
        )));
    }
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        return json::read(path, &text);
    }
    Err(Error::Usage(format!("{name}: a Packer template is a `.json` file, a `.pkr.hcl` file or a directory of them")))
}

fn var_file(path: &Path) -> Result<Vec<(String, Node)>, Error> {
    if path.to_string_lossy().ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        return json::var_file(path, &text);
    }
    hcl::var_file(path)
}

fn variables_of(t: &Template, given: &[(String, Node, PathBuf)], out: &mut IndexMap<String, Var>, report: &mut Report) {
    for v in &t.variables {
        let from_file = given.iter().find(|(k, _, _)| *k == v.name);
        let default_node = from_file.map(|(_, n, _)| n).or(v.default.as_ref());
        // Mapped first; a later entry for the same key (sensitive, unmapped default, dropped as
        // unused) is its final outcome.
        let to = Some(format!("variables.{}", v.name));
        match from_file {
            Some((_, _, f)) => report.push(
                Outcome::Mapped,
                &v.loc,
                format!("variable {}", v.name),
                to,
                format!("default from {}", f.display()),
            ),
            None => report.push(Outcome::Mapped, &v.loc, format!("variable {}", v.name), to, ""),
        }
        let default = match default_node.map(translate::value) {
            // A sensitive value never goes into the tree (nor into the report): it is passed when
            // imgbake runs.
            Some(_) if v.sensitive => {
                report.push(
                    Outcome::Changed,
                    &v.loc,
                    format!("variable {}", v.name),
                    Some(format!("variables.{}", v.name)),
                    "sensitive: its value stays out of the tree; pass it with --var or IMGBAKE_VAR_NAME",
                );
                None
            }
            Some(Ok(d)) => Some(d),
            Some(Err(why)) => {
                report.push(
                    Outcome::Unmapped,
                    &v.loc,
                    format!("variable {}", v.name),
                    None,
                    format!("its default: {why}; the variable is required instead"),
                );
                None
            }
            None => None,
        };
        let var = Var { default, description: v.description.clone(), sensitive: v.sensitive };
        match out.get(&v.name) {
            Some(prev) if prev.default != var.default => report.push(
                Outcome::Changed,
                &v.loc,
                format!("variable {}", v.name),
                None,
                "another template declares it with another default; the tree has one set of variables, and the first template's default is kept",
            ),
            Some(_) => {}
            None => {
                out.insert(v.name.clone(), var);
            }
        }
    }
}

/// Packer renders templates in variable defaults (`"{{isotime \"2006\"}}"`); imgbake does not
/// render variable values, so such a variable is written out where it is used.
fn inline_template_variables(
    images: &mut [tree::Image],
    variables: &mut IndexMap<String, Var>,
    templates: &[Template],
    report: &mut Report,
) {
    let templated: Vec<(String, String)> = variables
        .iter()
        .filter_map(|(k, v)| {
            v.default.as_ref().and_then(|d| d.as_str()).filter(|d| d.contains("{{")).map(|d| (k.clone(), d.to_string()))
        })
        .collect();
    for (name, text) in templated {
        let pattern = format!("{{{{ var.{name} }}}}");
        for img in images.iter_mut() {
            img.map_strings(&mut |s: &mut String| {
                if s.contains(&pattern) {
                    *s = s.replace(&pattern, &text);
                }
            });
        }
        variables.shift_remove(&name);
        if let Some(v) = templates.iter().flat_map(|t| &t.variables).find(|v| v.name == name) {
            report.push(
                Outcome::Changed,
                &v.loc,
                format!("variable {name}"),
                None,
                format!("its default `{text}` is a template: imgbake does not render variable values, so it is written where the variable was used (and can no longer be set with --var)"),
            );
        }
    }
}

/// Variables nothing in the tree refers to (they fed dropped keys, or a chain replaced them).
fn drop_unused_variables(tree: &mut Tree, templates: &[Template], report: &mut Report) {
    let text = {
        let mut t = tree.clone();
        t.variables.clear();
        t.render()
    };
    let used = |name: &str| {
        let pat = format!("var.{name}");
        text.match_indices(&pat)
            .any(|(i, _)| !text[i + pat.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
    };
    let unused: Vec<String> = tree.variables.keys().filter(|k| !used(k)).cloned().collect();
    for name in unused {
        tree.variables.shift_remove(&name);
        if let Some(v) = templates.iter().flat_map(|t| &t.variables).find(|v| v.name == name) {
            report.push(
                Outcome::Dropped,
                &v.loc,
                format!("variable {name}"),
                None,
                "nothing imported uses it (it fed keys that were dropped, or a chain replaced it)",
            );
        }
    }
}

/// One line per key: a key reported again (a provisioner shared by images split per source, a
/// variable first mapped then dropped as unused) keeps its last, final outcome.
fn dedupe(report: &mut Report) {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Entry> =
        report.entries.drain(..).rev().filter(|e| seen.insert((e.loc.clone(), e.key.clone()))).collect();
    kept.reverse();
    report.entries = kept;
}

/// A fresh tree id: a UUID, as `imgbake validate` suggests for a tree without one.
fn tree_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
