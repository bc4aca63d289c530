//! OVF manifests (`.mf`): one `ALGORITHM(file)= hexdigest` line per file.
//!
//! We write `SHA256(name)= hex` (what ovftool writes). We read that, VirtualBox's
//! `SHA256 (name) = hex`, and the `SHA1`/`SHA512` lines of older or other exporters.
//! Hashing is blocking I/O: call these from `spawn_blocking` in async code.

use std::fmt;
use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use super::error::FormatError;

/// A manifest's digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x exports by older VirtualBox and ovftool).
    Sha1,
    /// SHA-256 (what we write).
    Sha256,
    /// SHA-512 (ovftool `--shaAlgorithm=SHA512`).
    Sha512,
}

impl Algorithm {
    /// The name in a manifest line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The digest algorithm.
    pub algorithm: Algorithm,
    /// The file, as named in the package.
    pub file: String,
    /// The digest, lowercase hex.
    pub digest: String,
}

/// A parsed or to-be-written manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Its lines, in order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Parse a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, FormatError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad =
                |why: &str| FormatError::package(path, format!("{} line {}: {why}: `{line}`", path.display(), n + 1));
            let (alg, rest) = line.split_once('(').ok_or_else(|| bad("expected `ALGORITHM(file)= digest`"))?;
            let (file, digest) = rest.rsplit_once(")").ok_or_else(|| bad("no `)` after the file name"))?;
            let digest = digest.trim_start().strip_prefix('=').ok_or_else(|| bad("no `=` before the digest"))?.trim();
            // VirtualBox's reader also takes `SIZE(file)= bytes`; sizes are checked against the OVF.
            if alg.trim().eq_ignore_ascii_case("SIZE") {
                continue;
            }
            let algorithm = Algorithm::parse(alg.trim())
                .ok_or_else(|| bad("unknown digest algorithm (SHA1, SHA256 and SHA512 are read)"))?;
            if digest.len() != algorithm.hex_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("not a {algorithm} digest")));
            }
            let file = file.trim();
            if entries.iter().any(|e: &ManifestEntry| e.file == file) {
                return Err(bad(&format!("{file} is listed twice")));
            }
            entries.push(ManifestEntry { algorithm, file: file.to_string(), digest: digest.to_ascii_lowercase() });
        }
        Ok(Manifest { entries })
    }

    /// Add a SHA-256 line.
    pub fn push_sha256(&mut self, file: impl Into<String>, digest: impl Into<String>) {
        self.entries.push(ManifestEntry { algorithm: Algorithm::Sha256, file: file.into(), digest: digest.into() });
    }

    /// The manifest's text: `SHA256(file)= hex` lines, each ending in a newline.
    pub fn to_text(&self) -> String {
        self.entries.iter().map(|e| format!("{}({})= {}\n", e.algorithm, e.file, e.digest)).collect()
    }

    /// The line for `file`, if any.
    pub fn get(&self, file: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.file == file)
    }
}

/// An incremental digest of one algorithm.
pub(crate) enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> String {
        match self {
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Digest everything `reader` yields; `path` names it in errors.
pub(crate) fn hash_reader(mut reader: impl Read, algorithm: Algorithm, path: &Path) -> Result<String, FormatError> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FormatError::io("reading", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// The digest of a file, lowercase hex. Blocking.
pub fn hash_file(path: &Path, algorithm: Algorithm) -> Result<String, FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io("opening", path, e))?;
    hash_reader(file, algorithm, path)
}

/// Check every file the manifest lists against `lookup(name)`, which returns the file's digest in
/// the given algorithm, or `None` when the package has no such file. Blocking.
pub(crate) fn verify_with(
    manifest: &Manifest,
    manifest_path: &Path,
    package: &Path,
    what: &str,
    mut lookup: impl FnMut(&str, Algorithm) -> Result<Option<String>, FormatError>,
) -> Result<(), FormatError> {
    for entry in &manifest.entries {
        let actual = lookup(&entry.file, entry.algorithm)?.ok_or_else(|| {
            FormatError::package(
                package,
                format!(
                    "the manifest {} lists {}, which is not in {what} {}",
                    manifest_path.display(),
                    entry.file,
                    package.display()
                ),
            )
        })?;
        if actual != entry.digest {
            return Err(FormatError::ManifestMismatch {
                manifest: manifest_path.to_path_buf(),
                file: entry.file.clone(),
                algorithm: entry.algorithm.name().to_string(),
                expected: entry.digest.clone(),
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ovftool_and_virtualbox_lines() {
        let text = format!("SHA256(a.ovf)= {}\nSHA1 (a-disk1.vmdk) = {}\n\n", "AB".repeat(32), "0c".repeat(20));
        let m = Manifest::parse(&text, Path::new("a.mf")).expect("parses");
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].file, "a.ovf");
        assert_eq!(m.entries[0].digest, "ab".repeat(32));
        assert_eq!(m.entries[1].algorithm, Algorithm::Sha1);
        assert_eq!(m.entries[1].file, "a-disk1.vmdk");
    }

    #[test]
    fn writes_what_it_reads() {
        let mut m = Manifest::default();
        m.push_sha256("x.ovf", "00".repeat(32));
        assert_eq!(m.to_text(), format!("SHA256(x.ovf)= {}\n", "00".repeat(32)));
        assert_eq!(Manifest::parse(&m.to_text(), Path::new("x.mf")).expect("parses"), m);
    }

    #[test]
    fn rejects_garbage() {
        let err = Manifest::parse("MD5(x)= 00\n", Path::new("x.mf")).expect_err("md5");
        assert!(err.to_string().contains("x.mf line 1"), "{err}");
        assert!(Manifest::parse("SHA256(x)= 00\n", Path::new("x.mf")).is_err());
    }
}
