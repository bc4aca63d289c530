//! Copying the AMI to other regions (CopyImage in the destination region), encrypted when asked.

use aws_sdk_ec2::types::{ResourceType, Tag};

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::tags;

/// What to copy.
#[derive(Clone, Debug)]
pub struct Copy {
    /// The source region.
    pub from_region: String,
    /// The AMI there.
    pub from_image: String,
    /// The copy's name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Encrypt the copy's snapshots.
    pub encrypted: bool,
    /// With this KMS key (default: the region's EBS default key).
    pub kms_key_id: Option<String>,
    /// Tags (set at creation where EC2 supports it; set again once available).
    pub tags: Vec<Tag>,
    /// Idempotency token.
    pub client_token: String,
}

/// Start the copy in `dst`'s region; returns the new AMI id.
pub async fn start(dst: &Clients, c: &Copy) -> Result<String, ApiError> {
    let out = dst
        .ec2
        .copy_image()
        .source_region(&c.from_region)
        .source_image_id(&c.from_image)
        .name(&c.name)
        .set_description(c.description.clone())
        .encrypted(c.encrypted)
        .set_kms_key_id(if c.encrypted { c.kms_key_id.clone() } else { None })
        .client_token(&c.client_token)
        .tag_specifications(tags::spec(ResourceType::Image, &c.tags))
        .send()
        .await
        .api("CopyImage", dst.region(), Some(format!("{} from {}", c.from_image, c.from_region)))?;
    out.image_id().map(str::to_string).ok_or_else(|| ApiError {
        operation: "CopyImage",
        region: dst.region().into(),
        target: Some(c.from_image.clone()),
        code: None,
        status: None,
        detail: "the answer has no image id".into(),
    })
}
