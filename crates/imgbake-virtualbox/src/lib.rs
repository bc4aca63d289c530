//! # imgbake-virtualbox: OVAs and Vagrant boxes, built under QEMU
//!
//! The `virtualbox` builder makes the team's local-testing images from the same tree as their AMIs:
//! it starts from a `.box`, `.ova` or `.ovf` (by path, by URL with a sha256, or the newest box
//! another agent published to a store), or from its parent's box — imgbake opens boxes and OVAs
//! itself, no manual unpacking — runs the machine under **QEMU** on that disk (KVM where it works,
//! else TCG; the same [`imgbake_qemu::session`] the `qemu` builder uses, so the same steps, reboots
//! and fingerprints), and writes VirtualBox's formats from the result:
//!
//! - `ova`: OVF 1.0 + streamOptimized VMDK + SHA-256 manifest;
//! - `box`: a Vagrant box for the `virtualbox` provider (box.ovf, the VMDK, metadata.json, a
//!   Vagrantfile with the SSH user);
//! - `libvirt`: a Vagrant box for the `libvirt` provider (a compressed qcow2).
//!
//! Every output is verified with `qemu-img` before it becomes the artifact. After the build,
//! `publish.store` uploads the files to an artifact store and `publish.vagrant` adds a version to a
//! Vagrant catalog (`vagrant box outdated` / `update` then see it). With a store, the builder keeps
//! release channels ([`channel`]): a pointer object per channel, and a Vagrant catalog per channel.
//!
//! VirtualBox itself is not needed (nor driven: a `vboxmanage` driver waits for a machine with
//! VirtualBox to test it on). See docs/builders/virtualbox.md.
//!
//! ```
//! use std::sync::Arc;
//! use imgbake_core::builder::Builder;
//! let builder: Arc<dyn Builder> = Arc::new(imgbake_virtualbox::VirtualboxBuilder::default());
//! assert_eq!(builder.kind(), "virtualbox");
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};

mod build;
pub mod channel;
pub mod format;
pub mod publish;
pub mod published;
pub mod schema;
pub mod settings;
pub mod sidecar;
pub mod source;

pub use schema::{VirtualboxSchema, VirtualboxSettings, VirtualboxSource};
pub use settings::Settings;

/// The builder's name in tree files.
pub const KIND: &str = schema::NAME;

/// Builds OVAs and Vagrant boxes. Holds a QEMU builder for its accelerator choice (probed once).
#[derive(Debug, Default)]
pub struct VirtualboxBuilder {
    qemu: imgbake_qemu::QemuBuilder,
}

