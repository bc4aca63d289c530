//! Who may launch the AMI (accounts, groups, organizations), and its deprecation time.

use crate::settings::Share;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, LaunchPermission, LaunchPermissionModifications,
};

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};

/// Grant launch permissions on `ami`, and volume permissions on its snapshots for shared accounts (so
/// they can copy it).
pub async fn grant(c: &Clients, ami: &str, snapshots: &[String], share: &Share) -> Result<(), ApiError> {
    let mut adds: Vec<LaunchPermission> = Vec::new();
    adds.extend(share.accounts.iter().map(|a| LaunchPermission::builder().user_id(a).build()));
    adds.extend(share.groups.iter().map(|g| LaunchPermission::builder().group(g.as_str().into()).build()));
    adds.extend(share.organizations.iter().map(|o| LaunchPermission::builder().organization_arn(o).build()));
    adds.extend(
        share.organizational_units.iter().map(|o| LaunchPermission::builder().organizational_unit_arn(o).build()),
    );
    if adds.is_empty() {
        return Ok(());
    }
    c.ec2
        .modify_image_attribute()
        .image_id(ami)
        .launch_permission(LaunchPermissionModifications::builder().set_add(Some(adds)).build())
        .send()
        .await
        .api("ModifyImageAttribute", c.region(), Some(ami.into()))?;
    if share.accounts.is_empty() {
        return Ok(());
    }
    for s in snapshots {
        let perms: Vec<CreateVolumePermission> =
            share.accounts.iter().map(|a| CreateVolumePermission::builder().user_id(a).build()).collect();
        c.ec2
            .modify_snapshot_attribute()
            .snapshot_id(s)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(CreateVolumePermissionModifications::builder().set_add(Some(perms)).build())
            .send()
            .await
            .api("ModifySnapshotAttribute", c.region(), Some(s.clone()))?;
    }
    Ok(())
}

/// Mark `ami` deprecated at `at`.
pub async fn deprecate(c: &Clients, ami: &str, at: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    c.ec2.enable_image_deprecation().image_id(ami).deprecate_at(DateTime::from_secs(at.timestamp())).send().await.api(
        "EnableImageDeprecation",
        c.region(),
        Some(ami.into()),
    )?;
    Ok(())
}
