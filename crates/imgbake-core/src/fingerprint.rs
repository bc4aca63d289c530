//! Fingerprints: what an artifact was built from, as one comparable string.
//!
//! An image's fingerprint hashes, per builder:
//! - its configuration, rendered with build values masked (a `{{timestamp}}` in an AMI name does not
//!   change it), without the keys that do not change the artifact (`description`, `keep`, `publish`,
//!   `max_age`) and without other builders' settings and steps;
//! - the content and mode of every local file it uses (scripts, uploads, tests, user-data);
//! - its origin: the resolved source image at the root of a chain, the parent's artifact id otherwise
//!   (so a parent rebuilt for fresh patches — same inputs, new artifact — rebuilds its children);
//! - the builder and imgbake's fingerprint format version.
//!
//! The string also carries short hashes of those parts, so a plan can say *why* an image must be
//! rebuilt using only what the artifact's tag holds — no local state:
//! `fp1:<overall>:<config>:<origin>:<file>,<file>...` (at most 255 characters, the AWS tag limit; with
//! very many files the per-file part is left out and the reason becomes "files changed").
//!
//! ```
//! use imgbake_core::fingerprint::{Fingerprint, Inputs};
//!
//! let mut a = Inputs::new("aws", "{\"steps\":[]}", "ami-1");
//! a.files.push(("scripts/patch.sh".into(), "aaaa".into()));
//! let mut b = a.clone();
//! b.files[0].1 = "bbbb".into();
//! let (fa, fb) = (a.fingerprint(), b.fingerprint());
//! assert!(!fa.matches(fb.as_str()));
//! assert_eq!(fb.explain(fa.as_str(), &b), vec!["file scripts/patch.sh changed".to_string()]);
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use imgbake_config::{Image, Tree};
use sha2::{Digest, Sha256};

/// The fingerprint format; bump it when what goes into a fingerprint changes.
pub const FORMAT: &str = "fp1";
const MAX_LEN: usize = 255;

/// What goes into a fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The builder kind.
    pub builder: String,
    /// Canonical JSON of the relevant, masked configuration.
    pub config: String,
    /// The resolved source id (root) or the parent's artifact id (child).
    pub origin: String,
    /// (path relative to the tree, content hash), sorted by path.
    pub files: Vec<(String, String)>,
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn short(h: &str) -> &str {
    &h[..8.min(h.len())]
}

impl Inputs {
    /// Inputs from parts (files added by the caller).
    pub fn new(builder: &str, config: &str, origin: &str) -> Self {
        Inputs { builder: builder.into(), config: config.into(), origin: origin.into(), files: Vec::new() }
    }

    /// The inputs of `image` for `builder`, from a tree rendered with [`imgbake_config::Stamp::masked`].
    pub fn compute(masked: &Tree, image: &Image, builder: &str, origin: &str) -> std::io::Result<Inputs> {
        let mut v = serde_json::to_value(image).map_err(std::io::Error::other)?;
        if let Some(obj) = v.as_object_mut() {
            for k in ["description", "keep", "publish", "max_age"] {
                obj.remove(k);
            }
            for b in imgbake_config::BUILDERS {
                if *b != builder {
                    obj.remove(*b);
                }
            }
            let steps: Vec<serde_json::Value> = image
                .steps_for(builder)
                .map(|(_, s)| serde_json::to_value(s).unwrap_or(serde_json::Value::Null))
                .collect();
            obj.insert("steps".into(), serde_json::Value::Array(steps));
            obj.insert("builders".into(), serde_json::json!([builder]));
        }
        // serde_json's maps are sorted, so this text is canonical.
        let config = serde_json::to_string(&v).map_err(std::io::Error::other)?;
        let root = masked.root_dir();
        let mut files = Vec::new();
        for path in masked.local_files_for(image, builder) {
            let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
            files.push((shown, hash_path(&path)?));
        }
        files.sort();
        files.dedup();
        Ok(Inputs { builder: builder.into(), config, origin: origin.into(), files })
    }

    /// The fingerprint of these inputs.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        for part in [FORMAT, &self.builder, &self.config, &self.origin] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (p, c) in &self.files {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
            h.update(c.as_bytes());
        }
        let overall = hex::encode(h.finalize());
        let config = sha(self.config.as_bytes());
        let origin = sha(self.origin.as_bytes());
        let mut s = format!("{FORMAT}:{}:{}:{}:", &overall[..20], short(&config), short(&origin));
        let files: Vec<&str> = self.files.iter().map(|(_, c)| short(c)).collect();
        let files = files.join(",");
        if s.len() + files.len() <= MAX_LEN {
            s.push_str(&files);
        } else {
            s.push('*');
        }
        Fingerprint(s)
    }
}

