//! Checking written artifacts with real tools: manifest digests, every OVF file reference present
//! with its size, each disk's capacity against `qemu-img info`, the VMDK subformat, and a clean
//! `qemu-img check`.
//!
//! Plain tars (OVAs, virtualbox boxes) are checked in place: members are hashed where they lie and
//! qemu-img reads a disk through a `raw` driver window on the archive (`offset`/`size`), so nothing
//! is copied. A tar.gz (libvirt box) is extracted into a temporary directory beside it first.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::archive::{Extracted, Located, Sniffed, extract, index, open_located, read_located, sniff};
use super::error::{FormatError, join_error};
use super::manifest::{Algorithm, Manifest, hash_file, hash_reader, verify_with};
use super::ovf::{DiskInfo, parse_ovf};
use super::package::{SMALL_FILE_LIMIT, checked_href, read_provider};
use super::vmdk::{ImageInfo, check_of, info_of};

/// What a verification looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The archive's members, in order.
    pub members: Vec<String>,
    /// A box's provider.
    pub provider: Option<String>,
    /// How many manifest lines were checked (0: no manifest).
    pub manifest_lines: usize,
    /// The disks, as qemu-img saw them.
    pub disks: Vec<VerifiedDisk>,
}

/// One checked disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDisk {
    /// Its name in the archive.
    pub file: String,
    /// What qemu-img says of it.
    pub info: ImageInfo,
}

/// An archive's members, readable in place (plain tar) or from an extraction (tar.gz).
enum View {
    Tar { archive: PathBuf, members: Vec<Located> },
    Dir { files: Vec<Extracted>, _tmp: tempfile::TempDir },
}

impl View {
    fn names(&self) -> Vec<String> {
        match self {
            View::Tar { members, .. } => members.iter().map(|m| m.name.clone()).collect(),
            View::Dir { files, .. } => files.iter().map(|f| f.name.clone()).collect(),
        }
    }

