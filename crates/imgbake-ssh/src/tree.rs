//! Local file trees for transfers: what to create and send, and local modes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use imgbake_core::communicator::CommError;

/// Deepest directory nesting a transfer follows (guards against symbolic link loops).
pub(crate) const MAX_DEPTH: usize = 64;

/// A directory to create, relative to the transfer's root (`""` is the root itself).
pub(crate) struct DirEntry {
    pub rel: String,
    pub mode: u32,
}

/// A file to send.
pub(crate) struct FileEntry {
    pub local: PathBuf,
    pub rel: String,
    pub mode: u32,
    pub len: u64,
}

/// A symbolic link inside an uploaded directory: made again on the machine, pointing where it
/// pointed (like `tar` and `rsync -l`; the link's target is not read).
pub(crate) struct LinkEntry {
    pub rel: String,
    pub target: String,
}

/// Everything an upload sends: directories parents first, then files, then links.
pub(crate) struct LocalTree {
    pub dirs: Vec<DirEntry>,
    pub files: Vec<FileEntry>,
    pub links: Vec<LinkEntry>,
}

impl LocalTree {
    pub(crate) fn total_bytes(&self) -> Option<u64> {
        Some(self.files.iter().map(|f| f.len).sum())
    }
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Walk `root` (a file or a directory, followed if it is a link); links inside it are kept as links.
pub(crate) fn local_tree(root: &Path) -> Result<LocalTree, CommError> {
    let err = |path: &Path, source| CommError::LocalFile { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(root).map_err(|e| err(root, e))?;
    let mut tree = LocalTree { dirs: Vec::new(), files: Vec::new(), links: Vec::new() };
    if !meta.is_dir() {
        tree.files.push(FileEntry {
            local: root.to_path_buf(),
            rel: String::new(),
            mode: mode_of(&meta),
            len: meta.len(),
        });
        return Ok(tree);
    }
    let walk = walkdir::WalkDir::new(root).follow_links(false).follow_root_links(true).max_depth(MAX_DEPTH);
    for entry in walk.sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("symbolic link loop"));
            err(&path, source)
        })?;
        let meta = entry.metadata().map_err(|e| {
            let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("cannot read metadata"));
            err(entry.path(), source)
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if entry.path_is_symlink() && entry.depth() > 0 {
            let target = std::fs::read_link(entry.path()).map_err(|e| err(entry.path(), e))?;
            tree.links.push(LinkEntry { rel, target: target.to_string_lossy().into_owned() });
        } else if meta.is_dir() {
            tree.dirs.push(DirEntry { rel, mode: mode_of(&meta) });
        } else if meta.is_file() {
            tree.files.push(FileEntry {
                local: entry.path().to_path_buf(),
                rel,
                mode: mode_of(&meta),
                len: meta.len(),
            });
        }
        // Sockets, FIFOs and devices are not copied.
    }
    Ok(tree)
}

/// `base` + `/` + `rel` (`rel` empty: `base`).
pub(crate) fn join_remote(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// Check one entry name of a downloaded directory, as the machine sent it. The machine controls these
/// names: one with a separator, `..`, or an absolute form would put a file outside the destination.
pub(crate) fn check_remote_name(dir: &str, name: &str) -> Result<(), CommError> {
    let bad = if name.is_empty() || name == "." || name == ".." {
        Some("is not a file name")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.len() >= 2 && name.as_bytes()[1] == b':' {
        Some("looks like a Windows drive path")
    } else {
        None
    };
    match bad {
        Some(why) => Err(CommError::RemoteFile {
            path: join_remote(dir, name),
            reason: format!(
                "refusing to download an entry whose name {why} ({name:?}): it could land outside the local destination"
            ),
        }),
        None => Ok(()),
    }
}

/// Check a `/`-separated path relative to a downloaded directory, name by name.
pub(crate) fn check_remote_rel(dir: &str, rel: &str) -> Result<(), CommError> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.starts_with('/') {
        return Err(CommError::RemoteFile {
            path: rel.into(),
            reason: "refusing to download an entry with an absolute name: it would land outside the local destination"
                .into(),
        });
    }
    rel.split('/').try_for_each(|name| check_remote_name(dir, name))
}

fn refuse_link(path: &Path) -> CommError {
    CommError::LocalFile {
        path: path.to_path_buf(),
        source: std::io::Error::other(
            "a symbolic link is in the way of the download; imgbake does not write through links (remove it)",
        ),
    }
}

/// Create a local directory if missing (its exact mode is set once it is filled). A symbolic link at
/// `path` is refused, not followed: the files written into it would land wherever it points.
pub(crate) fn make_local_dir(path: &Path) -> Result<(), CommError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(refuse_link(path)),
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(CommError::LocalFile { path: path.to_path_buf(), source: e }),
        },
        Err(source) => Err(CommError::LocalFile { path: path.to_path_buf(), source }),
    }
}

/// Create (or truncate) a local file for a download: private until its mode is set, and never through
/// a symbolic link already at `path` (O_NOFOLLOW).
pub(crate) async fn create_local_file(path: &Path) -> Result<tokio::fs::File, CommError> {
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await;
    match opened {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(refuse_link(path)),
        Err(source) => Err(CommError::LocalFile { path: path.to_path_buf(), source }),
    }
}

/// Set a downloaded file's permission bits: the machine chose them, so only the rwx bits are kept (no
/// setuid, setgid or sticky bit on the imgbake host), and never through a symbolic link.
pub(crate) fn set_local_mode(path: &Path, mode: u32) -> Result<(), CommError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(refuse_link(path)),
        _ => {}
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(|source| CommError::LocalFile { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_machine_sends_are_checked_before_they_become_local_paths() {
        for ok in ["a", "report.xml", ".hidden", "a..b", "x y", "é"] {
            assert!(check_remote_name("/d", ok).is_ok(), "{ok}");
        }
        // None of these can be made as one entry on a Linux filesystem, but a hostile server can send them.
        for bad in ["", ".", "..", "a/b", "/etc", "..\\x", "a\\b", "C:x", "c:\\w", "nul\0byte"] {
            let e = check_remote_name("/d", bad).unwrap_err().to_string();
            assert!(e.contains("refusing"), "{bad:?}: {e}");
        }
        assert!(check_remote_rel("/d", "a/b/c").is_ok());
        assert!(check_remote_rel("/d", "").is_ok());
        for bad in ["../x", "a/../../x", "/abs", "a//b", "a/./b"] {
            assert!(check_remote_rel("/d", bad).is_err(), "{bad:?}");
        }
    }
}
