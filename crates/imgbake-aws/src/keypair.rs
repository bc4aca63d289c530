//! The build's temporary key pair: an ed25519 key generated in memory, its public half imported into
//! EC2 so cloud-init installs it for the login user.

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{ResourceType, Tag};

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::tags;

/// The key pair name of a build: unique per build and image, recognisable in the console.
pub fn name(build_id: &str, image: &str) -> String {
    let clean: String =
        image.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("imgbake-{build_id}-{clean}")
}

/// Import `public_line` as key pair `name`, tagged. The name is unique to the build, so "duplicate"
/// means an SDK retry of a call that had succeeded.
pub async fn import(c: &Clients, name: &str, public_line: &str, tags: &[Tag]) -> Result<(), ApiError> {
    let sent = c
        .ec2
        .import_key_pair()
        .key_name(name)
        .public_key_material(Blob::new(public_line.as_bytes()))
        .tag_specifications(tags::spec(ResourceType::KeyPair, tags))
        .send()
        .await
        .api("ImportKeyPair", c.region(), Some(name.into()));
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.code_is("InvalidKeyPair.Duplicate") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete key pair `name`; one that does not exist is fine.
pub async fn delete(c: &Clients, name: &str) -> Result<(), ApiError> {
    match c.ec2.delete_key_pair().key_name(name).send().await.api("DeleteKeyPair", c.region(), Some(name.into())) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
