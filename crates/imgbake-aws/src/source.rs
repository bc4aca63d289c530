//! Where a chain starts: an AMI id, an AMI filter, or an SSM parameter holding an AMI id, resolved to
//! one exact AMI. Nothing matching, or several matches without `most_recent`, is an error that points
//! at the filter.

use aws_sdk_ec2::types::Image as Ami;
use imgbake_config::{Image, Span, Spanned};
use imgbake_core::builder::{BuildSource, ResolvedSource};
use imgbake_core::error::BuildError;

use crate::clients::Clients;
use crate::error::{SdkResultExt, config};
use crate::settings::{AmiFilter, AwsSource};
use crate::tags;
use crate::waiters::describe_image;

fn span<T>(v: &Spanned<T>) -> Span {
    Span::new(v.span())
}

/// Resolve the source of a root image in the image's build region; also returns the AMI as EC2
/// describes it.
pub async fn resolve(c: &Clients, image: &Image) -> Result<(ResolvedSource, Ami), BuildError> {
    let Some(source) = &image.source else {
        return Err(config(format!("image `{}` has no source (and no parent)", image.name)).at(image.span));
    };
    let Some(s) = source.get_ref().get::<AwsSource>(crate::validate::NAME) else {
        return Err(config(format!("image `{}`: the aws builder did not parse its source", image.name)).at(image.span));
    };
    if let Some(id) = &s.ami {
        let ami = existing(c, id.get_ref()).await.map_err(|e| e.at(span(id)))?;
        return Ok((ResolvedSource::new(id.get_ref().clone(), describe(&ami, None)), ami));
    }
    if let Some(f) = &s.ami_filter {
        return by_filter(c, f).await;
    }
    if let Some(p) = &s.ssm_parameter {
        let name = p.get_ref();
        let out = c.ssm.get_parameter().name(name).send().await.api("GetParameter", c.region(), Some(name.clone()));
        let value = match out {
            Ok(o) => o.parameter().and_then(|p| p.value()).unwrap_or_default().trim().to_string(),
            Err(e) if e.is_not_found() => {
                return Err(config(format!("SSM parameter `{name}` does not exist in {}", c.region())).at(span(p)));
            }
            Err(e) => return Err(BuildError::from(e).at(span(p))),
        };
        if !value.starts_with("ami-") {
            return Err(
                config(format!("SSM parameter `{name}` in {} holds `{value}`, not an AMI id", c.region())).at(span(p))
            );
        }
        let ami = existing(c, &value).await.map_err(|e| e.at(span(p)))?;
        let description = describe(&ami, Some(format!("from SSM {name}")));
        return Ok((ResolvedSource::new(value, description), ami));
    }
    Err(config(format!("image `{}`: source has no ami, ami_filter or ssm_parameter for the aws builder", image.name))
        .at(span(source)))
}

/// The key of the source AMI's EBS device names in [`ResolvedSource::details`] (comma-separated):
/// what the build needs of the AMI as planning described it, so it is not described again.
pub const EBS_DEVICES: &str = "ebs_devices";

/// The key of the source AMI's total EBS size (GiB) in [`ResolvedSource::details`].
pub const EBS_GIB: &str = "ebs_gib";

/// The build's disks' total size in GiB, when known: `aws.block_devices` sizes over the source's
/// (as planning described it). Only a hint for how long the image takes.
pub fn disk_gib(a: &crate::settings::AwsSettings, source: &BuildSource) -> Option<u32> {
    let set: u64 = a.block_devices.iter().filter_map(|d| d.volume_size.as_ref()?.get_ref().whole_gib()).sum();
    let source = match source {
        BuildSource::Root(r) => r.details.get(EBS_GIB).and_then(|g| g.parse::<u64>().ok()),
        _ => None,
    };
    let total = set.max(source.unwrap_or(0));
    (total > 0).then(|| u32::try_from(total).unwrap_or(u32::MAX))
}

/// The device names of the AMI's EBS disks (not instance store ones).
pub fn ebs_devices(ami: &Ami) -> Vec<String> {
    ami.block_device_mappings()
        .iter()
        .filter(|m| m.ebs().is_some())
        .filter_map(|m| m.device_name().map(str::to_string))
        .collect()
}

/// The resolved source with what the build needs of the AMI.
pub fn with_details(mut resolved: ResolvedSource, ami: &Ami) -> ResolvedSource {
    resolved.details.insert(EBS_DEVICES.into(), ebs_devices(ami).join(","));
    let gib: i64 = ami.block_device_mappings().iter().filter_map(|m| m.ebs()?.volume_size()).map(i64::from).sum();
    if gib > 0 {
        resolved.details.insert(EBS_GIB.into(), gib.to_string());
    }
    resolved
}

