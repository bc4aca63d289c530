//! An image's `virtualbox` settings with every default applied.

use std::path::PathBuf;
use std::time::Duration;

use imgbake_config::{Image, Span, Tree};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_qemu::{Accelerator, OutputFormat};

use crate::format::{DiskController, Hardware};
use crate::schema::{self, VirtualboxSettings};

/// Resolved settings of one image.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What to write: `ova`, `box`, `libvirt`.
    pub formats: Vec<String>,
    /// Where artifacts go.
    pub output_dir: PathBuf,
    /// What the OVF and the Vagrantfiles declare.
    pub hardware: Hardware,
    /// Where downloads are kept.
    pub cache_dir: PathBuf,
    /// How the QEMU session runs the machine.
    pub qemu: imgbake_qemu::Settings,
}

impl Settings {
    /// The settings of `image`.
    pub fn resolve(tree: &Tree, image: &Image) -> Result<Settings, BuildError> {
        let empty = VirtualboxSettings::default();
        let v = schema::of(image).unwrap_or(&empty);
        let config = |msg: String, span: Option<Span>| {
            let e = BuildError::new(ErrorKind::Config, format!("image `{}`: {msg}", image.name));
            match span {
                Some(s) => e.at(s),
                None => e,
            }
        };
        let accelerator = match v.accelerator.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("auto") => Accelerator::Auto,
            Some("kvm") => Accelerator::Kvm,
            Some("tcg") => Accelerator::Tcg,
            Some(other) => {
                return Err(config(
                    format!("unknown virtualbox.accelerator `{other}`"),
                    v.accelerator.as_ref().map(|a| Span::new(a.span())),
                ));
            }
        };
        let output_dir = match &v.output_dir {
            Some(d) => tree.path(d),
            None => tree.root_dir().join("output"),
        };
        let memory_mib = v.memory.as_ref().map(|m| m.get_ref().bytes() >> 20).unwrap_or(1024);
        let cpus = v.cpus.unwrap_or(1).max(1);
        let windows = image.communicator.os == Some(imgbake_config::Os::Windows);
        let os_type = v.os_type.clone().unwrap_or_else(|| if windows { "Windows2019_64" } else { "Linux_64" }.into());
        let mut hardware = Hardware::new(image.name.clone(), os_type, memory_mib, cpus);
        if v.disk_controller.as_ref().is_some_and(|c| c.get_ref() == "ide") {
            hardware.disk_controller = DiskController::Ide;
        }
        let cache_dir = match &v.cache_dir {
            Some(d) => tree.path(d),
            None => default_cache_dir(),
        };
        Ok(Settings {
            formats: schema::formats_of(image),
            output_dir: output_dir.clone(),
            hardware,
            cache_dir,
            qemu: imgbake_qemu::Settings {
                output_dir,
                accelerator,
                memory_mib,
                cpus,
                disk_size: v.disk_size.as_ref().map(|s| (s.get_ref().bytes(), Some(Span::new(s.span())))),
                format: OutputFormat::Qcow2,
                qemu_args: v.qemu_args.clone(),
                binary: v.binary.clone().unwrap_or_else(|| "qemu-system-x86_64".into()),
                shutdown_timeout: v.shutdown_timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(120)),
                boot_timeout: v.boot_timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(300)),
            },
        })
    }

    /// Does the build write `format`?
    pub fn writes(&self, format: &str) -> bool {
        self.formats.iter().any(|f| f == format)
    }
}

/// `$XDG_CACHE_HOME/imgbake/downloads`, else `~/.cache/imgbake/downloads`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("imgbake").join("downloads")
}
