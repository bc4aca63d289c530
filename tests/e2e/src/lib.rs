//! Helpers shared by the end-to-end tests: writing trees into temp dirs and running plan/build.

use std::path::{Path, PathBuf};

/// A tree in a temp dir. `files` are (relative path, content); `.sh` files are made executable.
pub fn write_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (p, c) in files {
        write(dir.path(), p, c);
    }
    dir
}

/// Write (or overwrite) one file of a tree.
pub fn write(dir: &Path, rel: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent dir")).expect("mkdir");
    std::fs::write(&path, content).expect("write");
    if rel.ends_with(".sh") {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    path
}

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bed's QEMU base image (scripts/make-base-image.sh's cached build).
pub fn base_image() -> PathBuf {
    let out = std::process::Command::new(repo().join("scripts/make-base-image.sh"))
        .arg("--check")
        .output()
        .expect("scripts/make-base-image.sh runs");
    assert!(out.status.success(), "the QEMU base image is not built: run tests/bed/install.sh first");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
