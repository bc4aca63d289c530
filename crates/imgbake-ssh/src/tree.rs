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

/// Everything an upload sends: directories parents first, then files.
pub(crate) struct LocalTree {
    pub dirs: Vec<DirEntry>,
    pub files: Vec<FileEntry>,
}

impl LocalTree {
    pub(crate) fn total_bytes(&self) -> Option<u64> {
        Some(self.files.iter().map(|f| f.len).sum())
    }
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Walk `root` (a file or a directory; symbolic links are followed, like `scp -r`).
pub(crate) fn local_tree(root: &Path) -> Result<LocalTree, CommError> {
    let err = |path: &Path, source| CommError::LocalFile { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(root).map_err(|e| err(root, e))?;
    let mut tree = LocalTree { dirs: Vec::new(), files: Vec::new() };
    if !meta.is_dir() {
        tree.files.push(FileEntry {
            local: root.to_path_buf(),
            rel: String::new(),
            mode: mode_of(&meta),
            len: meta.len(),
        });
        return Ok(tree);
    }
    for entry in walkdir::WalkDir::new(root).follow_links(true).max_depth(MAX_DEPTH).sort_by_file_name() {
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
        if meta.is_dir() {
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

/// Create a local directory if missing (its exact mode is set once it is filled).
pub(crate) fn make_local_dir(path: &Path) -> Result<(), CommError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(CommError::LocalFile { path: path.to_path_buf(), source }),
    }
}

/// Set a local file's permission bits.
pub(crate) fn set_local_mode(path: &Path, mode: u32) -> Result<(), CommError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|source| CommError::LocalFile { path: path.to_path_buf(), source })
}
