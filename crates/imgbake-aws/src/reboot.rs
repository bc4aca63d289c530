//! EC2's own reboot (RebootInstances), for `reboot = { method = "platform" }` steps.

use std::sync::Arc;

use async_trait::async_trait;
use imgbake_core::reboot::PlatformReboot;

use crate::clients::Clients;
use crate::error::SdkResultExt;

/// Reboots one instance through the EC2 API.
pub struct Ec2Reboot {
    clients: Arc<Clients>,
    instance: String,
}

impl Ec2Reboot {
    /// For `instance` of `clients`' region.
    pub fn new(clients: Arc<Clients>, instance: impl Into<String>) -> Self {
        Ec2Reboot { clients, instance: instance.into() }
    }
}

#[async_trait]
impl PlatformReboot for Ec2Reboot {
    fn describe(&self) -> String {
        format!("EC2 RebootInstances {} ({})", self.instance, self.clients.region())
    }

    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let c = &self.clients;
        c.ec2.reboot_instances().instance_ids(&self.instance).send().await.api(
            "RebootInstances",
            c.region(),
            Some(self.instance.clone()),
        )?;
        Ok(())
    }
}
