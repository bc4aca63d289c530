//! Rendering a loaded [`Project`] into a typed [`Tree`]: defaults merged into images, strings rendered
//! as templates, values deserialized into the model, then checked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::Tree;
use crate::diag::{Diagnostic, Diagnostics};
use crate::load::{FileRole, Project, parse_shifted, respan, span_of};
use crate::model::*;
use crate::schema::{Publish, Raw, Schemas, Source};
use crate::source::{SourceMap, Span};
use crate::suggest::did_you_mean;
use crate::template::{Engine, Stamp, TemplateFailure};
use crate::units::Duration;

const ROOT_KEYS: &[&str] = &["include", "settings", "variables", "stores", "channels", "audit", "defaults", "images"];
const INCLUDED_KEYS: &[&str] = &["include", "images"];
/// The keys of `[images.NAME]` besides the builders' own tables.
const IMAGE_KEYS: &[&str] = &[
    "builder",
    "description",
    "parent",
    "source",
    "communicator",
    "tags",
    "max_age",
    "keep",
    "publish",
    "sanitize",
    "steps",
];
/// Keys whose strings are templates rendered later, per command (not at load).
const DEFERRED_KEYS: &[&str] = &["execute_command"];

/// The key a value of an `env` table is rendered under (no environment variable is named so).
const ENV_VALUE: &str = "env value";

/// `builder = "aws"` or `builder = ["aws", "qemu"]`.
#[derive(Debug, Clone)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the IgnoredAny fields only list keys handled elsewhere, for "did you mean".
struct ImageRaw {
    builder: Option<Spanned<OneOrMany>>,
    description: Option<String>,
    parent: Option<Spanned<String>>,
    communicator: Option<Communicator>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    max_age: Option<Spanned<Duration>>,
    keep: Option<Spanned<u32>>,
    publish: Option<IgnoredAny>,
    sanitize: Option<bool>,
    steps: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepRaw {
    name: Option<String>,
    only: Option<Spanned<OneOrMany>>,
    except: Option<Spanned<OneOrMany>>,
    timeout: Option<Duration>,
    #[serde(default)]
    retries: u32,
    pause_before: Option<Spanned<Duration>>,
    idempotent: Option<bool>,
    shell: Option<Shell>,
    file: Option<FileStep>,
    powershell: Option<Powershell>,
    reboot: Option<Reboot>,
    windows_update: Option<WindowsUpdate>,
    test: Option<TestStep>,
    local: Option<Local>,
    breakpoint: Option<Breakpoint>,
    ansible: Option<crate::ansible::Ansible>,
    ansible_local: Option<crate::ansible::AnsibleLocal>,
    chef_solo: Option<crate::cm::ChefSolo>,
    puppet_apply: Option<crate::cm::PuppetApply>,
    powershell_dsc: Option<crate::cm::PowershellDsc>,
}

fn spread(v: Option<Spanned<OneOrMany>>) -> Vec<Spanned<String>> {
    match v {
        Some(s) => {
            let span = s.span();
            s.into_inner().0.into_iter().map(|b| Spanned::new(span.clone(), b)).collect()
        }
        None => Vec::new(),
    }
}

/// Turn a serde error into a diagnostic: location, key path, and "did you mean".
pub(crate) fn serde_diag(e: &toml::de::Error, fallback: Span, section: &str) -> Diagnostic {
    let span = e.span().map(Span::new).unwrap_or(fallback);
    let msg = e.message().trim();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let d = Diagnostic::at(span, format!("unknown key `{field}` in {section}"));
        return match did_you_mean(field, expected.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None if !expected.is_empty() => d.help(format!("expected one of: {}", expected.join(", "))),
            None => d,
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let d = Diagnostic::at(span, format!("unknown value `{value}` in {section}"));
        return match did_you_mean(value, expected.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("expected one of: {}", expected.join(", "))),
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return Diagnostic::at(span, format!("missing required key `{field}` in {section}"));
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        return Diagnostic::at(span, format!("wrong type in {section}: found {rest}"));
    }
    Diagnostic::at(span, format!("{msg} (in {section})"))
}

fn typed<'a, T: Deserialize<'a>>(v: Spanned<DeValue<'a>>, section: &str, diags: &mut Vec<Diagnostic>) -> Option<T> {
    let fallback = span_of(&v);
    match T::deserialize(ValueDeserializer::from(v)) {
        Ok(t) => Some(t),
        Err(e) => {
            diags.push(serde_diag(&e, fallback, section));
            None
        }
    }
}

/// Deep merge: tables merge key by key (recursively); anything else in `over` replaces `base`.
fn merge<'a>(base: &Spanned<DeValue<'a>>, over: Spanned<DeValue<'a>>) -> Spanned<DeValue<'a>> {
    let DeValue::Table(bt) = base.get_ref() else { return over };
    if !over.get_ref().is_table() {
        return over;
    }
    let span = over.span();
    let DeValue::Table(ot) = over.into_inner() else { unreachable!("checked above") };
    let mut out = bt.clone();
    for (k, v) in ot {
        let merged = match out.remove(k.get_ref().as_ref()) {
            Some(b) => merge(&b, v),
            None => v,
        };
        out.insert(k, merged);
    }
    Spanned::new(span, DeValue::Table(out))
}

/// If `s` is exactly `{{ var.NAME }}`, the NAME.
fn whole_var(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("var.")?;
    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_').then_some(name)
}

struct Renderer<'p> {
    project: &'p Project,
    engine: Engine,
    known_paths: Vec<String>,
}

