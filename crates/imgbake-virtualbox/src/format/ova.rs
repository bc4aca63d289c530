//! Writing OVAs: a ustar archive with the `.ovf` first, then the `.mf`, then the disks (the order
//! the OVF specification requires, so an importer can stream it).

use std::path::Path;

use super::archive::{Member, write_tar};
use super::error::{FormatError, join_error};
use super::manifest::{Algorithm, Manifest, hash_reader};
use super::ovf::{Hardware, OvfDisk, write_ovf};
use super::vmdk::StreamDisk;

/// A file name stem made of `name`: ASCII letters, digits, `.`, `_` and `-` (others become `_`),
/// at most 64 bytes, never empty or hidden.
pub fn package_stem(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    s.truncate(64);
    let s = s.trim_start_matches(['.', '-']).to_string();
    if s.is_empty() { "vm".to_string() } else { s }
}

/// The OVF, the manifest and the disk members of a package whose descriptor is `stem.ovf` and
/// whose disks are `disk_names`.
pub(crate) fn ovf_members(
    hw: &Hardware,
    stem: &str,
    disks: &[StreamDisk],
    disk_names: &[String],
) -> Result<Vec<Member>, FormatError> {
    let described: Vec<OvfDisk> = disks
        .iter()
        .zip(disk_names)
        .map(|(d, name)| OvfDisk {
            file_name: name.clone(),
            file_size: d.file_size,
            capacity: d.capacity,
            populated_size: Some(d.populated_size),
        })
        .collect();
    let ovf = write_ovf(hw, &described)?;
    let ovf_name = format!("{stem}.ovf");
    let mut manifest = Manifest::default();
    manifest.push_sha256(&ovf_name, hash_reader(ovf.as_bytes(), Algorithm::Sha256, Path::new(&ovf_name))?);
    for (d, name) in disks.iter().zip(disk_names) {
        manifest.push_sha256(name, &d.sha256);
    }
    let mut members = vec![Member::bytes(&ovf_name, ovf), Member::bytes(&format!("{stem}.mf"), manifest.to_text())];
    for (d, name) in disks.iter().zip(disk_names) {
        members.push(Member::file(name, &d.path, d.file_size));
    }
    Ok(members)
}

/// Write an OVA of `hw` with `disks` (the first is the boot disk) at `out`: `NAME.ovf`,
/// `NAME.mf` (SHA-256 lines), `NAME-disk001.vmdk`..., with NAME from [`package_stem`] of the
/// machine's name. Written to `out.partial` and renamed into place when complete; the tar runs
/// under `spawn_blocking`.
pub async fn write_ova(out: &Path, hw: &Hardware, disks: &[StreamDisk]) -> Result<(), FormatError> {
    let stem = package_stem(&hw.name);
    let names: Vec<String> = (1..=disks.len()).map(|i| format!("{stem}-disk{i:03}.vmdk")).collect();
    let members = ovf_members(hw, &stem, disks, &names)?;
    let out = out.to_path_buf();
    tokio::task::spawn_blocking(move || write_tar(&out, &members, false))
        .await
        .map_err(|e| join_error("writing the OVA", e))?
}

#[cfg(test)]
mod tests {
    use super::package_stem;

    #[test]
    fn stems() {
        assert_eq!(package_stem("debian 12 / web"), "debian_12___web");
        assert_eq!(package_stem("..hidden"), "hidden");
        assert_eq!(package_stem("ünï"), "_n_");
        assert_eq!(package_stem(""), "vm");
        assert_eq!(package_stem(&"x".repeat(200)).len(), 64);
    }
}
