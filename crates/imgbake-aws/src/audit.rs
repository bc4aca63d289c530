//! `imgbake audit` on EC2 (see `imgbake_core::audit`): the running and pending instances in every
//! region the tree's images are in, each with the tags of the AMI it runs.
//!
//! Per session (region and account setup): DescribeInstances filtered on
//! `instance-state-name = running, pending`, paged with `MaxResults` ([`AwsOptions::audit_page_size`],
//! default 1000, EC2's maximum), then DescribeImages for the distinct AMI ids those instances run, in
//! batches of [`IMAGE_BATCH`] values of one `image-id` filter (a filter, not `ImageIds`: an AMI
//! deregistered since the launch is simply not returned, where `ImageIds` would fail the whole call;
//! deprecated AMIs included). Calls go through the shared clients: the rate limiter and retries of
//! every other call.
//!
//! [`AwsOptions::audit_page_size`]: crate::AwsOptions::audit_page_size

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::Image as Ami;
use chrono::{DateTime, Utc};
use imgbake_config::Image;
use imgbake_core::audit::RunningMachine;
use imgbake_core::error::BuildError;

use crate::clients::{ClientCache, Clients, Session};
use crate::error::SdkResultExt;
use crate::tags;

/// AMI ids per DescribeImages call (values of one filter; EC2 accepts up to 200).
pub const IMAGE_BATCH: usize = 100;

/// Every session the `images` build in or copy to.
fn sessions(images: &[&Image]) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    for img in images.iter().filter(|i| i.has_builder("aws")) {
        let Some(a) = crate::settings::of(img) else { continue };
        let Some(r) = &a.region else { continue };
        for region in std::iter::once(r).chain(&a.copy_regions) {
            let s = Session::of(a, region.get_ref());
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

fn chrono_of(d: &aws_sdk_ec2::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(d.secs(), d.subsec_nanos()).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The running and pending instances in the regions of `images`, with their AMIs' tags.
pub async fn running_machines(
    clients: &ClientCache,
    images: &[&Image],
    page_size: i32,
) -> Result<Vec<RunningMachine>, BuildError> {
    let mut out = Vec::new();
    for s in sessions(images) {
        let c = clients.get(&s).await;
        out.extend(in_session(&c, page_size).await?);
    }
    Ok(out)
}

async fn in_session(c: &Clients, page_size: i32) -> Result<Vec<RunningMachine>, BuildError> {
    let region = c.region().to_string();
    let mut machines = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = c
            .ec2
            .describe_instances()
            .filters(tags::attr("instance-state-name", &["running", "pending"]))
            .max_results(page_size.clamp(5, 1000))
            .set_next_token(token.take())
            .send()
            .await
            .api("DescribeInstances", &region, None)?;
        for r in page.reservations() {
            for i in r.instances() {
                let (Some(id), Some(image)) = (i.instance_id(), i.image_id()) else { continue };
                machines.push(RunningMachine {
                    id: id.to_string(),
                    image_id: image.to_string(),
                    location: region.clone(),
                    account: r.owner_id().map(str::to_string),
                    state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
                    launched: i.launch_time().map(chrono_of),
                    tags: tags::to_map(i.tags()),
                    image_tags: None,
                    image_created: None,
                });
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    let mut ids: Vec<String> = machines.iter().map(|m| m.image_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut amis: HashMap<String, Ami> = HashMap::new();
    for batch in ids.chunks(IMAGE_BATCH) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let mut token: Option<String> = None;
        loop {
            let page = c
                .ec2
                .describe_images()
                .filters(tags::attr("image-id", &refs))
                .include_deprecated(true)
                .set_next_token(token.take())
                .send()
                .await
                .api("DescribeImages", &region, None)?;
            for ami in page.images() {
                if let Some(id) = ami.image_id() {
                    amis.insert(id.to_string(), ami.clone());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    for m in &mut machines {
        if let Some(ami) = amis.get(&m.image_id) {
            let t: BTreeMap<String, String> = tags::to_map(ami.tags());
            m.image_tags = Some(t);
            m.image_created =
                ami.creation_date().and_then(|d| DateTime::parse_from_rfc3339(d).ok()).map(|d| d.with_timezone(&Utc));
        }
    }
    Ok(machines)
}
