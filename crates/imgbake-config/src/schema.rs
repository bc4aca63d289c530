//! Builder schemas: what a builder declares about its part of the tree file.
//!
//! imgbake-config knows no builder by name. A builder crate implements [`BuilderSchema`]: its name
//! (`builder = "NAME"`, `[images.X.NAME]`, `[defaults.NAME]`), its typed settings table, the `source`
//! keys it reads, and the checks only it can make. The set of schemas a tree is loaded with
//! ([`Schemas`], in [`LoadOptions`](crate::LoadOptions)) is what `builder = "..."` may name.
//!
//! Settings tables are merged (defaults, then the parent's, then the image's own) and rendered like
//! everything else before the builder sees them; the builder parses its table once into its own type
//! with [`Raw::parse`], and reads it back with [`Image::settings`](crate::Image::settings).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use crate::Tree;
use crate::diag::Diagnostic;
use crate::model::Image;
use crate::source::Span;

/// What a builder declares about its settings and how it checks them.
pub trait BuilderSchema: Send + Sync + 'static {
    /// Its name in the tree file.
    fn name(&self) -> &str;

    /// The `source` keys it reads (e.g. `ami`, `ami_filter`).
    fn source_keys(&self) -> &[&str];

    /// Parse the image's settings table (defaults and the parent's already merged in).
    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic>;

    /// Parse its keys of `source` (a table with only those keys, possibly none).
    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic>;

    /// Check the `source` of a root image that builds with this builder.
    fn check_source(&self, _cx: &mut Check<'_>, _image: &Image, _source: &Spanned<Source>) {}

    /// Check an image that builds with this builder (its settings, and anything else it reads).
    fn check(&self, _cx: &mut Check<'_>, _image: &Image) {}

    /// Check what this builder owns in any image, built with it or not (e.g. a `publish` key only it
    /// can act on).
    fn check_all(&self, _cx: &mut Check<'_>, _image: &Image) {}

    /// The keys of `publish` it acts on (`ssm_parameter`...). `store` is the tree's own key (it names a
    /// `[stores.NAME]`), but a builder that uploads its artifacts to stores claims it too, so an
    /// image whose builders claim none of its `publish` keys is refused instead of silently not
    /// publishing.
    fn publish_keys(&self) -> &[&str] {
        &[]
    }

    /// Parse its keys of `publish` (a table with only those keys, `store` left out), for an image
    /// that gives at least one of them.
    fn parse_publish(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<serde_json::Map<String, serde_json::Value>>()
    }

    /// Settings that change how a build runs, not what it makes: left out of fingerprints.
    fn operational_keys(&self) -> &[&str] {
        &[]
    }

    /// Local files its settings name (user-data...): checked for existence by the builder, and part
    /// of the image's fingerprint.
    fn local_files<'a>(&self, _image: &'a Image) -> Vec<&'a Spanned<String>> {
        Vec::new()
    }

    /// Does a tree with an image of this builder need `settings.id`? (Cloud builders find their
    /// resources again by it.)
    fn needs_tree_id(&self) -> bool {
        false
    }

    /// A short label for a `source` in graphs (`ami ami-0123...`), if it has this builder's keys.
    fn source_label(&self, _source: &Source) -> Option<String> {
        None
    }

    /// Are its artifacts disk image files other builders can import? Such an artifact names the file
    /// under the location key `path` (see `imgbake_core::artifact::DISK_LOCATION`), in any format
    /// `qemu-img` reads (raw, qcow2 with its backing chain...).
    fn makes_disks(&self) -> bool {
        false
    }

    /// Does `image` (built with this builder) start from its parent's disk file, made by another
    /// builder, instead of from the parent's artifact of its own kind? (e.g. `aws = { import =
    /// "ebs-direct" }`: an AMI written from the disk, no build machine.) Such an image has no machine,
    /// so it has no steps for this builder.
    fn imports_disk(&self, _image: &Image) -> bool {
        false
    }

    /// How an image of this builder can start from a disk another builder made, for the error shown
    /// when its parent does not build with it (e.g. "set `aws = { import = \"ebs-direct\" }`...").
    fn import_hint(&self) -> Option<&str> {
        None
    }

    /// Keys of its settings table that belong to the image setting them: a child does not inherit
    /// them from its parent (e.g. aws `import`: the child of an imported AMI builds on a machine).
    fn own_keys(&self) -> &[&str] {
        &[]
    }
}

