//! Packer's model in imgbake's: a build's sources become an image (one per source when two map
//! to the same imgbake builder), provisioners become steps, post-processors publish settings.
//! Every key passes through exactly one handler, which reports what became of it.

mod ansible;
mod aws;
mod cm;
mod comm;
mod local;
mod post;
mod steps;

use std::path::{Component, Path, PathBuf};

use toml::Value as T;

use crate::model::{Body, Build, Loc, Node, Source, Template, Value};
use crate::report::{Outcome, Report};
use crate::tree::{Image, Table};

pub(crate) use crate::model::take;
pub(crate) use comm::Os;

/// What one translation needs: where the tree goes (paths are written relative to it) and the
/// report being written.
pub(crate) struct Tx<'a> {
    pub report: &'a mut Report,
    pub out_dir: PathBuf,
    pub template_dir: PathBuf,
    /// The template's data sources (`data "amazon-ami"` feeds `source_ami`).
    pub data: Vec<crate::model::Data>,
    /// Variables' default values, to see what a `{{ var.x }}` path or URL will be.
    pub vars: std::collections::HashMap<String, String>,
    /// Variables used as a whole path: their defaults are paths relative to the template.
    pub path_vars: std::cell::RefCell<Vec<String>>,
}

/// A Packer builder type and the imgbake builder it becomes.
pub(crate) fn builder_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "amazon-ebs" => "aws",
        "qemu" => "qemu",
        "vsphere-clone" => "vsphere",
        "virtualbox-ovf" => "virtualbox",
        "null" => "null",
        _ => return None,
    })
}

/// What to say about a Packer builder imgbake does not have.
fn no_builder(kind: &str) -> String {
    match kind {
        "amazon-ebssurrogate" | "amazon-ebsvolume" | "amazon-chroot" | "amazon-instance" => {
            "imgbake builds AMIs from a running instance only (`aws`); rewrite this as an `amazon-ebs`-style image, or keep Packer for it".into()
        }
        "vsphere-iso" => "imgbake clones templates (`vsphere`): install the OS once (e.g. with Packer's vsphere-iso or by hand), then use that template as `source.template`".into(),
        "virtualbox-iso" => {
            "imgbake starts from installed systems: make a base disk (scripts/make-base-image.sh) or take a box, and use `virtualbox` with `source.box` / `source.disk`".into()
        }
        "virtualbox-vm" => "imgbake does not drive VirtualBox; use `virtualbox` with the VM's exported OVA as `source.ova`".into(),
        "docker" => "imgbake builds machine images, not containers; keep a Dockerfile for this".into(),
        _ => format!("imgbake has no builder for `{kind}`; the images it can build are aws, qemu, vsphere, virtualbox and null"),
    }
}

impl Tx<'_> {
    pub fn report(&mut self, outcome: Outcome, loc: &Loc, key: &str, to: Option<String>, note: impl Into<String>) {
        self.report.push(outcome, loc, key, to, note);
    }

    pub fn mapped(&mut self, loc: &Loc, key: &str, to: &str) {
        self.report.push(Outcome::Mapped, loc, key, Some(to.to_string()), "");
    }

    pub fn dropped(&mut self, loc: &Loc, key: &str, why: impl Into<String>) {
        self.report.push(Outcome::Dropped, loc, key, None, why);
    }

    pub fn unmapped(&mut self, loc: &Loc, key: &str, what_to_do: impl Into<String>) {
        self.report.push(Outcome::Unmapped, loc, key, None, what_to_do);
    }

    /// Puts `node` at `table[to_key]`, reporting `key` as mapped to `to`, or unmapped with why.
    pub fn put(&mut self, table: &mut Table, node: &Node, key: &str, to_key: &str, to: &str) -> bool {
        match value(node) {
            Ok(v) => {
                table.insert(to_key.to_string(), v);
                self.mapped(&node.loc, key, to);
                true
            }
            Err(why) => {
                self.unmapped(&node.loc, key, why);
                false
            }
        }
    }

    /// `s` with `{{ var.x }}` replaced by the variable's default (for checks, not for output).
    pub fn render(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.vars {
            out = out.replace(&format!("{{{{ var.{k} }}}}"), v);
        }
        out
    }

    /// A path of the template (relative to its directory) as the tree writes it (relative to the
    /// tree's directory).
    pub fn path(&self, p: &str) -> String {
        if p.contains("{{") {
            if let Some(name) = p.trim().strip_prefix("{{ var.").and_then(|r| r.strip_suffix(" }}")) {
                self.path_vars.borrow_mut().push(name.to_string());
            }
            return p.to_string();
        }
        rebase(p, &self.template_dir, &self.out_dir)
    }
}

