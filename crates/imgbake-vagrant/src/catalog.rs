//! The catalog: Vagrant's box metadata (`metadata.json`), as Vagrant 2.3.4 reads it.
//!
//! ```json
//! {
//!   "name": "team/base",
//!   "description": "…",
//!   "versions": [
//!     { "version": "2024.0612.0",
//!       "providers": [
//!         { "name": "virtualbox", "url": "https://…/virtualbox.box",
//!           "checksum_type": "sha256", "checksum": "…64 hex digits…" } ] } ]
//! }
//! ```
//!
//! Vagrant 2.3.4 (`lib/vagrant/box_metadata.rb`) reads `name`, `description`,
//! `versions[].version` and `versions[].providers[].{name, url, checksum, checksum_type}`.
//! Later Vagrant releases also read `architecture` and `default_architecture` of a provider,
//! and Vagrant Cloud adds `status` and `description_markdown` to versions: they are modelled
//! too. Every other field of an existing catalog is kept as it is when imgbake rewrites it
//! (another tool may own it).

use std::collections::HashSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CatalogError;
use crate::version::{GemVersion, VersionScheme, next_version};

/// A Vagrant box catalog (`metadata.json`): one box name, many versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The box name consumers use (`team/base`); Vagrant names the added box after it.
    pub name: String,
    /// Free text shown by Vagrant Cloud; Vagrant itself ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The versions, in file order (new versions are appended).
    #[serde(default)]
    pub versions: Vec<Version>,
    /// Fields imgbake does not know, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One version of the box, with a box file per provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// The version number, ordered like RubyGems' `Gem::Version` (see [`GemVersion`]).
    pub version: String,
    /// Vagrant Cloud's release status (`active`, `unreleased`, `revoked`); Vagrant ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Vagrant Cloud's release notes; Vagrant ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_markdown: Option<String>,
    /// One box per provider (and architecture).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Fields imgbake does not know, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One downloadable box: provider, url and checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// Vagrant's provider name: `virtualbox`, `libvirt`, `vmware_desktop`, `hyperv`, …
    pub name: String,
    /// Where `vagrant box add/update` downloads the `.box` file.
    pub url: String,
    /// `sha256` for everything imgbake writes (Vagrant also knows md5, sha1, sha384, sha512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// The hex digest Vagrant checks the download against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The guest architecture (`amd64`, `arm64`); read by Vagrant ≥ 2.4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Whether this is the entry Vagrant ≥ 2.4 picks when the host's architecture has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_architecture: Option<bool>,
    /// Fields imgbake does not know, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Provider {
    /// A box for `name` at `url` whose SHA-256 is `sha256` (hex, as [`box_checksum`](crate::box_checksum) returns).
    pub fn new(name: impl Into<String>, url: impl Into<String>, sha256: impl Into<String>) -> Provider {
        Provider {
            name: name.into(),
            url: url.into(),
            checksum_type: Some("sha256".into()),
            checksum: Some(sha256.into().to_ascii_lowercase()),
            architecture: None,
            default_architecture: None,
            extra: Map::new(),
        }
    }

    /// The same box, for one guest architecture (Vagrant ≥ 2.4).
    pub fn with_architecture(mut self, architecture: impl Into<String>, default: bool) -> Provider {
        self.architecture = Some(architecture.into());
        self.default_architecture = Some(default);
        self
    }

    fn key(&self) -> (&str, Option<&str>) {
        (&self.name, self.architecture.as_deref())
    }

    fn same_box(&self, other: &Provider) -> bool {
        self.url == other.url && self.checksum_type == other.checksum_type && self.checksum == other.checksum
    }

    /// Refuses what Vagrant could not download or verify.
    fn validate(&self) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::InvalidProvider { provider: self.name.clone(), reason };
        if self.name.trim().is_empty() || self.name.contains(char::is_whitespace) {
            return Err(invalid("the provider name must be a word such as `virtualbox` or `libvirt`".into()));
        }
        if self.url.trim().is_empty() {
            return Err(invalid("the url is empty: it is where `vagrant box add` downloads the box".into()));
        }
        match (self.checksum_type.as_deref(), self.checksum.as_deref()) {
            (Some("sha256"), Some(sum)) if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
            (Some("sha256"), Some(sum)) => {
                Err(invalid(format!("checksum `{sum}` is not a SHA-256 (64 hex digits); use `box_checksum`")))
            }
            (None, None) => Err(invalid("no checksum: imgbake publishes every box with its SHA-256".into())),
            (t, _) => Err(invalid(format!(
                "checksum_type {t:?} with checksum: imgbake publishes sha256 checksums (`Provider::new`)"
            ))),
        }
    }
}

