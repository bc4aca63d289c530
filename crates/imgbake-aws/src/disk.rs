//! A local disk file about to become an AMI (`aws.import`): flattened to a sparse raw file, and read
//! (offline, before any AWS call) for what RegisterImage needs and what EC2 requires of the guest —
//! the boot mode from the partition table, the architecture and the ENA and NVMe drivers from the
//! root file system's kernel modules.
//!
//! The root file system is read with `debugfs` (e2fsprogs), so the driver check needs an ext2/3/4
//! root; other file systems are refused with a message saying how to skip the check
//! (`aws.check_drivers = false`) and set `architecture`/`boot_mode` by hand.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use imgbake_core::error::{BuildError, ErrorKind};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// What the disk says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// `legacy-bios`, `uefi` or `uefi-preferred`.
    pub boot_mode: String,
    /// `x86_64` or `arm64`, when a root file system with a kernel was found.
    pub architecture: Option<String>,
    /// The newest kernel's version (`/usr/lib/modules/VERSION`), when found.
    pub kernel: Option<String>,
    /// Drivers EC2 needs that this kernel lacks (`ena`, `nvme`).
    pub missing_drivers: Vec<&'static str>,
}

/// A partition: its byte offset and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Partition {
    offset: u64,
    kind: PartKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartKind {
    Esp,
    BiosBoot,
    Linux,
    Other,
}

/// GPT partition type GUIDs as stored on disk (the first three fields little-endian).
const GPT_ESP: [u8; 16] = guid(0xC12A7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
const GPT_BIOS_BOOT: [u8; 16] = guid(0x21686148, 0x6449, 0x6E6F, [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49]);
const GPT_LINUX: [&[u8; 16]; 3] = [
    // Linux file system data, root (x86-64), root (arm64).
    &guid(0x0FC63DAF, 0x8483, 0x4772, [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]),
    &guid(0x4F68BCE3, 0xE8CD, 0x4DB1, [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09]),
    &guid(0xB921B045, 0x1DF0, 0x41C3, [0xAF, 0x44, 0x4C, 0x6F, 0x28, 0x0D, 0x3F, 0xAE]),
];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

fn local(message: String) -> BuildError {
    BuildError::new(ErrorKind::Local, message)
}

/// Flatten `source` (any format `qemu-img` reads, backing chain included) into a sparse raw file at
/// `raw`. Returns the disk's size in bytes.
pub async fn to_raw(source: &Path, raw: &Path) -> Result<u64, BuildError> {
    let out = Command::new("qemu-img")
        .arg("convert")
        .args(["-O", "raw"])
        .arg(source)
        .arg(raw)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            local(format!(
                "cannot run qemu-img to read the disk {} ({e}); install qemu-utils (Debian) or qemu-img",
                source.display()
            ))
        })?;
    if !out.status.success() {
        return Err(local(format!(
            "qemu-img could not read the disk {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let len = tokio::fs::metadata(raw).await.map_err(|e| local(format!("{}: {e}", raw.display())))?.len();
    Ok(len)
}

/// Read the partition table and the root file system of a raw disk.
pub async fn inspect(raw: &Path, check_drivers: bool) -> Result<Inspection, BuildError> {
    let mut head = vec![0u8; 512 * 34];
    let mut f = tokio::fs::File::open(raw).await.map_err(|e| local(format!("{}: {e}", raw.display())))?;
    let mut got = 0;
    while got < head.len() {
        let n = f.read(&mut head[got..]).await.map_err(|e| local(format!("{}: {e}", raw.display())))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    let parts = partitions(&head, &mut f).await.map_err(|e| local(format!("{}: {e}", raw.display())))?;
    if parts.is_empty() {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!(
                "the disk {} has no partition table: EC2 boots a disk with a boot loader and partitions (MBR or GPT)",
                raw.display()
            ),
        ));
    }
    let esp = parts.iter().any(|p| p.kind == PartKind::Esp);
    let bios = parts.iter().any(|p| p.kind == PartKind::BiosBoot) || !is_gpt(&head);
    let boot_mode = match (esp, bios) {
        (true, true) => "uefi-preferred",
        (true, false) => "uefi",
        _ => "legacy-bios",
    };
    let mut found = Inspection { boot_mode: boot_mode.into(), ..Default::default() };
    for p in parts.iter().filter(|p| p.kind == PartKind::Linux) {
        if !is_ext(raw, p.offset).await {
            continue;
        }
        if let Some(k) = kernel(raw, p.offset).await? {
            found.architecture = architecture(raw, p.offset).await;
            found.missing_drivers = missing_drivers(raw, p.offset, &k.1).await;
            found.kernel = Some(k.0);
            break;
        }
    }
    if check_drivers && found.kernel.is_none() {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!(
                "found no ext2/3/4 root file system with kernel modules on the disk {}, so imgbake cannot check that it has the drivers EC2 needs (ENA, NVMe); if you know it has them, set aws.check_drivers = false (and aws.architecture)",
                raw.display()
            ),
        ));
    }
    Ok(found)
}