impl<'p> Renderer<'p> {
    fn render(
        &self,
        v: &mut Spanned<DeValue<'p>>,
        key: Option<&str>,
        ctx: &serde_json::Value,
        diags: &mut Vec<Diagnostic>,
    ) {
        let span = v.span();
        match v.get_mut() {
            DeValue::String(s) => {
                if key.is_some_and(|k| DEFERRED_KEYS.contains(&k)) || !s.contains("{{") {
                    return;
                }
                // An environment value is a string whatever the variable's type: `{{ var.n }}` of
                // a number gives its digits there.
                if let Some(name) = whole_var(s).filter(|_| key != Some(ENV_VALUE))
                    && let Some(var) = self.project.vars.get(name)
                    && !var.value.is_str()
                    && let Ok(mut nv) = DeValue::parse(&var.toml_text)
                {
                    respan(&mut nv, span);
                    *v = nv;
                    return;
                }
                match self.engine.render(s, ctx) {
                    Ok(out) => *s = Cow::Owned(out),
                    Err(f) => diags.push(self.template_diag(&f, Span::new(span), s)),
                }
            }
            DeValue::Array(a) => a.iter_mut().for_each(|e| self.render(e, key, ctx, diags)),
            DeValue::Table(t) => {
                let env = key == Some("env");
                for (k, val) in t.iter_mut() {
                    self.render(val, Some(if env { ENV_VALUE } else { k.get_ref().as_ref() }), ctx, diags);
                }
            }
            _ => {}
        }
    }

