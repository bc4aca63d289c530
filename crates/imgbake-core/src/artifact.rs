//! [`Artifact`]: what a build produces, and how it is found again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Tag keys imgbake puts on everything it creates (AWS tags, or sidecar metadata for local builders).
pub mod tags {
    /// The build that created the resource.
    pub const BUILD_ID: &str = "imgbake:build-id";
    /// The tree image the resource belongs to.
    pub const IMAGE: &str = "imgbake:image";
    /// The tree's name (for people; several trees may share one).
    pub const TREE: &str = "imgbake:tree";
    /// The tree's unique id (`settings.id`): what cloud builders find a tree's resources by.
    pub const TREE_ID: &str = "imgbake:tree-id";
    /// The artifact's fingerprint.
    pub const FINGERPRINT: &str = "imgbake:fingerprint";
    /// The parent image's artifact id.
    pub const PARENT: &str = "imgbake:parent";
    /// The resolved source image.
    pub const SOURCE: &str = "imgbake:source";
    /// What the resource is to imgbake (`artifact`, `build-instance`, `temporary`).
    pub const ROLE: &str = "imgbake:role";
    /// When the resource was created (RFC 3339), for age-based sweeps.
    pub const CREATED: &str = "imgbake:created";
    /// Set on an artifact once everything about it succeeded (copies, sharing). Planning only trusts
    /// artifacts with it; `imgbake clean` treats artifacts without it as leftovers of failed builds.
    pub const COMPLETE: &str = "imgbake:complete";
    /// The result of the artifact's on-box tests (`passed: 3 passed 0 failed 0 skipped`), put on by
    /// builds in trees with release channels (see [`crate::channel`]).
    pub const TESTS: &str = "imgbake:tests";
}

/// The location key under which a builder whose artifacts are disk image files (its schema's
/// `makes_disks`) puts the file's absolute path; an importing builder reads the disk from there, with
/// `qemu-img` (any format it reads, backing chains included).
pub const DISK_LOCATION: &str = "path";

/// An image produced by a build: an AMI (in several regions), a disk image, a template...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The tree image it was built for.
    pub image: String,
    /// The builder kind that made it.
    pub builder: String,
    /// Its primary id: the AMI id in the build region, the output file...
    pub id: String,
    /// Where it lives: region → AMI id for AWS; `path` → file for local builders.
    pub locations: BTreeMap<String, String>,
    /// The fingerprint of the inputs it was built from.
    pub fingerprint: String,
    /// The source it started from (AMI id, parent artifact id, disk).
    pub source: String,
    /// The parent image's name, if chained.
    pub parent: Option<String>,
    /// The build that made it.
    pub build_id: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Builder-specific details (snapshot ids, format...).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl Artifact {
    /// Its id in `location` (a region), falling back to the primary id.
    pub fn id_in(&self, location: &str) -> &str {
        self.locations.get(location).map(String::as_str).unwrap_or(&self.id)
    }

    /// How old it is at `now`.
    pub fn age(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.created).to_std().unwrap_or_default()
    }
}
