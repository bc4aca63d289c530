//! Where the bed lives: the repository, the cache that install.sh fills, the built guest.

use std::path::{Path, PathBuf};

use crate::error::{BedError, Result};

/// The cache install.sh fills: `$IMGBAKE_CACHE`, else `$HOME/.cache/imgbake`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGBAKE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache").join("imgbake")
}

/// The repository's root directory (this crate lives at `tests/testbed`).
///
/// The path compiled in is where this crate was built; a target directory shared by checkouts in
/// different places (a relocated clone, a cache reused by CI) can hold a build from elsewhere, which
/// cargo does not rebuild for a new path. So the compiled-in root is used only if it still holds
/// the bed; otherwise the running test's package (`CARGO_MANIFEST_DIR`, set by cargo and nextest)
/// or the working directory leads to it.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compiled =
        manifest.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf());
    if compiled.join("tests/bed").is_dir() {
        return compiled;
    }
    let starts = [std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from), std::env::current_dir().ok()];
    starts
        .into_iter()
        .flatten()
        .find_map(|start| start.ancestors().find(|d| d.join("tests/bed").is_dir()).map(Path::to_path_buf))
        .unwrap_or(compiled)
}

/// moto's private virtualenv inside the cache.
pub fn venv_dir() -> PathBuf {
    cache_dir().join("venv")
}

/// The `bin` directory of the Ansible virtualenv install.sh fills (`ansible-playbook`,
/// `ansible-galaxy`).
pub fn ansible_bin_dir() -> PathBuf {
    cache_dir().join("ansible").join("bin")
}

/// `tests/bed` in the repository.
pub fn bed_dir() -> PathBuf {
    repo_root().join("tests").join("bed")
}

/// Directory of the built QEMU guest for the current guest sources (`vmlinux`, `vmlinuz`,
/// `initrd.img`, `kernel-version`).
///
/// Asks `tests/bed/guest/build.sh --check`, which hashes the guest's sources the same way the
/// build does; fails with a hint to run install.sh when that guest is not built.
pub async fn guest_dir() -> Result<PathBuf> {
    let script = bed_dir().join("guest").join("build.sh");
    if !script.exists() {
        return Err(BedError::NotInstalled { what: "the guest build script".into(), path: script });
    }
    let out = tokio::process::Command::new(&script)
        .arg("--check")
        .env("IMGBAKE_CACHE", cache_dir())
        .output()
        .await
        .map_err(|e| BedError::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(BedError::NotInstalled {
            what: format!("the QEMU test guest ({})", String::from_utf8_lossy(&out.stderr).trim()),
            path: cache_dir().join("guest"),
        });
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    for file in ["vmlinuz", "initrd.img"] {
        if !dir.join(file).is_file() {
            return Err(BedError::NotInstalled { what: format!("the QEMU test guest's {file}"), path: dir.join(file) });
        }
    }
    Ok(dir)
}

/// The kernel QEMU boots: the uncompressed `vmlinux` (PVH entry, ~3 s faster per boot under
/// TCG) when build.sh could extract it, else the compressed `vmlinuz`.
pub(crate) fn guest_kernel(guest_dir: &Path) -> PathBuf {
    let vmlinux = guest_dir.join("vmlinux");
    if vmlinux.is_file() { vmlinux } else { guest_dir.join("vmlinuz") }
}
