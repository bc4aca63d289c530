//! Checks on the typed tree that serde cannot express: references, cycles, files, per-builder rules.
//! Everything here is offline: no network call is ever made while validating.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use toml::Spanned;

use crate::Tree;
use crate::diag::Diagnostic;
use crate::load::span_of;
use crate::model::*;
use crate::schema::{Check, Schemas, Source};
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::template::check_execute_command;

pub(crate) fn check(tree: &mut Tree, diags: &mut Vec<Diagnostic>) {
    let names: Vec<String> = tree.model.images.keys().cloned().collect();
    // Parents exist.
    for img in tree.model.images.values() {
        if let Some(p) = &img.parent
            && !tree.model.images.contains_key(p.get_ref())
        {
            let d = Diagnostic::at(span_of(p), format!("image `{}` has unknown parent `{}`", img.name, p.get_ref()));
            diags.push(match did_you_mean(p.get_ref(), names.iter().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("images in this tree: {}", names.join(", "))),
            });
        }
    }
    // Cycles.
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in &names {
        let mut path = vec![start.clone()];
        let mut cur = start.clone();
        while let Some(p) = tree.model.images.get(&cur).and_then(|i| i.parent.as_ref()).map(|p| p.get_ref().clone()) {
            if !tree.model.images.contains_key(&p) {
                break;
            }
            if let Some(pos) = path.iter().position(|n| *n == p) {
                let cycle: Vec<String> = path[pos..].to_vec();
                let key: String = {
                    let mut c = cycle.clone();
                    c.sort();
                    c.join(",")
                };
                if reported.insert(key) {
                    let mut shown = cycle.clone();
                    shown.push(p.clone());
                    let first = &tree.model.images[&cycle[0]];
                    let span = first.parent.as_ref().map(span_of).unwrap_or(first.span);
                    diags.push(
                        Diagnostic::at(
                            span,
                            format!("images form a cycle through their parents: {}", shown.join(" → ")),
                        )
                        .help("an image cannot be built from itself; remove one of these `parent` keys"),
                    );
                }
                break;
            }
            path.push(p.clone());
            cur = p;
        }
    }
    // A cycle makes every later check meaningless; an unknown parent does not: keep going so one run
    // reports everything.
    if !reported.is_empty() {
        return;
    }
    // Builders: inherited from the parent when not set.
    let schemas = tree.schemas().clone();
    let order: Vec<String> = tree.order().into_iter().map(String::from).collect();
    for name in &order {
        let parent_builders = tree.model.images[name]
            .parent
            .as_ref()
            .and_then(|p| tree.model.images.get(p.get_ref()))
            .map(|p| p.builders.clone());
        let img = &mut tree.model.images[name];
        if img.builders.is_empty() {
            match parent_builders {
                Some(b) => img.builders = b,
                None => diags.push(Diagnostic::at(img.span, format!("image `{name}` has no `builder`")).help(format!(
                    "set `builder = \"NAME\"` on the image or under [defaults] (builders: {})",
                    schemas.listed()
                ))),
            }
        } else if let Some(pb) = parent_builders {
            let parent = img.parent.as_ref().map(|p| p.get_ref().as_str()).unwrap_or("");
            let disk_maker = pb
                .iter()
                .find(|x| schemas.get(x.get_ref()).is_some_and(|s| s.makes_disks()))
                .map(|x| x.get_ref().clone());
            let mut imports = BTreeMap::new();
            for b in &img.builders {
                let schema = schemas.get(b.get_ref());
                if schema.is_some_and(|s| s.imports_disk(img)) {
                    match &disk_maker {
                        Some(m) => {
                            imports.insert(b.get_ref().clone(), m.clone());
                        }
                        None => diags.push(
                            Diagnostic::at(span_of(b), format!(
                                "image `{name}` imports its parent's disk with `{}`, but its parent `{parent}` builds with {} and none of them makes disk files",
                                b.get_ref(),
                                pb.iter().map(|x| format!("`{}`", x.get_ref())).collect::<Vec<_>>().join(", ")
                            ))
                            .help(format!("builders that make disk files: {}", disk_makers(&schemas))),
                        ),
                    }
                } else if !pb.iter().any(|x| x.get_ref() == b.get_ref()) {
                    let d = Diagnostic::at(
                        span_of(b),
                        format!(
                            "image `{name}` builds with `{}` but its parent `{parent}` does not, so there is no parent artifact to start from",
                            b.get_ref(),
                        ),
                    );
                    diags.push(match (schema.and_then(|s| s.import_hint()), &disk_maker) {
                        (Some(hint), Some(m)) => d.help(format!("`{parent}` builds a disk with `{m}`: {hint}")),
                        _ => d,
                    });
                }
            }
            img.imports = imports;
        }
        // An image made from a disk has no machine to run steps on.
        for (b, from) in &img.imports {
            if let Some((_, step)) = img.steps_for(b).next() {
                diags.push(
                    Diagnostic::at(step.span, format!(
                        "image `{name}` is made with `{b}` from its parent's `{from}` disk, without a machine, so it cannot run steps"
                    ))
                    .help(format!("move the steps to the parent, or limit them to other builders with `except = [\"{b}\"]`")),
                );
            }
        }
    }
    let images: Vec<Image> = tree.model.images.values().cloned().collect();
    for img in &images {
        check_image(tree, img, diags);
    }
    check_tree_id(tree, diags);
    check_stores(tree, diags);
}