#[async_trait]
impl Builder for VirtualboxBuilder {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        source::resolve(tree, image).await
    }

    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut names = BTreeSet::new();
        for image in images.iter().filter(|i| i.has_builder(KIND)) {
            dirs.insert(Settings::resolve(tree, image)?.output_dir);
            names.insert(image.name.as_str());
        }
        let tree_name = tree.name();
        Ok(dirs
            .iter()
            .flat_map(|d| sidecar::scan(d))
            .filter(|s| s.tree == tree_name && s.artifact.builder == KIND && names.contains(s.artifact.image.as_str()))
            .map(|s| s.artifact)
            .collect())
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        Ok(Box::new(imgbake_qemu::session::SessionBuild(build::prepare(self, job).await?)))
    }

    async fn destroy(&self, _tree: &Tree, resource: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        imgbake_qemu::session::destroy(resource).await
    }

    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        let mut out = imgbake_qemu::sweep::sessions(tree, filter, KIND);
        let images: Vec<&Image> = tree.images().values().filter(|i| i.has_builder(KIND)).collect();
        let names: BTreeSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let mut dirs = BTreeSet::new();
        for image in &images {
            dirs.insert(Settings::resolve(tree, image)?.output_dir);
        }
        for dir in dirs {
            out.extend(leftovers(&dir, &names, filter));
        }
        Ok(out)
    }

    async fn delete_artifact(&self, _tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
        let files = publish::files_of(artifact);
        let Some(dir) = files.values().next().and_then(|p| p.parent()).map(Path::to_path_buf) else {
            return Err(BuildError::new(ErrorKind::Local, format!("artifact {} has no local files", artifact.id)));
        };
        imgbake_qemu::process::remove_file(&sidecar::path_for(&dir, &artifact.id))?;
        for path in files.values() {
            imgbake_qemu::process::remove_file(path)?;
            events.emit(EventKind::ResourceDeleted {
                kind: format!("{KIND}.artifact"),
                id: path.display().to_string(),
                region: None,
            });
        }
        Ok(())
    }

    async fn check_publish(&self, tree: &Tree, image: &Image) -> Result<(), BuildError> {
        publish::check(tree, image).await
    }

    async fn publish(
        &self,
        tree: &Tree,
        image: &Image,
        artifact: &Artifact,
        events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        publish::publish(tree, image, artifact, events).await
    }

    async fn is_published(&self, tree: &Tree, image: &Image, artifact: &Artifact) -> Result<Option<bool>, BuildError> {
        publish::is_published(tree, image, artifact).await
    }

    async fn channel(
        &self,
        tree: &Tree,
        image: &Image,
        channel: &str,
    ) -> Result<Option<imgbake_core::channel::ChannelState>, BuildError> {
        channel::state(tree, image, channel).await
    }

    async fn point(
        &self,
        tree: &Tree,
        image: &Image,
        channel: &str,
        artifact: &Artifact,
        record: &imgbake_core::channel::PointRecord,
        _events: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        channel::point(tree, image, channel, artifact, record).await
    }

    async fn label(&self, tree: &Tree, artifact: &Artifact, key: &str, value: &str) -> Result<(), BuildError> {
        channel::label(tree, artifact, key, value).await
    }
}

/// What a killed build left in an output directory: `.IMAGE-BUILD.virtualbox.source` directories,
/// overlays (`*.virtualbox.partial.qcow2`), half-written packages and sidecars (`*.partial`), and
/// outputs without a sidecar named
/// like a build's (`IMAGE-BUILD.ova`...). Outputs with a sidecar are artifacts, never returned.
fn leftovers(dir: &Path, names: &BTreeSet<&str>, filter: &SweepFilter) -> Vec<Resource> {
    use imgbake_qemu::sweep::{age_of, keep, looks_like_build_id};
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let file = e.file_name().to_string_lossy().into_owned();
        let (stem, kind, partial) =
            if let Some(s) = file.strip_prefix('.').and_then(|f| f.strip_suffix(".virtualbox.source")) {
                (s.to_string(), "dir", true)
            } else if let Some(s) = file.strip_suffix(".virtualbox.partial.qcow2") {
                (s.to_string(), "file", true)
            } else if let Some(s) = [".ova.partial", ".libvirt.box.partial", ".box.partial", ".virtualbox.json.partial"]
                .iter()
                .find_map(|x| file.strip_suffix(x))
            {
                (s.to_string(), "file", true)
            } else if let Some(s) = [".libvirt.box", ".ova", ".box"].iter().find_map(|x| file.strip_suffix(x)) {
                (s.to_string(), "file", false)
            } else {
                continue;
            };
        if !partial && sidecar::path_for(dir, &stem).exists() {
            continue;
        }
        let Some(image) = names.iter().filter(|n| stem.starts_with(&format!("{n}-"))).max_by_key(|n| n.len()) else {
            continue;
        };
        let build_id = &stem[image.len() + 1..];
        if !(looks_like_build_id(build_id) || filter.build_id.as_deref() == Some(build_id)) {
            continue;
        }
        if keep(filter, build_id, age_of(&path)) {
            out.push(Resource::new(KIND, kind, path.display().to_string()).with("build_id", build_id));
        }
    }
    out
}
