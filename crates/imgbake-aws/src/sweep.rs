//! `imgbake clean`: find what imgbake created for this tree and is still around although no build
//! needs it — machines, key pairs, security groups, volumes, AMIs without the completion tag (a failed
//! build's half-made image) with their snapshots, and snapshots no image uses. Complete AMIs are never
//! returned. Found by the tree's id and imgbake's role tags (never by the tree's name, which two trees may
//! share) in every region the tree builds in or copies to.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, Tag};
use chrono::{DateTime, Utc};
use imgbake_config::Tree;
use imgbake_core::artifact::tags as keys;
use imgbake_core::builder::SweepFilter;
use imgbake_core::cleanup::Resource;
use imgbake_core::error::BuildError;

use crate::clients::{ClientCache, Clients, Session};
use crate::error::SdkResultExt;
use crate::tags::{self, COMPLETE};

/// Every session (region and account setup) the tree's aws images build in or copy to.
pub fn sessions(tree: &Tree) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    for img in tree.images().values().filter(|i| i.has_builder("aws")) {
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

/// Find the leftovers.
pub async fn sweep(clients: &ClientCache, tree: &Tree, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
    let tree_id = crate::tree_id(tree)?;
    let mut found = Vec::new();
    for s in sessions(tree) {
        let c = clients.get(&s).await;
        found.extend(in_session(&c, &tree_id, filter).await?);
    }
    Ok(found)
}

/// Old enough, and of the wanted build.
fn wanted(tags: &[Tag], filter: &SweepFilter, now: DateTime<Utc>) -> bool {
    let m = tags::to_map(tags);
    if filter.skips_build(m.get(keys::BUILD_ID).map(String::as_str).unwrap_or_default()) {
        return false;
    }
    match filter.older_than {
        None => true,
        Some(age) => m
            .get(keys::CREATED)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| (now - t.with_timezone(&Utc)).to_std().unwrap_or_default() >= age),
    }
}

async fn in_session(c: &Clients, tree_id: &str, filter: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
    let region = c.region();
    let now = Utc::now();
    let mut base: Vec<Filter> = tags::scope(tree_id, tags::role::ALL);
    if let Some(b) = &filter.build_id {
        base.push(tags::filter(keys::BUILD_ID, b));
    }
    let f = || Some(base.clone());
    let mut out = Vec::new();

    let inst = c
        .ec2
        .describe_instances()
        .set_filters(f())
        .filters(tags::attr("instance-state-name", &["pending", "running", "stopping", "stopped"]))
        .send()
        .await
        .api("DescribeInstances", region, None)?;
    for i in inst.reservations().iter().flat_map(|r| r.instances()) {
        if let Some(id) = i.instance_id()
            && wanted(i.tags(), filter, now)
        {
            out.push(c.session.resource("instance", id));
        }
    }

    let groups =
        c.ec2.describe_security_groups().set_filters(f()).send().await.api("DescribeSecurityGroups", region, None)?;
    for g in groups.security_groups() {
        if let Some(id) = g.group_id()
            && wanted(g.tags(), filter, now)
        {
            out.push(c.session.resource("security_group", id));
        }
    }

    let keys_out = c.ec2.describe_key_pairs().set_filters(f()).send().await.api("DescribeKeyPairs", region, None)?;
    for k in keys_out.key_pairs() {
        if let Some(name) = k.key_name()
            && wanted(k.tags(), filter, now)
        {
            out.push(c.session.resource("key_pair", name));
        }
    }

    let images =
        c.ec2.describe_images().owners("self").set_filters(f()).send().await.api("DescribeImages", region, None)?;
    let mut used: BTreeSet<String> = BTreeSet::new();
    for img in images.images() {
        let snaps = crate::image::snapshots(img);
        used.extend(snaps.iter().cloned());
        let complete = tags::to_map(img.tags()).get(COMPLETE).is_some_and(|v| v == "true");
        if let Some(id) = img.image_id()
            && !complete
            && wanted(img.tags(), filter, now)
        {
            out.push(c.session.resource("image", id).with("snapshots", snaps.join(",")));
        }
    }

    let snaps = c.ec2.describe_snapshots().owner_ids("self").set_filters(f()).send().await.api(
        "DescribeSnapshots",
        region,
        None,
    )?;
    for s in snaps.snapshots() {
        if let Some(id) = s.snapshot_id()
            && !used.contains(id)
            && wanted(s.tags(), filter, now)
        {
            out.push(c.session.resource("snapshot", id));
        }
    }

    let vols =
        c.ec2.describe_volumes().set_filters(f()).filters(tags::attr("status", &["available"])).send().await.api(
            "DescribeVolumes",
            region,
            None,
        )?;
    for v in vols.volumes() {
        if let Some(id) = v.volume_id()
            && wanted(v.tags(), filter, now)
        {
            out.push(c.session.resource("volume", id));
        }
    }
    Ok(out)
}