impl Version {
    fn gem(&self) -> Result<GemVersion, CatalogError> {
        GemVersion::parse(&self.version)
    }
}

/// What a build publishes: one version with a box per provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Release {
    /// How the version number is chosen (default [`VersionScheme::Date`]).
    pub scheme: VersionScheme,
    /// The boxes of this version (at least one; one per provider and architecture).
    pub providers: Vec<Provider>,
    /// Release notes stored as the version's `description_markdown`.
    pub description_markdown: Option<String>,
}

impl Release {
    /// A release whose version is chosen by `scheme`, without boxes yet.
    pub fn new(scheme: VersionScheme) -> Release {
        Release { scheme, providers: Vec::new(), description_markdown: None }
    }

    /// Adds a box to the release.
    pub fn provider(mut self, provider: Provider) -> Release {
        self.providers.push(provider);
        self
    }
}

impl Catalog {
    /// An empty catalog for the box `name` (`team/base`).
    pub fn new(name: impl Into<String>) -> Catalog {
        Catalog { name: name.into(), description: None, versions: Vec::new(), extra: Map::new() }
    }

    /// Parses a catalog, refusing what Vagrant would refuse (a version `Gem::Version` cannot
    /// parse, a provider without a name or url).
    pub fn parse(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        Catalog::parse_at(bytes, "the catalog")
    }

    pub(crate) fn parse_at(bytes: &[u8], location: &str) -> Result<Catalog, CatalogError> {
        let malformed = |detail: String| CatalogError::Malformed { location: location.to_owned(), detail };
        let catalog: Catalog = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        for v in &catalog.versions {
            v.gem().map_err(|e| malformed(e.to_string()))?;
        }
        Ok(catalog)
    }

    /// The catalog as pretty-printed JSON (with a final newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers, booleans and maps cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Refuses a catalog that belongs to another box.
    pub fn check_name(&self, expected: &str, location: &str) -> Result<(), CatalogError> {
        if self.name == expected {
            Ok(())
        } else {
            Err(CatalogError::NameMismatch {
                location: location.to_owned(),
                found: self.name.clone(),
                expected: expected.to_owned(),
            })
        }
    }

    /// The newest version, as Vagrant orders them (`None` for an empty catalog).
    pub fn newest(&self) -> Option<&Version> {
        self.sorted().last().map(|(_, v)| *v)
    }

    /// The version equal to `version` in Vagrant's ordering (`1.0` finds `1.0.0`).
    pub fn version(&self, version: &str) -> Option<&Version> {
        let wanted = GemVersion::parse(version).ok()?;
        self.versions.iter().find(|v| v.gem().is_ok_and(|g| g == wanted))
    }

    /// The version number [`add`](Self::add) would give `scheme` today (UTC).
    pub fn next_version(&self, scheme: &VersionScheme) -> Result<String, CatalogError> {
        self.next_version_on(scheme, chrono::Utc::now().date_naive())
    }

    /// The version number [`add_on`](Self::add_on) would give `scheme` on `today`.
    pub fn next_version_on(&self, scheme: &VersionScheme, today: NaiveDate) -> Result<String, CatalogError> {
        let newest = self.newest_gem()?;
        Ok(next_version(scheme, newest.as_ref(), today)?.as_str().to_owned())
    }

    /// Adds `release` as a new version, newer than every version already there; the date
    /// scheme uses today's UTC date. Returns the version added.
    pub fn add(&mut self, release: Release) -> Result<Version, CatalogError> {
        self.add_on(release, chrono::Utc::now().date_naive())
    }

