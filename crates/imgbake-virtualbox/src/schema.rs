//! The `virtualbox` builder's part of the tree file: `[images.NAME.virtualbox]` (defaults in
//! `[defaults.virtualbox]`), its `source` keys and its `publish` keys, as written, with their offline
//! checks. [`crate::settings::Settings`] is what a build uses.

use imgbake_config::units::{Duration, Size};
use imgbake_config::{BuilderSchema, Check, Diagnostic, Image, Parsed, Raw, Source, Span, Spanned, did_you_mean};
use serde::{Deserialize, Serialize};

/// The builder's name in the tree file.
pub const NAME: &str = "virtualbox";

/// What a build writes (`formats`).
pub const FORMATS: [&str; 3] = ["ova", "box", "libvirt"];

/// The `source` keys of the `virtualbox` builder: a package by path or URL, or a parent published
/// to a store.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualboxSource {
    /// A Vagrant box for the `virtualbox` provider (`.box`), by path (relative to the tree file) or URL.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub vagrant_box: Option<Spanned<String>>,
    /// An OVA, by path or URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ova: Option<Spanned<String>>,
    /// An OVF with its disks beside it, by path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ovf: Option<Spanned<String>>,
    /// A plain disk image any `qemu-img` reads (qcow2, raw, vmdk, vdi), by path: the same key as
    /// the qemu builder's, so one base disk starts both chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<Spanned<String>>,
    /// The package's SHA-256 (required for a URL; checked for a path when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Spanned<String>>,
    /// A store (`[stores.NAME]`) an image of this tree was published to...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<Spanned<String>>,
    /// ...and that image's name: its newest published box or OVA is the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Spanned<String>>,
}

impl VirtualboxSource {
    /// The package given by path or URL, and which key gave it.
    pub fn package(&self) -> Option<(&'static str, &Spanned<String>)> {
        [("box", &self.vagrant_box), ("ova", &self.ova), ("ovf", &self.ovf), ("disk", &self.disk)]
            .into_iter()
            .find_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

/// Settings of the `virtualbox` builder (`[images.NAME.virtualbox]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualboxSettings {
    /// What to write: any of `ova`, `box` (Vagrant, `virtualbox` provider), `libvirt` (Vagrant,
    /// `libvirt` provider). Default `["box"]`.
    pub formats: Option<Spanned<Vec<String>>>,
    /// Where artifacts go (relative to the tree file). Default `output/`.
    pub output_dir: Option<Spanned<String>>,
    /// The VirtualBox OS type the OVF declares (`Debian_64`, `Ubuntu_64`, `Windows2019_64`...).
    /// Default `Linux_64` (`Windows2019_64` for `communicator.os = "windows"`).
    pub os_type: Option<String>,
    /// Memory, for the build machine and the OVF. Default 1GiB.
    pub memory: Option<Spanned<Size>>,
    /// CPUs, for the build machine and the OVF. Default 1.
    pub cpus: Option<u32>,
    /// Grow the disk to this size.
    pub disk_size: Option<Spanned<Size>>,
    /// The disk controller the OVF declares: `sata` (default) or `ide`.
    pub disk_controller: Option<Spanned<String>>,
    /// What runs the build machine: `qemu` (default; KVM when usable, else TCG). `vboxmanage` is
    /// not available yet (no machine with VirtualBox to test it on).
    pub driver: Option<Spanned<String>>,
    /// `auto` (default), `kvm` or `tcg` for the `qemu` driver.
    pub accelerator: Option<Spanned<String>>,
    /// Extra QEMU arguments.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// The QEMU binary. Default `qemu-system-x86_64`.
    pub binary: Option<String>,
    /// How long the machine may take to boot to SSH. Default 5m.
    pub boot_timeout: Option<Duration>,
    /// How long a clean (ACPI) shutdown may take. Default 2m.
    pub shutdown_timeout: Option<Duration>,
    /// Where downloaded source packages are kept (content-addressed). Default
    /// `~/.cache/imgbake/downloads`.
    pub cache_dir: Option<Spanned<String>>,
}

/// A Vagrant catalog to add each new box to (`publish.vagrant`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VagrantPublish {
    /// The catalog (`metadata.json`): a path relative to the tree file, or, with `publish.store`,
    /// a key in that store.
    pub catalog: Spanned<String>,
    /// The box name developers add (`team/base`).
    pub name: Spanned<String>,
    /// Where developers download a box: a URL in which `{file}` is the box's file name. Default:
    /// the store's URL of the uploaded box, or a `file://` URL of the local box.
    pub url: Option<Spanned<String>>,
    /// How many versions the catalog keeps. Default 5.
    pub keep: Option<Spanned<u32>>,
    /// `date` (default: `YYYY.MMDD.N`) or `semver` (patch bump of the newest).
    pub version: Option<Spanned<String>>,
    /// The catalog's description.
    pub description: Option<String>,
}

