//! Catalogs written by this crate, read by real Vagrant (Debian's 2.3.4) over HTTP.
//!
//! The bed's nginx serves a temp dir on loopback; [`Vagrant`] runs `vagrant box …` with its own
//! `VAGRANT_HOME`. No provider is installed or booted: `box add/outdated/update` only fetch the
//! catalog, download the box, verify its SHA-256 and unpack it. Every Vagrant run is killed after
//! 90 s, the whole test after 10 minutes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imgbake_testbed::{BedError, Nginx, Vagrant, VagrantOutput};
use imgbake_vagrant::{Catalog, CatalogError, Provider, Release, VersionScheme, box_checksum, update_local};

const BOX: &str = "team/base";

/// A minimal ustar archive of regular files: all `vagrant box add` needs of a box.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 1_700_000_000);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A box for `provider` whose `info.txt` says `marker` (so each build's box differs).
fn make_box(dir: &Path, provider: &str, marker: &str) -> PathBuf {
    let path = dir.join(format!("{provider}-{marker}.box"));
    let metadata = format!("{{\"provider\":\"{provider}\"}}");
    std::fs::write(&path, tar(&[("metadata.json", metadata.as_bytes()), ("info.txt", marker.as_bytes())]))
        .expect("write box");
    path
}

/// What the lead's publish step does for a local catalog: under the catalog's lock, pick the
/// version, put the box where `url` points (`{{version}}` filled in), add the version, keep N.
/// Returns the version and the versions removed from the catalog.
fn publish(
    nginx: &Nginx,
    built: &Path,
    provider: &str,
    checksum: Option<String>,
    keep: Option<usize>,
) -> Result<(String, Vec<String>), CatalogError> {
    let root = nginx.root();
    let catalog = root.join("team/base/metadata.json");
    let sha256 = match checksum {
        Some(sum) => sum,
        None => box_checksum(built)?,
    };
    update_local(&catalog, BOX, |c| {
        let version = c.next_version(&VersionScheme::Date)?;
        let rel = format!("team/base/{version}/{provider}.box");
        let dest = root.join(&rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("box dir");
        std::fs::copy(built, &dest).expect("upload box");
        let url = format!("{}/{rel}", nginx.url());
        c.add(Release::new(VersionScheme::Exact(version.clone())).provider(Provider::new(provider, url, sha256)))?;
        let removed = match keep {
            Some(n) => c.keep(n)?,
            None => Vec::new(),
        };
        for old in &removed {
            std::fs::remove_dir_all(root.join("team/base").join(&old.version)).expect("delete old boxes");
        }
        Ok((version, removed.into_iter().map(|v| v.version).collect()))
    })
}

async fn run(v: &Vagrant, args: &[&str]) -> VagrantOutput {
    v.run(args).await.unwrap_or_else(|e| panic!("vagrant {}: {e}", args.join(" ")))
}

fn installed(v: &Vagrant, version: &str, provider: &str) -> Option<String> {
    let info = v.home().join("boxes/team-VAGRANTSLASH-base").join(version).join(provider).join("info.txt");
    std::fs::read_to_string(info).ok()
}

#[tokio::test]
async fn vagrant_adds_outdates_and_updates_published_versions() {
    let test = async {
        let vagrant = match Vagrant::new() {
            Ok(v) => v.with_timeout(Duration::from_secs(90)),
            Err(BedError::NotInstalled { what, .. }) => {
                eprintln!("{what} is not installed (tests/bed/install.sh): skipped");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let nginx = match Nginx::start_default().await {
            Ok(n) => n,
            Err(BedError::NotInstalled { what, .. }) => {
                eprintln!("{what} is not installed (tests/bed/install.sh): skipped");
                return;
            }
            Err(e) => panic!("starting nginx: {e}"),
        };
        let builds = tempfile::tempdir().expect("temp dir");
        let catalog_url = format!("{}/team/base/metadata.json", nginx.url());

        // Build 1 → published → added by a developer.
        let (v1, _) = publish(&nginx, &make_box(builds.path(), "virtualbox", "build-1"), "virtualbox", None, None)
            .expect("publish 1");
        let out = run(&vagrant, &["box", "add", "--provider", "virtualbox", &catalog_url]).await;
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("Calculating and comparing box checksum"), "{out}");
        let list = run(&vagrant, &["box", "list"]).await;
        assert!(list.stdout.contains(&format!("team/base (virtualbox, {v1})")), "{list}");
        assert_eq!(installed(&vagrant, &v1, "virtualbox").as_deref(), Some("build-1"));

        // Build 2 (the same day: the date scheme bumps N) → outdated → update.
        let (v2, _) = publish(&nginx, &make_box(builds.path(), "virtualbox", "build-2"), "virtualbox", None, None)
            .expect("publish 2");
        assert_ne!(v1, v2);
        let out = run(&vagrant, &["box", "outdated", "--global"]).await;
        // Exits 0 even when the catalog is unreachable: the text is the verdict.
        assert!(out.text().contains(&format!("is outdated! Current: {v1}. Latest: {v2}")), "{out}");
        let out = run(&vagrant, &["box", "update", "--box", BOX, "--provider", "virtualbox"]).await;
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("Calculating and comparing box checksum"), "{out}");
        let list = run(&vagrant, &["box", "list"]).await;
        assert!(list.stdout.contains(&format!("team/base (virtualbox, {v2})")), "{list}");
        assert_eq!(installed(&vagrant, &v2, "virtualbox").as_deref(), Some("build-2"));
        let out = run(&vagrant, &["box", "outdated", "--global"]).await;
        assert!(out.text().contains(&format!("(v{v2}) is up to date")), "{out}");

        // Build 3 published with a wrong checksum: Vagrant sees it, refuses to install it.
        let wrong = box_checksum(&make_box(builds.path(), "virtualbox", "not-what-is-served")).expect("sum");
        let (v3, _) =
            publish(&nginx, &make_box(builds.path(), "virtualbox", "build-3"), "virtualbox", Some(wrong), None)
                .expect("publish 3");
        let out = run(&vagrant, &["box", "outdated", "--global"]).await;
        assert!(out.text().contains(&format!("Latest: {v3}")), "{out}");
        let out = run(&vagrant, &["box", "update", "--box", BOX, "--provider", "virtualbox"]).await;
        assert!(!out.success(), "a wrong checksum must fail the update: {out}");
        assert!(out.text().to_lowercase().contains("checksum"), "{out}");
        let list = run(&vagrant, &["box", "list"]).await;
        assert!(!list.stdout.contains(&v3), "{list}");
        assert_eq!(installed(&vagrant, &v3, "virtualbox"), None);

        // Build 4 with keep = 1: only it stays in the catalog, older box files are deleted.
        let (v4, removed) =
            publish(&nginx, &make_box(builds.path(), "virtualbox", "build-4"), "virtualbox", None, Some(1))
                .expect("publish 4");
        assert_eq!(removed, [v1.clone(), v2.clone(), v3.clone()]);
        let served = Catalog::parse(&std::fs::read(nginx.root().join("team/base/metadata.json")).expect("catalog"))
            .expect("parse");
        assert_eq!(served.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), [v4.as_str()]);
        for old in [&v1, &v2, &v3] {
            assert!(!nginx.root().join("team/base").join(old).exists(), "{old}'s boxes are deleted");
        }
        let out = run(&vagrant, &["box", "outdated", "--global"]).await;
        assert!(out.text().contains(&format!("is outdated! Current: {v2}. Latest: {v4}")), "{out}");
        let out = run(&vagrant, &["box", "update", "--box", BOX, "--provider", "virtualbox"]).await;
        assert!(out.success(), "{out}");
        assert_eq!(installed(&vagrant, &v4, "virtualbox").as_deref(), Some("build-4"));

        // A second provider added to the same version (e.g. libvirt from the same build).
        let libvirt_box = make_box(builds.path(), "libvirt", "build-4-libvirt");
        let sum = box_checksum(&libvirt_box).expect("sum");
        let rel = format!("team/base/{v4}/libvirt.box");
        std::fs::copy(&libvirt_box, nginx.root().join(&rel)).expect("upload libvirt box");
        update_local(&nginx.root().join("team/base/metadata.json"), BOX, |c| {
            c.add_provider(&v4, Provider::new("libvirt", format!("{}/{rel}", nginx.url()), sum))
        })
        .expect("add libvirt");
        let out = run(&vagrant, &["box", "add", "--provider", "libvirt", &catalog_url]).await;
        assert!(out.success(), "{out}");
        let list = run(&vagrant, &["box", "list"]).await;
        assert!(list.stdout.contains(&format!("team/base (libvirt, {v4})")), "{list}");
        assert_eq!(installed(&vagrant, &v4, "libvirt").as_deref(), Some("build-4-libvirt"));

        // Nothing reached nginx but our own requests; the box downloads really went over HTTP.
        let log = nginx.access_log();
        assert!(
            log.iter().any(|l| l.contains(&format!("GET /team/base/{v4}/libvirt.box")) && l.contains(" 200 ")),
            "{log:?}"
        );
    };
    tokio::time::timeout(Duration::from_secs(600), test).await.expect("test timed out");
}

