//! Build leases in SSM Parameter Store (`imgbake build --lease`): one String parameter per generation,
//! `/imgbake/lease/TREE_ID/IMAGE/GENERATION`, in the image's build region, holding the lease record
//! as JSON. `PutParameter` without `Overwrite` fails with `ParameterAlreadyExists` when the parameter
//! exists: that is the atomic create the protocol in [`imgbake_core::lease`] needs. Parameters are
//! tagged with the tree id and the `lease` role at creation and deleted on release; a generation
//! left by a runner that died lapses and is deleted by the next runner that takes the lease.

use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterType, Tag};
use imgbake_core::artifact::tags as keys;
use imgbake_core::error::BuildError;
use imgbake_core::lease::{LeaseRecord, LeaseStore};

use crate::clients::Clients;
use crate::error::SdkResultExt;

/// One image's lease, in one region.
pub struct SsmLease {
    clients: std::sync::Arc<Clients>,
    tree_id: String,
    path: String,
}

impl SsmLease {
    /// The lease of `image` of tree `tree_id`, through `clients` (the image's build region).
    pub fn new(clients: std::sync::Arc<Clients>, tree_id: &str, image: &str) -> Self {
        SsmLease { clients, tree_id: tree_id.into(), path: format!("/imgbake/lease/{tree_id}/{image}") }
    }

    fn name(&self, generation: u64) -> String {
        format!("{}/{generation}", self.path)
    }

    fn value(record: &LeaseRecord) -> Result<String, BuildError> {
        serde_json::to_string(record).map_err(|e| crate::error::config(format!("cannot encode a lease record: {e}")))
    }
}

fn tag(key: &str, value: &str) -> Result<Tag, BuildError> {
    Tag::builder().key(key).value(value).build().map_err(|e| crate::error::config(format!("bad lease tag {key}: {e}")))
}

#[async_trait]
impl LeaseStore for SsmLease {
    fn describe(&self) -> String {
        format!("SSM parameters {}/* ({})", self.path, self.clients.region())
    }

    async fn list(&self) -> Result<Vec<(u64, LeaseRecord)>, BuildError> {
        let region = self.clients.region();
        let mut pages = self.clients.ssm.get_parameters_by_path().path(&self.path).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.api("GetParametersByPath", region, Some(self.path.clone()))?;
            for p in page.parameters() {
                let generation = p.name().and_then(|n| n.rsplit('/').next()).and_then(|g| g.parse::<u64>().ok());
                // A record that does not parse (written by someone else) counts as lapsed: its
                // generation still moves the next one up.
                let record = p.value().and_then(|v| serde_json::from_str::<LeaseRecord>(v).ok());
                if let Some(g) = generation {
                    out.push((
                        g,
                        record.unwrap_or(LeaseRecord {
                            holder: "unreadable record".into(),
                            build_id: String::new(),
                            expires: chrono::DateTime::<chrono::Utc>::MIN_UTC,
                        }),
                    ));
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, generation: u64, record: &LeaseRecord) -> Result<bool, BuildError> {
        let name = self.name(generation);
        let r = self
            .clients
            .ssm
            .put_parameter()
            .name(&name)
            .value(Self::value(record)?)
            .r#type(ParameterType::String)
            .overwrite(false)
            .description("imgbake build lease: one build of this image at a time")
            .tags(tag(keys::TREE_ID, &self.tree_id)?)
            .tags(tag(keys::ROLE, "lease")?)
            .send()
            .await
            .api("PutParameter", self.clients.region(), Some(name));
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.code_is("ParameterAlreadyExists") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn renew(&self, generation: u64, record: &LeaseRecord) -> Result<(), BuildError> {
        let name = self.name(generation);
        self.clients
            .ssm
            .put_parameter()
            .name(&name)
            .value(Self::value(record)?)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .api("PutParameter", self.clients.region(), Some(name))?;
        Ok(())
    }

    async fn delete(&self, generation: u64) -> Result<(), BuildError> {
        let name = self.name(generation);
        match self.clients.ssm.delete_parameter().name(&name).send().await.api(
            "DeleteParameter",
            self.clients.region(),
            Some(name),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