/// The builders whose artifacts are disk files, for people.
fn disk_makers(schemas: &Schemas) -> String {
    let names: Vec<String> = schemas.iter().filter(|s| s.makes_disks()).map(|s| format!("`{}`", s.name())).collect();
    if names.is_empty() { "none is registered".into() } else { names.join(", ") }
}

/// A key's name and whether it is given.
type KeyGiven<'a> = (&'a str, bool);

/// Each `[stores.NAME]` has what its type needs, and its credentials are given one way.
fn check_stores(tree: &Tree, diags: &mut Vec<Diagnostic>) {
    for st in tree.model.stores.values() {
        let what = format!("store `{}`", st.name);
        let kind = st.kind.get_ref().as_str();
        let (needs, wrong): (&[KeyGiven], &[KeyGiven]) = match kind {
            "http" => (
                &[("url", st.url.is_some())],
                &[
                    ("bucket", st.bucket.is_some()),
                    ("region", st.region.is_some()),
                    ("endpoint_url", st.endpoint_url.is_some()),
                ],
            ),
            "s3" => (
                &[("bucket", st.bucket.is_some())],
                &[
                    ("url", st.url.is_some()),
                    ("username_env", st.username_env.is_some()),
                    ("password_env", st.password_env.is_some()),
                    ("token_env", st.token_env.is_some()),
                    ("username", st.username.is_some()),
                    ("password", st.password.is_some()),
                    ("token", st.token.is_some()),
                ],
            ),
            other => {
                let d = Diagnostic::at(span_of(&st.kind), format!("unknown type `{other}` of {what}"));
                diags.push(match did_you_mean(other, ["http", "s3"]) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("a store is `http` (Artifactory, a WebDAV server) or `s3`"),
                });
                continue;
            }
        };
        for (key, _) in needs.iter().filter(|(_, given)| !given) {
            diags.push(
                Diagnostic::at(st.span, format!("{what} (type `{kind}`) needs `{key}`"))
                    .help("see docs/stores.md for each type's keys"),
            );
        }
        for (key, _) in wrong.iter().filter(|(_, given)| *given) {
            diags.push(Diagnostic::at(st.span, format!("{what} is of type `{kind}`, which has no `{key}`")).help(
                if kind == "s3" {
                    "s3 stores take credentials from the AWS environment (variables, profile, instance role)"
                } else {
                    "see docs/stores.md for each type's keys"
                },
            ));
        }
        if let Some(u) = &st.url
            && !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://"))
        {
            diags.push(Diagnostic::at(span_of(u), format!("the url of {what} must start with http:// or https://")));
        }
        if let Some(u) = &st.url
            && u.get_ref()
                .split_once("://")
                .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|host| host.contains('@')))
        {
            // The URL is copied into records, catalogs and logs: credentials go in *_env keys.
            diags.push(
                Diagnostic::at(span_of(u), format!("the url of {what} holds credentials (user@host)")).concealed().help(
                    "give them as username_env/password_env (or token_env): the URL is written into catalogs and logs",
                ),
            );
        }
        let basic =
            st.username_env.is_some() || st.password_env.is_some() || st.username.is_some() || st.password.is_some();
        let bearer = st.token_env.is_some() || st.token.is_some();
        if basic && bearer {
            diags.push(Diagnostic::at(
                st.span,
                format!("{what} has both basic (username/password) and bearer (token) credentials; give one"),
            ));
        }
        for (a, b, pair) in [
            (st.username_env.is_some(), st.username.is_some(), "username_env and username"),
            (st.password_env.is_some(), st.password.is_some(), "password_env and password"),
            (st.token_env.is_some(), st.token.is_some(), "token_env and token"),
        ] {
            if a && b {
                diags.push(Diagnostic::at(st.span, format!("{what} has both {pair}; give one")));
            }
        }
        let user = st.username_env.is_some() || st.username.is_some();
        let pass = st.password_env.is_some() || st.password.is_some();
        if user != pass {
            diags.push(Diagnostic::at(
                st.span,
                format!("{what}: basic auth needs a user name and a password (username[_env] and password[_env])"),
            ));
        }
        for v in [&st.username_env, &st.password_env, &st.token_env].into_iter().flatten() {
            let n = v.get_ref();
            if n.is_empty()
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || n.starts_with(|c: char| c.is_ascii_digit())
            {
                diags.push(
                    Diagnostic::at(span_of(v), format!("`{n}` is not an environment variable name"))
                        .help("use letters, digits and `_`, e.g. ARTIFACTORY_TOKEN"),
                );
            }
        }
    }
}

