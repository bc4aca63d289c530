//! [`QemuBuilder`]: the [`Builder`] for local disk images (its build phases are in `build.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};

use crate::accel::{self, Choice};
use crate::process;
use crate::settings::{Accelerator, Settings};
use crate::sidecar;
use crate::source;
use crate::{KIND, LOCATION};

/// Builds images as qcow2 overlays under QEMU. Cheap to create; holds only the accelerator decision
/// (probed once per process for `accelerator = "auto"`).
#[derive(Debug, Default)]
pub struct QemuBuilder {
    auto: tokio::sync::OnceCell<Choice>,
}

impl QemuBuilder {
    /// A builder.
    pub fn new() -> Self {
        QemuBuilder::default()
    }

    /// The accelerator for `image` (`auto` is probed once per builder and remembered).
    pub async fn accelerator(&self, s: &Settings, tree: &Tree, image: &Image) -> Result<Choice, BuildError> {
        match s.accelerator {
            Accelerator::Tcg => Ok(Choice { accel: "tcg", reason: "qemu.accelerator = \"tcg\"".into() }),
            Accelerator::Kvm if accel::kvm_device_usable() => {
                Ok(Choice { accel: "kvm", reason: "qemu.accelerator = \"kvm\"".into() })
            }
            Accelerator::Kvm => Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "image `{}`: qemu.accelerator = \"kvm\" but /dev/kvm cannot be opened read-write; use \"auto\" or \"tcg\", or give this user access to /dev/kvm",
                    image.name
                ),
            )),
            Accelerator::Auto => {
                let kernels = probe_kernels(tree, image);
                Ok(self.auto.get_or_init(|| accel::auto(&s.binary, &kernels)).await.clone())
            }
        }
    }
}

/// Kernels the KVM probe may boot: the chain's own direct-boot kernel, the `vmlinuz` that
/// scripts/make-base-image.sh puts next to the base disk, the host's.
fn probe_kernels(tree: &Tree, image: &Image) -> Vec<PathBuf> {
    let root = source::chain_root(tree, image);
    let mut out = Vec::new();
    if let Some(src) = &root.source {
        if let Some(k) = &crate::schema::source_of(src.get_ref()).kernel {
            out.push(tree.path(k));
        }
        if let Some(d) = &crate::schema::source_of(src.get_ref()).disk
            && let Ok(disk) = tree.path(d).canonicalize()
            && let Some(dir) = disk.parent()
        {
            out.push(dir.join("vmlinuz"));
        }
    }
    out.push(PathBuf::from("/boot/vmlinuz"));
    out.push(PathBuf::from("/vmlinuz"));
    out
}

#[async_trait]
impl Builder for QemuBuilder {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        source::resolve(tree, image).await
    }

    async fn list_artifacts(&self, tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        let mut dirs: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
        for image in images.iter().filter(|i| i.has_builder(KIND)) {
            let s = Settings::resolve(tree, image)?;
            dirs.entry(s.output_dir).or_default().push(&image.name);
        }
        let name = tree.name();
        let mut out = Vec::new();
        for (dir, names) in dirs {
            for s in sidecar::scan(&dir)? {
                if s.tree == name && s.artifact.builder == KIND && names.contains(&s.artifact.image.as_str()) {
                    out.push(s.artifact);
                }
            }
        }
        Ok(out)
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        Ok(Box::new(crate::session::SessionBuild(crate::build::prepare(self, job).await?)))
    }

    async fn destroy(&self, _tree: &Tree, resource: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        crate::session::destroy(resource).await
    }

    async fn sweep(&self, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        crate::sweep::sweep(tree, filter)
    }

    async fn delete_artifact(&self, _tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
        let Some(path) = artifact.locations.get(LOCATION).map(PathBuf::from) else {
            return Err(BuildError::new(ErrorKind::Local, format!("artifact {} has no local path", artifact.id)));
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let users: Vec<String> = sidecar::scan(dir)?
            .into_iter()
            .filter(|s| s.backing.as_deref() == Some(name.as_str()))
            .map(|s| s.disk)
            .collect();
        if !users.is_empty() {
            return Err(BuildError::new(
                ErrorKind::Config,
                format!(
                    "{} is the backing file of {}: delete those first (or build them with qemu.format = \"qcow2\")",
                    path.display(),
                    users.join(", ")
                ),
            ));
        }
        process::remove_file(&sidecar::path_for(&path))?;
        process::remove_file(&path)?;
        events.emit(EventKind::ResourceDeleted {
            kind: format!("{KIND}.artifact"),
            id: path.display().to_string(),
            region: None,
        });
        Ok(())
    }
}
