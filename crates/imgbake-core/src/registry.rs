//! The builders a run can use, by kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::builder::Builder;

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
