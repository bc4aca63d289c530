//! `imgbake clean` for local builds: what a build that was killed may have left — QEMU processes
//! (found by the `-name imgbake:BUILD:IMAGE:TREE` they carry), temp work directories (with a `build.json`
//! marker), `.partial.qcow2` overlays and disks without a sidecar in the output directories.
//! Complete artifacts (disk + sidecar) are never returned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use imgbake_config::Tree;
use imgbake_core::builder::SweepFilter;
use imgbake_core::cleanup::Resource;
use imgbake_core::error::BuildError;

use crate::KIND;
use crate::process;
use crate::settings::Settings;

/// Is a leftover of `build_id`, `age` old, one `filter` asks for?
pub fn keep(filter: &SweepFilter, build_id: &str, age: Option<Duration>) -> bool {
    if filter.skips_build(build_id) {
        return false;
    }
    match (filter.older_than, age) {
        (Some(min), Some(age)) => age >= min,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// How long ago `path` was modified.
pub fn age_of(path: &Path) -> Option<Duration> {
    SystemTime::now().duration_since(std::fs::metadata(path).ok()?.modified().ok()?).ok()
}

/// How long ago a process started, from its start time in clock ticks since boot.
fn process_age(started: u64) -> Option<Duration> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // SAFETY: plain libc query.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64((uptime - started as f64 / ticks as f64).max(0.0)))
}

/// Everything left behind, for `tree`'s images.
pub fn sweep(tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
    let mut out = sessions(tree, filter, KIND);
    let images: Vec<_> = tree.images().values().filter(|i| i.has_builder(KIND)).collect();
    let names: BTreeSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
    let mut dirs = BTreeSet::new();
    for image in &images {
        dirs.insert(Settings::resolve(tree, image)?.output_dir);
    }
    for dir in dirs {
        out.extend(leftover_files(&dir, &names, filter));
    }
    Ok(out)
}

/// What killed [`Session`](crate::session::Session)s of builder `kind` left for `tree`'s images:
/// QEMU processes and work directories (journaled under `kind`). Output files are the builder's.
pub fn sessions(tree: &Tree, filter: &SweepFilter, kind: &str) -> Vec<Resource> {
    let mut out = Vec::new();
    let images: Vec<_> = tree.images().values().filter(|i| i.has_builder(kind)).collect();
    let names: BTreeSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
    let tree_name = tree.name();

    for pid in process::all_pids() {
        let Some(args) = process::cmdline(pid) else { continue };
        let Some(name) = args.windows(2).find(|w| w[0] == "-name").map(|w| w[1].clone()) else { continue };
        let Some((build_id, rest)) = name.strip_prefix("imgbake:").and_then(|r| r.split_once(':')) else { continue };
        // Another tree's image of the same name is not ours to remove.
        let Some((image, tree_of)) = rest.split_once(':') else { continue };
        let Some(started) = process::start_time(pid) else { continue };
        if tree_of == tree_name && names.contains(image) && keep(filter, build_id, process_age(started)) {
            out.push(
                Resource::new(kind, "process", pid.to_string())
                    .with("started", started.to_string())
                    .with("build_id", build_id),
            );
        }
    }

    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let path = e.path();
            if !e.file_name().to_string_lossy().starts_with("imgbake-qemu-") {
                continue;
            }
            let Ok(text) = std::fs::read(path.join("build.json")) else { continue };
            let Ok(marker) = serde_json::from_slice::<serde_json::Value>(&text) else { continue };
            let (Some(b), Some(i)) = (marker["build_id"].as_str(), marker["image"].as_str()) else { continue };
            // Markers from before the `builder` field are the qemu builder's.
            if marker["tree"].as_str() == Some(tree_name.as_str())
                && marker["builder"].as_str().unwrap_or(KIND) == kind
                && names.contains(i)
                && keep(filter, b, age_of(&path))
            {
                out.push(Resource::new(kind, "dir", path.display().to_string()).with("build_id", b));
            }
        }
    }
    out
}

/// `b20261124-101500-3fa2`, the shape of the scheduler's build ids.
/// Is `s` shaped like the scheduler's build ids?
pub fn looks_like_build_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 21
        && b[0] == b'b'
        && b[1..9].iter().all(u8::is_ascii_digit)
        && b[9] == b'-'
        && b[10..16].iter().all(u8::is_ascii_digit)
        && b[16] == b'-'
        && b[17..].iter().all(u8::is_ascii_hexdigit)
}

fn leftover_files(dir: &PathBuf, names: &BTreeSet<&str>, filter: &SweepFilter) -> Vec<Resource> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let file = e.file_name().to_string_lossy().into_owned();
        let (stem, partial) = match file.strip_suffix(".partial.qcow2") {
            Some(s) => (s.to_string(), true),
            None => match file.rsplit_once('.') {
                Some((s, ext)) if ["qcow2", "raw", "vmdk", "vdi"].contains(&ext) => (s.to_string(), false),
                _ => continue,
            },
        };
        if !partial && crate::sidecar::path_for(&path).exists() {
            continue; // a complete artifact
        }
        // `IMAGE-BUILD`: the longest image name that prefixes it.
        let Some(image) = names.iter().filter(|n| stem.starts_with(&format!("{n}-"))).max_by_key(|n| n.len()) else {
            continue;
        };
        let build_id = &stem[image.len() + 1..];
        // A finished-looking disk without a sidecar is only ours if it is named like a build's
        // output: `base-backup.qcow2` in the same directory is the user's.
        if !(partial || looks_like_build_id(build_id) || filter.build_id.as_deref() == Some(build_id)) {
            continue;
        }
        if keep(filter, build_id, age_of(&path)) {
            out.push(Resource::new(KIND, "file", path.display().to_string()).with("build_id", build_id));
        }
    }
    out
}