/// The builders a tree may use, in registration order, and the names of builders on the roadmap
/// (named in errors so users know they are coming).
#[derive(Clone, Default)]
pub struct Schemas {
    list: Vec<Arc<dyn BuilderSchema>>,
    planned: Vec<String>,
}

impl Schemas {
    /// No builders.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `schema` added (replacing one of the same name).
    pub fn with(mut self, schema: Arc<dyn BuilderSchema>) -> Self {
        self.add(schema);
        self
    }

    /// Add `schema` (replacing one of the same name).
    pub fn add(&mut self, schema: Arc<dyn BuilderSchema>) -> &mut Self {
        self.list.retain(|s| s.name() != schema.name());
        self.list.push(schema);
        self
    }

    /// With `names` as builders on the roadmap.
    pub fn planned(mut self, names: &[&str]) -> Self {
        self.planned.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// The schema of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn BuilderSchema>> {
        self.list.iter().find(|s| s.name() == name)
    }

    /// Every schema, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn BuilderSchema>> {
        self.list.iter()
    }

    /// The registered names.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|s| s.name()).collect()
    }

    /// Is `name` on the roadmap (not registered, but planned)?
    pub fn is_planned(&self, name: &str) -> bool {
        self.get(name).is_none() && self.planned.iter().any(|p| p == name)
    }

    /// The planned names.
    pub fn planned_names(&self) -> impl Iterator<Item = &str> {
        self.planned.iter().map(String::as_str)
    }

    /// The registered names for a message: `aws, qemu`, or a note that there are none.
    pub fn listed(&self) -> String {
        if self.list.is_empty() { "none in this build of imgbake".into() } else { self.names().join(", ") }
    }
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("builders", &self.names()).field("planned", &self.planned).finish()
    }
}

/// A raw (merged, rendered) table of the tree file, with spans, for a builder to parse.
pub struct Raw<'a> {
    pub(crate) value: Spanned<DeValue<'a>>,
    pub(crate) section: String,
}

impl Raw<'_> {
    /// Where it is in the file (`images.web.aws`), for messages.
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Deserialize it into `T`: an error becomes a diagnostic at the offending value, with "did you
    /// mean" for unknown keys (use `#[serde(deny_unknown_fields)]`).
    pub fn parse<T>(self) -> Result<Parsed, Diagnostic>
    where
        T: DeserializeOwned + Serialize + Send + Sync + 'static,
    {
        self.into_typed::<T>().map(Parsed::new)
    }

    /// Deserialize it into `T` and give it back as is.
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<T, Diagnostic> {
        let fallback = Span::new(self.value.span());
        T::deserialize(ValueDeserializer::from(self.value))
            .map_err(|e| crate::render::serde_diag(&e, fallback, &self.section))
    }
}

/// A builder's parsed settings (or source): its own type, kept behind `Any`, and its JSON form
/// (what goes into fingerprints).
#[derive(Clone)]
pub struct Parsed {
    value: Arc<dyn Any + Send + Sync>,
    json: serde_json::Value,
}

impl Parsed {
    /// Keep `value`.
    pub fn new<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        // A Serialize impl from serde derive cannot fail on these data types; Null is a safe stand-in.
        let json = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
        Parsed { value: Arc::new(value), json }
    }

    /// The value, if it is a `T`.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }

    /// Its JSON form.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.json.fmt(f)
    }
}

/// Where a chain starts: a table whose keys the builders declare ([`BuilderSchema::source_keys`]),
/// parsed by each builder into its own type.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The keys given, with where each is.
    pub(crate) keys: Vec<(String, Span)>,
    /// Each registered builder's view of it.
    pub(crate) parsed: BTreeMap<String, Parsed>,
}

impl Source {
    /// The keys given, in file order, with where each is.
    pub fn keys(&self) -> &[(String, Span)] {
        &self.keys
    }

    /// Is `key` given?
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// `builder`'s view of it, if it is a `T`.
    pub fn get<T: 'static>(&self, builder: &str) -> Option<&T> {
        self.parsed.get(builder).and_then(Parsed::get)
    }

    /// `builder`'s view of it in JSON form (what an [`Open`] schema keeps, for instance).
    pub fn json(&self, builder: &str) -> Option<&serde_json::Value> {
        self.parsed.get(builder).map(Parsed::json)
    }
}

/// The union of the builders' views: what fingerprints hash (so its JSON form must not change for a
/// given tree; a new builder should skip absent keys when serializing, so it adds nothing to others').
impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all = serde_json::Map::new();
        for p in self.parsed.values() {
            if let serde_json::Value::Object(m) = p.json() {
                all.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all.serialize(s)
    }
}

