//! Opening a source: an `.ova`, a Vagrant `.box` for the `virtualbox` provider (tar or tar.gz), or
//! a plain `.ovf` with its files beside it. What it is is told by its bytes, not its name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::archive::{Extracted, Sniffed, extract, safe_name, sniff};
use super::error::{FormatError, join_error};
use super::manifest::{Algorithm, Manifest, hash_file, verify_with};
use super::ovf::{DiskInfo, Ovf, parse_ovf};
use super::vmdk::remove_quietly;

/// The largest OVF descriptor or manifest we read (they are a few KiB).
pub(crate) const SMALL_FILE_LIMIT: u64 = 16 << 20;

/// What kind of source was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageKind {
    /// A tar holding an OVF descriptor (and usually a manifest) and its disks.
    Ova,
    /// A Vagrant box (tar or tar.gz with `metadata.json`) for the `virtualbox` provider.
    VagrantBox,
    /// A plain `.ovf` descriptor with its files in the same directory.
    Ovf,
}

/// An opened source, its disks ready for `qemu-img`.
#[derive(Clone, Debug)]
pub struct Opened {
    /// What it was.
    pub kind: PackageKind,
    /// Its descriptor.
    pub ovf: Ovf,
    /// Where the descriptor is (extracted, or the `.ovf` given).
    pub ovf_path: PathBuf,
    /// The disks that have files, in DiskSection order (the first is normally the boot disk), each
    /// with its file. Disks without a file (empty disks) are left out.
    pub disks: Vec<(DiskInfo, PathBuf)>,
    /// A box's provider from its `metadata.json` (always `virtualbox` here); `None` for OVAs/OVFs.
    pub provider: Option<String>,
    /// The manifest that was checked, if the package has one (its digests all matched).
    pub manifest: Option<PathBuf>,
    /// A box's own Vagrantfile, if it has one.
    pub vagrantfile: Option<PathBuf>,
}

/// Open `path` (an `.ova`, a `virtualbox` `.box` or an `.ovf`). Archives are extracted into
/// `into_dir` (created if missing; a name already there is an error, nothing is overwritten); an
/// `.ovf`'s files are used where they are. The manifest, when there is one, is verified. The
/// blocking work runs under `spawn_blocking`.
pub async fn open(path: &Path, into_dir: &Path) -> Result<Opened, FormatError> {
    let (path, into) = (path.to_path_buf(), into_dir.to_path_buf());
    tokio::task::spawn_blocking(move || open_blocking(&path, &into))
        .await
        .map_err(|e| join_error("opening the package", e))?
}

/// [`open`], blocking.
pub fn open_blocking(path: &Path, into_dir: &Path) -> Result<Opened, FormatError> {
    match sniff(path)? {
        Sniffed::Xml => open_ovf(path),
        Sniffed::Tar => open_tar(path, into_dir, false),
        Sniffed::GzipTar => open_tar(path, into_dir, true),
    }
}

/// The provider a box's `metadata.json` names.
pub(crate) fn read_provider(text: &[u8], archive: &Path) -> Result<String, FormatError> {
    let v: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| FormatError::package(archive, format!("{}: metadata.json is not JSON: {e}", archive.display())))?;
    v.get("provider")
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .ok_or_else(|| FormatError::package(archive, format!("{}: metadata.json names no provider", archive.display())))
}

fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() { "none".to_string() } else { all.join(", ") }
}

fn open_tar(path: &Path, into: &Path, gzip: bool) -> Result<Opened, FormatError> {
    let mut provider: Option<String> = None;
    // Check the provider as soon as metadata.json is out (before the disk, in most boxes).
    let files = extract(path, into, gzip, |x| {
        if x.name == "metadata.json" {
            let text = std::fs::read(&x.path).map_err(|e| FormatError::io("reading", &x.path, e))?;
            let p = read_provider(&text, path)?;
            if p != "virtualbox" {
                return Err(FormatError::WrongProvider { path: path.to_path_buf(), provider: p });
            }
            provider = Some(p);
        }
        Ok(())
    })?;
    let result = describe_extracted(path, &files, provider);
    if result.is_err() {
        for x in &files {
            remove_quietly(&x.path);
        }
    }
    result
}

