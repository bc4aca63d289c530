//! Capturing the image: CreateImage of the stopped machine, tag the snapshots once they exist; and
//! removing an AMI with its snapshots.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Image as Ami, ResourceType, Tag};
use imgbake_core::error::BuildError;
use imgbake_core::wait::Wait;

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::tags;
use crate::waiters;

/// CreateImage of the (stopped) instance, tagged at creation; returns the AMI id. The image's snapshots
/// are tagged separately once they exist ([`tag`]).
pub async fn create(
    c: &Clients,
    instance: &str,
    name: &str,
    description: Option<&str>,
    tags: &[Tag],
) -> Result<String, ApiError> {
    let sent = c
        .ec2
        .create_image()
        .instance_id(instance)
        .name(name)
        .set_description(description.map(str::to_string))
        .tag_specifications(tags::spec(ResourceType::Image, tags))
        .send()
        .await
        .api("CreateImage", c.region(), Some(instance.into()));
    match sent {
        Ok(out) => out.image_id().map(str::to_string).ok_or_else(|| ApiError {
            operation: "CreateImage",
            region: c.region().into(),
            target: Some(instance.into()),
            code: None,
            status: None,
            detail: "the answer has no image id".into(),
        }),
        // A retry of a call that did succeed: the image is ours if it carries this build's tags.
        Err(e) if e.code_is("InvalidAMIName.Duplicate") => {
            let build = tags::to_map(tags).get(imgbake_core::artifact::tags::BUILD_ID).cloned().unwrap_or_default();
            let out = c
                .ec2
                .describe_images()
                .owners("self")
                .filters(tags::attr("name", &[name]))
                .filters(tags::filter(imgbake_core::artifact::tags::BUILD_ID, &build))
                .send()
                .await
                .api("DescribeImages", c.region(), Some(name.into()))?;
            out.images().first().and_then(|i| i.image_id()).map(str::to_string).ok_or(e)
        }
        Err(e) => Err(e),
    }
}

/// What RegisterImage makes of a snapshot holding a whole disk (`aws.import`).
#[derive(Clone, Debug)]
pub struct Registration {
    /// The AMI's name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// `x86_64` or `arm64`.
    pub architecture: String,
    /// `legacy-bios`, `uefi` or `uefi-preferred`.
    pub boot_mode: String,
    /// The snapshot of the root disk.
    pub snapshot: String,
    /// The root volume's size (GiB) when launched; at least the snapshot's.
    pub volume_gib: i32,
    /// Its volume type (default gp3).
    pub volume_type: String,
    /// Instances launched from it require IMDSv2 tokens.
    pub imds_v2: bool,
    /// Tags of the AMI, set at creation.
    pub tags: Vec<Tag>,
}

/// The root device of imported AMIs (what Xen-era and Nitro instances both accept).
pub const IMPORT_ROOT_DEVICE: &str = "/dev/xvda";

/// RegisterImage of a root disk snapshot: HVM, ENA on (the disk was checked for the driver), the
/// boot mode and IMDS support given. Returns the AMI id.
pub async fn register(c: &Clients, r: &Registration) -> Result<String, ApiError> {
    use aws_sdk_ec2::types::{
        ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ImdsSupportValues, VolumeType,
    };
    let root = BlockDeviceMapping::builder()
        .device_name(IMPORT_ROOT_DEVICE)
        .ebs(
            EbsBlockDevice::builder()
                .snapshot_id(&r.snapshot)
                .volume_size(r.volume_gib)
                .volume_type(VolumeType::from(r.volume_type.as_str()))
                .delete_on_termination(true)
                .build(),
        )
        .build();
    let out = c
        .ec2
        .register_image()
        .name(&r.name)
        .set_description(r.description.clone())
        .architecture(ArchitectureValues::from(r.architecture.as_str()))
        .boot_mode(BootModeValues::from(r.boot_mode.as_str()))
        .virtualization_type("hvm")
        .ena_support(true)
        .root_device_name(IMPORT_ROOT_DEVICE)
        .block_device_mappings(root)
        .set_imds_support(r.imds_v2.then_some(ImdsSupportValues::V20))
        .tag_specifications(tags::spec(ResourceType::Image, &r.tags))
        .send()
        .await
        .api("RegisterImage", c.region(), Some(r.snapshot.clone()))?;
    out.image_id().map(str::to_string).ok_or_else(|| ApiError {
        operation: "RegisterImage",
        region: c.region().into(),
        target: Some(r.snapshot.clone()),
        code: None,
        status: None,
        detail: "the answer has no image id".into(),
    })
}

/// The snapshot ids of an image's EBS disks.
pub fn snapshots(ami: &Ami) -> Vec<String> {
    ami.block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

/// Tag `ids`, retrying while EC2 does not list them yet.
pub async fn tag(c: &Clients, ids: &[String], tags: &[Tag], wait: &Wait) -> Result<(), BuildError> {
    if ids.is_empty() || tags.is_empty() {
        return Ok(());
    }
    waiters::retry(
        wait,
        &format!("tagging {} ({})", ids.join(", "), c.region()),
        |e: &ApiError| e.is_not_found(),
        || async {
            c.ec2
                .create_tags()
                .set_resources(Some(ids.to_vec()))
                .set_tags(Some(tags.to_vec()))
                .send()
                .await
                .api("CreateTags", c.region(), Some(ids.join(",")))
                .map(|_| ())
        },
    )
    .await
}

/// Make instances launched from `ami` require IMDSv2 tokens (`aws.imds_v2`, on by default): CreateImage
/// does not carry the build machine's metadata options over to the AMI, and EC2 accepts the
/// attribute only on an existing image. Once set to `v2.0` it cannot be unset, so it is set only
/// when asked.
pub async fn require_imds_v2(c: &Clients, ami: &str) -> Result<(), ApiError> {
    let v2 = aws_sdk_ec2::types::AttributeValue::builder().value("v2.0").build();
    c.ec2.modify_image_attribute().image_id(ami).imds_support(v2).send().await.api(
        "ModifyImageAttribute",
        c.region(),
        Some(ami.into()),
    )?;
    Ok(())
}

/// Deregister `ami` and delete its snapshots (those it lists, plus `known`). Missing things are fine.
pub async fn remove(c: &Clients, ami: &str, known: &[String], wait: &Wait) -> Result<(), BuildError> {
    let mut snaps: BTreeSet<String> = known.iter().filter(|s| !s.is_empty()).cloned().collect();
    if let Some(img) =
        waiters::describe_image(c, ami).await.or_else(|e| if e.is_not_found() { Ok(None) } else { Err(e) })?
    {
        snaps.extend(snapshots(&img));
        match c.ec2.deregister_image().image_id(ami).send().await.api("DeregisterImage", c.region(), Some(ami.into())) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for s in snaps {
        delete_snapshot(c, &s, wait).await?;
    }
    Ok(())
}

/// Delete a snapshot, retrying while a just-deregistered image still holds it.
pub async fn delete_snapshot(c: &Clients, id: &str, wait: &Wait) -> Result<(), BuildError> {
    waiters::retry(
        wait,
        &format!("snapshot {id} ({}) to be deletable", c.region()),
        |e: &ApiError| e.code_is("InvalidSnapshot.InUse"),
        || async {
            match c.ec2.delete_snapshot().snapshot_id(id).send().await.api(
                "DeleteSnapshot",
                c.region(),
                Some(id.into()),
            ) {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        },
    )
    .await
}