    fn template_diag(&self, f: &TemplateFailure, span: Span, template: &str) -> Diagnostic {
        let sources = &self.project.sources;
        let quote = match sources.snippet(span) {
            Some(t) if t.starts_with("\"\"\"") || t.starts_with("'''") => 3,
            Some(_) => 1,
            None => 0,
        };
        let at = match f.position {
            Some((line, col)) => {
                let line_start: usize = template.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
                let col_bytes: usize = template[line_start.min(template.len())..]
                    .chars()
                    .take(col.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                let start = span.start + quote + line_start + col_bytes;
                Span::new(start.min(span.end)..span.end)
            }
            None => span,
        };
        let mut d = Diagnostic::at(at, f.message.clone());
        if let Some(missing) = &f.missing_variable {
            if let Some(s) = did_you_mean(missing, self.known_paths.iter().map(String::as_str)) {
                d = d.help(format!("did you mean `{s}`?"));
            } else if missing.starts_with("var.") {
                d = d.help("declare it under [variables]");
            }
        }
        d
    }
}

impl Project {
    /// Render the tree with `stamp`'s build values and check it. Reports every problem found.
    pub fn render(self: &Arc<Self>, stamp: &Stamp) -> Result<Tree, Diagnostics> {
        let sources: &SourceMap = &self.sources;
        let mut diags = Vec::new();
        let engine = Engine::new(stamp, self.env.clone());
        let mut known_paths: Vec<String> = self.vars.keys().map(|k| format!("var.{k}")).collect();
        known_paths.extend(
            ["image.name", "parent.name", "parent.artifact", "build.id", "build.timestamp", "tree.name", "tree.dir"]
                .map(String::from),
        );
        let r = Renderer { project: self, engine, known_paths };

        let mut root_table: Option<DeTable<'_>> = None;
        let mut raw_images: IndexMap<String, (Span, Spanned<DeValue<'_>>)> = IndexMap::new();
        for (i, f) in sources.files().iter().enumerate() {
            let role = self.roles[i];
            if role == FileRole::VarFile {
                continue;
            }
            let mut table = parse_shifted(&f.text, f.base(), &mut diags);
            let allowed = if role == FileRole::Root { ROOT_KEYS } else { INCLUDED_KEYS };
            for k in table.keys() {
                let name: &str = k.get_ref().as_ref();
                if !allowed.contains(&name) {
                    let d = if ROOT_KEYS.contains(&name) {
                        Diagnostic::at(span_of(k), format!("`{name}` is only allowed in the root tree file"))
                    } else {
                        let d = Diagnostic::at(span_of(k), format!("unknown top-level key `{name}`"));
                        match did_you_mean(name, allowed.iter().copied()) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => d.help(format!("expected one of: {}", allowed.join(", "))),
                        }
                    };
                    diags.push(d);
                }
            }
            if let Some(images) = table.remove("images") {
                match images.into_inner() {
                    DeValue::Table(t) => {
                        for (k, v) in t {
                            let name = k.get_ref().to_string();
                            let kspan = span_of(&k);
                            if !valid_image_name(&name) {
                                diags.push(Diagnostic::at(kspan, format!("image name `{name}` must be lowercase letters, digits, `-` and `_`, starting with a letter")));
                            }
                            if let Some((first, _)) = raw_images.get(&name) {
                                diags.push(
                                    Diagnostic::at(kspan, format!("image `{name}` is defined twice"))
                                        .related(*first, "first defined here"),
                                );
                                continue;
                            }
                            raw_images.insert(name, (kspan, v));
                        }
                    }
                    other => diags
                        .push(Diagnostic::at(None, format!("`images` must be a table, found {}", other.type_str()))),
                }
            }
            if role == FileRole::Root {
                root_table = Some(table);
            }
        }
        let mut root_table = root_table.unwrap_or_default();
        let tree_dir = sources.files().first().map(|f| f.dir().display().to_string()).unwrap_or_default();
        let raw_name = root_table
            .get("settings")
            .and_then(|s| s.get_ref().get("name"))
            .and_then(|n| n.get_ref().as_str())
            .unwrap_or("")
            .to_string();
        let base_ctx = serde_json::json!({
            "var": self.vars_json(),
            "build": { "id": stamp.build_id, "timestamp": if stamp.masked { "{timestamp}".to_string() } else { stamp.time.timestamp().to_string() } },
            "tree": { "name": raw_name, "dir": tree_dir },
        });

        let settings = match root_table.remove("settings") {
            Some(mut s) => {
                r.render(&mut s, None, &base_ctx, &mut diags);
                if let Some(p) = s.get_ref().get("parallel")
                    && p.get_ref()
                        .as_integer()
                        .is_some_and(|n| n.as_str().trim_start_matches(['+', '-', '0']).is_empty())
                {
                    diags.push(Diagnostic::at(span_of(p), "settings.parallel must be at least 1"));
                }
                typed::<Settings>(s, "[settings]", &mut diags).unwrap_or_default()
            }
            None => Settings::default(),
        };
        let stores = match root_table.remove("stores") {
            Some(mut st) => {
                r.render(&mut st, None, &base_ctx, &mut diags);
                stores_from(st, &mut diags)
            }
            None => IndexMap::new(),
        };
        let channels = match root_table.remove("channels") {
            Some(mut ch) => {
                r.render(&mut ch, None, &base_ctx, &mut diags);
                crate::channels::channels_from(ch, &mut diags)
            }
            None => IndexMap::new(),
        };
        let audit = match root_table.remove("audit") {
            Some(mut a) => {
                r.render(&mut a, None, &base_ctx, &mut diags);
                crate::audit::audit_from(a, &mut diags)
            }
            None => crate::audit::Audit::default(),
        };
        crate::audit::check_channel(&audit, &channels, &mut diags);
        let defaults = match root_table.remove("defaults") {
            Some(d) if d.get_ref().is_table() => {
                if let Some(DeValue::Table(t)) = Some(d.get_ref())
                    && let Some((k, _)) = t.get_key_value("parent")
                {
                    diags.push(Diagnostic::at(span_of(k), "`parent` cannot have a default: set it per image"));
                }
                d
            }
            Some(d) => {
                diags.push(Diagnostic::at(
                    span_of(&d),
                    format!("`defaults` must be a table, found {}", d.get_ref().type_str()),
                ));
                Spanned::new(0..0, DeValue::Table(DeTable::default()))
            }
            None => Spanned::new(0..0, DeValue::Table(DeTable::default())),
        };

        // Layering: [defaults] < the parent's effective value (for INHERITED_KEYS) < the image's own.
        let mut effective: IndexMap<String, Spanned<DeValue<'_>>> = IndexMap::new();
        for name in raw_order(&raw_images) {
            let Some((_, value)) = raw_images.get(&name) else { continue };
            if !value.get_ref().is_table() {
                continue;
            }
            let parent = value.get_ref().get("parent").and_then(|p| p.get_ref().as_str()).map(str::to_string);
            let base = match parent.as_deref().and_then(|p| effective.get(p)) {
                Some(parent_eff) => inherited_part(parent_eff, &defaults, &self.schemas),
                None => defaults.clone(),
            };
            effective.insert(name, merge(&base, value.clone()));
        }
        if raw_images.is_empty()
            && let Some(root) = sources.files().first()
        {
            // An empty file (or one with only settings) would otherwise "validate" and build nothing.
            diags.push(
                Diagnostic::at(Span::new(root.base()..root.base()), "the tree has no images")
                    .help("add an image: [images.NAME] with a `source` (see docs/configuration.md)"),
            );
        }
        let mut images = IndexMap::new();
        for (name, (kspan, value)) in raw_images {
            if !value.get_ref().is_table() {
                diags.push(Diagnostic::at(
                    span_of(&value),
                    format!("image `{name}` must be a table, found {}", value.get_ref().type_str()),
                ));
                continue;
            }
            let mut merged = effective.shift_remove(&name).unwrap_or_else(|| merge(&defaults, value));
            let parent_name =
                merged.get_ref().get("parent").and_then(|p| p.get_ref().as_str()).unwrap_or("").to_string();
            let mut ctx = base_ctx.clone();
            ctx["image"] = serde_json::json!({ "name": name });
            let parent_artifact = match stamp.parent_artifacts.get(&parent_name) {
                Some(a) if !stamp.masked => a.clone(),
                _ => "{parent.artifact}".to_string(),
            };
            ctx["parent"] = serde_json::json!({ "name": parent_name, "artifact": parent_artifact });
            r.render(&mut merged, None, &ctx, &mut diags);
            spanned_checks(&name, &merged, &mut diags);
            if let Some(img) = image_from(&name, kspan, merged, &self.schemas, &mut diags) {
                images.insert(name, img);
            }
        }
        let model = TreeModel { settings, stores, channels, audit, images };
        let mut tree = Tree::new(self.clone(), model);
        tree.masked = stamp.masked;
        crate::validate::check(&mut tree, &mut diags);
        if diags.is_empty() {
            Ok(tree)
        } else {
            Err(Diagnostics::new(diags, self.sources.clone()).redacting(self.secrets()))
        }
    }
}

/// Keys a child takes from its parent, besides every builder's settings table: it runs the parent's
/// machine image, so it has the same OS, login, region and machine shape unless it says otherwise.
pub const INHERITED_KEYS: &[&str] = &["builder", "communicator"];

/// `defaults` with the parent's effective values of the inherited keys laid over it.
fn inherited_part<'a>(
    parent: &Spanned<DeValue<'a>>,
    defaults: &Spanned<DeValue<'a>>,
    schemas: &Schemas,
) -> Spanned<DeValue<'a>> {
    let mut t = DeTable::default();
    if let DeValue::Table(pt) = parent.get_ref() {
        for (k, v) in pt {
            let key: &str = k.get_ref().as_ref();
            if INHERITED_KEYS.contains(&key) {
                t.insert(k.clone(), v.clone());
            } else if let Some(schema) = schemas.get(key) {
                // The builder's table, without the keys that stay with the parent.
                let v = match v.get_ref() {
                    DeValue::Table(bt) => {
                        let mut kept = DeTable::default();
                        for (bk, bv) in bt {
                            if !schema.own_keys().contains(&bk.get_ref().as_ref()) {
                                kept.insert(bk.clone(), bv.clone());
                            }
                        }
                        Spanned::new(v.span(), DeValue::Table(kept))
                    }
                    _ => v.clone(),
                };
                t.insert(k.clone(), v);
            }
        }
    }
    merge(defaults, Spanned::new(defaults.span(), DeValue::Table(t)))
}