    /// [`add`](Self::add) with the date scheme using `today`.
    pub fn add_on(&mut self, release: Release, today: NaiveDate) -> Result<Version, CatalogError> {
        if release.providers.is_empty() {
            return Err(CatalogError::NoProviders);
        }
        let mut seen = HashSet::new();
        for p in &release.providers {
            p.validate()?;
            if !seen.insert(p.key()) {
                return Err(CatalogError::InvalidProvider {
                    provider: p.name.clone(),
                    reason: "listed twice in one release (one box per provider and architecture)".into(),
                });
            }
        }
        let newest = self.newest_gem()?;
        let number = next_version(&release.scheme, newest.as_ref(), today)?;
        let version = Version {
            version: number.as_str().to_owned(),
            status: None,
            description_markdown: release.description_markdown,
            providers: release.providers,
            extra: Map::new(),
        };
        self.versions.push(version.clone());
        Ok(version)
    }

    /// Adds one more box to an existing version (a second provider of the same build, such as
    /// `libvirt` next to `virtualbox`). Adding the very same box again is a no-op, so a retried
    /// publish succeeds; a different box for a provider the version already has is refused.
    pub fn add_provider(&mut self, version: &str, provider: Provider) -> Result<(), CatalogError> {
        provider.validate()?;
        let wanted = GemVersion::parse(version)?;
        let known = self.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>().join(", ");
        let Some(entry) = self.versions.iter_mut().find(|v| v.gem().is_ok_and(|g| g == wanted)) else {
            return Err(CatalogError::UnknownVersion {
                version: version.to_owned(),
                known: if known.is_empty() { "no versions".into() } else { known },
            });
        };
        if let Some(existing) = entry.providers.iter().find(|p| p.key() == provider.key()) {
            if existing.same_box(&provider) {
                return Ok(());
            }
            return Err(CatalogError::ProviderExists {
                version: entry.version.clone(),
                provider: provider.name,
                arch: provider.architecture.map(|a| format!(" for {a}")).unwrap_or_default(),
            });
        }
        entry.providers.push(provider);
        Ok(())
    }

    /// Keeps the newest `n` versions and returns the removed ones, oldest first, so that the
    /// caller can delete their box files. The remaining versions keep their file order.
    pub fn keep(&mut self, n: usize) -> Result<Vec<Version>, CatalogError> {
        if n == 0 {
            return Err(CatalogError::InvalidKeep);
        }
        let sorted = self.sorted();
        if sorted.len() <= n {
            return Ok(Vec::new());
        }
        let drop: HashSet<usize> = sorted[..sorted.len() - n].iter().map(|(i, _)| *i).collect();
        let mut removed: Vec<(GemVersion, Version)> = Vec::new();
        let mut kept = Vec::with_capacity(n);
        for (i, v) in std::mem::take(&mut self.versions).into_iter().enumerate() {
            if drop.contains(&i) {
                // Every version parsed when the catalog was read or added.
                let gem = v.gem()?;
                removed.push((gem, v));
            } else {
                kept.push(v);
            }
        }
        self.versions = kept;
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(removed.into_iter().map(|(_, v)| v).collect())
    }

    fn newest_gem(&self) -> Result<Option<GemVersion>, CatalogError> {
        let mut newest: Option<GemVersion> = None;
        for v in &self.versions {
            let g = v.gem()?;
            if newest.as_ref().is_none_or(|n| g > *n) {
                newest = Some(g);
            }
        }
        Ok(newest)
    }