/// The `publish` keys of the `virtualbox` builder.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualboxPublish {
    /// Add each new box to a Vagrant catalog.
    pub vagrant: Option<VagrantPublish>,
}

/// Settings that change how a build runs, not what it makes (left out of fingerprints).
const OPERATIONAL: &[&str] =
    &["output_dir", "driver", "accelerator", "binary", "boot_timeout", "shutdown_timeout", "cache_dir"];

/// The image's `virtualbox` settings table, if it has one.
pub fn of(image: &Image) -> Option<&VirtualboxSettings> {
    image.settings::<VirtualboxSettings>(NAME)
}

/// The `virtualbox` keys of a `source`.
pub fn source_of(source: &Source) -> Option<&VirtualboxSource> {
    source.get::<VirtualboxSource>(NAME)
}

/// The image's `publish.vagrant`.
pub fn vagrant_of(image: &Image) -> Option<&VagrantPublish> {
    image.publish.as_ref()?.get::<VirtualboxPublish>(NAME)?.vagrant.as_ref()
}

/// Is `s` a URL imgbake downloads (rather than a local path)?
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn span<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

/// Declares `[images.NAME.virtualbox]`, its `source` keys and `publish.vagrant` / `publish.store`.
#[derive(Clone, Copy, Debug, Default)]
pub struct VirtualboxSchema;

impl VirtualboxSchema {
    /// As a schema to register.
    pub fn arc() -> std::sync::Arc<dyn BuilderSchema> {
        std::sync::Arc::new(VirtualboxSchema)
    }
}

impl BuilderSchema for VirtualboxSchema {
    fn name(&self) -> &str {
        NAME
    }

    fn source_keys(&self) -> &[&str] {
        &["box", "ova", "ovf", "disk", "sha256", "store", "image"]
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<VirtualboxSettings>()
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<VirtualboxSource>()
    }

    fn publish_keys(&self) -> &[&str] {
        &["store", "vagrant"]
    }

    fn parse_publish(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<VirtualboxPublish>()
    }

    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        let Some(src) = source_of(source.get_ref()) else { return };
        check_source(cx, image, span(source), src);
    }

    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        check_settings(cx, image);
        check_publish(cx, image);
        check_parent(cx, image);
    }

    fn operational_keys(&self) -> &[&str] {
        OPERATIONAL
    }

    fn local_files<'a>(&self, image: &'a Image) -> Vec<&'a Spanned<String>> {
        // A local package is part of the fingerprint through the resolved source (its hash).
        let _ = image;
        Vec::new()
    }

    fn source_label(&self, source: &Source) -> Option<String> {
        let s = source_of(source)?;
        if let Some((k, v)) = s.package() {
            return Some(format!("{k} {}", v.get_ref()));
        }
        Some(format!("{} from store {}", s.image.as_ref()?.get_ref(), s.store.as_ref()?.get_ref()))
    }
}

fn check_source(cx: &mut Check<'_>, image: &Image, at: Span, src: &VirtualboxSource) {
    let what = format!("source of image `{}` (virtualbox)", image.name);
    cx.one_of(
        at,
        &what,
        &[
            ("box", src.vagrant_box.is_some()),
            ("ova", src.ova.is_some()),
            ("ovf", src.ovf.is_some()),
            ("disk", src.disk.is_some()),
            ("store", src.store.is_some()),
        ],
    );
    if let Some((key, p)) = src.package() {
        let v = p.get_ref();
        if is_url(v) {
            if key == "ovf" || key == "disk" {
                cx.push(
                    Diagnostic::at(span(p), format!("source.{key} must be a local path"))
                        .help("for a download, use an OVA (source.ova) or a box (source.box)"),
                );
            } else if src.sha256.is_none() {
                cx.push(
                    Diagnostic::at(span(p), format!("source.{key} is a URL: give its sha256 too"))
                        .help("imgbake verifies every download; `sha256sum FILE` prints it"),
                );
            }
        } else if v.contains("://") {
            cx.push(Diagnostic::at(span(p), format!("source.{key}: only http(s) URLs and local paths are supported")));
        } else {
            cx.file(p, &format!("source.{key}"));
        }
    }
    if let Some(h) = &src.sha256
        && !(h.get_ref().len() == 64 && h.get_ref().chars().all(|c| c.is_ascii_hexdigit()))
    {
        cx.push(Diagnostic::at(span(h), "source.sha256 must be 64 hexadecimal digits (a SHA-256)"));
    }
    match (&src.store, &src.image) {
        (Some(st), Some(_)) => cx.store(st, &format!("source.store of image `{}`", image.name)),
        (Some(st), None) => cx.push(
            Diagnostic::at(span(st), "source.store needs `image`: the image whose published box to start from")
                .help("e.g. source = { store = \"boxes\", image = \"base\" }"),
        ),
        (None, Some(i)) => cx.push(Diagnostic::at(span(i), "source.image is read with source.store only")),
        (None, None) => {}
    }
}

