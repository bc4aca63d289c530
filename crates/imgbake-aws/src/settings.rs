//! The `aws` builder's part of the tree file: `[images.NAME.aws]` (defaults in `[defaults.aws]`) and
//! its `source` keys. Parsed and checked by [`crate::validate::AwsSchema`].

use std::collections::BTreeMap;

use imgbake_config::units::{Duration, Size};
use imgbake_config::{Image, Spanned};
use serde::{Deserialize, Serialize};

/// The `source` keys of the `aws` builder: exactly one of them.
/// The `publish` keys this builder acts on.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsPublish {
    /// SSM parameter holding the AMI id, e.g. `/images/web/latest`, in every region the AMI is in.
    pub ssm_parameter: Option<Spanned<String>>,
}

// Absent keys serialize as null: fingerprints made before builders declared their own keys hashed
// them that way, and they must not change.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSource {
    /// An AMI id.
    pub ami: Option<Spanned<String>>,
    /// Find the AMI by name, tags, owners.
    pub ami_filter: Option<Spanned<AmiFilter>>,
    /// Read the AMI id from an SSM parameter, e.g. `/aws/service/debian/release/12/latest/amd64`.
    pub ssm_parameter: Option<Spanned<String>>,
}

/// An AMI search.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmiFilter {
    /// Name pattern (`*` wildcards), e.g. `debian-12-amd64-*`.
    pub name: Option<String>,
    /// Owner account ids or aliases (`amazon`, `self`). Required: an unowned filter can match anyone's AMI.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Tags the AMI must have.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `x86_64` or `arm64`.
    pub architecture: Option<String>,
    /// Any other EC2 DescribeImages filter, name → values.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// With several matches, take the newest (otherwise several matches are an error).
    #[serde(default)]
    pub most_recent: bool,
}