fn describe_extracted(path: &Path, files: &[Extracted], provider: Option<String>) -> Result<Opened, FormatError> {
    let by_name: HashMap<&str, &Extracted> = files.iter().map(|x| (x.name.as_str(), x)).collect();
    let is_box = provider.is_some();
    let what = if is_box { "the box" } else { "the OVA" };
    let top = || files.iter().filter(|x| !x.name.contains('/'));
    let ovfs: Vec<&Extracted> = top().filter(|x| x.name.to_ascii_lowercase().ends_with(".ovf")).collect();
    let ovf_x = match ovfs.as_slice() {
        [one] => *one,
        [] if is_box => {
            return Err(FormatError::package(
                path,
                format!(
                    "box {} has no box.ovf (it holds: {})",
                    path.display(),
                    listing(top().map(|x| x.name.as_str()))
                ),
            ));
        }
        [] => {
            return Err(FormatError::package(
                path,
                format!(
                    "{} holds no .ovf descriptor (it holds: {}): not an OVA or a Vagrant box",
                    path.display(),
                    listing(top().map(|x| x.name.as_str()))
                ),
            ));
        }
        many => match many.iter().find(|x| x.name == "box.ovf").filter(|_| is_box) {
            Some(b) => *b,
            None => {
                return Err(FormatError::package(
                    path,
                    format!(
                        "{} holds several OVF descriptors ({}); imgbake reads one",
                        path.display(),
                        listing(many.iter().map(|x| x.name.as_str()))
                    ),
                ));
            }
        },
    };
    let stem = &ovf_x.name[..ovf_x.name.len() - 4];
    let mfs: Vec<&Extracted> = top().filter(|x| x.name.to_ascii_lowercase().ends_with(".mf")).collect();
    let mf = by_name.get(format!("{stem}.mf").as_str()).copied().or(match mfs.as_slice() {
        [one] => Some(*one),
        _ => None,
    });
    if let Some(mf) = mf {
        let text = read_small(&mf.path)?;
        let manifest = Manifest::parse(&String::from_utf8_lossy(&text), Path::new(&mf.name))?;
        verify_with(&manifest, Path::new(&mf.name), path, what, |name, alg| {
            Ok(match by_name.get(name) {
                None => None,
                Some(x) if alg == Algorithm::Sha256 => Some(x.sha256.clone()),
                Some(x) => Some(hash_file(&x.path, alg)?),
            })
        })?;
    }
    let text = read_small(&ovf_x.path)?;
    let label = PathBuf::from(format!("{} in {}", ovf_x.name, path.display()));
    let ovf = parse_ovf(&String::from_utf8_lossy(&text), &label)?;
    let resolve = |href: &str| -> Result<PathBuf, FormatError> {
        let name = checked_href(href, &ovf_x.name, path)?;
        let x = by_name.get(name.as_str()).ok_or_else(|| {
            FormatError::package(
                path,
                format!("{} references {href}, which is not in {what} {}", ovf_x.name, path.display()),
            )
        })?;
        Ok(x.path.clone())
    };
    for f in &ovf.files {
        let file = resolve(&f.href)?;
        check_size(&file, f.size, &f.href, &ovf_x.name, path)?;
    }
    let disks = disks_of(&ovf, &ovf_x.name, path, resolve)?;
    Ok(Opened {
        kind: if is_box { PackageKind::VagrantBox } else { PackageKind::Ova },
        ovf,
        ovf_path: ovf_x.path.clone(),
        disks,
        provider,
        manifest: mf.map(|m| m.path.clone()),
        vagrantfile: by_name.get("Vagrantfile").map(|x| x.path.clone()),
    })
}

