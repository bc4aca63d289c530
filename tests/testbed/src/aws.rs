//! AWS SDK configuration pointed at the bed's moto server (feature `aws`).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::{ArchitectureValues, BlockDeviceMapping, EbsBlockDevice, Tag};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::error::{BedError, Result};
use crate::moto::Moto;

/// Access key id of the dummy credentials moto is called with.
pub const ACCESS_KEY_ID: &str = "AKIAIMGBAKETESTBED00";
/// Secret of the dummy credentials.
pub const SECRET_ACCESS_KEY: &str = "imgbake-testbed-not-a-secret";

/// The HTTP client the project uses everywhere: hyper + rustls on ring (no aws-lc).
pub fn http_client() -> aws_sdk_ec2::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

impl Moto {
    /// SDK config for `region` talking to this moto: endpoint override, dummy static
    /// credentials, the ring-only HTTP client, and nothing from the host's environment or
    /// profile files (tests stay hermetic).
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .region(Region::new(region.to_owned()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "imgbake-testbed"))
            .http_client(http_client())
            .load()
            .await
    }

    /// An EC2 client for `region` on this moto.
    pub async fn ec2_client(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config(region).await)
    }

    /// Registers a source AMI named `name` with `tags` in `region`; returns its id.
    ///
    /// moto starts without its built-in AMIs (see [`crate::MotoOptions`]), so tests register
    /// the images they build from. moto ignores tag specifications and block device mappings
    /// on RegisterImage (the image gets a /dev/sda1 root snapshot of its own), so tags are
    /// applied with CreateTags afterwards.
    pub async fn register_image(&self, region: &str, name: &str, tags: &[(&str, &str)]) -> Result<String> {
        let ec2 = self.ec2_client(region).await;
        let aws_err =
            |operation: &'static str, e: String| BedError::Aws { operation, region: region.to_owned(), detail: e };
        let registered = ec2
            .register_image()
            .name(name)
            .architecture(ArchitectureValues::X8664)
            .virtualization_type("hvm")
            .root_device_name("/dev/xvda")
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().volume_size(8).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_err("RegisterImage", format!("{name}: {}", error_text(&e))))?;
        let image_id = registered.image_id().unwrap_or_default().to_owned();
        if image_id.is_empty() {
            return Err(aws_err("RegisterImage", format!("{name}: no image id in the answer")));
        }
        if !tags.is_empty() {
            ec2.create_tags()
                .resources(&image_id)
                .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect()))
                .send()
                .await
                .map_err(|e| aws_err("CreateTags", format!("{image_id}: {}", error_text(&e))))?;
        }
        Ok(image_id)
    }
}

/// The full error chain, which the SDK's `Display` hides behind "service error".
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