#[tokio::test]
async fn vagrant_refuses_a_wrong_checksum_on_add() {
    let test = async {
        let (vagrant, nginx) = match (Vagrant::new(), Nginx::start_default().await) {
            (Ok(v), Ok(n)) => (v.with_timeout(Duration::from_secs(90)), n),
            (Err(BedError::NotInstalled { what, .. }), _) | (_, Err(BedError::NotInstalled { what, .. })) => {
                eprintln!("{what} is not installed (tests/bed/install.sh): skipped");
                return;
            }
            (Err(e), _) | (_, Err(e)) => panic!("{e}"),
        };
        let builds = tempfile::tempdir().expect("temp dir");
        let other = box_checksum(&make_box(builds.path(), "virtualbox", "other")).expect("sum");
        let (v1, _) =
            publish(&nginx, &make_box(builds.path(), "virtualbox", "served"), "virtualbox", Some(other), None)
                .expect("publish");
        let url = format!("{}/team/base/metadata.json", nginx.url());
        let out = run(&vagrant, &["box", "add", "--provider", "virtualbox", &url]).await;
        assert!(!out.success(), "{out}");
        assert!(out.text().to_lowercase().contains("checksum"), "{out}");
        let list = run(&vagrant, &["box", "list"]).await;
        assert!(!list.text().contains(BOX), "{list}");
        assert_eq!(installed(&vagrant, &v1, "virtualbox"), None);
    };
    tokio::time::timeout(Duration::from_secs(300), test).await.expect("test timed out");
}