/// Settings of the `aws` builder (`[images.NAME.aws]`, defaults in `[defaults.aws]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region the build runs in.
    pub region: Option<Spanned<String>>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Role to assume for the build.
    pub assume_role_arn: Option<String>,
    /// Endpoint override for EC2, SSM and STS (private endpoints, or a local test server).
    pub endpoint: Option<Spanned<String>>,
    /// Longest pause between two status polls while waiting (instance running, AMI available...).
    /// A change is noticed about half of it late on average; longer means fewer API calls. Default 3.5s.
    pub poll_interval: Option<Spanned<Duration>>,
    /// The SSM parameter of each release channel (`[channels.NAME]`), in every region of the AMI:
    /// `{image}` and `{channel}` are replaced. Default `/images/{image}/{channel}`.
    // New keys are left out when unset, so fingerprints of existing artifacts stay put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_parameter: Option<Spanned<String>>,
    /// Learn how long EC2 state changes take (kept in `<state_dir>/aws-waits.json` and on the AMI's
    /// `imgbake:waits` tag) and poll around the moment a change is due. Default true.
    pub learn_waits: Option<bool>,
    /// Where Windows older than Server 2019 downloads Win32-OpenSSH (a release zip). Default: the
    /// release the user-data script names.
    pub windows_openssh_url: Option<String>,
    /// Instance type of the build machine. Default `t3.micro`.
    pub instance_type: Option<Spanned<String>>,
    /// Subnet id.
    pub subnet_id: Option<Spanned<String>>,
    /// Find the subnet by tags (the one with most free addresses).
    pub subnet_filter: Option<Spanned<BTreeMap<String, String>>>,
    /// VPC id (the temporary security group goes there).
    pub vpc_id: Option<Spanned<String>>,
    /// Use these security groups instead of a temporary one.
    #[serde(default)]
    pub security_group_ids: Vec<Spanned<String>>,
    /// CIDRs allowed to reach SSH on the temporary group. Default: the caller's public IP /32.
    #[serde(default)]
    pub ssh_cidrs: Vec<Spanned<String>>,
    /// Give the machine a public IP.
    pub associate_public_ip: Option<bool>,
    /// Which address SSH uses: `public_ip` (default when there is one), `private_ip`, `public_dns`, `private_dns`.
    pub ssh_interface: Option<Spanned<String>>,
    /// Instance profile name for the build machine.
    pub iam_instance_profile: Option<String>,
    /// Use this existing key pair (with `communicator.private_key_file`) instead of a temporary one.
    pub key_pair_name: Option<Spanned<String>>,
    /// Extra user-data (shell script or cloud-config), appended after imgbake's host-key setup.
    pub user_data: Option<String>,
    /// Extra user-data from a file.
    pub user_data_file: Option<Spanned<String>>,
    /// Require IMDSv2 tokens on the build machine (and the AMI). Default true.
    pub imds_v2: Option<bool>,
    /// Disks of the build machine (and so of the AMI).
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// Tags on the build machine and its volumes.
    #[serde(default)]
    pub run_tags: BTreeMap<String, String>,
    /// AMI name template. Default `{{image.name}}-{{timestamp}}`.
    pub ami_name: Option<Spanned<String>>,
    /// Replace an AMI of the same name (in the build region or a copy region): it is deregistered,
    /// with its snapshots, once the new AMI is ready. Without it, such a name fails the preflight.
    pub force_deregister: Option<bool>,
    /// AMI description.
    pub ami_description: Option<String>,
    /// Extra tags on the AMI (the image's `tags` apply too).
    #[serde(default)]
    pub ami_tags: BTreeMap<String, String>,
    /// Extra tags on the AMI's snapshots.
    #[serde(default)]
    pub snapshot_tags: BTreeMap<String, String>,
    /// Copy the AMI to these regions too.
    #[serde(default)]
    pub copy_regions: Vec<Spanned<String>>,
    /// Encrypt the AMI's snapshots.
    pub encrypt: Option<bool>,
    /// KMS key for encryption (default: the account's EBS default key).
    pub kms_key_id: Option<String>,
    /// KMS key per copy region.
    #[serde(default)]
    pub region_kms_key_ids: BTreeMap<String, String>,
    /// Who may launch the AMI.
    pub share: Option<Share>,
    /// Mark the AMI deprecated this long after creation.
    pub deprecate_after: Option<Spanned<Duration>>,
    /// How long to wait for the build machine to run. Default 10m.
    pub instance_timeout: Option<Duration>,
    /// How long to wait for the AMI to become available. Default 60m.
    pub image_timeout: Option<Duration>,
    /// Make the AMI from the parent's disk file (a local image of the tree, e.g. built with qemu)
    /// instead of on a build machine: `"ebs-direct"` writes the disk into a snapshot through the EBS
    /// direct APIs and registers it. Not inherited by children.
    // New keys are left out when unset, so fingerprints of existing artifacts stay put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<Spanned<String>>,
    /// With `import`: the AMI's boot mode, `legacy-bios`, `uefi` or `uefi-preferred`. Default: read
    /// from the disk's partition table.
    // New keys are left out when unset, so fingerprints of existing artifacts stay put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<Spanned<String>>,
    /// With `import`: `x86_64` or `arm64`. Default: read from the disk's kernel.
    // New keys are left out when unset, so fingerprints of existing artifacts stay put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Spanned<String>>,
    /// With `import`: check that the disk's kernel has the drivers EC2 needs (ENA, NVMe) before
    /// uploading. Default true.
    // New keys are left out when unset, so fingerprints of existing artifacts stay put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_drivers: Option<bool>,
}

impl AwsSettings {
    /// The `import` method, if the AMI is made from the parent's disk.
    pub fn import(&self) -> Option<&str> {
        self.import.as_ref().map(|i| i.get_ref().as_str())
    }
}

impl AwsSettings {
    /// The longest `deprecate_after` EC2 accepts (EnableImageDeprecation: at most 10 years ahead).
    pub const MAX_DEPRECATE_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);
}

/// A disk of the build machine.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDevice {
    /// e.g. `/dev/xvda`.
    pub device_name: String,
    /// Size, whole GiB (`20GiB`).
    pub volume_size: Option<Spanned<Size>>,
    /// `gp3` (default), `gp2`, `io2`...
    pub volume_type: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<i32>,
    /// Throughput MiB/s (gp3).
    pub throughput: Option<i32>,
    /// Encrypt it.
    pub encrypted: Option<bool>,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// Delete with the instance. Default true.
    pub delete_on_termination: Option<bool>,
}

/// Launch permissions of an AMI.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// Account ids.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Groups (`all` makes it public).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Organization ARNs.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Organizational unit ARNs.
    #[serde(default)]
    pub organizational_units: Vec<String>,
}

/// The image's `aws` settings, if it has an `[aws]` table (its own, its parent's or `[defaults.aws]`).
pub fn of(image: &Image) -> Option<&AwsSettings> {
    image.settings::<AwsSettings>(crate::validate::NAME)
}
