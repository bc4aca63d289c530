//! Pruning: keep the newest N artifacts per image, delete the rest — never the newest one, never the
//! published one (what consumers launch), never one a release channel points at (or would roll back
//! to), never one a kept child was built from.

use std::collections::BTreeSet;

use imgbake_config::Tree;
use serde::Serialize;

use crate::artifact::Artifact;
use crate::error::BuildError;
use crate::event::EventSink;
use crate::registry::Registry;

/// What to prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Keep this many per image (overrides each image's `keep`); images without either are left alone.
    pub keep: Option<u32>,
    /// Only these images (empty: all).
    pub only: Vec<String>,
    /// Only say what would be deleted.
    pub dry_run: bool,
}

/// One artifact kept, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    /// The artifact.
    pub artifact: Artifact,
    /// Why it stays.
    pub why: String,
}

/// What pruning did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Kept artifacts.
    pub kept: Vec<Kept>,
    /// Deleted artifacts (or to be deleted, in a dry run).
    pub deleted: Vec<Artifact>,
    /// Artifacts that could not be deleted, with the error.
    pub failed: Vec<(Artifact, String)>,
}

/// Prune the tree's artifacts.
pub async fn prune(
    tree: &Tree,
    registry: &Registry,
    opts: &PruneOptions,
    events: &EventSink,
) -> Result<PruneReport, BuildError> {
    let all = registry.artifacts_of(tree, tree.images().values()).await?;
    let mut report = PruneReport::default();
    // Children first: an artifact a kept child was built from must stay.
    let mut protected: BTreeSet<(String, String)> = BTreeSet::new();
    let order: Vec<&str> = tree.order().into_iter().rev().collect();
    let mut to_delete: Vec<Artifact> = Vec::new();
    for name in order {
        let img = &tree.images()[name];
        for b in &img.builders {
            let kind = b.get_ref().clone();
            let list = all.get(&(name.to_string(), kind.clone())).cloned().unwrap_or_default();
            let keep = opts.keep.or_else(|| img.keep.as_ref().map(|k| *k.get_ref()));
            let (published, pointed) = match registry.get(&kind) {
                Some(b) => (b.published(tree, img).await?, crate::promote::pointed(tree, b.as_ref(), img).await?),
                None => (Vec::new(), Vec::new()),
            };
            let selected = opts.only.is_empty() || opts.only.iter().any(|o| o == name);
            for (i, a) in list.into_iter().enumerate() {
                let why = if a.locations.values().any(|id| published.contains(id)) {
                    Some("published: consumers launch it".to_string())
                } else if let Some((_, why)) =
                    pointed.iter().find(|(id, _)| a.id == *id || a.locations.values().any(|l| l == id))
                {
                    Some(why.clone())
                } else if i == 0 {
                    Some("newest".to_string())
                } else if protected.contains(&(kind.clone(), a.id.clone())) {
                    Some("a kept child image was built from it".to_string())
                } else if !selected {
                    Some("image not selected".to_string())
                } else {
                    match keep {
                        None => Some("the image sets no `keep`".to_string()),
                        Some(k) if (i as u32) < k => Some(format!("among the newest {k}")),
                        Some(_) => None,
                    }
                };
                match why {
                    Some(why) => {
                        // A kept child's source is its parent's artifact: that one must stay too.
                        if img.parent.is_some() {
                            protected.insert((img.parent_builder(kind.as_str()).to_string(), a.source.clone()));
                        }
                        report.kept.push(Kept { artifact: a, why });
                    }
                    None => to_delete.push(a),
                }
            }
        }
    }
    for a in to_delete {
        if opts.dry_run {
            report.deleted.push(a);
            continue;
        }
        let Some(builder) = registry.get(&a.builder) else { continue };
        match builder.delete_artifact(tree, &a, &events.for_image(&a.image)).await {
            Ok(()) => report.deleted.push(a),
            Err(e) => report.failed.push((a, e.chain())),
        }
    }
    Ok(report)
}
