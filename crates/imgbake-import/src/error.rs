//! What stops an import: a file that cannot be read or parsed, or a command line that names no
//! template. Keys that cannot be carried over are not errors: they go into the [`Report`](crate::Report).

use std::path::{Path, PathBuf};

use crate::model::Loc;

/// Why an import could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A template, script or var-file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// A template is not valid JSON or HCL, or not shaped like a Packer template.
    #[error("{loc}: {message}")]
    Parse { loc: Loc, message: String },
    /// The command line does not describe an import (no template, an unknown `--chain` name...).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Error {
        Error::Read { path: path.to_path_buf(), source }
    }

    pub(crate) fn parse(loc: Loc, message: String) -> Error {
        Error::Parse { loc, message }
    }
}
