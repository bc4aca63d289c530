//! Planning: for every image (and builder), reuse an artifact or build — and why, in words.
//!
//! A plan is a query: each builder lists the tree's artifacts once (batched), each chain root's source
//! is resolved once, and fingerprints are compared. Nothing is created.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use imgbake_config::{Image, Span, Stamp, Tree};
use serde::Serialize;

use crate::artifact::Artifact;
use crate::builder::ResolvedSource;
use crate::error::{BuildError, ErrorKind};
use crate::event::{EventKind, EventSink};
use crate::fingerprint::{Fingerprint, Inputs};
use crate::registry::Registry;

/// What to do with one image for one builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An up-to-date artifact exists: use it.
    Reuse,
    /// Build it.
    Build,
    /// Not selected this run.
    Skip,
}

impl Action {
    /// Its name in events and the plan's JSON (`reuse`, `build`, `skip`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reuse => "reuse",
            Action::Build => "build",
            Action::Skip => "skip",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one image and builder.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The image.
    pub image: String,
    /// The builder.
    pub builder: String,
    /// What to do.
    pub action: Action,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// The fingerprint a build would carry (`None` while the parent still has to be built: it depends
    /// on the parent's new artifact).
    pub fingerprint: Option<String>,
    /// The artifact reused, or the newest existing one (for reference) when building.
    pub artifact: Option<Artifact>,
    /// The resolved source, for the root of a chain.
    pub source: Option<ResolvedSource>,
    /// The parent image.
    pub parent: Option<String>,
}

/// Decisions for a whole tree, parents before children.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// One per image and builder.
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The decision for an image and builder.
    pub fn get(&self, image: &str, builder: &str) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.image == image && d.builder == builder)
    }

    /// How many decisions have this action.
    pub fn count(&self, action: Action) -> usize {
        self.decisions.iter().filter(|d| d.action == action).count()
    }
}

/// What to plan for.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Build the selected images even when up to date.
    pub force: bool,
    /// Only these images (their ancestors are reused; others skipped). Empty: all.
    pub only: Vec<String>,
    /// With `only`: also everything below the selected images.
    pub downstream: bool,
    /// "Now", for `max_age`.
    pub now: DateTime<Utc>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { force: false, only: Vec::new(), downstream: false, now: Utc::now() }
    }
}

fn human_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn config_error(tree: &Tree, e: imgbake_config::Diagnostics) -> BuildError {
    let _ = tree;
    BuildError::new(ErrorKind::Config, e.to_string())
}

/// The inputs of an image for a builder, given its origin.
pub fn inputs_for(masked: &Tree, image: &Image, builder: &str, origin: &str) -> Result<Inputs, BuildError> {
    Inputs::compute(masked, image, builder, origin).map_err(|e| {
        BuildError::new(ErrorKind::Local, format!("cannot read the files of image `{}`", image.name)).caused_by(e)
    })
}

