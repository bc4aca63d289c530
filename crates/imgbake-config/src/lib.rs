//! # imgbake-config: the tree file
//!
//! A tree file (`tree.toml`) describes a tree of machine images: where each chain starts, which image
//! is built from which, what runs on the build machine, and where the results go. This crate loads it,
//! renders its templates, checks it, and gives back a typed [`Tree`] in which every value still knows
//! its file, line and column — so every later error can point at the value that caused it.
//!
//! Nothing here touches the network: `imgbake validate` is this crate. It knows no builder by name:
//! each builder declares its settings table and `source` keys, and checks them, through a
//! [`BuilderSchema`] (see [`schema`]); a tree is loaded with the [`Schemas`] of the builders at hand
//! (the `imgbake` facade gives the ones it is built with).
//!
//! ```
//! use imgbake_config::schema::Open;
//! use imgbake_config::{LoadOptions, Schemas, Tree};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("patch.sh"), "apt-get -y upgrade\n").unwrap();
//! std::fs::write(dir.path().join("tree.toml"), r#"
//! [variables]
//! zone = "zone-1"
//!
//! [defaults]
//! builder = "cloud"
//! communicator = { username = "admin" }
//! cloud = { zone = "{{ var.zone }}" }
//!
//! [images.base]
//! source = { image = "debian-12" }
//! [[images.base.steps]]
//! shell = { script = "patch.sh" }
//!
//! [images.web]
//! parent = "base"
//! [[images.web.steps]]
//! shell = { inline = ["echo hello > /etc/motd"] }
//! "#).unwrap();
//!
//! // A builder called `cloud` that reads `source.image` and takes any settings (a real builder
//! // parses them into its own type and checks them).
//! let schemas = Schemas::new().with(Open::new("cloud", &["image"]).arc());
//! let opts = LoadOptions { schemas, ..Default::default() };
//! let tree = Tree::load(&dir.path().join("tree.toml"), &opts).unwrap();
//! assert_eq!(tree.order(), vec!["base", "web"]);
//! let web = tree.image("web").unwrap();
//! assert!(web.has_builder("cloud"), "builder comes from [defaults]");
//! let settings = web.settings::<toml::Table>("cloud").unwrap();
//! assert_eq!(settings["zone"].as_str(), Some("zone-1"), "rendered, and inherited from the parent");
//!
//! // A typo is an error with its location and a suggestion:
//! std::fs::write(dir.path().join("bad.toml"), "[images.x]\nbuilder = \"cloud\"\nsourse = {}\n").unwrap();
//! let err = Tree::load(&dir.path().join("bad.toml"), &opts).unwrap_err();
//! assert!(err.to_string().contains("bad.toml:3:1: unknown key `sourse` in images.x (did you mean `source`?)"), "{err}");
//! ```

pub mod ansible;
pub mod audit;
pub mod channels;
mod cm;
mod diag;
pub mod graph;
mod load;
pub mod model;
pub mod os;
mod render;
pub mod schema;
mod source;
mod suggest;
pub mod template;
pub mod units;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
pub use toml::Spanned;

pub use ansible::{Ansible, AnsibleLocal};
pub use cm::{ChefFlavor, ChefSolo, PowershellDsc, PuppetApply};
pub use diag::{Diagnostic, Diagnostics, REDACTED};
pub use load::{ENV_PREFIX, LoadOptions, Project};
pub use model::*;
pub use os::Os;
pub use schema::{BuilderSchema, Check, Parsed, Publish, Raw, Schemas, Source};
pub use source::{Location, SourceFile, SourceMap, Span};
pub use suggest::did_you_mean;
pub use template::Stamp;

/// A loaded, rendered and checked tree.
#[derive(Clone, Debug)]
pub struct Tree {
    project: Arc<Project>,
    pub(crate) model: TreeModel,
    /// Rendered with [`Stamp::masked`]: build values are markers like `{isotime}`, not what the build
    /// will use, so checks of rendered names (AMI names) are left to the real render.
    pub(crate) masked: bool,
}