/// Image names with parents first, by the raw `parent` strings (unknown parents and cycles are
/// reported later; here they just end the walk).
fn raw_order(images: &IndexMap<String, (Span, Spanned<DeValue<'_>>)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut placed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for start in images.keys() {
        if placed.contains(start) {
            continue;
        }
        let mut chain = vec![start.clone()];
        let mut cur = start.clone();
        while let Some(p) =
            images.get(&cur).and_then(|(_, v)| v.get_ref().get("parent")).and_then(|p| p.get_ref().as_str())
        {
            // A placed parent has its own parents placed already: the walk can stop there.
            if !images.contains_key(p) || placed.contains(p) || chain.iter().any(|c| c == p) {
                break;
            }
            chain.push(p.to_string());
            cur = p.to_string();
        }
        for n in chain.into_iter().rev() {
            if placed.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    out
}

fn valid_image_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
        && n.len() <= 64
}

/// Checks that need the span of a key the typed model does not keep: reserved tag names and the
/// communicator's `execute_command` template.
fn spanned_checks(name: &str, merged: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) {
    if let Some(DeValue::Table(tags)) = merged.get_ref().get("tags").map(|t| t.get_ref()) {
        for k in tags.keys().filter(|k| k.get_ref().starts_with("imgbake:")) {
            diags.push(Diagnostic::at(
                span_of(k),
                format!(
                    "tag `{}` on image `{name}`: the `imgbake:` prefix is reserved for imgbake's own tags",
                    k.get_ref()
                ),
            ));
        }
    }
    let exec = merged.get_ref().get("communicator").and_then(|c| c.get_ref().get("execute_command"));
    if let Some(e) = exec
        && let Some(t) = e.get_ref().as_str()
        && let Err(f) = crate::template::check_execute_command(t)
    {
        diags.push(
            Diagnostic::at(span_of(e), format!("communicator.execute_command: {}", f.message))
                .help("execute_command may use {{command}}, {{vars}}, {{workdir}}, {{encoded}} and {{quote ...}}"),
        );
    }
}

fn image_from<'a>(
    name: &str,
    kspan: Span,
    merged: Spanned<DeValue<'a>>,
    schemas: &Schemas,
    diags: &mut Vec<Diagnostic>,
) -> Option<Image> {
    let span = merged.span();
    let DeValue::Table(mut t) = merged.into_inner() else { return None };
    let section = format!("images.{name}");
    let before = diags.len();
    let steps_v = t.remove_entry("steps");
    let source_v = t.remove("source");
    let publish_v = t.remove("publish");
    let settings_v: Vec<_> = schemas.iter().filter_map(|s| t.remove(s.name()).map(|v| (s.clone(), v))).collect();
    for planned in schemas.planned_names() {
        if let Some((k, _)) = t.remove_entry(planned) {
            diags.push(Diagnostic::at(
                span_of(&k),
                format!("the `{planned}` builder is not available in this version of imgbake (it is on the roadmap)"),
            ));
        }
    }
    // Unknown keys, all at once, suggesting the builders' tables too (serde would stop at the first).
    let unknown: Vec<_> = t.keys().filter(|k| !IMAGE_KEYS.contains(&k.get_ref().as_ref())).cloned().collect();
    for k in unknown {
        let key: &str = k.get_ref().as_ref();
        let d = Diagnostic::at(span_of(&k), format!("unknown key `{key}` in {section}"));
        let known = IMAGE_KEYS.iter().copied().chain(schemas.names()).chain(schemas.planned_names());
        diags.push(match did_you_mean(key, known) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!(
                "expected one of: {}, or a builder's table ({})",
                IMAGE_KEYS.join(", "),
                schemas.listed()
            )),
        });
        t.remove(key);
    }
    let raw: Option<ImageRaw> = typed(Spanned::new(span.clone(), DeValue::Table(t)), &section, diags);
    let source = source_v.and_then(|v| source_from(name, v, schemas, diags));
    let publish = publish_v.and_then(|v| publish_from(name, v, schemas, diags));

    let mut steps = Vec::new();
    if let Some((sk, sv)) = steps_v {
        match sv.into_inner() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let section = format!("images.{name}.steps[{}]", i + 1);
                    let sspan = span_of(item);
                    if let Some(raw) = typed::<StepRaw>(item.clone(), &section, diags)
                        && let Some(step) = step_from(raw, sspan, &section, diags)
                    {
                        steps.push(step);
                    }
                }
            }
            other => diags.push(Diagnostic::at(
                span_of(&sk),
                format!(
                    "`steps` of image `{name}` must be a list ([[images.{name}.steps]]), found {}",
                    other.type_str()
                ),
            )),
        }
    }
    let mut builder_settings = BTreeMap::new();
    for (schema, v) in settings_v {
        let raw = Raw { value: v, section: format!("images.{name}.{}", schema.name()) };
        match schema.parse_settings(raw) {
            Ok(p) => {
                builder_settings.insert(schema.name().to_string(), p);
            }
            Err(d) => diags.push(d),
        }
    }
    let raw = raw?;
    if diags.len() > before {
        return None;
    }
    Some(Image {
        name: name.to_string(),
        builders: spread(raw.builder),
        description: raw.description,
        parent: raw.parent,
        source,
        communicator: raw.communicator.unwrap_or_default(),
        steps,
        tags: raw.tags,
        max_age: raw.max_age,
        keep: raw.keep,
        publish,
        builder_settings,
        imports: BTreeMap::new(),
        sanitize: raw.sanitize,
        span: kspan,
    })
}

