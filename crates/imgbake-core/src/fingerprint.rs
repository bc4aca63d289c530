//! Fingerprints: what an artifact was built from, as one comparable string.
//!
//! An image's fingerprint hashes, per builder:
//! - its configuration, rendered with build values masked (a `{{timestamp}}` in an AMI name does not
//!   change it), in named parts — image settings, communicator, builder settings, each step — without
//!   what only changes how a build runs, not what it makes (`description`, `keep`, `publish`,
//!   `max_age`; timeouts, retries, step names; connection and network placement settings; QEMU
//!   memory/CPUs/accelerator: each builder's schema names its own), and without other builders'
//!   settings and steps;
//! - the content and mode of every local file it uses (scripts, uploads, tests, user-data);
//! - its origin: the resolved source image at the root of a chain, the parent's artifact id otherwise
//!   (so a parent rebuilt for fresh patches — same inputs, new artifact — rebuilds its children);
//! - the builder and imgbake's fingerprint format version.
//!
//! The string also carries short hashes of those parts, so a plan can say *why* an image must be
//! rebuilt ("step 3 (shell) changed", "file scripts/patch.sh changed") using only what the artifact's
//! tag holds — no local state: `fp1:<overall>:<part>.<part>...:<origin>:<file>,<file>...` (at most 255
//! characters, the AWS tag limit; with very many files or steps that detail is left out and the reason
//! gets vaguer).
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
    /// The relevant, masked configuration in named parts (`image settings`, `communicator`,
    /// `aws settings`, `step 2 (shell)`...), each as canonical JSON.
    pub config: Vec<(String, String)>,
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

/// Keys that change how a build runs, not what it makes: left out so changing them rebuilds nothing.
/// A builder's own such settings come from its schema ([`imgbake_config::BuilderSchema::operational_keys`]).
const OPERATIONAL: &[(&str, &[&str])] = &[
    ("", &["description", "keep", "publish", "max_age", "communicator", "steps", "builders"]),
    (
        "communicator",
        &[
            "timeout",
            "keepalive",
            "host",
            "port",
            "host_key",
            "known_hosts_file",
            "private_key_file",
            "password",
            "bastion",
        ],
    ),
    ("step", &["name", "timeout", "retries", "pause_before", "idempotent", "only", "except"]),
];

fn without(v: serde_json::Value, section: &str) -> serde_json::Value {
    let keys = OPERATIONAL.iter().find(|(s, _)| *s == section).map(|(_, k)| *k).unwrap_or_default();
    without_keys(v, keys)
}

fn without_keys(mut v: serde_json::Value, keys: &[&str]) -> serde_json::Value {
    if let Some(obj) = v.as_object_mut() {
        for k in keys {
            obj.remove(*k);
        }
    }
    v
}

fn canonical(v: &serde_json::Value) -> String {
    // serde_json's maps are sorted, so this text is canonical.
    v.to_string()
}

impl Inputs {
    /// Inputs from one configuration text (files added by the caller).
    pub fn new(builder: &str, config: &str, origin: &str) -> Self {
        Inputs {
            builder: builder.into(),
            config: vec![("configuration".into(), config.into())],
            origin: origin.into(),
            files: Vec::new(),
        }
    }

