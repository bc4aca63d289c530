//! One null build: connect to the existing machine; core provisions it; nothing is launched,
//! stopped or captured, so nothing is recorded on the journal.

use std::collections::BTreeMap;

use async_trait::async_trait;
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob};
use imgbake_core::communicator::Communicator;
use imgbake_core::error::BuildError;
use imgbake_core::sanitize::SanitizeItems;
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine, connect_wait, ssh_config};

use crate::schema::NullSource;

/// The per-build state.
pub(crate) struct NullBuild<'a> {
    pub(crate) job: &'a BuildJob,
    pub(crate) source: NullSource,
}

impl NullBuild<'_> {
    fn host(&self) -> String {
        self.source.host.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Build for NullBuild<'_> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        // The machine exists already: nothing to create, nothing to journal.
        self.job.events.info(format!("provisioning the existing machine {}", self.host()));
        Ok(())
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        let image = self.job.image()?;
        let mut machine = Machine::new(self.host());
        if let Some(k) = &self.source.host_key {
            machine = machine.pinned_host_key(k.get_ref().clone());
        }
        let ssh =
            SshCommunicator::new(ssh_config(&self.job.tree, image, &machine)?).with_events(self.job.events.clone());
        ssh.connect(&connect_wait(image)).await?;
        self.job.events.info(format!("connected to {}", ssh.target()));
        Ok(Box::new(ssh))
    }

    fn sanitize_items(&self) -> SanitizeItems {
        // Nothing of the build's is on the machine (no injected key): the phase finds nothing of
        // this build to clean and leaves the machine alone.
        SanitizeItems::default()
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        // Not ours to stop: only log out.
        comm.disconnect().await;
        Ok(())
    }

    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let job = self.job;
        let host = self.host();
        Ok(Artifact {
            image: job.image.clone(),
            builder: crate::schema::NAME.into(),
            id: format!("null-{}", job.build_id),
            locations: BTreeMap::from([("host".to_string(), host.clone())]),
            fingerprint: job.fingerprint.clone(),
            source: host,
            parent: None,
            build_id: job.build_id.clone(),
            created: chrono::Utc::now(),
            extra: BTreeMap::new(),
        })
    }
}