fn open_ovf(path: &Path) -> Result<Opened, FormatError> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let ovf_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = read_small(path)?;
    let ovf = parse_ovf(&String::from_utf8_lossy(&text), path)?;
    let what = "the directory";
    let resolve = |href: &str| -> Result<PathBuf, FormatError> {
        let name = checked_href(href, &ovf_name, path)?;
        let file = dir.join(&name);
        if !file.is_file() {
            return Err(FormatError::package(
                path,
                format!("{ovf_name} references {href}, which is not in its directory {}", dir.display()),
            ));
        }
        Ok(file)
    };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mf_path = dir.join(format!("{stem}.mf"));
    let manifest = if mf_path.is_file() {
        let text = read_small(&mf_path)?;
        let manifest = Manifest::parse(&String::from_utf8_lossy(&text), &mf_path)?;
        verify_with(&manifest, &mf_path, &dir, what, |name, alg| {
            let Ok(Some(name)) = safe_name(Path::new(name)) else { return Ok(None) };
            let file = dir.join(name);
            if file.is_file() { hash_file(&file, alg).map(Some) } else { Ok(None) }
        })?;
        Some(mf_path)
    } else {
        None
    };
    for f in &ovf.files {
        let file = resolve(&f.href)?;
        check_size(&file, f.size, &f.href, &ovf_name, path)?;
    }
    let disks = disks_of(&ovf, &ovf_name, path, resolve)?;
    Ok(Opened {
        kind: PackageKind::Ovf,
        ovf,
        ovf_path: path.to_path_buf(),
        disks,
        provider: None,
        manifest,
        vagrantfile: None,
    })
}

/// An `ovf:href` as a safe relative name (no URLs, no `..`, not absolute).
pub(crate) fn checked_href(href: &str, ovf_name: &str, package: &Path) -> Result<String, FormatError> {
    let bad = |why: &str| FormatError::package(package, format!("{ovf_name} references `{href}`, {why}"));
    if href.contains("://") {
        return Err(bad("a URL; imgbake reads only files inside the package"));
    }
    match safe_name(Path::new(href)) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(bad("an empty name")),
        Err(why) => Err(bad(&format!("which is unsafe: {why}"))),
    }
}

fn check_size(file: &Path, size: Option<u64>, href: &str, ovf_name: &str, package: &Path) -> Result<(), FormatError> {
    let Some(expected) = size else { return Ok(()) };
    let actual = std::fs::metadata(file).map_err(|e| FormatError::io("reading", file, e))?.len();
    if actual != expected {
        return Err(FormatError::package(
            package,
            format!("{ovf_name} says {href} is {expected} bytes, but it is {actual} bytes (in {})", package.display()),
        ));
    }
    Ok(())
}

fn disks_of(
    ovf: &Ovf,
    ovf_name: &str,
    package: &Path,
    resolve: impl Fn(&str) -> Result<PathBuf, FormatError>,
) -> Result<Vec<(DiskInfo, PathBuf)>, FormatError> {
    let mut disks = Vec::new();
    for d in &ovf.disks {
        if let Some(href) = &d.file {
            disks.push((d.clone(), resolve(href)?));
        }
    }
    if disks.is_empty() {
        return Err(FormatError::package(
            package,
            format!("{ovf_name} (in {}) describes no disk with a file: nothing to build on", package.display()),
        ));
    }
    Ok(disks)
}

pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>, FormatError> {
    let size = std::fs::metadata(path).map_err(|e| FormatError::io("reading", path, e))?.len();
    if size > SMALL_FILE_LIMIT {
        return Err(FormatError::package(
            path,
            format!("{} is {size} bytes: too large for an OVF descriptor or manifest", path.display()),
        ));
    }
    std::fs::read(path).map_err(|e| FormatError::io("reading", path, e))
}