    /// (file index, version), oldest first; unparsable versions (only possible when the
    /// caller edited `versions` by hand) sort first.
    fn sorted(&self) -> Vec<(usize, &Version)> {
        let mut all: Vec<(usize, Option<GemVersion>, &Version)> =
            self.versions.iter().enumerate().map(|(i, v)| (i, v.gem().ok(), v)).collect();
        all.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        all.into_iter().map(|(i, _, v)| (i, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SUM_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, d).unwrap()
    }

    fn release(scheme: VersionScheme, url: &str) -> Release {
        Release::new(scheme).provider(Provider::new("virtualbox", url, SUM_A))
    }

    #[test]
    fn adds_monotonic_date_versions() {
        let mut c = Catalog::new("team/base");
        let a = c.add_on(release(VersionScheme::Date, "u1"), day(12)).unwrap();
        let b = c.add_on(release(VersionScheme::Date, "u2"), day(12)).unwrap();
        let back = c.add_on(release(VersionScheme::Date, "u3"), day(10)).unwrap();
        assert_eq!([a.version, b.version, back.version], ["2024.0612.0", "2024.0612.1", "2024.0612.2"]);
        assert_eq!(c.newest().unwrap().version, "2024.0612.2");
        let json: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(json["versions"][2]["providers"][0]["checksum_type"], "sha256");
        assert_eq!(json["versions"][2]["providers"][0]["checksum"], SUM_A);
    }

    #[test]
    fn semver_and_exact() {
        let mut c = Catalog::new("team/base");
        assert_eq!(c.add_on(release(VersionScheme::Semver, "u"), day(1)).unwrap().version, "1.0.0");
        assert_eq!(c.add_on(release(VersionScheme::Semver, "u"), day(1)).unwrap().version, "1.0.1");
        assert_eq!(c.add_on(release(VersionScheme::Exact("1.2".into()), "u"), day(1)).unwrap().version, "1.2");
        assert_eq!(c.add_on(release(VersionScheme::Semver, "u"), day(1)).unwrap().version, "1.2.1");
        let err = c.add_on(release(VersionScheme::Exact("1.2.1".into()), "u"), day(1)).unwrap_err();
        assert!(matches!(err, CatalogError::VersionNotNewer { .. }), "{err}");
        assert!(err.to_string().contains("1.2.1"));
        let err = c.add_on(release(VersionScheme::Exact("v2".into()), "u"), day(1)).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidVersion { .. }), "{err}");
        assert_eq!(c.versions.len(), 4, "failed adds change nothing");
    }

    #[test]
    fn two_providers_in_one_version() {
        let mut c = Catalog::new("team/base");
        let r = Release::new(VersionScheme::Semver)
            .provider(Provider::new("virtualbox", "vb", SUM_A))
            .provider(Provider::new("libvirt", "lv", SUM_B));
        let v = c.add_on(r, day(1)).unwrap();
        assert_eq!(v.providers.len(), 2);

        // A later step of the same build adds a third box to that version.
        c.add_provider("1.0.0", Provider::new("vmware_desktop", "vm", SUM_A)).unwrap();
        // Retrying the same box is fine; another box for the same provider is not.
        c.add_provider("1.0", Provider::new("libvirt", "lv", SUM_B)).unwrap();
        let err = c.add_provider("1.0.0", Provider::new("libvirt", "lv2", SUM_B)).unwrap_err();
        assert!(matches!(err, CatalogError::ProviderExists { .. }), "{err}");
        // Per architecture, the same provider may appear twice.
        c.add_provider("1.0.0", Provider::new("libvirt", "lv-arm", SUM_B).with_architecture("arm64", false)).unwrap();
        let err = c.add_provider("9.9", Provider::new("libvirt", "x", SUM_B)).unwrap_err();
        assert!(matches!(err, CatalogError::UnknownVersion { .. }), "{err}");
        assert_eq!(c.versions[0].providers.len(), 4);

        let dup = Release::new(VersionScheme::Semver)
            .provider(Provider::new("libvirt", "a", SUM_A))
            .provider(Provider::new("libvirt", "b", SUM_B));
        assert!(matches!(c.add_on(dup, day(1)), Err(CatalogError::InvalidProvider { .. })));
    }

    #[test]
    fn refuses_bad_providers() {
        let mut c = Catalog::new("team/base");
        assert!(matches!(c.add_on(Release::new(VersionScheme::Date), day(1)), Err(CatalogError::NoProviders)));
        for p in [
            Provider::new("virtualbox", "u", "abc"),
            Provider::new("virtualbox", "", SUM_A),
            Provider::new("", "u", SUM_A),
            Provider::new("virtualbox", "u", "g".repeat(64)),
        ] {
            let err = c.add_on(Release::new(VersionScheme::Date).provider(p), day(1)).unwrap_err();
            assert!(matches!(err, CatalogError::InvalidProvider { .. }), "{err}");
        }
        // Upper-case hex is stored lower-case.
        let v = c.add_on(release(VersionScheme::Date, "u"), day(1)).unwrap();
        assert_eq!(v.providers[0].checksum.as_deref(), Some(SUM_A));
        c.add_provider(&v.version, Provider::new("libvirt", "u", SUM_B.to_uppercase())).unwrap();
        assert_eq!(c.versions[0].providers[1].checksum.as_deref(), Some(SUM_B));
    }

    #[test]
    fn keeps_newest_n() {
        let mut c = Catalog::new("team/base");
        // File order differs from version order: an older version appended by hand last.
        for v in ["1.0.0", "1.10.0", "1.2.0", "0.9"] {
            c.versions.push(Version {
                version: v.into(),
                status: None,
                description_markdown: None,
                providers: vec![Provider::new("virtualbox", format!("u/{v}"), SUM_A)],
                extra: Map::new(),
            });
        }
        assert!(matches!(c.keep(0), Err(CatalogError::InvalidKeep)));
        assert!(c.keep(4).unwrap().is_empty());
        let removed = c.keep(2).unwrap();
        assert_eq!(removed.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["0.9", "1.0.0"]);
        assert_eq!(c.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["1.10.0", "1.2.0"]);
        assert_eq!(c.newest().unwrap().version, "1.10.0");
        let removed = c.keep(1).unwrap();
        assert_eq!(removed[0].version, "1.2.0");
        assert_eq!(removed[0].providers[0].url, "u/1.2.0");
    }

    #[test]
    fn preserves_unknown_fields() {
        let text = br#"{
          "name": "team/base",
          "description": "Our base box",
          "x_owner": {"team": "infra", "tags": [1, 2]},
          "versions": [
            {"version": "1.0.0", "status": "active", "description_markdown": "first",
             "x_build": "abc", "created_at": "2024-01-01",
             "providers": [{"name": "virtualbox", "url": "u", "checksum_type": "sha1",
                            "checksum": "deadbeef", "x_size": 1234, "architecture": "amd64",
                            "default_architecture": true}]}
          ]
        }"#;
        let mut c = Catalog::parse(text).unwrap();
        c.add_on(release(VersionScheme::Semver, "u2"), day(1)).unwrap();
        let out: Value = serde_json::from_slice(&c.to_json()).unwrap();
        assert_eq!(out["description"], "Our base box");
        assert_eq!(out["x_owner"]["tags"][1], 2);
        let v0 = &out["versions"][0];
        assert_eq!(v0["status"], "active");
        assert_eq!(v0["description_markdown"], "first");
        assert_eq!(v0["x_build"], "abc");
        assert_eq!(v0["created_at"], "2024-01-01");
        assert_eq!(v0["providers"][0]["x_size"], 1234);
        assert_eq!(v0["providers"][0]["checksum_type"], "sha1");
        assert_eq!(v0["providers"][0]["architecture"], "amd64");
        assert_eq!(v0["providers"][0]["default_architecture"], true);
        assert_eq!(out["versions"][1]["version"], "1.0.1");
        // A round trip without changes gives the same document.
        let again = Catalog::parse(&c.to_json()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn refuses_malformed_catalogs() {
        for bad in [&b"not json"[..], br#"{"versions": []}"#, br#"{"name": "a", "versions": [{"version": "v1"}]}"#] {
            let err = Catalog::parse(bad).unwrap_err();
            assert!(matches!(err, CatalogError::Malformed { .. }), "{err}");
        }
        let c = Catalog::parse(br#"{"name": "a"}"#).unwrap();
        assert!(c.versions.is_empty());
        let err = c.check_name("b", "x/metadata.json").unwrap_err();
        assert!(err.to_string().contains("`a`") && err.to_string().contains("`b`"), "{err}");
    }
}
