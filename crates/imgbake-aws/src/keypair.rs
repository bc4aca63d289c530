//! The build's temporary key pair: an ed25519 key generated in memory, its public half imported into
//! EC2 so cloud-init installs it for the login user.

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{ResourceType, Tag};

use crate::clients::Clients;
use imgbake_core::error::BuildError;

use crate::error::{ApiError, SdkResultExt, platform};
use crate::tags;

/// The key pair name of a build: unique per build and image, recognisable in the console.
pub fn name(build_id: &str, image: &str) -> String {
    let clean: String =
        image.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("imgbake-{build_id}-{clean}")
}

/// Import `public_line` as key pair `name`, tagged. The name is unique to the build, so
/// "duplicate" should mean an SDK retry of a call that had succeeded: the existing key is adopted
/// only when its public key is ours (DescribeKeyPairs), else the build fails naming it.
pub async fn import(c: &Clients, name: &str, public_line: &str, tags: &[Tag]) -> Result<(), ImportError> {
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
        Err(e) if e.code_is("InvalidKeyPair.Duplicate") => match existing_public_key(c, name).await {
            Err(e) => Err(ImportError::Failed(e.into())),
            Ok(Some(theirs)) if same_key(&theirs, public_line) => Ok(()),
            Ok(found) => Err(ImportError::Foreign(
                platform(format!(
                    "key pair {name} already exists in {} {}: imgbake will not log in with a key it did not make; \
                 delete it (aws ec2 delete-key-pair --key-name {name}) or run `imgbake clean`",
                    c.region(),
                    if found.is_some() { "with another public key" } else { "but could not be read back" },
                ))
                .caused_by(e),
            )),
        },
        Err(e) => Err(ImportError::Failed(e.into())),
    }
}

/// Why an import failed.
#[derive(Debug)]
pub enum ImportError {
    /// A key pair of that name exists and is not ours: it must not be deleted as ours either.
    Foreign(BuildError),
    /// The import failed; the key pair may exist (an answer lost in flight).
    Failed(BuildError),
}

impl From<ImportError> for BuildError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Foreign(e) | ImportError::Failed(e) => e,
        }
    }
}

/// The public key EC2 holds for key pair `name` (`None`: it does not exist, or EC2 gave no key).
async fn existing_public_key(c: &Clients, name: &str) -> Result<Option<String>, ApiError> {
    match c.ec2.describe_key_pairs().key_names(name).include_public_key(true).send().await.api(
        "DescribeKeyPairs",
        c.region(),
        Some(name.into()),
    ) {
        Ok(out) => Ok(out.key_pairs().first().and_then(|k| k.public_key()).map(str::to_string)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The same key: algorithm and key blob equal (the comment may differ).
fn same_key(a: &str, b: &str) -> bool {
    let fields = |s: &str| s.split_whitespace().take(2).map(str::to_string).collect::<Vec<_>>();
    let (fa, fb) = (fields(a), fields(b));
    fa.len() == 2 && fa == fb
}

/// Delete key pair `name`; one that does not exist is fine.
pub async fn delete(c: &Clients, name: &str) -> Result<(), ApiError> {
    match c.ec2.delete_key_pair().key_name(name).send().await.api("DeleteKeyPair", c.region(), Some(name.into())) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_same_by_algorithm_and_blob_only() {
        assert!(same_key("ssh-ed25519 AAAAC3x imgbake-b-1", "ssh-ed25519 AAAAC3x"));
        assert!(!same_key("ssh-ed25519 AAAAC3y", "ssh-ed25519 AAAAC3x"));
        assert!(!same_key("", ""));
    }
}