/// `name` must be one of the tree's stores.
pub(crate) fn store_ref(tree: &Tree, name: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) {
    let n = name.get_ref();
    if tree.model.stores.contains_key(n) {
        return;
    }
    let d = Diagnostic::at(span_of(name), format!("{what} names unknown store `{n}`"));
    diags.push(match did_you_mean(n, tree.model.stores.keys().map(String::as_str)) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None if tree.model.stores.is_empty() => {
            d.help("the tree has no stores: add one as [stores.NAME] (docs/stores.md)")
        }
        None => {
            d.help(format!("stores of this tree: {}", tree.model.stores.keys().cloned().collect::<Vec<_>>().join(", ")))
        }
    });
}

/// Every `publish` key must be acted on by a builder the image builds with (else it would silently
/// not publish), and `publish.store` must name a store.
fn check_publish(tree: &Tree, img: &Image, diags: &mut Vec<Diagnostic>) {
    let Some(p) = &img.publish else { return };
    let schemas = tree.schemas();
    for (key, span) in p.keys() {
        let own = img
            .builders
            .iter()
            .any(|b| schemas.get(b.get_ref()).is_some_and(|s| s.publish_keys().contains(&key.as_str())));
        if own {
            continue;
        }
        let others: Vec<&str> =
            schemas.iter().filter(|s| s.publish_keys().contains(&key.as_str())).map(|s| s.name()).collect();
        let builders: Vec<&str> = img.builders.iter().map(|b| b.get_ref().as_str()).collect();
        let d = Diagnostic::at(
            *span,
            format!(
                "publish.{key} has no effect on image `{}`: it builds with {}, which does not publish that way",
                img.name,
                if builders.is_empty() { "no builder".to_string() } else { builders.join(" and ") }
            ),
        );
        diags.push(if others.is_empty() {
            d
        } else {
            d.help(format!("publish.{key} is for images built with {}", others.join(" or ")))
        });
    }
    if let Some(st) = p.store() {
        store_ref(tree, st, &format!("publish.store of image `{}`", img.name), diags);
    }
}

