//! EC2's own reboot (RebootInstances), for `reboot = { method = "platform" }` steps, and EC2's word
//! on whether the instance still runs (DescribeInstances), asked while waiting for it to come back.

use std::sync::Arc;

use async_trait::async_trait;
use imgbake_core::reboot::{MachineState, PlatformReboot};

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

    async fn machine_state(&self) -> MachineState {
        let id = &self.instance;
        match crate::launch::describe_instance(&self.clients, id).await {
            Ok(Some(i)) => match crate::waiters::instance_state(&i) {
                "pending" | "running" => MachineState::Running,
                state @ ("stopping" | "stopped" | "shutting-down" | "terminated") => MachineState::Gone(format!(
                    "EC2 instance {id} is {state} ({}){}",
                    self.clients.region(),
                    i.state_reason().and_then(|r| r.message()).map(|m| format!(": {m}")).unwrap_or_default()
                )),
                _ => MachineState::Unknown,
            },
            Ok(None) => MachineState::Gone(format!("EC2 no longer lists instance {id} ({})", self.clients.region())),
            Err(e) if e.is_not_found() => {
                MachineState::Gone(format!("EC2 no longer knows instance {id} ({})", self.clients.region()))
            }
            // Trouble reaching EC2 says nothing about the machine.
            Err(_) => MachineState::Unknown,
        }
    }
}