/// A value in TOML, or why it cannot be one.
pub(crate) fn value(node: &Node) -> Result<T, String> {
    Ok(match &node.value {
        Value::Str(s) if s.contains("{{ data.") => {
            return Err(format!(
                "`{s}` refers to a data source, which imgbake has only for the source AMI (`source.ami_filter`)"
            ));
        }
        Value::Str(s) => T::String(s.clone()),
        Value::Num(n) => n
            .parse::<i64>()
            .map(T::Integer)
            .or_else(|_| n.parse::<f64>().map(T::Float))
            .map_err(|_| format!("`{n}` is not a number"))?,
        Value::Bool(b) => T::Boolean(*b),
        Value::Null => return Err("null: leave the key out".into()),
        Value::List(l) => T::Array(l.iter().map(value).collect::<Result<_, _>>()?),
        Value::Map(m) => T::Table(m.iter().map(|(k, v)| Ok((k.clone(), value(v)?))).collect::<Result<_, String>>()?),
        Value::Unmapped { text, why } => return Err(format!("`{text}`: {why}")),
    })
}

/// A duration as imgbake writes it: Packer's Go durations (`1h30m`, `90s`, `5m0s`) are humantime.
pub(crate) fn duration(node: &Node) -> Result<T, String> {
    let s = node.scalar().ok_or("a duration is a string like `30m`")?;
    let s = s.trim();
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Ok(T::String(format!("{s}s")));
    }
    // Go writes `5m0s`; humantime reads `5m 0s` and `5m0s` alike.
    Ok(T::String(s.to_string()))
}

/// A size in MiB (Packer's `memory`, `disk_size` numbers) as imgbake writes it.
pub(crate) fn mib(node: &Node) -> Result<T, String> {
    let s = node.scalar().ok_or("a size is a number of MiB")?;
    // A variable holding a number of MiB, as Packer templates pass sizes around.
    if s.starts_with("{{ var.") && s.ends_with(" }}") {
        return Ok(T::String(format!("{s}MiB")));
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(T::String(format!("{n}MiB")));
    }
    let upper = s.to_ascii_uppercase();
    for (suffix, unit) in [("G", "GiB"), ("M", "MiB"), ("T", "TiB")] {
        if let Some(n) = upper.strip_suffix(suffix).and_then(|n| n.parse::<u64>().ok()) {
            return Ok(T::String(format!("{n}{unit}")));
        }
    }
    Err(format!("`{s}` is not a size imgbake reads"))
}

/// A path relative to `from` as a path relative to `to` (absolute when they share only the root).
pub(crate) fn rebase(p: &str, from: &Path, to: &Path) -> String {
    let abs = normalize(&from.join(p));
    relative(&abs, &normalize(to)).to_string_lossy().into_owned()
}

