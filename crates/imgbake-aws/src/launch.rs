//! The build machine's lifecycle in one place: launch, describe, stop, terminate.
//!
//! Launching is one RunInstances call with everything set at once (tags on the instance and its
//! volumes, IMDSv2, user data, disks), idempotent through a client token so the SDK's retries never
//! start a second machine.

use crate::settings::AwsSettings;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceType,
    ResourceType, ShutdownBehavior, Tag, VolumeType,
};

use aws_sdk_ec2::types::Instance;
use imgbake_core::error::BuildError;
use imgbake_core::event::EventSink;

use crate::AwsBuilder;
use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::timing::{Change, Key};
use crate::waiters::Watch;
use crate::{tags, waiters};

/// What to launch.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The source AMI.
    pub image_id: String,
    /// Instance type.
    pub instance_type: String,
    /// Key pair for cloud-init to install.
    pub key_name: Option<String>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Subnet (`None`: EC2 picks one of the default VPC).
    pub subnet_id: Option<String>,
    /// Give it a public IP (needs an explicit network interface).
    pub associate_public_ip: Option<bool>,
    /// Instance profile name.
    pub iam_instance_profile: Option<String>,
    /// User data, base64.
    pub user_data: String,
    /// Require IMDSv2 tokens.
    pub imds_v2: bool,
    /// Disks.
    pub block_devices: Vec<BlockDeviceMapping>,
    /// Tags of the instance.
    pub instance_tags: Vec<Tag>,
    /// Tags of its volumes.
    pub volume_tags: Vec<Tag>,
    /// Idempotency token.
    pub client_token: String,
}

/// Launch; returns the instance id.
pub async fn run(c: &Clients, l: &Launch) -> Result<String, ApiError> {
    let mut req = c
        .ec2
        .run_instances()
        .image_id(&l.image_id)
        .instance_type(InstanceType::from(l.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .client_token(&l.client_token)
        // A machine orphaned by a killed imgbake stops costing money once it powers off.
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
        .set_key_name(l.key_name.clone())
        .user_data(&l.user_data)
        .set_block_device_mappings((!l.block_devices.is_empty()).then(|| l.block_devices.clone()))
        .tag_specifications(tags::spec(ResourceType::Instance, &l.instance_tags))
        .tag_specifications(tags::spec(ResourceType::Volume, &l.volume_tags));
    if l.imds_v2 {
        req = req.metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(2)
                .build(),
        );
    }
    if let Some(p) = &l.iam_instance_profile {
        let spec = if p.starts_with("arn:") {
            IamInstanceProfileSpecification::builder().arn(p).build()
        } else {
            IamInstanceProfileSpecification::builder().name(p).build()
        };
        req = req.iam_instance_profile(spec);
    }
    req = match l.associate_public_ip {
        // The public IP choice exists only on an explicit network interface, which then carries the
        // subnet and groups too.
        Some(public) => req.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .delete_on_termination(true)
                .set_subnet_id(l.subnet_id.clone())
                .set_groups(Some(l.security_groups.clone()))
                .build(),
        ),
        None => req.set_subnet_id(l.subnet_id.clone()).set_security_group_ids(Some(l.security_groups.clone())),
    };
    let out = req.send().await.api("RunInstances", c.region(), Some(l.image_id.clone()))?;
    out.instances().first().and_then(|i| i.instance_id()).map(str::to_string).ok_or_else(|| ApiError {
        operation: "RunInstances",
        region: c.region().into(),
        target: Some(l.image_id.clone()),
        code: None,
        status: None,
        detail: "the answer lists no instance".into(),
    })
}