/// Hash a file (content + mode) or a directory (every entry's relative path, mode and content).
pub fn hash_path(path: &Path) -> std::io::Result<String> {
    let ctx = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(ctx)?;
    let mut h = Sha256::new();
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = Vec::new();
        collect(path, &mut entries).map_err(ctx)?;
        entries.sort();
        for e in entries {
            let rel = e.strip_prefix(path).unwrap_or(&e).to_string_lossy().into_owned();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(hash_file(&e)?.as_bytes());
        }
    } else {
        h.update(hash_file(path)?.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() { collect(&p, out)? } else { out.push(p) }
    }
    Ok(())
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(ctx)?;
    let mode = f.metadata().map_err(ctx)?.permissions().mode() & 0o7777;
    let mut h = Sha256::new();
    h.update(mode.to_le_bytes());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(ctx)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A fingerprint string (see the module docs for its shape).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint(pub String);

struct Parts<'a> {
    format: &'a str,
    overall: &'a str,
    config: &'a str,
    origin: &'a str,
    files: Option<Vec<&'a str>>,
}

fn parts(s: &str) -> Option<Parts<'_>> {
    let mut it = s.splitn(5, ':');
    let (format, overall, config, origin, files) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let files = match files {
        "*" => None,
        "" => Some(Vec::new()),
        f => Some(f.split(',').collect()),
    };
    Some(Parts { format, overall, config, origin, files })
}

impl Fingerprint {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does an artifact's fingerprint string mean the same inputs?
    pub fn matches(&self, other: &str) -> bool {
        match (parts(&self.0), parts(other)) {
            (Some(a), Some(b)) => a.format == b.format && a.overall == b.overall,
            _ => false,
        }
    }

    /// Why `old` (an artifact's fingerprint) differs from this one, in words, except for the origin
    /// (the planner names old and new source/parent artifact ids itself). Empty when they match or
    /// only the origin differs.
    pub fn explain(&self, old: &str, inputs: &Inputs) -> Vec<String> {
        let (Some(new), Some(old)) = (parts(&self.0), parts(old)) else {
            return vec!["the artifact has no readable fingerprint".into()];
        };
        if new.format != old.format {
            return vec![format!("imgbake's fingerprint format changed ({} → {})", old.format, new.format)];
        }
        if new.overall == old.overall {
            return Vec::new();
        }
        let mut out = Vec::new();
        if new.config != old.config {
            out.push("configuration changed".to_string());
        }
        match (&new.files, &old.files) {
            (Some(n), Some(o)) if n.len() == o.len() => {
                for (i, (a, b)) in n.iter().zip(o).enumerate() {
                    if a != b {
                        let name = inputs.files.get(i).map(|(p, _)| p.as_str()).unwrap_or("?");
                        out.push(format!("file {name} changed"));
                    }
                }
            }
            (Some(n), Some(o)) => out.push(format!("files added or removed ({} → {} files)", o.len(), n.len())),
            _ => {
                if new.config == old.config && new.origin == old.origin {
                    out.push("files changed".into());
                }
            }
        }
        if out.is_empty() && new.origin == old.origin {
            out.push("inputs changed".into());
        }
        out
    }

    /// Did the origin (source or parent artifact) change?
    pub fn origin_differs(&self, old: &str) -> bool {
        match (parts(&self.0), parts(old)) {
            (Some(a), Some(b)) => a.origin != b.origin,
            _ => true,
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(n: usize) -> Inputs {
        let mut i = Inputs::new("aws", "{}", "ami-1");
        for k in 0..n {
            i.files.push((format!("f{k}.sh"), sha(format!("{k}").as_bytes())));
        }
        i
    }

    #[test]
    fn every_part_changes_the_fingerprint_and_is_explained() {
        let base = inputs(2);
        let fp = base.fingerprint();
        assert!(fp.matches(base.fingerprint().as_str()), "deterministic");
        assert!(fp.as_str().len() <= MAX_LEN);

        let mut c = base.clone();
        c.config = "{\"x\":1}".into();
        assert_eq!(c.fingerprint().explain(fp.as_str(), &c), vec!["configuration changed"]);

        let mut o = base.clone();
        o.origin = "ami-2".into();
        assert!(!o.fingerprint().matches(fp.as_str()));
        assert!(o.fingerprint().origin_differs(fp.as_str()));
        assert!(o.fingerprint().explain(fp.as_str(), &o).is_empty(), "origin is explained by the planner");

        let mut more = base.clone();
        more.files.push(("new.sh".into(), "c".into()));
        assert_eq!(more.fingerprint().explain(fp.as_str(), &more), vec!["files added or removed (2 → 3 files)"]);

        let mut b = base.clone();
        b.builder = "qemu".into();
        assert!(!b.fingerprint().matches(fp.as_str()));
    }

    #[test]
    fn many_files_fit_the_tag_limit() {
        let many = inputs(60);
        let fp = many.fingerprint();
        assert!(fp.as_str().len() <= MAX_LEN, "{}", fp.as_str().len());
        assert!(fp.as_str().ends_with(":*"));
        let mut changed = many.clone();
        changed.files[7].1 = "zz".into();
        assert_eq!(changed.fingerprint().explain(fp.as_str(), &changed), vec!["files changed"]);
    }

    #[test]
    fn directories_hash_names_modes_and_content() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), "1").unwrap();
        let h1 = hash_path(d.path()).unwrap();
        std::fs::set_permissions(d.path().join("sub/a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let h2 = hash_path(d.path()).unwrap();
        assert_ne!(h1, h2, "mode counts");
        std::fs::rename(d.path().join("sub/a"), d.path().join("sub/b")).unwrap();
        assert_ne!(hash_path(d.path()).unwrap(), h2, "names count");
        assert!(hash_path(&d.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
