//! Finding artifacts again by their tags (planning is a query), and deleting them for good.
//!
//! One paginated DescribeImages per session (region and account setup) for the whole tree — filtered
//! on `imgbake:tree` and the completion tag, owners `self` — never a call per image, and no filter
//! that grows with the tree (EC2 limits the values of one filter): AMIs of images not asked for are
//! dropped here. Copies in other regions join their build's artifact as more locations.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_ec2::types::Image as Ami;
use chrono::{DateTime, Utc};
use imgbake_config::{Image, Tree};
use imgbake_core::artifact::{Artifact, tags as keys};
use imgbake_core::error::BuildError;
use imgbake_core::event::{EventKind, EventSink};

use crate::AwsBuilder;
use crate::clients::{ClientCache, Clients, Session};
use crate::error::SdkResultExt;
use crate::tags::{self, COMPLETE};
use crate::timing::Timing;

/// Every complete AMI imgbake made for `images` of `tree`, as artifacts, newest first per image.
/// `timing` learns the durations their `imgbake:waits` tags carry (a fresh runner's first hint).
pub async fn list(
    clients: &ClientCache,
    tree: &Tree,
    images: &[&Image],
    timing: Option<&Timing>,
) -> Result<Vec<Artifact>, BuildError> {
    let tree_id = crate::tree_id(tree)?;
    // Which sessions to ask, and which image names each may hold.
    let mut per_session: Vec<(Session, HashSet<String>)> = Vec::new();
    for img in images.iter().filter(|i| i.has_builder("aws")) {
        let Some(a) = crate::settings::of(img) else { continue };
        let Some(r) = &a.region else { continue };
        for region in std::iter::once(r).chain(&a.copy_regions) {
            let s = Session::of(a, region.get_ref());
            match per_session.iter_mut().find(|(x, _)| *x == s) {
                Some((_, names)) => {
                    names.insert(img.name.clone());
                }
                None => per_session.push((s, HashSet::from([img.name.clone()]))),
            }
        }
    }
    let mut found: Vec<(String, Ami)> = Vec::new();
    for (s, names) in per_session {
        let c = clients.get(&s).await;
        for ami in complete_images(&c, &tree_id).await? {
            let t = tags::to_map(ami.tags());
            if let (Some(timing), Some(waits)) = (timing, t.get(crate::timing::TAG)) {
                timing.learn_tag(&s.region, waits);
            }
            let image = t.get(keys::IMAGE).cloned().unwrap_or_default();
            if names.contains(&image) {
                found.push((s.region.clone(), ami));
            }
        }
    }
    Ok(assemble(images, found))
}

async fn complete_images(c: &Clients, tree_id: &str) -> Result<Vec<Ami>, BuildError> {
    let mut pages = c
        .ec2
        .describe_images()
        .owners("self")
        .set_filters(Some(tags::scope(tree_id, &[tags::role::ARTIFACT])))
        .filters(tags::filter(COMPLETE, "true"))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.api("DescribeImages", c.region(), None)?;
        out.extend(page.images().iter().cloned());
    }
    Ok(out)
}

/// Group AMIs by (image, build) into artifacts; the one in the image's build region is the primary.
fn assemble(images: &[&Image], found: Vec<(String, Ami)>) -> Vec<Artifact> {
    let by_name: HashMap<&str, &Image> = images.iter().map(|i| (i.name.as_str(), *i)).collect();
    let mut groups: BTreeMap<(String, String), Vec<(String, Ami)>> = BTreeMap::new();
    for (region, ami) in found {
        let t = tags::to_map(ami.tags());
        let (Some(image), Some(build)) = (t.get(keys::IMAGE), t.get(keys::BUILD_ID)) else { continue };
        groups.entry((image.clone(), build.clone())).or_default().push((region, ami));
    }
    let mut out: Vec<Artifact> = Vec::new();
    for ((image, build_id), amis) in groups {
        let Some(img) = by_name.get(image.as_str()) else { continue };
        let build_region =
            crate::settings::of(img).and_then(|a| a.region.as_ref()).map(|r| r.get_ref().clone()).unwrap_or_default();
        let Some((_, primary)) = amis.iter().find(|(r, _)| *r == build_region) else { continue };
        let t = tags::to_map(primary.tags());
        let created = t
            .get(keys::CREATED)
            .map(String::as_str)
            .or(primary.creation_date())
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(DateTime::UNIX_EPOCH);
        let mut extra = BTreeMap::new();
        if let Some(n) = primary.name() {
            extra.insert("name".to_string(), n.to_string());
        }
        if let Some(t) = t.get(keys::TESTS) {
            extra.insert(imgbake_core::channel::EXTRA_TESTS.to_string(), t.clone());
        }
        let mut locations = BTreeMap::new();
        for (region, ami) in &amis {
            if let Some(id) = ami.image_id() {
                locations.insert(region.clone(), id.to_string());
                extra.insert(format!("snapshots.{region}"), crate::image::snapshots(ami).join(","));
            }
        }
        out.push(Artifact {
            image: image.clone(),
            builder: "aws".into(),
            id: primary.image_id().unwrap_or_default().to_string(),
            locations,
            fingerprint: t.get(keys::FINGERPRINT).cloned().unwrap_or_default(),
            source: t.get(keys::SOURCE).cloned().unwrap_or_default(),
            parent: img.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id,
            created,
            extra,
        });
    }
    // Images in the given order; newest first within one.
    let order: HashMap<&str, usize> = images.iter().enumerate().map(|(i, img)| (img.name.as_str(), i)).collect();
    out.sort_by(|a, b| {
        order
            .get(a.image.as_str())
            .cmp(&order.get(b.image.as_str()))
            .then(b.created.cmp(&a.created))
            .then(b.id.cmp(&a.id))
    });
    out
}

/// Deregister the artifact's AMI in every region it is in, with its snapshots.
pub async fn delete(b: &AwsBuilder, tree: &Tree, artifact: &Artifact, events: &EventSink) -> Result<(), BuildError> {
    let settings = tree.image(&artifact.image).and_then(|i| crate::settings::of(i).cloned()).unwrap_or_default();
    let wait = b.options().polling.wait(b.options().cleanup_timeout);
    for (region, ami) in &artifact.locations {
        let c = b.clients(&Session::of(&settings, region)).await;
        let known: Vec<String> = artifact
            .extra
            .get(&format!("snapshots.{region}"))
            .map(|s| s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        crate::image::remove(&c, ami, &known, &wait).await?;
        events.emit(EventKind::ResourceDeleted {
            kind: "aws.image".into(),
            id: ami.clone(),
            region: Some(region.clone()),
        });
    }
    Ok(())
}