/// Cloud builders find their resources again by the tree id: without one, two trees of the same
/// name in one account would prune each other's images.
fn check_tree_id(tree: &Tree, diags: &mut Vec<Diagnostic>) {
    match &tree.model.settings.id {
        Some(id) if !valid_tree_id(id.get_ref()) => diags.push(
            Diagnostic::at(span_of(id), format!("settings.id `{}` is not a valid tree id", id.get_ref()))
                .help("8 to 64 characters: letters, digits, `-`, `_` and `.` (e.g. a UUID)"),
        ),
        Some(_) => {}
        None => {
            let needs = |b: &Spanned<String>| tree.schemas().get(b.get_ref()).is_some_and(|s| s.needs_tree_id());
            let Some((first, b)) =
                tree.model.images.values().find_map(|i| i.builders.iter().find(|b| needs(b)).map(|b| (i, b)))
            else {
                return;
            };
            diags.push(
                Diagnostic::at(first.span, format!("this tree builds with {} (image `{}`) but has no `settings.id`", b.get_ref(), first.name))
                    .help(format!(
                        "add `id = \"{}\"` under [settings] (a new unique id; keep it once set: `plan`, `prune` and `clean` find this tree's artifacts by it)",
                        uuid::Uuid::new_v4()
                    )),
            );
        }
    }
}

fn valid_tree_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn builder_name_diag(schemas: &Schemas, b: &Spanned<String>, what: &str) -> Option<Diagnostic> {
    let name = b.get_ref().as_str();
    if schemas.get(name).is_some() {
        return None;
    }
    if schemas.is_planned(name) {
        return Some(Diagnostic::at(
            span_of(b),
            format!("{what}: the `{name}` builder is not available in this version of imgbake (it is on the roadmap)"),
        ));
    }
    let d = Diagnostic::at(span_of(b), format!("{what}: unknown builder `{name}`"));
    Some(match did_you_mean(name, schemas.names()) {
        Some(s) => d.help(format!("did you mean `{s}`? (builders: {})", schemas.listed())),
        None => d.help(format!("builders: {}", schemas.listed())),
    })
}

fn exists(tree: &Tree, p: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) {
    local_path(tree, p, what, false, diags)
}

/// A local path an image uses: it must render to something, exist, and be a regular file (or a
/// directory where `dir_ok`); a device or a FIFO would hang or feed garbage into the build.
pub(crate) fn local_path(tree: &Tree, p: &Spanned<String>, what: &str, dir_ok: bool, diags: &mut Vec<Diagnostic>) {
    if p.get_ref().trim().is_empty() {
        diags.push(
            Diagnostic::at(span_of(p), format!("{what} is empty")).help("name a file, relative to the tree file"),
        );
        return;
    }
    if !tree.project.check_files {
        return;
    }
    let path = tree.path(p);
    match std::fs::metadata(&path) {
        Err(_) => diags.push(
            Diagnostic::at(span_of(p), format!("{what} `{}` does not exist", p.get_ref()))
                .help(format!("looked for {} (paths are relative to the file that names them)", path.display())),
        ),
        Ok(m) if m.is_file() || (dir_ok && m.is_dir()) => {}
        Ok(m) => {
            let kind = if m.is_dir() { "a directory" } else { "not a regular file" };
            let want = if dir_ok { "a file or a directory" } else { "a file" };
            diags.push(
                Diagnostic::at(span_of(p), format!("{what} `{}` is {kind}", p.get_ref()))
                    .help(format!("{} must be {want}", path.display())),
            );
        }
    }
}

pub(crate) fn template_check(t: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if let Err(f) = check_execute_command(t.get_ref()) {
        let d = Diagnostic::at(span_of(t), format!("execute_command: {}", f.message));
        diags.push(d.help("execute_command may use {{command}}, {{vars}}, {{workdir}}, {{encoded}} and {{quote ...}}"));
    }
}

fn one_of(span: Span, what: &str, set: &[(&str, bool)], diags: &mut Vec<Diagnostic>) {
    one_of_at(span, None, what, set, diags)
}

