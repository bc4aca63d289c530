//! Release channels of AMIs (see `imgbake_core::channel`): one SSM parameter per channel and region
//! (type String, data type `aws:ec2:image`), named by `aws.channel_parameter` (default
//! `/images/{image}/{channel}`), holding that region's AMI id, tagged like imgbake's other resources.
//!
//! Each write's description carries imgbake's record of the move (who, how, from which channel);
//! SSM keeps every version with its time and the writer's IAM identity, so `GetParameterHistory` in
//! the build region is the channel's history. A move writes the copy regions first and the build
//! region last: the history records a move only once every region points at the artifact.

use std::collections::BTreeMap;

use aws_sdk_ssm::types::{ParameterType, ResourceTypeForTagging, Tag};
use chrono::{DateTime, Utc};
use imgbake_config::{Image, Span, Tree};
use imgbake_core::artifact::{Artifact, tags as keys};
use imgbake_core::channel::{ChannelState, PointRecord, Pointing};
use imgbake_core::error::{BuildError, ErrorKind};

use crate::clients::{ClientCache, Session};
use crate::error::SdkResultExt;

/// The parameter name template when `aws.channel_parameter` is not set.
pub const DEFAULT_TEMPLATE: &str = "/images/{image}/{channel}";

/// The value of the `imgbake:role` tag on channel parameters.
pub const ROLE: &str = "channel";

/// The tag naming the channel a parameter is.
pub const CHANNEL_TAG: &str = "imgbake:channel";

/// The SSM parameter of `image`'s channel `channel`.
pub fn parameter_name(image: &Image, channel: &str) -> String {
    let template = crate::settings::of(image)
        .and_then(|a| a.channel_parameter.as_ref())
        .map(|p| p.get_ref().as_str())
        .unwrap_or(DEFAULT_TEMPLATE);
    template.replace("{image}", &image.name).replace("{channel}", channel)
}

fn at(image: &Image) -> Option<Span> {
    crate::settings::of(image).and_then(|a| a.channel_parameter.as_ref()).map(|p| Span::new(p.span()))
}

fn chrono_of(d: &aws_sdk_ssm::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(d.secs(), d.subsec_nanos()).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Where the channel points in every region of the image, and its history in the build region.
pub async fn state(clients: &ClientCache, image: &Image, channel: &str) -> Result<ChannelState, BuildError> {
    let a = crate::settings(image)?;
    let build_region = crate::region(image)?.get_ref().clone();
    let name = parameter_name(image, channel);
    let mut current = BTreeMap::new();
    for region in a.region.iter().chain(&a.copy_regions) {
        let c = clients.get(&Session::of(a, region.get_ref())).await;
        match c.ssm.get_parameter().name(&name).send().await.api("GetParameter", region.get_ref(), Some(name.clone())) {
            Ok(out) => {
                if let Some(v) = out.parameter().and_then(|p| p.value()) {
                    current.insert(region.get_ref().clone(), v.to_string());
                }
            }
            Err(e) if e.code_is("ParameterNotFound") => {}
            Err(e) => return Err(BuildError::from(e).at(at(image))),
        }
    }
    let c = clients.get(&Session::of(a, &build_region)).await;
    let mut history = Vec::new();
    let mut pages = c.ssm.get_parameter_history().name(&name).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page.api("GetParameterHistory", &build_region, Some(name.clone())) {
            Ok(p) => p,
            Err(e) if e.code_is("ParameterNotFound") => break,
            Err(e) => return Err(BuildError::from(e).at(at(image))),
        };
        for p in page.parameters() {
            let Some(value) = p.value() else { continue };
            history.push(Pointing {
                artifact: value.to_string(),
                at: p.last_modified_date().map(chrono_of).unwrap_or(DateTime::UNIX_EPOCH),
                record: p.description().and_then(PointRecord::parse),
                // moto answers "N/A"; AWS an IAM ARN.
                platform_user: p.last_modified_user().filter(|u| !u.is_empty() && *u != "N/A").map(str::to_string),
                version: Some(p.version().to_string()),
            });
        }
    }
    // SSM answers oldest first; versions order writes within one clock tick.
    history.sort_by(|x, y| {
        let v = |p: &Pointing| p.version.as_deref().and_then(|v| v.parse::<i64>().ok()).unwrap_or_default();
        v(y).cmp(&v(x)).then(y.at.cmp(&x.at))
    });
    Ok(ChannelState { channel: channel.to_string(), location: format!("SSM parameter {name}"), current, history })
}

/// Point the channel at `artifact` in every region it is in (the build region last), recording
/// `record` in each version's description, and tag the parameter.
pub async fn point(
    clients: &ClientCache,
    tree: &Tree,
    image: &Image,
    channel: &str,
    artifact: &Artifact,
    record: &PointRecord,
) -> Result<Vec<String>, BuildError> {
    let a = crate::settings(image)?;
    let build_region = crate::region(image)?.get_ref().clone();
    let name = parameter_name(image, channel);
    // Every region the image is in now must get the artifact: a region added since it was built
    // would keep pointing at the artifact being moved away from.
    let missing: Vec<&str> = a
        .region
        .iter()
        .chain(&a.copy_regions)
        .map(|r| r.get_ref().as_str())
        .filter(|r| !artifact.locations.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::new(
            ErrorKind::Config,
            format!(
                "channel `{channel}` of image `{}` cannot point at {}: it has no AMI in {} (a region added since it was built); rebuild the image, or promote a newer artifact",
                image.name,
                artifact.id,
                missing.join(", ")
            ),
        ));
    }
    let tree_id = crate::tree_id(tree)?;
    let text = record.to_text();
    let tags: Vec<Tag> = [
        (keys::TREE_ID, tree_id.as_str()),
        (keys::TREE, tree.name().as_str()),
        (keys::IMAGE, image.name.as_str()),
        (keys::ROLE, ROLE),
        (CHANNEL_TAG, channel),
    ]
    .into_iter()
    .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
    .collect();
    let mut regions: Vec<(&String, &String)> = artifact.locations.iter().collect();
    regions.sort_by_key(|(r, _)| **r == build_region);
    let mut written = Vec::new();
    for (region, ami) in regions {
        let c = clients.get(&Session::of(a, region)).await;
        c.ssm
            .put_parameter()
            .name(&name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .description(&text)
            .send()
            .await
            .api("PutParameter", region, Some(name.clone()))
            .map_err(|e| BuildError::from(e).at(at(image)))?;
        c.ssm
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(&name)
            .set_tags(Some(tags.clone()))
            .send()
            .await
            .api("AddTagsToResource", region, Some(name.clone()))
            .map_err(|e| BuildError::from(e).at(at(image)))?;
        written.push(format!("channel {channel}: SSM parameter {name} = {ami} ({region})"));
    }
    Ok(written)
}

/// Tag every AMI of `artifact` with `key` = `value`.
pub async fn label(
    clients: &ClientCache,
    tree: &Tree,
    artifact: &Artifact,
    key: &str,
    value: &str,
) -> Result<(), BuildError> {
    let Some(image) = tree.image(&artifact.image) else { return Ok(()) };
    let a = crate::settings(image)?;
    for (region, ami) in &artifact.locations {
        let c = clients.get(&Session::of(a, region)).await;
        c.ec2
            .create_tags()
            .resources(ami)
            .tags(aws_sdk_ec2::types::Tag::builder().key(key).value(value).build())
            .send()
            .await
            .api("CreateTags", region, Some(ami.clone()))?;
    }
    Ok(())
}
