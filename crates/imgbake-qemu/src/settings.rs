//! An image's `qemu` settings with every default applied.

use std::path::PathBuf;
use std::time::Duration;

use imgbake_config::{Image, Span, Tree};

use crate::schema::QemuSettings;
use imgbake_core::error::{BuildError, ErrorKind};

/// Which accelerator runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accelerator {
    /// KVM when it really runs guests here (probed once), else TCG.
    Auto,
    /// Hardware virtualisation; fails when `/dev/kvm` is unusable.
    Kvm,
    /// Emulation: works everywhere, several times slower.
    Tcg,
}

/// What the build leaves in the output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// A qcow2 overlay backed by the parent's disk: a child costs only its own changes.
    Overlay,
    /// A self-contained qcow2 (the chain flattened).
    Qcow2,
    /// A raw disk.
    Raw,
    /// VMware.
    Vmdk,
    /// VirtualBox.
    Vdi,
}

impl OutputFormat {
    /// The `qemu-img` format name of the artifact file.
    pub fn disk_format(self) -> &'static str {
        match self {
            OutputFormat::Overlay | OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Raw => "raw",
            OutputFormat::Vmdk => "vmdk",
            OutputFormat::Vdi => "vdi",
        }
    }

    /// Its name in tree files.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Overlay => "overlay",
            other => other.disk_format(),
        }
    }

    /// The artifact file's extension.
    pub fn extension(self) -> &'static str {
        self.disk_format()
    }
}

/// Resolved settings of one image.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where artifacts go (absolute or relative to the working directory, resolved against the tree).
    pub output_dir: PathBuf,
    /// The accelerator.
    pub accelerator: Accelerator,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Guest CPUs.
    pub cpus: u32,
    /// The disk's virtual size, when it should grow.
    pub disk_size: Option<(u64, Option<Span>)>,
    /// What the artifact is.
    pub format: OutputFormat,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// The QEMU binary.
    pub binary: String,
    /// How long an ACPI shutdown may take.
    pub shutdown_timeout: Duration,
    /// How long the machine may take to boot to SSH.
    pub boot_timeout: Duration,
}

/// The default output directory, relative to the tree file.
pub const DEFAULT_OUTPUT_DIR: &str = "output";

impl Settings {
    /// The settings of `image` (its `[images.NAME.qemu]` merged with `[defaults.qemu]`).
    pub fn resolve(tree: &Tree, image: &Image) -> Result<Settings, BuildError> {
        let empty = QemuSettings::default();
        let q = crate::schema::of(image).unwrap_or(&empty);
        let accelerator = match q.accelerator.as_ref().map(|a| (a.get_ref().as_str(), Span::new(a.span()))) {
            None | Some(("auto", _)) => Accelerator::Auto,
            Some(("kvm", _)) => Accelerator::Kvm,
            Some(("tcg", _)) => Accelerator::Tcg,
            Some((other, span)) => {
                return Err(BuildError::new(
                    ErrorKind::Config,
                    format!("image `{}`: unknown qemu.accelerator `{other}` (auto, kvm or tcg)", image.name),
                )
                .at(span));
            }
        };
        let format = match q.format.as_ref().map(|f| (f.get_ref().as_str(), Span::new(f.span()))) {
            None | Some(("overlay", _)) => OutputFormat::Overlay,
            Some(("qcow2", _)) => OutputFormat::Qcow2,
            Some(("raw", _)) => OutputFormat::Raw,
            Some(("vmdk", _)) => OutputFormat::Vmdk,
            Some(("vdi", _)) => OutputFormat::Vdi,
            Some((other, span)) => {
                return Err(BuildError::new(
                    ErrorKind::Config,
                    format!("image `{}`: unknown qemu.format `{other}` (overlay, qcow2, raw, vmdk or vdi)", image.name),
                )
                .at(span));
            }
        };
        Ok(Settings {
            output_dir: match &q.output_dir {
                Some(d) => tree.path(d),
                None => tree.root_dir().join(DEFAULT_OUTPUT_DIR),
            },
            accelerator,
            memory_mib: q.memory.as_ref().map(|m| m.get_ref().bytes() >> 20).unwrap_or(512),
            cpus: q.cpus.unwrap_or(1).max(1),
            disk_size: q.disk_size.as_ref().map(|s| (s.get_ref().bytes(), Some(Span::new(s.span())))),
            format,
            qemu_args: q.qemu_args.clone(),
            binary: q.binary.clone().unwrap_or_else(|| "qemu-system-x86_64".into()),
            shutdown_timeout: q.shutdown_timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(120)),
            boot_timeout: q.boot_timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(300)),
        })
    }
}
