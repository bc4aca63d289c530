//! The `vsphere` builder's part of the tree file: `[images.NAME.vsphere]` (defaults in
//! `[defaults.vsphere]`) and its `source` keys, as written. Parsed and checked by
//! [`crate::schema::VsphereSchema`]; see docs/builders/vsphere.md, *Keys*.
//!
//! Every field is left out when serialized if absent: the serialized form is what fingerprints hash,
//! so a key added later (or another builder's source keys) must not change existing fingerprints.
//! There is deliberately no `password` key: a password never sits in the tree file, its fingerprint
//! or the manifest; it comes from the environment ([`VsphereSettings::password_env`]).

use imgbake_config::units::{Duration, Size};
use imgbake_config::{Image, Source, Spanned};
use serde::{Deserialize, Deserializer, Serialize};

use crate::schema::NAME;

/// The `source` keys of the `vsphere` builder.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsphereSource {
    /// The template or VM to clone: an inventory path (`/DC0/vm/templates/debian-12`) or a name,
    /// looked up in `datacenter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<Spanned<String>>,
    /// Linked clone from this snapshot of the source (by name); with `linked_clone = true` and no
    /// snapshot: the current snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Spanned<String>>,
}

/// Settings of the `vsphere` builder (`[images.NAME.vsphere]`, defaults in `[defaults.vsphere]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsphereSettings {
    /// vCenter or ESXi: `vc.example.com`, `vc.example.com:8443` or `https://vc.example.com/sdk`
    /// (https only). Default: the environment's `VSPHERE_URL`, then `GOVC_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    /// The user to log in as (`builder@vsphere.local`). Default: the environment's `VSPHERE_USER`,
    /// then `GOVC_USERNAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<Spanned<String>>,
    /// The NAME of the environment variable holding the password (not the password). Default
    /// `VSPHERE_PASSWORD`, then `GOVC_PASSWORD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<Spanned<String>>,
    /// Accept any TLS certificate (opt-in only, for labs with self-signed certificates; the
    /// environment's `GOVC_INSECURE=1` also opts in). Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// A PEM file of CA certificates to trust in addition to the system's (relative to the tree
    /// file). Default: the environment's `GOVC_TLS_CA_CERTS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Spanned<String>>,
    /// The datacenter, by name or path. Default: the only one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<Spanned<String>>,
    /// The cluster the build VM runs in (its root resource pool, unless `resource_pool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Spanned<String>>,
    /// The host the build VM runs on (in `cluster` when both are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    /// The resource pool of the build VM (a path, or a name under the cluster or host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<Spanned<String>>,
    /// The VM folder for build VMs and templates, relative to the datacenter's `vm` folder.
    /// Default: the `vm` folder itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<Spanned<String>>,
    /// The datastore of the build VM and the template. Default: the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore: Option<Spanned<String>>,
    /// Connect the first network adapter to this network. Default: the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Spanned<String>>,
    /// Clone as a linked clone (from `source.snapshot`, or the source's current snapshot).
    /// Default false: a full clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked_clone: Option<bool>,
    /// Virtual CPUs of the template (1 to 768; checked while parsing, where the value's place in
    /// the file is known). Default: the source's.
    #[serde(default, deserialize_with = "cpus", skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory of the template (a multiple of 4MiB, 4MiB to 24TiB). Default: the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Spanned<Size>>,
    /// Grow the first disk to this size (never shrinks it). Default: the source's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<Spanned<Size>>,
    /// More disks to add to the template (`[[images.NAME.vsphere.disks]]`), at most 59.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<ExtraDisk>,
    /// The template's annotation (Notes in the vSphere client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The template's name (rendered with the build's values; at most 80 characters, none of
    /// `/ \ %`). Default: decided by the builder, from the image's name and the build id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_name: Option<Spanned<String>>,
    /// `template` (default: the build VM is marked as template) or `clone` (the build VM is cloned
    /// to a template, then destroyed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Spanned<String>>,
    /// How long to wait for VMware Tools to report the build VM's address. Default 10m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_timeout: Option<Duration>,
    /// How long a guest shutdown may take before the VM is powered off. Default 5m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,
    /// How long one vSphere task (clone, reconfigure...) may take. Default 30m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_timeout: Option<Duration>,
}

/// The most virtual CPUs vSphere gives a VM (hardware version 20 and later).
pub const MAX_CPUS: u32 = 768;

/// How a `cpus` out of range is reported while parsing (the schema adds the help line).
pub(crate) const CPUS_OUT_OF_RANGE: &str = "is out of range";

fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    match u32::try_from(n) {
        Ok(c) if (1..=MAX_CPUS).contains(&c) => Ok(Some(c)),
        _ => Err(serde::de::Error::custom(format!("cpus {n} {CPUS_OUT_OF_RANGE}"))),
    }
}

/// A disk added to the template (`[[images.NAME.vsphere.disks]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraDisk {
    /// Its size (at least 1MiB).
    pub size: Spanned<Size>,
    /// Thin provisioned (`true`) or thick (`false`). Default: vSphere's (thick, lazily zeroed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thin: Option<bool>,
}

/// The image's `vsphere` settings, if the builder parsed them (its own table, its parent's or
/// `[defaults.vsphere]`).
pub fn of(image: &Image) -> Option<&VsphereSettings> {
    image.settings::<VsphereSettings>(NAME)
}

/// The `vsphere` keys of a `source` (none when the builder is not registered).
pub fn source_of(source: &Source) -> Option<&VsphereSource> {
    source.get::<VsphereSource>(NAME)
}