fn check_settings(cx: &mut Check<'_>, image: &Image) {
    let Some(v) = of(image) else { return };
    if let Some(f) = &v.formats {
        if f.get_ref().is_empty() {
            cx.push(Diagnostic::at(span(f), "virtualbox.formats is empty: give at least one of ova, box, libvirt"));
        }
        for (i, name) in f.get_ref().iter().enumerate() {
            if !FORMATS.contains(&name.as_str()) {
                let d = Diagnostic::at(span(f), format!("unknown format `{name}` in virtualbox.formats"));
                cx.push(match did_you_mean(name, FORMATS) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => {
                        d.help("formats: ova, box (Vagrant, virtualbox provider), libvirt (Vagrant, libvirt provider)")
                    }
                });
            }
            if f.get_ref()[..i].contains(name) {
                cx.push(Diagnostic::at(span(f), format!("`{name}` is listed twice in virtualbox.formats")));
            }
        }
    }
    if let Some(d) = &v.driver {
        match d.get_ref().as_str() {
            "qemu" => {}
            "vboxmanage" => cx.push(
                Diagnostic::at(span(d), "virtualbox.driver = \"vboxmanage\" is not available yet")
                    .help("imgbake runs VirtualBox builds under QEMU (driver = \"qemu\") and writes VirtualBox's formats; driving a real VirtualBox waits for a machine to test it on (docs/builders/virtualbox.md)"),
            ),
            other => cx.push(Diagnostic::at(span(d), format!("unknown virtualbox.driver `{other}` (qemu)"))),
        }
    }
    if let Some(a) = &v.accelerator
        && !["auto", "kvm", "tcg"].contains(&a.get_ref().as_str())
    {
        cx.push(Diagnostic::at(
            span(a),
            format!("unknown virtualbox.accelerator `{}` (auto, kvm or tcg)", a.get_ref()),
        ));
    }
    if let Some(c) = &v.disk_controller
        && !["sata", "ide"].contains(&c.get_ref().as_str())
    {
        cx.push(Diagnostic::at(span(c), format!("unknown virtualbox.disk_controller `{}` (sata or ide)", c.get_ref())));
    }
    if let Some(m) = &v.memory
        && m.get_ref().bytes() < 64 << 20
    {
        cx.push(Diagnostic::at(span(m), "virtualbox.memory must be at least 64MiB"));
    }
}

/// A child starts from its parent's OVA or VirtualBox box: the parent must write one.
fn check_parent(cx: &mut Check<'_>, image: &Image) {
    let Some(p) = &image.parent else { return };
    let Some(parent) = cx.tree().image(p.get_ref()) else { return };
    if parent.has_builder(NAME) && !formats_of(parent).iter().any(|f| f == "ova" || f == "box") {
        cx.push(
            Diagnostic::at(
                span(p),
                format!("image `{}` starts from `{}`, which writes no OVA or VirtualBox box", image.name, p.get_ref()),
            )
            .help(format!("add \"box\" or \"ova\" to virtualbox.formats of `{}`", p.get_ref())),
        );
    }
}

fn check_publish(cx: &mut Check<'_>, image: &Image) {
    let Some(vp) = vagrant_of(image) else { return };
    let formats = formats_of(image);
    if !formats.iter().any(|f| f == "box" || f == "libvirt") {
        cx.push(
            Diagnostic::at(
                span(&vp.catalog),
                format!("publish.vagrant of image `{}`: it writes no Vagrant box", image.name),
            )
            .help("add \"box\" or \"libvirt\" to virtualbox.formats"),
        );
    }
    let n = vp.name.get_ref();
    if n.is_empty() || n.contains(char::is_whitespace) || n.starts_with('/') || n.ends_with('/') {
        cx.push(
            Diagnostic::at(span(&vp.name), format!("`{n}` is not a Vagrant box name"))
                .help("use ORGANIZATION/NAME, e.g. team/base"),
        );
    }
    if let Some(v) = &vp.version
        && !["date", "semver"].contains(&v.get_ref().as_str())
    {
        cx.push(Diagnostic::at(span(v), format!("unknown publish.vagrant.version `{}` (date or semver)", v.get_ref())));
    }
    if let Some(k) = &vp.keep
        && *k.get_ref() == 0
    {
        cx.push(Diagnostic::at(span(k), "publish.vagrant.keep must be at least 1"));
    }
    if let Some(u) = &vp.url
        && !(is_url(u.get_ref()) || u.get_ref().starts_with("file://"))
    {
        cx.push(Diagnostic::at(span(u), "publish.vagrant.url must be an http(s):// or file:// URL"));
    }
}

/// The formats an image writes (default `box`).
pub fn formats_of(image: &Image) -> Vec<String> {
    of(image).and_then(|v| v.formats.as_ref()).map(|f| f.get_ref().clone()).unwrap_or_else(|| vec!["box".to_string()])
}
