//! The `qemu` builder's part of the tree file: `[images.NAME.qemu]` (defaults in `[defaults.qemu]`)
//! and its `source` keys, as written, and their offline checks; [`crate::settings::Settings`] is what
//! a build uses.

use imgbake_config::units::{Duration, Size};
use imgbake_config::{BuilderSchema, Check, Diagnostic, Image, Parsed, Raw, Source, Span, Spanned, did_you_mean};
use serde::{Deserialize, Serialize};

/// The `source` keys of the `qemu` builder.
// Absent keys serialize as null: fingerprints made before builders declared their own keys hashed
// them that way, and they must not change.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSource {
    /// A disk image file, qcow2 or raw, relative to the tree file.
    pub disk: Option<Spanned<String>>,
    /// A kernel to boot directly instead of the disk's boot loader.
    pub kernel: Option<Spanned<String>>,
    /// The initrd for `kernel`.
    pub initrd: Option<Spanned<String>>,
    /// The kernel command line for `kernel`.
    pub append: Option<String>,
}

/// Settings of the `qemu` builder (`[images.NAME.qemu]`, defaults in `[defaults.qemu]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSettings {
    /// Where artifacts go (relative to the tree file). Default `output/`.
    pub output_dir: Option<Spanned<String>>,
    /// `auto` (default: KVM when usable, else TCG), `kvm` or `tcg`.
    pub accelerator: Option<Spanned<String>>,
    /// Guest memory. Default 512MiB.
    pub memory: Option<Spanned<Size>>,
    /// Guest CPUs. Default 1.
    pub cpus: Option<u32>,
    /// Grow the disk to this size (the overlay's virtual size).
    pub disk_size: Option<Spanned<Size>>,
    /// Output format: `overlay` (default, qcow2 backed by the parent), `qcow2` (flattened), `raw`,
    /// `vmdk` (VMware), `vdi` (VirtualBox).
    pub format: Option<Spanned<String>>,
    /// Extra QEMU arguments.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// The QEMU binary. Default `qemu-system-x86_64`.
    pub binary: Option<String>,
    /// How long a clean (ACPI) shutdown may take before QEMU is stopped hard. Default 2m.
    pub shutdown_timeout: Option<Duration>,
    /// How long the machine may take to boot to SSH. Default 5m.
    pub boot_timeout: Option<Duration>,
}

/// The builder's name in the tree file.
pub const NAME: &str = "qemu";

/// The output formats `format` takes.
const FORMATS: [&str; 5] = ["overlay", "qcow2", "raw", "vmdk", "vdi"];

/// Settings that change how a build runs, not what it makes (left out of fingerprints).
const OPERATIONAL: &[&str] =
    &["boot_timeout", "shutdown_timeout", "accelerator", "binary", "memory", "cpus", "output_dir"];

static NO_SOURCE: QemuSource = QemuSource { disk: None, kernel: None, initrd: None, append: None };

/// The `qemu` keys of a `source` (none set when the builder is not registered).
pub fn source_of(source: &Source) -> &QemuSource {
    source.get::<QemuSource>(NAME).unwrap_or(&NO_SOURCE)
}

/// The image's `qemu` settings table, if it has one (its own, its parent's or `[defaults.qemu]`).
pub fn of(image: &Image) -> Option<&QemuSettings> {
    image.settings::<QemuSettings>(NAME)
}

/// Declares `[images.NAME.qemu]` and the `disk`, `kernel`, `initrd`, `append` source keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct QemuSchema;

impl QemuSchema {
    /// As a schema to register.
    pub fn arc() -> std::sync::Arc<dyn BuilderSchema> {
        std::sync::Arc::new(QemuSchema)
    }
}

fn span<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

impl BuilderSchema for QemuSchema {
    fn name(&self) -> &str {
        NAME
    }

    fn source_keys(&self) -> &[&str] {
        &["disk", "kernel", "initrd", "append"]
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<QemuSettings>()
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<QemuSource>()
    }

    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        let src = source_of(source.get_ref());
        match &src.disk {
            Some(d) => cx.file(d, "source disk"),
            None => cx.push(
                Diagnostic::at(span(source), format!("source of image `{}` (qemu) needs `disk`", image.name))
                    .help("source = { disk = \"path/to/base.qcow2\" }"),
            ),
        }
        if let Some(k) = &src.kernel {
            cx.file(k, "kernel");
        }
        if let Some(i) = &src.initrd {
            cx.file(i, "initrd");
            if src.kernel.is_none() {
                cx.push(Diagnostic::at(span(i), "`initrd` needs `kernel`"));
            }
        }
    }

    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        let Some(q) = of(image) else { return };
        if let Some(a) = &q.accelerator
            && !["auto", "kvm", "tcg"].contains(&a.get_ref().as_str())
        {
            cx.push(
                Diagnostic::at(span(a), format!("unknown accelerator `{}`", a.get_ref()))
                    .help("one of: auto, kvm, tcg"),
            );
        }
        if let Some(f) = &q.format
            && !FORMATS.contains(&f.get_ref().as_str())
        {
            let d = Diagnostic::at(span(f), format!("unknown output format `{}`", f.get_ref()));
            cx.push(match did_you_mean(f.get_ref(), FORMATS) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("one of: overlay, qcow2, raw, vmdk, vdi"),
            });
        }
        if let Some(m) = &q.memory
            && m.get_ref().bytes() < 64 << 20
        {
            cx.push(Diagnostic::at(span(m), format!("memory {} is too small (at least 64MiB)", m.get_ref())));
        }
    }

    fn operational_keys(&self) -> &[&str] {
        OPERATIONAL
    }

    fn source_label(&self, source: &Source) -> Option<String> {
        source_of(source).disk.as_ref().map(|d| format!("disk {}", d.get_ref()))
    }

    /// A qcow2 (or raw) file per image: other builders can import it (e.g. an AMI written from it).
    fn makes_disks(&self) -> bool {
        true
    }
}