/// Like [`one_of`]; a conflict is reported at `conflict` (the second key given) when known.
pub(crate) fn one_of_at(
    span: Span,
    conflict: Option<Span>,
    what: &str,
    set: &[(&str, bool)],
    diags: &mut Vec<Diagnostic>,
) {
    let present: Vec<&str> = set.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect();
    let all: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
    let span = if present.len() > 1 { conflict.unwrap_or(span) } else { span };
    if present.len() != 1 {
        let msg = if present.is_empty() {
            format!("{what} needs one of {}", all.join(", "))
        } else {
            format!("{what} takes only one of {}, found {}", all.join(", "), present.join(" and "))
        };
        diags.push(Diagnostic::at(span, msg));
    }
}

fn check_image(tree: &Tree, img: &Image, diags: &mut Vec<Diagnostic>) {
    let name = &img.name;
    let schemas = tree.schemas().clone();
    for b in &img.builders {
        if let Some(d) = builder_name_diag(&schemas, b, &format!("image `{name}`")) {
            diags.push(d);
        }
    }
    let own: Vec<_> = img.builders.iter().filter_map(|b| schemas.get(b.get_ref())).cloned().collect();
    // An import set for a builder the image does not build with would be silently ignored.
    for schema in schemas.iter().filter(|s| !img.has_builder(s.name()) && s.imports_disk(img)) {
        let b = schema.name();
        let with: Vec<String> = img.builders.iter().map(|x| format!("`{}`", x.get_ref())).collect();
        diags.push(
            Diagnostic::at(
                img.span,
                format!(
                    "image `{name}` sets `{b}.import` but builds with {}, not `{b}`",
                    if with.is_empty() { "nothing".to_string() } else { with.join(", ") }
                ),
            )
            .help(format!("set `builder = \"{b}\"` on the image (it inherits its parent's builders otherwise)")),
        );
    }

    // Source or parent.
    match (&img.parent, &img.source) {
        (Some(p), Some(s)) => diags.push(
            Diagnostic::at(span_of(s), format!("image `{name}` has both a `parent` and a `source`"))
                .related(span_of(p), "parent set here")
                .help("an image with a parent starts from the parent's artifact; remove `source`"),
        ),
        (None, None) => {
            let keys: Vec<String> =
                own.iter().map(|s| format!("{}: {}", s.name(), s.source_keys().join(", "))).collect();
            let keys = if keys.is_empty() { String::new() } else { format!(" ({})", keys.join("; ")) };
            diags.push(
                Diagnostic::at(img.span, format!("image `{name}` has neither `parent` nor `source`"))
                    .help(format!("set `parent = \"<image>\"` to chain it, or a `source`{keys}")),
            )
        }
        (None, Some(s)) => {
            check_source_keys(&schemas, img, s, diags);
            for schema in &own {
                schema.check_source(&mut Check { tree, diags }, img, s);
            }
        }
        (Some(_), None) => {}
    }

    // Communicator.
    let c = &img.communicator;
    if let Some(k) = &c.kind
        && k.get_ref() != "ssh"
    {
        diags.push(
            Diagnostic::at(span_of(k), format!("unknown communicator type `{}`", k.get_ref()))
                .help("only `ssh` is supported (Windows too, through OpenSSH Server)"),
        );
    }
    if let Some(h) = &c.host_key
        && !["pinned", "known_hosts", "insecure"].contains(&h.get_ref().as_str())
    {
        let d = Diagnostic::at(span_of(h), format!("unknown host_key policy `{}`", h.get_ref()));
        diags.push(d.help("one of: pinned, known_hosts, insecure"));
    }
    if let Some(f) = &c.private_key_file {
        exists(tree, f, "private_key_file", diags);
    }
    if let Some(f) = &c.known_hosts_file {
        exists(tree, f, "known_hosts_file", diags);
    }
    if c.username.is_none() {
        diags.push(
            Diagnostic::at(img.span, format!("image `{name}` has no `communicator.username`"))
                .help("set it on the image or under [defaults.communicator], e.g. username = \"admin\""),
        );
    }
    if let Some(b) = &c.bastion {
        if let Some(h) = &b.host_key {
            if !["pinned", "known_hosts", "insecure"].contains(&h.get_ref().as_str()) {
                diags.push(
                    Diagnostic::at(span_of(h), format!("unknown bastion host_key policy `{}`", h.get_ref()))
                        .help("one of: pinned, known_hosts, insecure"),
                );
            } else if h.get_ref() == "pinned" && b.host_public_key.is_none() {
                diags.push(Diagnostic::at(span_of(h), "bastion host_key = \"pinned\" needs `host_public_key`"));
            }
        }
        if let Some(f) = &b.private_key_file {
            exists(tree, f, "bastion private_key_file", diags);
        }
    }
    let os = c.os.unwrap_or_default();

    // Steps.
    for (i, step) in img.steps.iter().enumerate() {
        let where_ = format!("images.{name}.steps[{}]", i + 1);
        for b in step.only.iter().chain(&step.except) {
            if let Some(d) = builder_name_diag(&schemas, b, &where_) {
                diags.push(d);
            } else if !img.has_builder(b.get_ref()) {
                diags.push(Diagnostic::at(
                    span_of(b),
                    format!("{where_} names builder `{}`, which image `{name}` does not build with", b.get_ref()),
                ));
            }
        }
        check_step(tree, &where_, step, os, diags);
    }

    // Artifact settings.
    if let Some(m) = &img.max_age
        && m.get_ref().get().is_zero()
    {
        diags.push(
            Diagnostic::at(span_of(m), "max_age must be longer than 0s (0s would rebuild on every run)")
                .help("leave max_age out to rebuild only when something changed"),
        );
    }
    if let Some(k) = &img.keep
        && *k.get_ref() == 0
    {
        diags.push(Diagnostic::at(span_of(k), "keep must be at least 1 (the newest artifact is always kept)"));
    }
    check_publish(tree, img, diags);
    for schema in schemas.iter() {
        schema.check_all(&mut Check { tree, diags }, img);
    }
    for schema in &own {
        schema.check(&mut Check { tree, diags }, img);
    }
}

