//! One `virtualbox` build, phase by phase (core drives them): open the source package (or the
//! parent's box) into the build's own directory, run the machine in a QEMU session on its disk,
//! then write the VirtualBox and Vagrant formats from the session's overlay and verify them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{BuildJob, BuildSource};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_qemu::session::{Capture, Session, StartDisk};

use crate::format::{self, FormatError, StreamDisk, VagrantSsh};
use crate::settings::Settings;
use crate::sidecar::{self, Sidecar};
use crate::{KIND, VirtualboxBuilder, source};

fn local(what: &str, path: &Path, e: std::io::Error) -> BuildError {
    BuildError::new(ErrorKind::Local, format!("{what} {}: {e}", path.display()))
}

fn format_error(image: &str, what: &str, e: FormatError) -> BuildError {
    BuildError::new(ErrorKind::Local, format!("image `{image}`: {what}")).caused_by(e)
}

/// The output file of `format` for a build named `stem`.
pub fn output_file(dir: &Path, stem: &str, format: &str) -> PathBuf {
    match format {
        "libvirt" => dir.join(format!("{stem}.libvirt.box")),
        other => dir.join(format!("{stem}.{other}")),
    }
}

/// One virtualbox build in progress.
pub(crate) struct VirtualboxBuild<'a> {
    session: Session<'a>,
    s: Settings,
    output_dir: PathBuf,
    stem: String,
    /// The opened source package (and later the VMDK), journaled; the overlay's backing file
    /// lives here until the capture is done.
    unpack: PathBuf,
    unpack_res: Resource,
}

/// The package the build starts from, as a local file, whether it is a plain disk (nothing to
/// open), and what the artifact records as source.
async fn package(job: &BuildJob, s: &Settings) -> Result<(PathBuf, bool, String), BuildError> {
    let (tree, image) = (job.tree.as_ref(), job.image()?);
    match &job.source {
        BuildSource::Root(resolved) => {
            let (pkg, _, _) = source::resolve_package(tree, image).await?;
            let file = source::fetch(tree, image, &pkg, &s.cache_dir, &job.events).await?;
            Ok((file, matches!(pkg, source::Package::Disk(_)), resolved.id.clone()))
        }
        BuildSource::Parent(parent) => {
            let file = ["ova", "box"].iter().find_map(|f| parent.locations.get(*f)).ok_or_else(|| {
                BuildError::new(
                    ErrorKind::Config,
                    format!(
                        "image `{}`: its parent's artifact {} has no OVA or VirtualBox box to start from; add \"box\" or \"ova\" to the parent's virtualbox.formats",
                        image.name, parent.id
                    ),
                )
            })?;
            let path = PathBuf::from(file);
            if !path.exists() {
                return Err(BuildError::new(
                    ErrorKind::Local,
                    format!(
                        "image `{}`: the parent artifact {} is gone; rebuild `{}`",
                        image.name,
                        path.display(),
                        parent.image
                    ),
                ));
            }
            Ok((path, false, parent.id.clone()))
        }
    }
}

/// The `prepare` phase: the package opened, the session on its disk.
pub(crate) async fn prepare<'a>(
    b: &'a VirtualboxBuilder,
    job: &'a BuildJob,
) -> Result<VirtualboxBuild<'a>, BuildError> {
    let (tree, image) = (job.tree.as_ref(), job.image()?);
    let s = Settings::resolve(tree, image)?;
    std::fs::create_dir_all(&s.output_dir).map_err(|e| local("creating the output directory", &s.output_dir, e))?;
    let output_dir = s.output_dir.canonicalize().map_err(|e| local("resolving", &s.output_dir, e))?;
    let stem = format!("{}-{}", image.name, job.build_id);
    let unpack = output_dir.join(format!(".{stem}.virtualbox.source"));
    let unpack_res = Resource::new(KIND, "dir", unpack.display().to_string()).with("build_id", job.build_id.clone());
    job.record(unpack_res.clone())?;
    std::fs::create_dir_all(&unpack).map_err(|e| local("creating", &unpack, e))?;

    let (file, plain_disk, source_id) = package(job, &s).await?;
    let disk = if plain_disk { file } else { open_disk(job, &file, &unpack).await? };
    let info = imgbake_qemu::disk::info(&disk).await?;
    let start = StartDisk { disk, format: info.format, virtual_size: info.virtual_size, kernel: None, source_id };
    let partial = output_dir.join(format!("{stem}.virtualbox.partial.qcow2"));
    let session = Session::prepare(&b.qemu, job, KIND, s.qemu.clone(), start, partial).await?;
    Ok(VirtualboxBuild { session, s, output_dir, stem, unpack, unpack_res })
}