/// The source AMI's EBS device names for a build: from the resolved source's details when planning
/// described the AMI, else described now (it must exist and be available).
pub async fn build_ebs_devices(c: &Clients, source: &BuildSource, id: &str) -> Result<Vec<String>, BuildError> {
    if let BuildSource::Root(r) = source
        && let Some(d) = r.details.get(EBS_DEVICES)
    {
        return Ok(d.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect());
    }
    Ok(ebs_devices(&existing(c, id).await?))
}

/// The AMI `id` as EC2 describes it; an error when it is missing or not available.
pub async fn existing(c: &Clients, id: &str) -> Result<Ami, BuildError> {
    let found = describe_image(c, id).await.or_else(|e| if e.is_not_found() { Ok(None) } else { Err(e) })?;
    let ami = found.ok_or_else(|| {
        config(format!(
            "AMI {id} does not exist in {} (or is not visible to this account); AMIs are regional: use the id of the copy in this region",
            c.region()
        ))
    })?;
    match ami.state().map(|s| s.as_str()) {
        Some("available") => Ok(ami),
        other => Err(config(format!("AMI {id} in {} is `{}`, not available", c.region(), other.unwrap_or("unknown")))),
    }
}

fn describe(ami: &Ami, how: Option<String>) -> String {
    let id = ami.image_id().unwrap_or_default();
    let name = ami.name().unwrap_or("unnamed");
    match how {
        Some(h) => format!("{id} ({name}, {h})"),
        None => format!("{id} ({name})"),
    }
}

async fn by_filter(c: &Clients, f: &Spanned<AmiFilter>) -> Result<(ResolvedSource, Ami), BuildError> {
    let at = span(f);
    let filter = f.get_ref();
    let mut req = c.ec2.describe_images().filters(tags::attr("state", &["available"]));
    if !filter.owners.is_empty() {
        req = req.set_owners(Some(filter.owners.clone()));
    }
    if let Some(n) = &filter.name {
        req = req.filters(tags::attr("name", &[n]));
    }
    if let Some(a) = &filter.architecture {
        req = req.filters(tags::attr("architecture", &[a]));
    }
    for (k, v) in &filter.tags {
        req = req.filters(tags::filter(k, v));
    }
    for (k, vs) in &filter.filters {
        let vs: Vec<&str> = vs.iter().map(String::as_str).collect();
        req = req.filters(tags::attr(k, &vs));
    }
    let out = req.send().await.api("DescribeImages", c.region(), None).map_err(|e| BuildError::from(e).at(at))?;
    let mut found: Vec<Ami> = out.images().to_vec();
    // Newest first; creation dates are ISO 8601, so text order is time order.
    found.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()).then_with(|| a.image_id().cmp(&b.image_id())));
    let summary = summary(filter);
    match found.len() {
        0 => Err(config(format!("the AMI filter ({summary}) matches no available AMI in {}", c.region())).at(at)),
        1 => Ok((
            ResolvedSource::new(found[0].image_id().unwrap_or_default(), describe(&found[0], None)),
            found.swap_remove(0),
        )),
        n if filter.most_recent => Ok((
            ResolvedSource::new(
                found[0].image_id().unwrap_or_default(),
                describe(&found[0], Some(format!("newest of {n} matches"))),
            ),
            found.swap_remove(0),
        )),
        n => {
            let shown: Vec<String> = found
                .iter()
                .take(5)
                .map(|a| {
                    format!(
                        "{} ({}, {})",
                        a.image_id().unwrap_or("?"),
                        a.name().unwrap_or("?"),
                        a.creation_date().unwrap_or("?")
                    )
                })
                .collect();
            Err(config(format!(
                "the AMI filter ({summary}) matches {n} AMIs in {}: {}{}; set most_recent = true to take the newest, or narrow the filter",
                c.region(),
                shown.join(", "),
                if n > 5 { ", ..." } else { "" }
            ))
            .at(at))
        }
    }
}

fn summary(f: &AmiFilter) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &f.name {
        parts.push(format!("name `{n}`"));
    }
    if !f.owners.is_empty() {
        parts.push(format!("owners {}", f.owners.join(", ")));
    }
    if let Some(a) = &f.architecture {
        parts.push(format!("architecture {a}"));
    }
    for (k, v) in &f.tags {
        parts.push(format!("tag {k}={v}"));
    }
    for (k, v) in &f.filters {
        parts.push(format!("{k}={}", v.join("|")));
    }
    if parts.is_empty() { "no conditions".into() } else { parts.join(", ") }
}