impl Tree {
    pub(crate) fn new(project: Arc<Project>, model: TreeModel) -> Self {
        Tree { project, model, masked: false }
    }

    /// Load, render (with placeholder build values) and check the tree at `path`.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Tree, Diagnostics> {
        Arc::new(Project::load(path, opts)?).render(&Stamp::placeholder())
    }

    /// Render the same files again with other build values (a real build, or masked for fingerprints).
    pub fn rerender(&self, stamp: &Stamp) -> Result<Tree, Diagnostics> {
        self.project.render(stamp)
    }

    /// The loaded files and variables.
    pub fn project(&self) -> &Arc<Project> {
        &self.project
    }

    /// Tree-wide settings.
    pub fn settings(&self) -> &Settings {
        &self.model.settings
    }

    /// The artifact stores (`[stores.NAME]`), in file order.
    pub fn stores(&self) -> &IndexMap<String, Store> {
        &self.model.stores
    }

    /// One store.
    pub fn store(&self, name: &str) -> Option<&Store> {
        self.model.stores.get(name)
    }

    /// The release channels (`[channels.NAME]`, with the implicit `candidate`), in file order; empty
    /// when the tree declares none.
    pub fn channels(&self) -> &IndexMap<String, channels::Channel> {
        &self.model.channels
    }

    /// One channel.
    pub fn channel(&self, name: &str) -> Option<&channels::Channel> {
        self.model.channels.get(name)
    }

    /// The staleness audit's settings (`[audit]`; all unset when the tree has none).
    pub fn audit(&self) -> &audit::Audit {
        &self.model.audit
    }

    /// The images, in file order.
    pub fn images(&self) -> &IndexMap<String, Image> {
        &self.model.images
    }

    /// One image.
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.model.images.get(name)
    }

    /// The builders this tree was loaded with.
    pub fn schemas(&self) -> &Schemas {
        &self.project.schemas
    }

    /// The files of the tree.
    pub fn sources(&self) -> &Arc<SourceMap> {
        self.project.sources()
    }

    /// `file:line:col` of a span.
    pub fn locate(&self, span: impl Into<Span>) -> String {
        self.sources().describe(span.into())
    }

    /// A path value resolved against the file that names it.
    pub fn path(&self, value: &Spanned<String>) -> PathBuf {
        self.sources().resolve(Span::new(value.span()), value.get_ref())
    }

    /// The directory of the root tree file.
    pub fn root_dir(&self) -> PathBuf {
        self.sources().files().first().map(|f| f.dir().to_path_buf()).unwrap_or_else(|| PathBuf::from("."))
    }

    /// Where the manifest goes.
    pub fn manifest_path(&self) -> PathBuf {
        match &self.model.settings.manifest {
            Some(m) => self.path(m),
            None => self.root_dir().join("imgbake-manifest.json"),
        }
    }

    /// Where local state (cleanup journals) goes.
    pub fn state_dir(&self) -> PathBuf {
        match &self.model.settings.state_dir {
            Some(m) => self.path(m),
            None => self.root_dir().join(".imgbake"),
        }
    }

    /// The tree's name (`settings.name`, else the root file's directory name).
    pub fn name(&self) -> String {
        if let Some(n) = &self.model.settings.name {
            return n.clone();
        }
        let dir = self.root_dir();
        let dir = dir.canonicalize().unwrap_or(dir);
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tree".into())
    }

    /// The tree's unique id (`settings.id`), which scopes what cloud builders find again.
    pub fn id(&self) -> Option<&str> {
        self.model.settings.id.as_ref().map(|i| i.get_ref().as_str())
    }

    /// Image names, parents before children; independent images in file order.
    pub fn order(&self) -> Vec<&str> {
        validate::topo_order(&self.model.images)
    }

    /// Images whose parent is `name`.
    pub fn children(&self, name: &str) -> Vec<&str> {
        self.model
            .images
            .values()
            .filter(|i| i.parent.as_ref().is_some_and(|p| p.get_ref() == name))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Everything below `name` (children, their children...), parents first.
    pub fn descendants(&self, name: &str) -> Vec<&str> {
        // One pass for every parent's children, so a large tree is walked in linear time.
        let mut children: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
        for i in self.model.images.values() {
            if let Some(p) = &i.parent {
                children.entry(p.get_ref().as_str()).or_default().push(i.name.as_str());
            }
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut todo: std::collections::VecDeque<&str> = children.get(name).cloned().unwrap_or_default().into();
        while let Some(n) = todo.pop_front() {
            if !seen.insert(n) {
                continue; // a cycle (reported by validation)
            }
            out.push(n);
            todo.extend(children.get(n).into_iter().flatten().copied());
        }
        out
    }

    /// `name`'s parent, grandparent... up to the root of its chain.
    pub fn ancestors(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut cur = self.image(name);
        while let Some(p) = cur.and_then(|i| i.parent.as_ref()) {
            let Some((k, img)) = self.model.images.get_key_value(p.get_ref()) else { break };
            if out.contains(&k.as_str()) {
                break;
            }
            out.push(k.as_str());
            cur = Some(img);
        }
        out
    }

    /// Values of sensitive variables, to redact from all output.
    pub fn secrets(&self) -> Vec<String> {
        self.project.secrets()
    }

    /// Every local file an image uses (scripts, uploaded files and directories, tests, files its builders'
    /// settings name), resolved.
    /// Its content is part of the image's fingerprint.
    pub fn local_files(&self, image: &Image) -> Vec<PathBuf> {
        self.files_of(image, None)
    }

    /// The local files an image uses when built with `builder` (steps for other builders left out).
    pub fn local_files_for(&self, image: &Image, builder: &str) -> Vec<PathBuf> {
        self.files_of(image, Some(builder))
    }

    fn files_of(&self, image: &Image, builder: Option<&str>) -> Vec<PathBuf> {
        let mut v: Vec<&Spanned<String>> = Vec::new();
        let mut extra: Vec<PathBuf> = Vec::new();
        for s in image.steps.iter().filter(|s| builder.is_none_or(|b| s.runs_on(b))) {
            match &s.kind {
                StepKind::Ansible(a) => extra.extend(ansible::fingerprint_files(
                    self,
                    &a.all_playbooks(),
                    a.playbook_dir.as_ref(),
                    a.galaxy_file.as_ref(),
                )),
                StepKind::AnsibleLocal(a) => extra.extend(ansible::fingerprint_files(
                    self,
                    &a.all_playbooks(),
                    a.playbook_dir.as_ref(),
                    a.galaxy_file.as_ref(),
                )),
                StepKind::Shell(sh) => v.extend(sh.script.iter().chain(&sh.scripts)),
                StepKind::Powershell(p) => v.extend(p.script.iter().chain(&p.scripts)),
                StepKind::File(f) if f.direction == Direction::Upload => v.extend(f.source.iter()),
                StepKind::Test(t) => v.extend(t.source.iter()),
                StepKind::ChefSolo(c) => v.extend(
                    c.cookbook_paths.iter().chain(&c.roles_path).chain(&c.data_bags_path).chain(&c.environments_path),
                ),
                StepKind::PuppetApply(p) => v.extend(
                    std::iter::once(&p.manifest).chain(&p.module_paths).chain(&p.hiera_config).chain(&p.hiera_data),
                ),
                StepKind::PowershellDsc(d) => {
                    v.extend(std::iter::once(&d.configuration).chain(&d.configuration_data).chain(&d.module_paths))
                }
                _ => {}
            }
        }
        for schema in self.schemas().iter().filter(|s| builder.is_none_or(|b| b == s.name())) {
            v.extend(schema.local_files(image));
        }
        v.into_iter().map(|p| self.path(p)).chain(extra).collect()
    }

    /// A diagnostic at a value of this tree, ready to print.
    pub fn error_at(&self, span: Option<Span>, message: impl Into<String>) -> Diagnostics {
        Diagnostics::new(vec![Diagnostic::at(span, message)], self.sources().clone()).redacting(self.secrets())
    }
}
