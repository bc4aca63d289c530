//! The SHA-256 of a box file, streamed (boxes are gigabytes).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::CatalogError;

/// The SHA-256 of the file at `path`, lower-case hex, read in 1 MiB blocks.
///
/// Blocking: from async code, call it in `tokio::task::spawn_blocking`.
pub fn box_checksum(path: &Path) -> Result<String, CatalogError> {
    let mut file =
        std::fs::File::open(path).map_err(|e| CatalogError::io("opening the box to checksum it", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CatalogError::io("reading the box to checksum it", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.box");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(box_checksum(&empty).unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        // More than one read block.
        let big = dir.path().join("big.box");
        std::fs::write(&big, vec![b'a'; 3 << 20 | 5]).unwrap();
        let expected = hex::encode(Sha256::digest(vec![b'a'; 3 << 20 | 5]));
        assert_eq!(box_checksum(&big).unwrap(), expected);
        let err = box_checksum(&dir.path().join("missing.box")).unwrap_err();
        assert!(err.to_string().contains("missing.box"), "{err}");
    }
}
