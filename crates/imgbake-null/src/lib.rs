//! imgbake's `null` builder: run an image's steps on a machine that already exists, over SSH, and
//! capture nothing — like Packer's `null` builder. Useful on its own (testing steps against a VM you
//! already have, configuring bare metal or pre-made machines), and the smallest real builder: the
//! walk-through of [docs/extending.md](https://github.com/imgbake/imgbake/blob/main/docs/extending.md).
//!
//! ```toml
//! [images.try-steps]
//! builder = "null"
//! source = { host = "192.0.2.10", host_key = "ssh-ed25519 AAAA..." }
//! communicator = { username = "admin", private_key_file = "~/.ssh/id_ed25519" }
//! steps = [{ shell = { script = "scripts/setup.sh" } }]
//! ```
//!
//! Every build runs the steps again (there is no artifact to find), the machine is never stopped,
//! and nothing is created, so nothing is journaled or cleaned. A null image cannot be a parent.
//!
//! Registering it with a tree's schemas and a run's builders:
//!
//! ```
//! use imgbake_config::{LoadOptions, Schemas, Tree};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("tree.toml"), r#"
//! [images.box]
//! builder = "null"
//! source = { host = "192.0.2.10" }
//! communicator = { username = "admin", host_key = "known_hosts" }
//! steps = [{ shell = { inline = ["uptime"] } }]
//! "#).unwrap();
//! let opts = LoadOptions { schemas: Schemas::new().with(imgbake_null::NullSchema::arc()), ..Default::default() };
//! let tree = Tree::load(&dir.path().join("tree.toml"), &opts).unwrap();
//! let source = imgbake_null::schema::source_of(tree.image("box").unwrap().source.as_ref().unwrap().get_ref());
//! assert_eq!(source.unwrap().host.as_ref().unwrap().get_ref(), "192.0.2.10");
//!
//! let mut registry = imgbake_core::registry::Registry::new();
//! registry.register(std::sync::Arc::new(imgbake_null::NullBuilder));
//! assert_eq!(registry.kinds(), vec!["null"]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod build;
pub mod schema;

use async_trait::async_trait;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;

pub use schema::{NAME, NullSchema, NullSettings, NullSource};

/// The `null` builder.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullBuilder;

fn source(image: &Image) -> Result<NullSource, BuildError> {
    image.source.as_ref().and_then(|s| schema::source_of(s.get_ref())).cloned().ok_or_else(|| {
        BuildError::new(
            ErrorKind::Config,
            format!("image `{}` has no null source: set source = {{ host = \"...\" }}", image.name),
        )
    })
}

#[async_trait]
impl Builder for NullBuilder {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn resolve_source(&self, _tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        let host = source(image)?.host.map(|h| h.into_inner()).unwrap_or_default();
        Ok(ResolvedSource::new(host.clone(), format!("the existing machine {host}")))
    }

    async fn list_artifacts(&self, _tree: &Tree, _images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        // Nothing is captured, so nothing is found again: every plan provisions anew.
        Ok(Vec::new())
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        let source = source(job.image()?)?;
        Ok(Box::new(build::NullBuild { job, source }))
    }

    async fn destroy(&self, _tree: &Tree, _resource: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        // It records nothing, so there is nothing to remove.
        Ok(())
    }

    async fn sweep(&self, _tree: &Tree, _filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        Ok(Vec::new())
    }

    async fn delete_artifact(&self, _tree: &Tree, _artifact: &Artifact, _events: &EventSink) -> Result<(), BuildError> {
        Ok(())
    }
}