fn is_gpt(head: &[u8]) -> bool {
    head.get(512..520) == Some(b"EFI PART")
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The partitions of an MBR or GPT disk (`head`: its first 34 sectors).
async fn partitions(head: &[u8], f: &mut tokio::fs::File) -> std::io::Result<Vec<Partition>> {
    if head.get(510..512) != Some(&[0x55, 0xAA]) {
        return Ok(Vec::new());
    }
    if !is_gpt(head) {
        let mut out = Vec::new();
        for i in 0..4 {
            let e = 446 + i * 16;
            let (Some(&kind), Some(start), Some(len)) = (head.get(e + 4), u32_at(head, e + 8), u32_at(head, e + 12))
            else {
                continue;
            };
            if kind == 0 || len == 0 {
                continue;
            }
            let kind = match kind {
                0xEF => PartKind::Esp,
                0x83 => PartKind::Linux,
                _ => PartKind::Other,
            };
            out.push(Partition { offset: u64::from(start) * 512, kind });
        }
        return Ok(out);
    }
    let (Some(lba), Some(count), Some(size)) = (u64_at(head, 512 + 72), u32_at(head, 512 + 80), u32_at(head, 512 + 84))
    else {
        return Ok(Vec::new());
    };
    // The UEFI spec: entries of 128 × 2^n bytes; anything else (or absurdly large) is no table.
    let (count, size) = (count.min(256) as usize, size as usize);
    if !(128..=4096).contains(&size) || !size.is_power_of_two() {
        return Ok(Vec::new());
    }
    use tokio::io::AsyncSeekExt;
    let mut table = vec![0u8; count * size];
    f.seek(std::io::SeekFrom::Start(lba.saturating_mul(512))).await?;
    f.read_exact(&mut table).await?;
    let mut out = Vec::new();
    for e in table.chunks_exact(size) {
        let Some(t) = e.get(0..16) else { continue };
        if t.iter().all(|b| *b == 0) {
            continue;
        }
        let kind = if t == GPT_ESP {
            PartKind::Esp
        } else if t == GPT_BIOS_BOOT {
            PartKind::BiosBoot
        } else if GPT_LINUX.iter().any(|g| t == g.as_slice()) {
            PartKind::Linux
        } else {
            PartKind::Other
        };
        out.push(Partition { offset: u64_at(e, 32).unwrap_or(0).saturating_mul(512), kind });
    }
    Ok(out)
}

/// Is there an ext2/3/4 superblock (magic 0xEF53) at this partition?
async fn is_ext(raw: &Path, offset: u64) -> bool {
    use tokio::io::AsyncSeekExt;
    let Ok(mut f) = tokio::fs::File::open(raw).await else { return false };
    let mut magic = [0u8; 2];
    let Some(at) = offset.checked_add(1024 + 56) else { return false };
    f.seek(std::io::SeekFrom::Start(at)).await.is_ok()
        && f.read_exact(&mut magic).await.is_ok()
        && magic == [0x53, 0xEF]
}

/// Run a debugfs request on the ext file system at `offset`; its standard output.
async fn debugfs(raw: &Path, offset: u64, request: &str) -> Result<Vec<u8>, BuildError> {
    let mut target = PathBuf::from(raw).into_os_string();
    target.push(format!("?offset={offset}"));
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(&target)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            local(format!("cannot run debugfs to read the disk's root file system ({e}); install e2fsprogs"))
        })?;
    Ok(out.stdout)
}

/// The newest kernel with modules: its version and modules directory.
async fn kernel(raw: &Path, offset: u64) -> Result<Option<(String, String)>, BuildError> {
    for dir in ["/usr/lib/modules", "/lib/modules"] {
        let out = debugfs(raw, offset, &format!("ls -p {dir}")).await?;
        // `ls -p` lines: /INODE/MODE/UID/GID/NAME/SIZE/ — directories have mode 040xxx.
        let mut versions: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('/').collect();
                (f.len() > 5 && f[2].starts_with("04") && f[5] != "." && f[5] != "..").then(|| f[5].to_string())
            })
            .collect();
        versions.sort_by_key(|v| version_key(v));
        if let Some(v) = versions.pop() {
            return Ok(Some((v.clone(), format!("{dir}/{v}"))));
        }
    }
    Ok(None)
}

/// Orders kernel versions numerically (6.10 after 6.9).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

/// Drivers EC2 needs that the kernel has neither as a module nor built in.
async fn missing_drivers(raw: &Path, offset: u64, modules: &str) -> Vec<&'static str> {
    let mut listed = String::new();
    for file in ["modules.dep", "modules.builtin"] {
        if let Ok(out) = debugfs(raw, offset, &format!("cat {modules}/{file}")).await {
            listed.push_str(&String::from_utf8_lossy(&out));
            listed.push('\n');
        }
    }
    let names: std::collections::BTreeSet<&str> = listed
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .filter_map(|f| f.split(".ko").next())
        .collect();
    ["ena", "nvme"].into_iter().filter(|d| !names.contains(d)).collect()
}

/// The architecture of the file system's programs (the ELF machine of `/usr/bin/true`).
async fn architecture(raw: &Path, offset: u64) -> Option<String> {
    for p in ["/usr/bin/true", "/bin/true"] {
        let out = debugfs(raw, offset, &format!("cat {p}")).await.ok()?;
        if out.get(0..4) == Some(b"\x7fELF") {
            return match u16::from_le_bytes(out.get(18..20)?.try_into().ok()?) {
                0x3E => Some("x86_64".into()),
                0xB7 => Some("arm64".into()),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        // The ESP type as it appears on disk (UEFI spec, GPT partition entry).
        assert_eq!(GPT_ESP[..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(GPT_ESP[4..8], [0x1F, 0xF8, 0xD2, 0x11]);
        assert_eq!(GPT_ESP[8..], [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
    }

    #[test]
    fn kernel_versions_order_numerically() {
        let mut v = ["6.10.0-1-amd64".to_string(), "6.9.12-amd64".into(), "6.1.0-57-amd64".into()];
        v.sort_by_key(|x| version_key(x));
        assert_eq!(v.last().map(String::as_str), Some("6.10.0-1-amd64"));
    }
}