    fn size(&self, name: &str) -> Option<u64> {
        match self {
            View::Tar { members, .. } => members.iter().find(|m| m.name == name).map(|m| m.size),
            View::Dir { files, .. } => files.iter().find(|f| f.name == name).map(|f| f.size),
        }
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FormatError> {
        match self {
            View::Tar { archive, members } => match members.iter().find(|m| m.name == name) {
                Some(m) => read_located(archive, m, SMALL_FILE_LIMIT).map(Some),
                None => Ok(None),
            },
            View::Dir { files, .. } => match files.iter().find(|f| f.name == name) {
                Some(f) => super::package::read_small(&f.path).map(Some),
                None => Ok(None),
            },
        }
    }

    fn digest(&self, name: &str, alg: Algorithm) -> Result<Option<String>, FormatError> {
        match self {
            View::Tar { archive, members } => match members.iter().find(|m| m.name == name) {
                Some(m) => hash_reader(open_located(archive, m)?, alg, archive).map(Some),
                None => Ok(None),
            },
            View::Dir { files, .. } => match files.iter().find(|f| f.name == name) {
                Some(f) if alg == Algorithm::Sha256 => Ok(Some(f.sha256.clone())),
                Some(f) => hash_file(&f.path, alg).map(Some),
                None => Ok(None),
            },
        }
    }

    /// What to hand qemu-img for member `name` in `format`: a `json:` spec over the tar, or the
    /// extracted file with `-f format`.
    fn qemu_target(&self, name: &str, format: &'static str) -> Option<(OsString, Option<&'static str>)> {
        match self {
            View::Tar { archive, members } => {
                let m = members.iter().find(|m| m.name == name)?;
                let spec = serde_json::json!({
                    "driver": format,
                    "file": {
                        "driver": "raw",
                        "offset": m.offset,
                        "size": m.size,
                        "file": { "driver": "file", "filename": archive.to_string_lossy() },
                    },
                });
                Some((OsString::from(format!("json:{spec}")), None))
            }
            View::Dir { files, .. } => {
                let f = files.iter().find(|f| f.name == name)?;
                Some((f.path.clone().into_os_string(), Some(format)))
            }
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, FormatError> {
    path.canonicalize().map_err(|e| FormatError::io("resolving", path, e))
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, FormatError> + Send + 'static,
) -> Result<T, FormatError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| join_error(what, e))?
}

/// The OVF-level checks of a package whose descriptor is `ovf_name`: manifest (when `mf_name` is
/// given; required when `require_manifest`), file references and sizes. Returns the disks with
/// their member names and the number of manifest lines checked.
fn check_ovf_package(
    view: &View,
    package: &Path,
    ovf_name: &str,
    mf_name: Option<&str>,
    what: &str,
) -> Result<(Vec<(DiskInfo, String)>, usize), FormatError> {
    let fail = |d: String| FormatError::verify(package, d);
    let mut manifest_lines = 0;
    let mut manifest = None;
    if let Some(mf_name) = mf_name {
        let text = view.read(mf_name)?.ok_or_else(|| fail(format!("it has no manifest {mf_name}")))?;
        let m = Manifest::parse(&String::from_utf8_lossy(&text), Path::new(mf_name))?;
        verify_with(&m, Path::new(mf_name), package, what, |name, alg| view.digest(name, alg))?;
        manifest_lines = m.entries.len();
        if m.get(ovf_name).is_none() {
            return Err(fail(format!("the manifest {mf_name} does not list the descriptor {ovf_name}")));
        }
        manifest = Some(m);
    }
    let text = view.read(ovf_name)?.ok_or_else(|| fail(format!("it has no {ovf_name}")))?;
    let label = PathBuf::from(format!("{ovf_name} in {}", package.display()));
    let ovf = parse_ovf(&String::from_utf8_lossy(&text), &label)?;
    for f in &ovf.files {
        let name = checked_href(&f.href, ovf_name, package)?;
        let size = view
            .size(&name)
            .ok_or_else(|| fail(format!("{ovf_name} references {}, which is not in {what}", f.href)))?;
        match f.size {
            Some(s) if s != size => {
                return Err(fail(format!("{ovf_name} says {} is {s} bytes, but it is {size} bytes", f.href)));
            }
            None => return Err(fail(format!("{ovf_name} gives no ovf:size for {}", f.href))),
            _ => {}
        }
        if let Some(m) = &manifest
            && m.get(&name).is_none()
        {
            return Err(fail(format!("the manifest does not list {name}")));
        }
    }
    let disks: Vec<(DiskInfo, String)> =
        ovf.disks.iter().filter_map(|d| d.file.as_ref().map(|f| (d.clone(), f.clone()))).collect();
    if disks.is_empty() {
        return Err(fail(format!("{ovf_name} describes no disk with a file")));
    }
    Ok((disks, manifest_lines))
}

/// qemu-img's view of each disk: a streamOptimized VMDK whose virtual size is the OVF capacity,
/// and a clean check.
async fn check_vmdks(
    view: &View,
    package: &Path,
    disks: &[(DiskInfo, String)],
) -> Result<Vec<VerifiedDisk>, FormatError> {
    let mut out = Vec::new();
    for (disk, file) in disks {
        let fail = |d: String| FormatError::verify(package, d);
        let (target, format) = view.qemu_target(file, "vmdk").ok_or_else(|| fail(format!("{file} is missing")))?;
        let info = info_of(&target, format).await?;
        if info.format != "vmdk" || info.create_type.as_deref() != Some("streamOptimized") {
            return Err(fail(format!(
                "{file} is {} ({}), not a streamOptimized VMDK",
                info.format,
                info.create_type.as_deref().unwrap_or("no subformat")
            )));
        }
        if info.virtual_size != disk.capacity {
            return Err(fail(format!(
                "disk {} says its capacity is {} bytes, but qemu-img says {file} holds {} bytes",
                disk.id, disk.capacity, info.virtual_size
            )));
        }
        check_of(&target, format).await.map_err(|e| fail(format!("qemu-img check of {file}: {e}")))?;
        out.push(VerifiedDisk { file: file.clone(), info });
    }
    Ok(out)
}

/// Verify an OVA: a plain tar whose first member is the `.ovf` and second its `.mf`; every manifest
/// digest matches; every file the OVF references is there with its `ovf:size` and in the manifest;
/// each disk is a streamOptimized VMDK whose virtual size is the OVF capacity and which
/// `qemu-img check` finds clean.
pub async fn verify_ova(path: &Path) -> Result<Verified, FormatError> {
    let path = absolute(path)?;
    let p = path.clone();
    let (view, members, ovf_name, mf_name) = blocking("reading the OVA", move || {
        let fail = |d: String| FormatError::verify(&p, d);
        match sniff(&p) {
            Ok(Sniffed::Tar) => {}
            Ok(Sniffed::GzipTar) => return Err(fail("it is gzip-compressed; an OVA is a plain tar".into())),
            Ok(Sniffed::Xml) => return Err(fail("it is an OVF descriptor, not an OVA".into())),
            Err(e) => return Err(e),
        }
        let members = index(&p)?;
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        let ovf_name = names.first().filter(|n| n.ends_with(".ovf") && !n.contains('/')).cloned().ok_or_else(|| {
            fail(format!("its first member is {:?}; an OVA starts with its .ovf descriptor", names.first()))
        })?;
        let mf_name = format!("{}.mf", &ovf_name[..ovf_name.len() - 4]);
        if names.get(1) != Some(&mf_name) {
            return Err(fail(format!("its second member is {:?}, not the manifest {mf_name}", names.get(1))));
        }
        Ok((View::Tar { archive: p, members }, names, ovf_name, mf_name))
    })
    .await?;
    let view = std::sync::Arc::new(view);
    let (v, p, o, m) = (view.clone(), path.clone(), ovf_name.clone(), mf_name.clone());
    let (disks, manifest_lines) =
        blocking("checking the OVA", move || check_ovf_package(&v, &p, &o, Some(&m), "the OVA")).await?;
    let disks = check_vmdks(&view, &path, &disks).await?;
    Ok(Verified { members, provider: None, manifest_lines, disks })
}

/// Verify a Vagrant box. `virtualbox`: `box.ovf` and, if present, `box.mf` checked like an OVA
/// (without the member order), streamOptimized VMDKs. `libvirt`: `box.img` is a qcow2 without a
/// backing file, `metadata.json`'s `virtual_size` is its size in GiB rounded up, and
/// `qemu-img check` is clean. Other providers are an error.
pub async fn verify_box(path: &Path) -> Result<Verified, FormatError> {
    let path = absolute(path)?;
    let p = path.clone();
    let view = blocking("reading the box", move || {
        let fail = |d: String| FormatError::verify(&p, d);
        match sniff(&p)? {
            Sniffed::Tar => Ok(View::Tar { members: index(&p)?, archive: p }),
            Sniffed::GzipTar => {
                let parent = p.parent().unwrap_or(Path::new("."));
                let tmp = tempfile::Builder::new()
                    .prefix(".imgbake-verify-")
                    .tempdir_in(parent)
                    .map_err(|e| FormatError::io("creating a directory in", parent, e))?;
                let files = extract(&p, tmp.path(), true, |_| Ok(()))?;
                Ok(View::Dir { files, _tmp: tmp })
            }
            Sniffed::Xml => Err(fail("it is an OVF descriptor, not a box".into())),
        }
    })
    .await?;
    let view = std::sync::Arc::new(view);
    let members = view.names();
    let fail = |d: String| FormatError::verify(&path, d);
    let v = view.clone();
    let metadata = blocking("reading the box", move || v.read("metadata.json")).await?;
    let metadata = metadata.ok_or_else(|| fail("it has no metadata.json".into()))?;
    let provider = read_provider(&metadata, &path)?;
    match provider.as_str() {
        "virtualbox" => {
            let ovf_name = if view.size("box.ovf").is_some() {
                "box.ovf".to_string()
            } else {
                let ovfs: Vec<&String> = members.iter().filter(|n| n.ends_with(".ovf") && !n.contains('/')).collect();
                match ovfs.as_slice() {
                    [one] => (*one).clone(),
                    _ => return Err(fail(format!("it has no box.ovf (members: {})", members.join(", ")))),
                }
            };
            let mf_name = format!("{}.mf", &ovf_name[..ovf_name.len() - 4]);
            let mf = view.size(&mf_name).map(|_| mf_name);
            let (v, p) = (view.clone(), path.clone());
            let (disks, manifest_lines) =
                blocking("checking the box", move || check_ovf_package(&v, &p, &ovf_name, mf.as_deref(), "the box"))
                    .await?;
            let disks = check_vmdks(&view, &path, &disks).await?;
            Ok(Verified { members, provider: Some(provider), manifest_lines, disks })
        }
        "libvirt" => {
            let meta: HashMap<String, serde_json::Value> = serde_json::from_slice(&metadata)
                .map_err(|e| fail(format!("metadata.json is not a JSON object: {e}")))?;
            if let Some(f) = meta.get("format")
                && f.as_str() != Some("qcow2")
            {
                return Err(fail(format!("metadata.json says the format is {f}; libvirt boxes hold qcow2")));
            }
            let (target, format) =
                view.qemu_target("box.img", "qcow2").ok_or_else(|| fail("it has no box.img".into()))?;
            let info = info_of(&target, format).await?;
            if info.format != "qcow2" {
                return Err(fail(format!("box.img is {}, not qcow2", info.format)));
            }
            if let Some(b) = &info.backing_filename {
                return Err(fail(format!("box.img has a backing file ({b}); a box image must stand alone")));
            }
            let gib = info.virtual_size.div_ceil(1 << 30);
            match meta.get("virtual_size").and_then(|v| v.as_u64()) {
                Some(s) if s == gib => {}
                other => {
                    return Err(fail(format!(
                        "metadata.json's virtual_size is {other:?}, but box.img holds {} bytes ({gib} GiB rounded up)",
                        info.virtual_size
                    )));
                }
            }
            check_of(&target, format).await.map_err(|e| fail(format!("qemu-img check of box.img: {e}")))?;
            Ok(Verified {
                members,
                provider: Some(provider),
                manifest_lines: 0,
                disks: vec![VerifiedDisk { file: "box.img".into(), info }],
            })
        }
        other => Err(fail(format!("its provider is `{other}`; imgbake verifies `virtualbox` and `libvirt` boxes"))),
    }
}