/// Which images a run selects: `only` (and `downstream`), or everything.
pub fn selection(tree: &Tree, opts: &PlanOptions) -> Result<BTreeSet<String>, BuildError> {
    if opts.only.is_empty() {
        return Ok(tree.images().keys().cloned().collect());
    }
    let mut set = BTreeSet::new();
    for name in &opts.only {
        if tree.image(name).is_none() {
            let names: Vec<&str> = tree.images().keys().map(String::as_str).collect();
            let hint = imgbake_config::did_you_mean(name, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(BuildError::new(ErrorKind::Config, format!("--only: no image `{name}` in the tree{hint}")));
        }
        set.insert(name.clone());
        if opts.downstream {
            set.extend(tree.descendants(name).into_iter().map(String::from));
        }
    }
    Ok(set)
}

/// Make a plan. `events` gets one `Planned` event per decision.
pub async fn plan(
    tree: &Tree,
    registry: &Registry,
    opts: &PlanOptions,
    events: &EventSink,
) -> Result<Plan, BuildError> {
    let masked = tree.rerender(&Stamp::masked()).map_err(|e| config_error(tree, e))?;
    let selected = selection(tree, opts)?;
    // Images that must exist for the selected ones: their ancestors.
    let mut needed = selected.clone();
    for s in &selected {
        needed.extend(tree.ancestors(s).into_iter().map(String::from));
    }

    // One listing per builder for the whole tree.
    let needed_images = tree.order().into_iter().filter(|n| needed.contains(*n)).map(|n| &tree.images()[n]);
    let artifacts = registry.artifacts_of(tree, needed_images).await?;

    let mut decisions: Vec<Decision> = Vec::new();
    for name in tree.order() {
        let img = &tree.images()[name];
        let masked_img = masked.image(name).unwrap_or(img);
        for b in &img.builders {
            let kind = b.get_ref().as_str();
            let existing: &[Artifact] =
                artifacts.get(&(name.to_string(), kind.to_string())).map(Vec::as_slice).unwrap_or(&[]);
            let d =
                decide(tree, &masked, img, masked_img, kind, existing, &decisions, registry, opts, &selected, &needed)
                    .await?;
            events.for_image(name).emit(EventKind::Planned { action: d.action, reason: d.reasons.join("; ") });
            decisions.push(d);
        }
    }
    Ok(Plan { decisions })
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    tree: &Tree,
    masked: &Tree,
    img: &Image,
    masked_img: &Image,
    kind: &str,
    existing: &[Artifact],
    done: &[Decision],
    registry: &Registry,
    opts: &PlanOptions,
    selected: &BTreeSet<String>,
    needed: &BTreeSet<String>,
) -> Result<Decision, BuildError> {
    let name = img.name.as_str();
    let parent = img.parent.as_ref().map(|p| p.get_ref().clone());
    let mut d = Decision {
        image: name.to_string(),
        builder: kind.to_string(),
        action: Action::Skip,
        reasons: Vec::new(),
        fingerprint: None,
        artifact: existing.first().cloned(),
        source: None,
        parent: parent.clone(),
    };
    if !needed.contains(name) {
        d.reasons.push("not selected".into());
        return Ok(d);
    }
    let is_selected = selected.contains(name);

    // The origin: the resolved source, or the parent's artifact.
    let origin: Option<(String, String)> = match &parent {
        None => {
            let builder = registry
                .get(kind)
                .ok_or_else(|| BuildError::new(ErrorKind::Config, format!("builder `{kind}` is not available")))?;
            let src = builder.resolve_source(tree, img).await?;
            let shown = src.description.clone();
            let id = src.id.clone();
            d.source = Some(src);
            Some((id, shown))
        }
        Some(p) => {
            let pd = done.iter().find(|x| &x.image == p && x.builder == kind);
            match pd {
                Some(pd) if pd.action == Action::Build => {
                    if !is_selected {
                        // Needed but not selected (`--only base,app` skips `runtime` in between): keep
                        // using what exists rather than rebuilding something the user left out.
                        let Some(a) = existing.first() else {
                            return Err(BuildError::new(
                                ErrorKind::Config,
                                format!(
                                    "image `{name}` is needed by the selected images but has no `{kind}` artifact; build it first, or add it to --only"
                                ),
                            ));
                        };
                        d.action = Action::Reuse;
                        d.artifact = Some(a.clone());
                        d.reasons
                            .push(format!("not selected; parent {p} is rebuilt, but {} keeps using {}", name, a.id));
                        return Ok(d);
                    }
                    d.action = Action::Build;
                    d.reasons.push(format!("parent {p} is rebuilt"));
                    return Ok(d);
                }
                Some(pd) => pd.artifact.as_ref().map(|a| (a.id.clone(), format!("{p} {}", a.id))),
                None => None,
            }
        }
    };
    let Some((origin_id, origin_shown)) = origin else {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!("image `{name}` needs its parent's artifact, but the parent has none for `{kind}`"),
        ));
    };
    let inputs = inputs_for(masked, masked_img, kind, &origin_id)?;
    let fp = inputs.fingerprint();
    d.fingerprint = Some(fp.0.clone());
    let matching = existing.iter().find(|a| fp.matches(&a.fingerprint));

    if !is_selected {
        // An ancestor kept for a selected image: reuse what exists.
        match (matching, existing.first()) {
            (Some(a), _) => {
                d.action = Action::Reuse;
                d.artifact = Some(a.clone());
                d.reasons.push(format!("up to date ({}), needed by the selected images", a.id));
            }
            (None, Some(a)) => {
                d.action = Action::Reuse;
                d.artifact = Some(a.clone());
                let mut why = fp.explain(&a.fingerprint, &inputs);
                if fp.origin_differs(&a.fingerprint) {
                    why.push(format!("origin now {origin_shown}, was {}", a.source));
                }
                d.reasons.push(format!(
                    "not selected; using its newest artifact {} although it is out of date ({})",
                    a.id,
                    why.join(", ")
                ));
            }
            (None, None) => {
                return Err(BuildError::new(
                    ErrorKind::Config,
                    format!("image `{name}` is needed by the selected images but has no `{kind}` artifact; build it first, or add it to --only"),
                )
                .at(Span::new(img.span.start..img.span.end)));
            }
        }
        return Ok(d);
    }

    if opts.force {
        d.action = Action::Build;
        d.reasons.push("forced (--force)".into());
        return Ok(d);
    }
    if let Some(a) = matching {
        let age = a.age(opts.now);
        if let Some(max) = &img.max_age
            && age > max.get_ref().get()
        {
            d.action = Action::Build;
            d.reasons.push(format!("older than max_age {} (built {} ago)", max.get_ref(), human_age(age)));
            return Ok(d);
        }
        d.action = Action::Reuse;
        d.artifact = Some(a.clone());
        d.reasons.push(format!("up to date ({}, built {} ago)", a.id, human_age(age)));
        return Ok(d);
    }
    d.action = Action::Build;
    match existing.first() {
        None => d.reasons.push("no artifact yet".into()),
        Some(newest) => {
            if fp.origin_differs(&newest.fingerprint) {
                match &parent {
                    None => d.reasons.push(format!("source {} → {origin_id} ({origin_shown})", newest.source)),
                    Some(p) => {
                        d.reasons.push(format!("parent {p} has a new artifact ({} → {origin_id})", newest.source))
                    }
                }
            }
            d.reasons.extend(fp.explain(&newest.fingerprint, &inputs));
            if d.reasons.is_empty() {
                d.reasons.push("inputs changed".into());
            }
        }
    }
    Ok(d)
}

/// The fingerprint of an image whose parent was just built (its origin is the new artifact).
pub fn fingerprint_for(tree: &Tree, image: &str, builder: &str, origin: &str) -> Result<Fingerprint, BuildError> {
    let masked = tree.rerender(&Stamp::masked()).map_err(|e| config_error(tree, e))?;
    let img = masked
        .image(image)
        .ok_or_else(|| BuildError::new(ErrorKind::Config, format!("no image `{image}` in the tree")))?;
    Ok(inputs_for(&masked, img, builder, origin)?.fingerprint())
}
