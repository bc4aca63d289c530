//! The builders a run can use, by kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgbake_config::{Image, Tree};

use crate::artifact::Artifact;
use crate::builder::Builder;
use crate::error::{BuildError, ErrorKind};

/// Builders by their kind (`aws`, `qemu`).
#[derive(Clone, Default)]
pub struct Registry {
    builders: BTreeMap<String, Arc<dyn Builder>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a builder.
    pub fn register(&mut self, builder: Arc<dyn Builder>) -> &mut Self {
        self.builders.insert(builder.kind().to_string(), builder);
        self
    }

    /// The builder of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Builder>> {
        self.builders.get(kind)
    }

    /// Every artifact of `images`, by (image, builder), newest first: one `list_artifacts` call per
    /// builder for all of them (planning and pruning must not cost a call per image).
    pub async fn artifacts_of(
        &self,
        tree: &Tree,
        images: impl IntoIterator<Item = &Image>,
    ) -> Result<BTreeMap<(String, String), Vec<Artifact>>, BuildError> {
        let mut by_builder: BTreeMap<String, Vec<&Image>> = BTreeMap::new();
        for img in images {
            for b in &img.builders {
                by_builder.entry(b.get_ref().clone()).or_default().push(img);
            }
        }
        let mut all: BTreeMap<(String, String), Vec<Artifact>> = BTreeMap::new();
        for (kind, images) in &by_builder {
            let builder = self.get(kind).ok_or_else(|| {
                BuildError::new(
                    ErrorKind::Config,
                    format!("builder `{kind}` is not available in this build of imgbake"),
                )
            })?;
            for a in builder.list_artifacts(tree, images).await? {
                all.entry((a.image.clone(), a.builder.clone())).or_default().push(a);
            }
        }
        for list in all.values_mut() {
            // Newest first, and never a tie: two builds within one clock tick still have an order
            // (creation time, then build id, then artifact id), so prune and plan agree run to run.
            list.sort_by(|a, b| {
                b.created.cmp(&a.created).then_with(|| b.build_id.cmp(&a.build_id)).then_with(|| b.id.cmp(&a.id))
            });
        }
        Ok(all)
    }

    /// The kinds registered.
    pub fn kinds(&self) -> Vec<&str> {
        self.builders.keys().map(String::as_str).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.builders.keys()).finish()
    }
}
