//! Planning: for every image (and builder), reuse an artifact or build — and why, in words.
//!
//! A plan is a query: each builder lists the tree's artifacts once (batched), each chain root's source
//! is resolved once, and fingerprints are compared. Nothing is created.

use std::collections::{BTreeSet, HashMap};

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

    /// The images to build as CI jobs: one per image (`imgbake build --only IMAGE` builds all its
    /// builders), each needing the jobs of its parent if that is built too, grouped by depth so a
    /// pipeline can run one level after the other.
    pub fn matrix(&self) -> Matrix {
        let mut jobs: Vec<MatrixJob> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        // Decisions come parents first, so a parent's job exists before its children's.
        for d in self.decisions.iter().filter(|d| d.action == Action::Build) {
            if let Some(&i) = index.get(d.image.as_str()) {
                jobs[i].builders.push(d.builder.clone());
                continue;
            }
            let parent = d.parent.as_deref().and_then(|p| index.get(p).map(|&i| (p, i)));
            let (needs, depth) = match parent {
                Some((p, i)) => (vec![p.to_string()], jobs[i].depth + 1),
                None => (Vec::new(), 0),
            };
            index.insert(&d.image, jobs.len());
            jobs.push(MatrixJob { image: d.image.clone(), builders: vec![d.builder.clone()], depth, needs });
        }
        let depth = jobs.iter().map(|j| j.depth + 1).max().unwrap_or(0);
        let mut levels: Vec<Vec<MatrixJob>> = vec![Vec::new(); depth];
        for j in &jobs {
            levels[j.depth].push(j.clone());
        }
        Matrix { count: jobs.len(), images: jobs, levels }
    }
}

/// The images a plan builds, as CI jobs ([`Plan::matrix`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// How many jobs.
    pub count: usize,
    /// Every job, parents first.
    pub images: Vec<MatrixJob>,
    /// The jobs by depth: level 0 needs nothing built in this run, level n needs level n-1.
    pub levels: Vec<Vec<MatrixJob>>,
}

/// One CI job: build one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixJob {
    /// The image (`imgbake build TREE --only IMAGE`).
    pub image: String,
    /// Its builders.
    pub builders: Vec<String>,
    /// How many images built in this run are above it.
    pub depth: usize,
    /// The job it waits for: its parent, when the parent is built in this run too.
    pub needs: Vec<String>,
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
    // (image, builder) → its decision: a child looks its parent's up (linear in the tree's size).
    let mut decided: HashMap<(String, String), usize> = HashMap::new();
    for name in tree.order() {
        let img = &tree.images()[name];
        let masked_img = masked.image(name).unwrap_or(img);
        for b in &img.builders {
            let kind = b.get_ref().as_str();
            let key = (name.to_string(), kind.to_string());
            let existing: &[Artifact] = artifacts.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let parent = img
                .parent
                .as_ref()
                .and_then(|p| decided.get(&(p.get_ref().clone(), img.parent_builder(kind).to_string())))
                .map(|&i| &decisions[i]);
            let d = decide(tree, &masked, img, masked_img, kind, existing, parent, registry, opts, &selected, &needed)
                .await?;
            events.for_image(name).emit(EventKind::Planned { action: d.action, reason: d.reasons.join("; ") });
            decided.insert(key, decisions.len());
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
    parent_decision: Option<&Decision>,
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
            match parent_decision {
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

/// Fingerprints of a tree's images from one render of the tree with masked build values (the render
/// is the costly part: make one of these per run, not per image).
#[derive(Debug)]
pub struct Fingerprinter {
    masked: Tree,
}

impl Fingerprinter {
    /// Render `tree` once for fingerprints.
    pub fn new(tree: &Tree) -> Result<Self, BuildError> {
        Ok(Fingerprinter { masked: tree.rerender(&Stamp::masked()).map_err(|e| config_error(tree, e))? })
    }

    /// The fingerprint of `image` for `builder` given its origin (its source's id, or its parent's
    /// artifact id: for a child of a parent built in this run, the new artifact).
    pub fn fingerprint(&self, image: &str, builder: &str, origin: &str) -> Result<Fingerprint, BuildError> {
        let img = self
            .masked
            .image(image)
            .ok_or_else(|| BuildError::new(ErrorKind::Config, format!("no image `{image}` in the tree")))?;
        Ok(inputs_for(&self.masked, img, builder, origin)?.fingerprint())
    }
}

/// The fingerprint of one image given its origin. Renders the tree: for many images, use one
/// [`Fingerprinter`].
pub fn fingerprint_for(tree: &Tree, image: &str, builder: &str, origin: &str) -> Result<Fingerprint, BuildError> {
    Fingerprinter::new(tree)?.fingerprint(image, builder, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(image: &str, builder: &str, action: Action, parent: Option<&str>) -> Decision {
        Decision {
            image: image.into(),
            builder: builder.into(),
            action,
            reasons: Vec::new(),
            fingerprint: None,
            artifact: None,
            source: None,
            parent: parent.map(str::to_string),
        }
    }

    #[test]
    fn the_matrix_has_a_job_per_image_to_build_levelled_by_built_ancestors() {
        let plan = Plan {
            decisions: vec![
                decision("base", "aws", Action::Reuse, None),
                decision("base", "vsphere", Action::Build, None),
                decision("runtime", "aws", Action::Build, Some("base")),
                decision("runtime", "vsphere", Action::Build, Some("base")),
                decision("app", "aws", Action::Build, Some("runtime")),
                decision("other", "aws", Action::Skip, None),
                decision("tool", "aws", Action::Build, Some("other")),
            ],
        };
        let m = plan.matrix();
        assert_eq!(m.count, 4);
        let names = |l: &[MatrixJob]| l.iter().map(|j| j.image.clone()).collect::<Vec<_>>();
        // `tool`'s parent is not built in this run: it starts at level 0.
        assert_eq!(
            m.levels.iter().map(|l| names(l)).collect::<Vec<Vec<String>>>(),
            [vec!["base", "tool"], vec!["runtime"], vec!["app"]]
        );
        let runtime = &m.levels[1][0];
        assert_eq!(runtime.builders, ["aws", "vsphere"], "one job builds every builder of its image");
        assert_eq!(runtime.needs, ["base"]);
        assert!(m.levels[0][1].needs.is_empty());
        assert!(Plan { decisions: vec![decision("base", "aws", Action::Reuse, None)] }.matrix().levels.is_empty());
    }
}