/// Open a box or OVA into `unpack` (manifest verified, traversal refused) and return its first disk.
async fn open_disk(job: &BuildJob, file: &Path, unpack: &Path) -> Result<PathBuf, BuildError> {
    let image = job.image()?;
    job.events.info(format!("opening {}", file.display()));
    let opened = format::open(file, unpack).await.map_err(|e| format_error(&image.name, "opening its source", e))?;
    let Some((_, disk)) = opened.disks.first() else {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!("image `{}`: {} has no disk", image.name, file.display()),
        ));
    };
    if opened.disks.len() > 1 {
        job.events.warn(format!(
            "{} has {} disks: the build boots the first; the others are not carried into the artifact",
            file.display(),
            opened.disks.len()
        ));
    }
    Ok(disk.clone())
}

impl VirtualboxBuild<'_> {
    /// Write one format from the overlay (and the VMDK made once for the OVF-based ones), verify
    /// it, and return its SHA-256.
    async fn write(&self, format: &str, out: &Path, vmdk: Option<&StreamDisk>) -> Result<String, BuildError> {
        let image = self.session.image();
        let hw = &self.s.hardware;
        let user =
            image.communicator.username.as_ref().map(|u| u.get_ref().clone()).unwrap_or_else(|| "vagrant".into());
        let ssh = VagrantSsh::new(user);
        let failed = |e| format_error(&image.name, &format!("writing {}", out.display()), e);
        let disks: Vec<StreamDisk> = vmdk.into_iter().cloned().collect();
        let verified = match format {
            "ova" => {
                format::write_ova(out, hw, &disks).await.map_err(failed)?;
                format::verify_ova(out).await
            }
            "box" => {
                format::write_virtualbox_box(out, hw, &disks, &ssh).await.map_err(failed)?;
                format::verify_box(out).await
            }
            "libvirt" => {
                format::write_libvirt_box(out, self.session.overlay(), hw, &ssh, &self.unpack).await.map_err(failed)?;
                format::verify_box(out).await
            }
            other => return Err(BuildError::new(ErrorKind::Internal, format!("unknown format {other}"))),
        };
        verified.map_err(|e| format_error(&image.name, &format!("verifying {}", out.display()), e))?;
        let path = out.to_path_buf();
        tokio::task::spawn_blocking(move || format::hash_file(&path, format::Algorithm::Sha256))
            .await
            .map_err(|e| BuildError::new(ErrorKind::Internal, format!("hashing: {e}")))?
            .map_err(|e| format_error(&image.name, "hashing the artifact", e))
    }

    fn artifact(&self, files: &BTreeMap<String, (PathBuf, String)>) -> Result<Artifact, BuildError> {
        let (job, image) = (self.session.job(), self.session.image());
        let mut extra = BTreeMap::from([
            ("accelerator".to_string(), self.session.accelerator().to_string()),
            ("formats".to_string(), self.s.formats.join(",")),
        ]);
        let mut locations = BTreeMap::new();
        for (format, (path, sha)) in files {
            locations.insert(format.clone(), path.display().to_string());
            extra.insert(format!("sha256.{format}"), sha.clone());
        }
        let artifact = Artifact {
            image: image.name.clone(),
            builder: KIND.into(),
            id: self.stem.clone(),
            locations,
            fingerprint: job.fingerprint.clone(),
            source: self.session.start().source_id.clone(),
            parent: image.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra,
        };
        let side = Sidecar {
            imgbake_virtualbox_artifact: sidecar::VERSION,
            tree: self.session.tree().name(),
            tags: image.tags.clone(),
            artifact: artifact.clone(),
        };
        sidecar::write(&self.output_dir, &self.stem, &side)?;
        Ok(artifact)
    }
}

#[async_trait]
impl<'a> Capture<'a> for VirtualboxBuild<'a> {
    fn session(&self) -> &Session<'a> {
        &self.session
    }

    fn session_mut(&mut self) -> &mut Session<'a> {
        &mut self.session
    }

    /// The overlay becomes a streamOptimized VMDK once, then each format; each is verified.
    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let job = self.session.job();
        let image = &self.session.image().name;
        let vmdk = if self.s.writes("ova") || self.s.writes("box") {
            let path = self.unpack.join(format!("{}-disk001.vmdk", self.stem));
            let disk = StreamDisk::create(self.session.overlay(), &path)
                .await
                .map_err(|e| format_error(image, "converting the disk to a streamOptimized VMDK", e))?;
            Some(disk)
        } else {
            None
        };
        let mut files = BTreeMap::new();
        let mut entries = Vec::new();
        for format in self.s.formats.clone() {
            let out = output_file(&self.output_dir, &self.stem, &format);
            let res = Resource::new(KIND, "file", out.display().to_string()).with("build_id", job.build_id.clone());
            job.record(res.clone())?;
            entries.push(res);
            let sha = self.write(&format, &out, vmdk.as_ref()).await?;
            job.events.info(format!("{format}: {}", out.display()));
            files.insert(format, (out, sha));
        }
        // The sidecar last: once it exists, `plan` takes the outputs as a finished artifact.
        self.session.finish()?;
        imgbake_qemu::process::remove_dir(&self.unpack)?;
        job.release(&self.unpack_res)?;
        let artifact = self.artifact(&files)?;
        for r in &entries {
            job.release(r)?;
        }
        Ok(artifact)
    }
}
