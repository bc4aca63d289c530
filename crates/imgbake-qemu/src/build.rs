//! One qemu build, phase by phase (core drives them, see [`imgbake_core::builder`]): the machine
//! session ([`crate::session`]: overlay, seed, QEMU, SSH, ACPI shutdown), then the capture: the
//! overlay as the artifact, as it is or converted, with its sidecar.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};

use crate::builder::QemuBuilder;
use crate::disk;
use crate::error::QemuError;
use crate::session::{Capture, Session, StartDisk};
use crate::settings::{OutputFormat, Settings};
use crate::sidecar::{self, Sidecar};
use crate::source::{self, RootSource};
use crate::{KIND, LOCATION};

fn local(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    QemuError::io(what, path, e).into()
}

async fn start_of(job: &BuildJob, tree: &Tree, image: &Image) -> Result<StartDisk, BuildError> {
    match &job.source {
        BuildSource::Root(resolved) => {
            let RootSource { disk, format, virtual_size, kernel } = source::root_source(tree, image).await?;
            Ok(StartDisk { disk, format, virtual_size, kernel, source_id: resolved.id.clone() })
        }
        BuildSource::Parent(parent) => {
            let path = parent.locations.get(LOCATION).map(PathBuf::from).ok_or_else(|| {
                BuildError::new(
                    ErrorKind::Config,
                    format!(
                        "the parent artifact {} of image `{}` is not a local disk (no path)",
                        parent.id, image.name
                    ),
                )
            })?;
            let disk = disk::canonical(&path).map_err(|e| {
                BuildError::new(
                    ErrorKind::Local,
                    format!("image `{}`: the parent artifact's disk is gone; rebuild `{}`", image.name, parent.image),
                )
                .caused_by(e)
            })?;
            let info = disk::info(&disk).await?;
            // Direct kernel boot applies to the whole chain: the kernel lives outside the disks.
            let root = source::chain_root(tree, image);
            let kernel = match root.source.as_ref().and_then(|s| crate::schema::source_of(s.get_ref()).kernel.as_ref())
            {
                Some(_) => source::root_source(tree, root).await?.kernel,
                None => None,
            };
            Ok(StartDisk {
                disk,
                format: info.format,
                virtual_size: info.virtual_size,
                kernel,
                source_id: parent.id.clone(),
            })
        }
    }
}

/// One qemu build in progress.
pub(crate) struct QemuBuild<'a> {
    session: Session<'a>,
    output_dir: PathBuf,
    stem: String,
}

/// The `prepare` phase: the session (overlay, work directory, seed, accelerator).
pub(crate) async fn prepare<'a>(b: &'a QemuBuilder, job: &'a BuildJob) -> Result<QemuBuild<'a>, BuildError> {
    let tree = job.tree.as_ref();
    let image = job.image()?;
    let s = Settings::resolve(tree, image)?;
    let start = start_of(job, tree, image).await?;
    std::fs::create_dir_all(&s.output_dir).map_err(|e| local("creating the output directory", &s.output_dir, e))?;
    let output_dir = disk::canonical(&s.output_dir)?;
    let stem = format!("{}-{}", image.name, job.build_id);
    let partial = output_dir.join(format!("{stem}.partial.qcow2"));
    let session = Session::prepare(b, job, KIND, s, start, partial).await?;
    Ok(QemuBuild { session, output_dir, stem })
}

impl QemuBuild<'_> {
    /// The artifact and its sidecar, once the disk is in place.
    fn artifact(&self, disk_path: &Path, backing_written: Option<String>) -> Result<Artifact, BuildError> {
        let (job, image, s) = (self.session.job(), self.session.image(), self.session.settings());
        let file_name = disk_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut extra = BTreeMap::from([
            ("format".to_string(), s.format.name().to_string()),
            ("accelerator".to_string(), self.session.accelerator().to_string()),
        ]);
        if let Some(b) = &backing_written {
            extra.insert("backing".into(), b.clone());
        }
        let artifact = Artifact {
            image: image.name.clone(),
            builder: KIND.into(),
            id: file_name.clone(),
            locations: BTreeMap::from([(LOCATION.to_string(), disk_path.display().to_string())]),
            fingerprint: job.fingerprint.clone(),
            source: self.session.start().source_id.clone(),
            parent: image.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra,
        };
        let side = Sidecar {
            imgbake_qemu_artifact: sidecar::VERSION,
            tree: self.session.tree().name(),
            disk: file_name,
            format: s.format.name().into(),
            backing: backing_written,
            tags: image.tags.clone(),
            artifact: artifact.clone(),
        };
        sidecar::write(&self.output_dir, &side)?;
        Ok(artifact)
    }
}

#[async_trait]
impl<'a> Capture<'a> for QemuBuild<'a> {
    fn session(&self) -> &Session<'a> {
        &self.session
    }

    fn session_mut(&mut self) -> &mut Session<'a> {
        &mut self.session
    }

    /// The overlay becomes the artifact as it is, or converted; then the sidecar.
    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let job = self.session.job();
        let disk_path = self.output_dir.join(format!("{}.{}", self.stem, self.session.settings().format.extension()));
        let disk_res =
            Resource::new(KIND, "file", disk_path.display().to_string()).with("build_id", job.build_id.clone());
        job.record(disk_res.clone())?;
        let backing_written = match self.session.settings().format {
            OutputFormat::Overlay => {
                std::fs::rename(self.session.overlay(), &disk_path)
                    .map_err(|e| local("renaming into place", &disk_path, e))?;
                Some(self.session.backing().to_string())
            }
            other => {
                disk::convert(self.session.overlay(), &disk_path, other.disk_format()).await?;
                None
            }
        };
        let artifact = self.artifact(&disk_path, backing_written)?;
        job.release(&disk_res)?;
        self.session.finish()?;
        job.events.info(format!("artifact {}", disk_path.display()));
        Ok(artifact)
    }
}