/// The disks: `aws.block_devices`, and with `aws.encrypt` every EBS disk of the source encrypted (so
/// the image's snapshots are encrypted from the start).
pub fn block_devices(a: &AwsSettings, source_ebs_devices: &[String]) -> Vec<BlockDeviceMapping> {
    let encrypt = a.encrypt.unwrap_or(false);
    let mut out: Vec<BlockDeviceMapping> = a
        .block_devices
        .iter()
        .map(|d| {
            let ebs = EbsBlockDevice::builder()
                .set_volume_size(d.volume_size.as_ref().and_then(|s| s.get_ref().whole_gib()).map(|g| g as i32))
                .volume_type(VolumeType::from(d.volume_type.as_deref().unwrap_or("gp3")))
                .set_iops(d.iops)
                .set_throughput(d.throughput)
                .delete_on_termination(d.delete_on_termination.unwrap_or(true))
                .set_encrypted(d.encrypted.or(encrypt.then_some(true)))
                .set_kms_key_id(d.kms_key_id.clone().or_else(|| if encrypt { a.kms_key_id.clone() } else { None }))
                .build();
            BlockDeviceMapping::builder().device_name(&d.device_name).ebs(ebs).build()
        })
        .collect();
    if encrypt {
        for name in source_ebs_devices.iter().map(String::as_str) {
            if out.iter().any(|o| o.device_name() == Some(name)) {
                continue;
            }
            let ebs = EbsBlockDevice::builder()
                .encrypted(true)
                .set_kms_key_id(a.kms_key_id.clone())
                .delete_on_termination(true)
                .build();
            out.push(BlockDeviceMapping::builder().device_name(name).ebs(ebs).build());
        }
    }
    out
}

/// One instance, or `None` when EC2 does not list it.
pub async fn describe_instance(c: &Clients, id: &str) -> Result<Option<Instance>, ApiError> {
    let out = c.ec2.describe_instances().instance_ids(id).send().await.api(
        "DescribeInstances",
        c.region(),
        Some(id.into()),
    )?;
    Ok(out.reservations().iter().flat_map(|r| r.instances()).find(|i| i.instance_id() == Some(id)).cloned())
}

/// Ask EC2 to stop the instance; returns the state it reported (`stopping`, or `stopped` already).
pub async fn stop(c: &Clients, instance: &str) -> Result<String, ApiError> {
    let out = c.ec2.stop_instances().instance_ids(instance).send().await.api(
        "StopInstances",
        c.region(),
        Some(instance.into()),
    )?;
    Ok(out
        .stopping_instances()
        .first()
        .and_then(|i| i.current_state())
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_else(|| "stopping".into()))
}

/// The instance's journal detail naming its type (its termination is learned by type).
pub const INSTANCE_TYPE: &str = "instance_type";
/// The instance's journal detail saying learning is off for its build (`off`).
pub const LEARN: &str = "learn";

/// Terminate an instance and wait until it is gone (its security group can only go after that).
/// `history` is the wait history file (`None`: learning is off); `instance_type` keys the timing.
pub async fn terminate(
    b: &AwsBuilder,
    c: &Clients,
    id: &str,
    history: Option<std::path::PathBuf>,
    instance_type: &str,
    events: &EventSink,
) -> Result<(), BuildError> {
    let started = tokio::time::Instant::now();
    let reported = match c.ec2.terminate_instances().instance_ids(id).send().await.api(
        "TerminateInstances",
        c.region(),
        Some(id.into()),
    ) {
        Ok(out) => out
            .terminating_instances()
            .first()
            .and_then(|i| i.current_state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "shutting-down".into()),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if reported == "terminated" {
        return Ok(());
    }
    let wait = b.options().polling.wait(b.options().cleanup_timeout);
    let watch = Watch {
        timing: b.timing(),
        file: history,
        key: Key::new(c.region(), instance_type, Change::Terminated, None),
        started,
        polling: b.options().polling,
    };
    waiters::instance(c, id, "terminated", &[], Some(&reported), &wait, &watch, events).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::BlockDeviceMapping as Bdm;
    use aws_sdk_ec2::types::Image as Ami;

    #[test]
    fn encryption_covers_the_source_disks() {
        let source = Ami::builder()
            .block_device_mappings(
                Bdm::builder().device_name("/dev/xvda").ebs(EbsBlockDevice::builder().volume_size(8).build()).build(),
            )
            .block_device_mappings(Bdm::builder().device_name("/dev/sdb").virtual_name("ephemeral0").build())
            .build();
        let a = AwsSettings { encrypt: Some(true), kms_key_id: Some("alias/k".into()), ..Default::default() };
        let m = block_devices(&a, &crate::source::ebs_devices(&source));
        assert_eq!(m.len(), 1, "instance store disks are not EBS");
        let ebs = m[0].ebs().unwrap();
        assert_eq!((ebs.encrypted(), ebs.kms_key_id()), (Some(true), Some("alias/k")));
        assert!(block_devices(&AwsSettings::default(), &crate::source::ebs_devices(&source)).is_empty());
    }
}