    /// The inputs of `image` for `builder`, from a tree rendered with [`imgbake_config::Stamp::masked`].
    pub fn compute(masked: &Tree, image: &Image, builder: &str, origin: &str) -> std::io::Result<Inputs> {
        let v = serde_json::to_value(image).map_err(std::io::Error::other)?;
        let mut config = vec![("image settings".to_string(), canonical(&without(v.clone(), "")))];
        config.push(("communicator".into(), canonical(&without(v["communicator"].clone(), "communicator"))));
        // No table for the builder hashes as `null`, as it always has.
        let settings = image.builder_settings.get(builder).map(|p| p.json().clone()).unwrap_or_default();
        let operational = masked.schemas().get(builder).map(|s| s.operational_keys()).unwrap_or_default();
        config.push((format!("{builder} settings"), canonical(&without_keys(settings, operational))));
        for (i, step) in image.steps_for(builder) {
            let sv = serde_json::to_value(step).map_err(std::io::Error::other)?;
            config.push((format!("step {i} ({})", step.kind.kind()), canonical(&without(sv, "step"))));
        }
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
        for part in [FORMAT, &self.builder, &self.origin] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (_, c) in &self.config {
            h.update((c.len() as u64).to_le_bytes());
            h.update(c.as_bytes());
        }
        for (p, c) in &self.files {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
            h.update(c.as_bytes());
        }
        let overall = hex::encode(h.finalize());
        let origin = sha(self.origin.as_bytes());
        let parts: Vec<String> = self.config.iter().map(|(_, c)| sha(c.as_bytes())[..4].to_string()).collect();
        let files: Vec<&str> = self.files.iter().map(|(_, c)| short(c)).collect();
        let (mut parts, mut files) = (parts.join("."), files.join(","));
        // Within the AWS tag limit: per-file detail goes first, then per-part detail.
        let fixed = FORMAT.len() + 20 + 8 + 4;
        if fixed + parts.len() + files.len() > MAX_LEN {
            files = "*".into();
        }
        if fixed + parts.len() + files.len() > MAX_LEN {
            parts = "*".into();
        }
        Fingerprint(format!("{FORMAT}:{}:{parts}:{}:{files}", &overall[..20], short(&origin)))
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
    config: Option<Vec<&'a str>>,
    origin: &'a str,
    files: Option<Vec<&'a str>>,
}

fn list(text: &str, sep: char) -> Option<Vec<&str>> {
    match text {
        "*" => None,
        "" => Some(Vec::new()),
        t => Some(t.split(sep).collect()),
    }
}

fn parts(s: &str) -> Option<Parts<'_>> {
    let mut it = s.splitn(5, ':');
    let (format, overall, config, origin, files) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    Some(Parts { format, overall, config: list(config, '.'), origin, files: list(files, ',') })
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
        match (&new.config, &old.config) {
            (Some(n), Some(o)) if n.len() == o.len() => {
                for (i, (a, b)) in n.iter().zip(o).enumerate() {
                    if a != b {
                        let name = inputs.config.get(i).map(|(l, _)| l.as_str()).unwrap_or("configuration");
                        out.push(format!("{name} changed"));
                    }
                }
            }
            // The fixed parts come first: the rest are steps.
            (Some(n), Some(o)) => out.push(format!(
                "steps added or removed ({} → {} steps)",
                o.len().saturating_sub(3),
                n.len().saturating_sub(3)
            )),
            _ => {}
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
            _ => {}
        }
        if out.is_empty() && new.origin == old.origin {
            // Some detail was left out for length: name what is left.
            let config_known = new.config.is_some() && old.config.is_some();
            let files_known = new.files.is_some() && old.files.is_some();
            out.push(
                match (config_known, files_known) {
                    (true, false) => "files changed",
                    (false, true) => "configuration changed",
                    _ => "configuration or files changed",
                }
                .into(),
            );
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
        let mut i = Inputs::new("cloud", "{}", "image-1");
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
        c.config = vec![("configuration".into(), "{\"x\":1}".into())];
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
        b.builder = "local".into();
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

    /// What rebuilds and what does not, on a real tree: the recipe counts, how a build runs does not.
    #[test]
    fn operational_settings_do_not_count_and_changed_parts_are_named() {
        let d = tempfile::tempdir().unwrap();
        let write = |extra_step: &str, timeout: &str, boot: &str| {
            std::fs::write(
                d.path().join("tree.toml"),
                format!(
                    "[images.a]\nbuilder = \"vm\"\nsource = {{ disk = \"d\" }}\ncommunicator = {{ username = \"root\", timeout = \"{timeout}\" }}\nvm = {{ boot_timeout = \"{boot}\" }}\n[[images.a.steps]]\nname = \"first\"\ntimeout = \"{timeout}\"\nshell = {{ inline = [\"echo one\"] }}\n[[images.a.steps]]\nshell = {{ inline = [\"echo {extra_step}\"] }}\n"
                ),
            )
            .unwrap();
            std::fs::write(d.path().join("d"), "disk").unwrap();
            // A builder whose boot limit is operational.
            let vm = imgbake_config::schema::Open::new("vm", &["disk"]).operational(&["boot_timeout"]);
            let opts = imgbake_config::LoadOptions {
                schemas: imgbake_config::Schemas::new().with(vm.arc()),
                ..Default::default()
            };
            let tree = Tree::load(&d.path().join("tree.toml"), &opts).unwrap();
            let masked = tree.rerender(&imgbake_config::Stamp::masked()).unwrap();
            let i = Inputs::compute(&masked, masked.image("a").unwrap(), "vm", "disk-1").unwrap();
            (i.fingerprint(), i)
        };
        let (base, _) = write("two", "5m", "5m");
        let (same, _) = write("two", "9m", "7m");
        assert!(base.matches(same.as_str()), "timeouts, step names and boot limits do not rebuild");
        let (changed, inputs) = write("2", "5m", "5m");
        assert!(!base.matches(changed.as_str()));
        assert_eq!(changed.explain(base.as_str(), &inputs), vec!["step 2 (shell) changed"]);
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