/// `source`: each key must be one a registered builder reads; every builder parses its own keys.
fn source_from(
    name: &str,
    v: Spanned<DeValue<'_>>,
    schemas: &Schemas,
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<Source>> {
    let span = v.span();
    let section = format!("images.{name}.source");
    let t = match v.into_inner() {
        DeValue::Table(t) => t,
        other => {
            diags.push(Diagnostic::at(
                Span::new(span),
                format!("wrong type in images.{name}: `source` must be a table, found {}", other.type_str()),
            ));
            return None;
        }
    };
    let declared: Vec<&str> = schemas.iter().flat_map(|s| s.source_keys().iter().copied()).collect();
    let mut src = Source::default();
    let mut ok = true;
    for k in t.keys() {
        let key: &str = k.get_ref().as_ref();
        src.keys.push((key.to_string(), span_of(k)));
        if !declared.contains(&key) {
            ok = false;
            let d = Diagnostic::at(span_of(k), format!("unknown key `{key}` in {section}"));
            diags.push(match did_you_mean(key, declared.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if declared.is_empty() => {
                    d.help(format!("no builder reads source keys; builders: {}", schemas.listed()))
                }
                None => d.help(format!("expected one of: {}", declared.join(", "))),
            });
        }
    }
    for schema in schemas.iter() {
        let mut own = DeTable::default();
        for (k, v) in t.iter().filter(|(k, _)| schema.source_keys().contains(&k.get_ref().as_ref())) {
            own.insert(k.clone(), v.clone());
        }
        let raw = Raw { value: Spanned::new(span.clone(), DeValue::Table(own)), section: section.clone() };
        match schema.parse_source(raw) {
            Ok(p) => {
                src.parsed.insert(schema.name().to_string(), p);
            }
            Err(d) => {
                ok = false;
                diags.push(d);
            }
        }
    }
    ok.then(|| Spanned::new(span, src))
}

/// `[stores.NAME]`, each a [`Store`] (its keys are checked in validate).
fn stores_from(v: Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> IndexMap<String, Store> {
    let mut out = IndexMap::new();
    let DeValue::Table(t) = v.get_ref() else {
        diags.push(Diagnostic::at(
            span_of(&v),
            format!("`stores` must be a table of stores ([stores.NAME]), found {}", v.get_ref().type_str()),
        ));
        return out;
    };
    for (k, sv) in t {
        let name = k.get_ref().to_string();
        if !valid_image_name(&name) {
            diags.push(Diagnostic::at(
                span_of(k),
                format!("store name `{name}` must be lowercase letters, digits, `-` and `_`, starting with a letter"),
            ));
        }
        if let Some(mut store) = typed::<Store>(sv.clone(), &format!("stores.{name}"), diags) {
            store.name = name.clone();
            store.span = span_of(k);
            out.insert(name, store);
        }
    }
    out
}

/// `publish`: `store` is the tree's; every other key must be one a registered builder claims, and
/// each claiming builder parses its own keys.
fn publish_from(
    name: &str,
    v: Spanned<DeValue<'_>>,
    schemas: &Schemas,
    diags: &mut Vec<Diagnostic>,
) -> Option<Publish> {
    let span = v.span();
    let section = format!("images.{name}.publish");
    let DeValue::Table(t) = v.into_inner() else {
        diags.push(Diagnostic::at(Span::new(span), format!("wrong type in images.{name}: `publish` must be a table")));
        return None;
    };
    let mut declared: Vec<&str> = vec!["store"];
    declared.extend(schemas.iter().flat_map(|s| s.publish_keys().iter().copied()).filter(|k| *k != "store"));
    let mut out = Publish { span: Span::new(span.clone()), ..Default::default() };
    let mut ok = true;
    for (k, val) in &t {
        let key: &str = k.get_ref().as_ref();
        out.keys.push((key.to_string(), span_of(k)));
        if key == "store" {
            match val.get_ref().as_str() {
                Some(st) => out.store = Some(Spanned::new(val.span(), st.to_string())),
                None => {
                    ok = false;
                    diags.push(Diagnostic::at(
                        span_of(val),
                        format!("{section}.store must be a store's name (a string)"),
                    ));
                }
            }
        } else if !declared.contains(&key) {
            ok = false;
            let d = Diagnostic::at(span_of(k), format!("unknown key `{key}` in {section}"));
            diags.push(match did_you_mean(key, declared.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("expected one of: {}", declared.join(", "))),
            });
        }
    }
    for schema in schemas.iter() {
        let mut own = DeTable::default();
        for (k, v) in t.iter().filter(|(k, _)| {
            let key: &str = k.get_ref().as_ref();
            key != "store" && schema.publish_keys().contains(&key)
        }) {
            own.insert(k.clone(), v.clone());
        }
        if own.is_empty() {
            continue;
        }
        let raw = Raw { value: Spanned::new(span.clone(), DeValue::Table(own)), section: section.clone() };
        match schema.parse_publish(raw) {
            Ok(p) => {
                out.parsed.insert(schema.name().to_string(), p);
            }
            Err(d) => {
                ok = false;
                diags.push(d);
            }
        }
    }
    ok.then_some(out)
}

fn step_from(raw: StepRaw, span: Span, section: &str, diags: &mut Vec<Diagnostic>) -> Option<Step> {
    let mut kinds = Vec::new();
    if let Some(k) = raw.shell {
        kinds.push(StepKind::Shell(k))
    }
    if let Some(k) = raw.file {
        kinds.push(StepKind::File(k))
    }
    if let Some(k) = raw.powershell {
        kinds.push(StepKind::Powershell(k))
    }
    if let Some(k) = raw.reboot {
        kinds.push(StepKind::Reboot(k))
    }
    if let Some(k) = raw.windows_update {
        kinds.push(StepKind::WindowsUpdate(k))
    }
    if let Some(k) = raw.test {
        kinds.push(StepKind::Test(k))
    }
    if let Some(k) = raw.local {
        kinds.push(StepKind::Local(k))
    }
    if let Some(k) = raw.breakpoint {
        kinds.push(StepKind::Breakpoint(k))
    }
    if let Some(k) = raw.ansible {
        kinds.push(StepKind::Ansible(k))
    }
    if let Some(k) = raw.ansible_local {
        kinds.push(StepKind::AnsibleLocal(k))
    }
    if let Some(k) = raw.chef_solo {
        kinds.push(StepKind::ChefSolo(k))
    }
    if let Some(k) = raw.puppet_apply {
        kinds.push(StepKind::PuppetApply(k))
    }
    if let Some(k) = raw.powershell_dsc {
        kinds.push(StepKind::PowershellDsc(k))
    }
    if kinds.len() != 1 {
        let msg = if kinds.is_empty() {
            format!("{section} has no step kind")
        } else {
            let names: Vec<&str> = kinds.iter().map(StepKind::kind).collect();
            format!("{section} has several kinds ({}); a step does one thing", names.join(", "))
        };
        diags.push(Diagnostic::at(span, msg).help(format!("use exactly one of: {}", STEP_KINDS.join(", "))));
        return None;
    }
    Some(Step {
        name: raw.name,
        only: spread(raw.only),
        except: spread(raw.except),
        timeout: raw.timeout,
        retries: raw.retries,
        pause_before: raw.pause_before,
        idempotent: raw.idempotent,
        kind: kinds.pop()?,
        span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_var_pattern() {
        assert_eq!(whole_var("{{ var.regions }}"), Some("regions"));
        assert_eq!(whole_var("{{var.x}}"), Some("x"));
        assert_eq!(whole_var("a-{{ var.x }}"), None);
        assert_eq!(whole_var("{{ lower var.x }}"), None);
    }
}