/// Where an image's newest artifact is announced (`publish`): a table whose keys the builders claim
/// ([`BuilderSchema::publish_keys`]), parsed by each claiming builder into its own type, and the
/// tree's `store` key.
#[derive(Clone, Debug, Default)]
pub struct Publish {
    pub(crate) keys: Vec<(String, Span)>,
    pub(crate) store: Option<Spanned<String>>,
    pub(crate) parsed: BTreeMap<String, Parsed>,
    pub(crate) span: Span,
}

impl Publish {
    /// The keys given, in file order, with where each is.
    pub fn keys(&self) -> &[(String, Span)] {
        &self.keys
    }

    /// Is `key` given?
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// The store (`[stores.NAME]`) the artifact's files go to.
    pub fn store(&self) -> Option<&Spanned<String>> {
        self.store.as_ref()
    }

    /// `builder`'s keys of it, if it gave any and they are a `T`.
    pub fn get<T: 'static>(&self, builder: &str) -> Option<&T> {
        self.parsed.get(builder).and_then(Parsed::get)
    }

    /// Where `publish` is.
    pub fn span(&self) -> Span {
        self.span
    }
}

impl Serialize for Publish {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all = serde_json::Map::new();
        if let Some(st) = &self.store {
            all.insert("store".into(), serde_json::Value::String(st.get_ref().clone()));
        }
        for p in self.parsed.values() {
            if let serde_json::Value::Object(m) = p.json() {
                all.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all.serialize(s)
    }
}

/// What a builder's checks see and report to.
pub struct Check<'a> {
    pub(crate) tree: &'a Tree,
    pub(crate) diags: &'a mut Vec<Diagnostic>,
}

impl Check<'_> {
    /// The tree being checked.
    pub fn tree(&self) -> &Tree {
        self.tree
    }

    /// Rendered with placeholder build values ([`Stamp::masked`](crate::Stamp::masked)): checks of
    /// rendered names are left to the real render.
    pub fn masked(&self) -> bool {
        self.tree.masked
    }

    /// Report a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// `name` must be a store of the tree (`[stores.NAME]`); `what` says where it is used.
    pub fn store(&mut self, name: &Spanned<String>, what: &str) {
        crate::validate::store_ref(self.tree, name, what, self.diags)
    }

    /// A local file the image uses must exist and be a regular file.
    pub fn file(&mut self, p: &Spanned<String>, what: &str) {
        crate::validate::local_path(self.tree, p, what, false, self.diags)
    }

    /// Exactly one of `set` (name, given) must be given; the problem is reported at `span`.
    pub fn one_of(&mut self, span: Span, what: &str, set: &[(&str, bool)]) {
        crate::validate::one_of_at(span, None, what, set, self.diags)
    }
}

/// A schema that accepts any settings table and the `source` keys it is told, and checks nothing:
/// for fake builders in tests, and for trying out a builder before it has a schema of its own.
#[derive(Clone, Debug)]
pub struct Open {
    name: String,
    source_keys: Vec<&'static str>,
    operational: Vec<&'static str>,
    publish: Vec<&'static str>,
    disks: bool,
}

impl Open {
    /// A builder called `name` reading `source_keys`.
    pub fn new(name: &str, source_keys: &[&'static str]) -> Self {
        Open {
            name: name.into(),
            source_keys: source_keys.to_vec(),
            operational: Vec::new(),
            publish: Vec::new(),
            disks: false,
        }
    }

    /// Its artifacts are disk files other builders import (see [`BuilderSchema::makes_disks`]).
    pub fn disks(mut self) -> Self {
        self.disks = true;
        self
    }

    /// With these settings left out of fingerprints.
    pub fn operational(mut self, keys: &[&'static str]) -> Self {
        self.operational = keys.to_vec();
        self
    }

    /// Claiming these keys of `publish` (see [`BuilderSchema::publish_keys`]).
    pub fn publishes(mut self, keys: &[&'static str]) -> Self {
        self.publish = keys.to_vec();
        self
    }

    /// As a schema to register.
    pub fn arc(self) -> Arc<dyn BuilderSchema> {
        Arc::new(self)
    }
}

impl BuilderSchema for Open {
    fn name(&self) -> &str {
        &self.name
    }

    fn source_keys(&self) -> &[&str] {
        &self.source_keys
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<toml::Table>()
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<toml::Table>()
    }

    fn operational_keys(&self) -> &[&str] {
        &self.operational
    }

    fn makes_disks(&self) -> bool {
        self.disks
    }

    fn publish_keys(&self) -> &[&str] {
        &self.publish
    }
}