fn normalize(p: &Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn relative(path: &Path, base: &Path) -> PathBuf {
    let (pc, bc): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = pc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    // Nothing in common but the root: an absolute path reads better than `../../..`.
    if common <= 1 {
        return path.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..bc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// The images of one template.
pub(crate) fn template(t: &Template, taken: &mut Vec<String>, tx: &mut Tx) -> Vec<Image> {
    for (loc, key, why) in &t.dropped {
        tx.dropped(loc, key, why.clone());
    }
    let mut images = Vec::new();
    let several_builds = t.builds.len() > 1;
    for build in &t.builds {
        let base = match (&build.name, several_builds) {
            (Some(n), true) => crate::model::image_name(&format!("{}-{n}", t.stem())),
            _ => t.stem(),
        };
        let built = self::build(t, build, &base, taken, tx);
        unused_plugins(build, &built, tx);
        images.extend(built);
    }
    for d in &t.data {
        let key = format!("data.{}.{}", d.kind, d.name);
        if !tx.report.entries.iter().any(|e| e.key == key) {
            let why = "imgbake has data sources only for the source AMI (`amazon-ami`, `amazon-parameterstore` feeding `source_ami`); a value that used this one is reported where it is used";
            tx.dropped(&d.loc, &key, why);
        }
    }
    images
}

fn build(t: &Template, b: &Build, base: &str, taken: &mut Vec<String>, tx: &mut Tx) -> Vec<Image> {
    for (loc, key, why) in &b.dropped {
        tx.dropped(loc, key, why.clone());
    }
    let mut known: Vec<(&Source, &'static str)> = Vec::new();
    for s in &b.sources {
        match builder_of(&s.kind) {
            Some(builder) => known.push((s, builder)),
            None => {
                tx.unmapped(&s.loc, &s.kind, no_builder(&s.kind));
                for (k, n) in &s.body.entries {
                    tx.dropped(&n.loc, &format!("{}.{k}", s.kind), "its builder is not carried over");
                }
            }
        }
    }
    let distinct = {
        let mut names: Vec<_> = known.iter().map(|(_, b)| *b).collect();
        names.sort();
        names.dedup();
        names.len() == known.len()
    };
    // One image for all sources when each is a different imgbake builder (steps pick builders
    // with only/except), else one image per source.
    let groups: Vec<Vec<(&Source, &'static str)>> =
        if distinct { vec![known] } else { known.into_iter().map(|k| vec![k]).collect() };
    let os = comm::os_of(b);
    let mut images = Vec::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let name =
            if distinct { base.to_string() } else { crate::model::image_name(&format!("{base}-{}", group[0].0.name)) };
        let name = unique(name, taken);
        let mut img = Image {
            name: name.clone(),
            template: t.path.clone(),
            source_loc: Some(group[0].0.loc.clone()),
            ..Default::default()
        };
        img.comment = group.iter().find_map(|(s, _)| s.comment.clone()).or_else(|| t.comment.clone());
        img.description.clone_from(&b.description);
        let mut kept = Vec::new();
        for (s, builder) in &group {
            if source_into(s, builder, &os, &mut img, tx) {
                kept.push((*s, *builder));
            }
        }
        if kept.is_empty() {
            continue;
        }
        let group = kept;
        if let Some(why) = &os.because {
            let loc = group[0].0.loc.clone();
            img.communicator.insert("os".into(), T::String("windows".into()));
            tx.report(
                Outcome::Changed,
                &loc,
                &group[0].0.kind,
                Some(format!("images.{name}.communicator.os")),
                format!("a Windows image ({why})"),
            );
        }
        for p in &b.provisioners {
            steps::provisioner(
                p,
                &os,
                &group.iter().map(|(s, b)| (s.name.as_str(), *b)).collect::<Vec<_>>(),
                &mut img,
                tx,
            );
        }
        for seq in &b.post {
            post::sequence(seq, &mut img, tx);
        }
        images.push(img);
    }
    images
}

/// Translates one Packer source into `img` (its builder, source keys, communicator, settings).
/// Without a source imgbake can start from, the builder is left out of the image and what its
/// keys would have become is reported as dropped. Returns whether the builder was kept.
fn source_into(s: &Source, builder: &str, os: &Os, img: &mut Image, tx: &mut Tx) -> bool {
    let mut part = Image { name: img.name.clone(), ..Default::default() };
    let mut report = Report::default();
    let mut stx = Tx {
        report: &mut report,
        out_dir: tx.out_dir.clone(),
        template_dir: tx.template_dir.clone(),
        data: tx.data.clone(),
        vars: tx.vars.clone(),
        path_vars: Default::default(),
    };
    let mut body = s.body.clone();
    comm::communicator(&mut body, builder, &mut part, &s.kind, &mut stx);
    match builder {
        "aws" => aws::source(s, body, os, &mut part, &mut stx),
        _ => local::source(s, body, builder, &mut part, &mut stx),
    }
    tx.path_vars.borrow_mut().extend(stx.path_vars.take());
    if !has_source(builder, &part.source) {
        for mut e in report.entries {
            if matches!(e.outcome, Outcome::Mapped | Outcome::Changed) {
                e.outcome = Outcome::Dropped;
                e.to = None;
                e.note = format!("its builder is left out of image `{}` (no source imgbake can start from)", img.name);
            }
            tx.report.entries.push(e);
        }
        let why = format!(
            "left out of image `{}`: it has no source imgbake can start from (see the unmapped key above)",
            img.name
        );
        tx.report(Outcome::Changed, &s.loc, &format!("{} \"{}\"", s.kind, s.name), None, why);
        return false;
    }
    tx.report.entries.extend(report.entries);
    img.builders.push(builder.to_string());
    img.packer_names.push(s.name.clone());
    img.source.extend(part.source);
    img.tags.extend(part.tags);
    img.settings.extend(part.settings);
    for (k, v) in part.communicator {
        match img.communicator.get(&k) {
            Some(prev) if *prev != v => tx.report(
                Outcome::Changed,
                &s.loc,
                &format!("{}.{k}", s.kind),
                None,
                format!("the image's first source sets communicator.{k} to {prev}; one image has one communicator, so that is kept"),
            ),
            Some(_) => {}
            None => {
                img.communicator.insert(k, v);
            }
        }
    }
    true
}

/// Provisioners and post-processors that run on no image (their sources were left out, or
/// `only`/`except` exclude every kept one): each of their keys is reported as dropped.
fn unused_plugins(b: &Build, images: &[Image], tx: &mut Tx) {
    let kept: Vec<&str> = images.iter().flat_map(|i| i.packer_names.iter().map(String::as_str)).collect();
    let runs = |p: &crate::model::Plugin| {
        kept.iter().any(|n| (p.only.is_empty() || p.only.iter().any(|o| o == n)) && !p.except.iter().any(|e| e == n))
    };
    let plugins =
        b.provisioners.iter().map(|p| (p, "provisioner")).chain(b.post.iter().flatten().map(|p| (p, "post-processor")));
    for (p, what) in plugins.filter(|(p, _)| !runs(p)) {
        let key = format!("{what} {}", p.kind);
        tx.dropped(
            &p.loc,
            &key,
            "it runs on no image imgbake builds (its sources are left out, or `only`/`except` exclude them)",
        );
        for (k, n) in &p.body.entries {
            tx.dropped(&n.loc, &format!("{key}.{k}"), "its provisioner or post-processor runs on no image");
        }
    }
}

/// `name`, or `name-2`, `name-3`... when another image has it (at most 64 characters).
fn unique(name: String, taken: &mut Vec<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    while taken.contains(&candidate) {
        n += 1;
        let suffix = format!("-{n}");
        let stem: String = name.chars().take(64 - suffix.len()).collect();
        candidate = format!("{}{suffix}", stem.trim_end_matches('-'));
    }
    taken.push(candidate.clone());
    candidate
}

/// Whether the image's `source` has a key that `builder` starts from.
fn has_source(builder: &str, source: &Table) -> bool {
    let keys: &[&str] = match builder {
        "aws" => &["ami", "ami_filter", "ssm_parameter"],
        "qemu" => &["disk"],
        "vsphere" => &["template"],
        "virtualbox" => &["box", "ova", "ovf", "disk", "store"],
        "null" => &["host"],
        _ => &[],
    };
    keys.iter().any(|k| source.contains_key(*k))
}

/// Reports every key left in `body` as having no counterpart in this builder.
pub(crate) fn rest(body: Body, kind: &str, tx: &mut Tx) {
    for (k, n) in body.entries {
        tx.unmapped(
            &n.loc,
            &format!("{kind}.{k}"),
            format!(
                "imgbake's builder has no setting for `{k}` yet; see docs/migrating-from-packer.md for the nearest one"
            ),
        );
    }
}