/// Every `source` key must be read by a builder the image builds with.
fn check_source_keys(schemas: &Schemas, img: &Image, s: &Spanned<Source>, diags: &mut Vec<Diagnostic>) {
    for schema in schemas.iter().filter(|sc| !img.has_builder(sc.name())) {
        // One message per builder: the first of its keys.
        let read_by_own = |k: &str| {
            img.builders.iter().any(|b| schemas.get(b.get_ref()).is_some_and(|o| o.source_keys().contains(&k)))
        };
        let theirs = |k: &str| schema.source_keys().contains(&k) && !read_by_own(k);
        if let Some((k, _)) = s.get_ref().keys().iter().find(|(k, _)| theirs(k)) {
            diags.push(Diagnostic::at(
                span_of(s),
                format!(
                    "source.{k} is for the {} builder, but image `{}` does not build with it",
                    schema.name(),
                    img.name
                ),
            ));
        }
    }
}

fn check_step(tree: &Tree, w: &str, step: &Step, os: crate::Os, diags: &mut Vec<Diagnostic>) {
    let span = step.span;
    match &step.kind {
        StepKind::Shell(s) => {
            one_of_at(
                span,
                s.scripts.first().or(s.script.as_ref()).map(span_of),
                &format!("{w} (shell)"),
                &[("inline", !s.inline.is_empty()), ("script", s.script.is_some()), ("scripts", !s.scripts.is_empty())],
                diags,
            );
            for f in s.script.iter().chain(&s.scripts) {
                exists(tree, f, "script", diags);
            }
            if let Some(t) = &s.execute_command {
                template_check(t, diags);
            }
            if s.valid_exit_codes.as_ref().is_some_and(Vec::is_empty) {
                diags.push(Diagnostic::at(span, format!("{w}: valid_exit_codes cannot be empty")));
            }
        }
        StepKind::Powershell(p) => {
            if os != crate::Os::Windows {
                diags.push(Diagnostic::at(span, format!("{w}: powershell steps need communicator.os = \"windows\"")));
            }
            one_of_at(
                span,
                p.scripts.first().or(p.script.as_ref()).map(span_of),
                &format!("{w} (powershell)"),
                &[("inline", !p.inline.is_empty()), ("script", p.script.is_some()), ("scripts", !p.scripts.is_empty())],
                diags,
            );
            for f in p.script.iter().chain(&p.scripts) {
                exists(tree, f, "script", diags);
            }
            if let Some(t) = &p.execute_command {
                template_check(t, diags);
            }
        }
        StepKind::WindowsUpdate(_) => {
            if os != crate::Os::Windows {
                diags.push(Diagnostic::at(span, format!("{w}: windows_update needs communicator.os = \"windows\"")));
            }
        }
        StepKind::File(f) => {
            match f.direction {
                Direction::Upload => {
                    one_of(
                        span,
                        &format!("{w} (file upload)"),
                        &[("source", f.source.is_some()), ("content", f.content.is_some())],
                        diags,
                    );
                    if let Some(s) = &f.source {
                        local_path(tree, s, "file source", true, diags);
                    }
                }
                Direction::Download => {
                    if f.source.is_none() {
                        diags.push(Diagnostic::at(span, format!("{w}: a download needs `source` (the remote path)")));
                    }
                    if f.content.is_some() {
                        diags.push(Diagnostic::at(span, format!("{w}: `content` only works with uploads")));
                    }
                }
            }
            if let Some(m) = &f.mode
                && u32::from_str_radix(m.get_ref(), 8).map_or(true, |v| v > 0o7777)
            {
                diags.push(
                    Diagnostic::at(span_of(m), format!("mode `{}` is not an octal file mode", m.get_ref()))
                        .help("e.g. \"0644\" or \"0755\""),
                );
            }
        }
        StepKind::Test(t) => {
            if let Some(s) = &t.source {
                local_path(tree, s, "test source", true, diags);
            }
            if t.command.get_ref().trim().is_empty() {
                diags.push(Diagnostic::at(span_of(&t.command), format!("{w}: the test command is empty")));
            }
            if let Some(e) = &t.execute_command {
                template_check(e, diags);
            }
        }
        StepKind::Local(l) => {
            if l.command.get_ref().trim().is_empty() {
                diags.push(Diagnostic::at(span_of(&l.command), format!("{w}: the local command is empty")));
            }
        }
        StepKind::Ansible(a) => crate::ansible::check_ansible(tree, w, span, a, os, diags),
        StepKind::AnsibleLocal(a) => crate::ansible::check_ansible_local(tree, w, span, a, os, diags),
        StepKind::Reboot(_) | StepKind::Breakpoint(_) => {}
        StepKind::ChefSolo(c) => crate::cm::check::chef_solo(tree, w, span, c, diags),
        StepKind::PuppetApply(p) => crate::cm::check::puppet_apply(tree, w, span, p, os, diags),
        StepKind::PowershellDsc(d) => crate::cm::check::powershell_dsc(tree, w, span, d, os, diags),
    }
}

/// Parents first; among independent images, file order.
pub(crate) fn topo_order(images: &indexmap::IndexMap<String, Image>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a str,
        images: &'a indexmap::IndexMap<String, Image>,
        state: &mut HashMap<&'a str, u8>,
        out: &mut Vec<&'a str>,
    ) {
        if state.get(n).copied().unwrap_or(0) != 0 {
            return;
        }
        state.insert(n, 1);
        if let Some(p) = images.get(n).and_then(|i| i.parent.as_ref())
            && let Some((k, _)) = images.get_key_value(p.get_ref())
        {
            visit(k, images, state, out);
        }
        state.insert(n, 2);
        out.push(n);
    }
    for k in images.keys() {
        visit(k, images, &mut state, &mut out);
    }
    out
}
