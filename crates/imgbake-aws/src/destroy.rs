//! Removing what a build created, kind by kind. Everything is idempotent: what is gone already counts
//! as removed.
//!
//! Journal entries with the id `*` are intents, pushed just before a create call: if the build is
//! interrupted while the call is in flight, the resource may exist without its id ever reaching the
//! journal. Such an entry removes every resource of that kind tagged with its build id and image.

use imgbake_core::artifact::tags as keys;
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;

use crate::AwsBuilder;
use crate::clients::{Clients, Session};
use crate::error::SdkResultExt;
use crate::{image, keypair, launch, security_group, tags, waiters};
use imgbake_config::Tree;

/// The id of an intent entry.
pub const ANY: &str = "*";

/// An intent entry: "whatever `kind` build `build_id` of `image` made in this session".
pub fn intent(session: &Session, kind: &str, build_id: &str, image: &str) -> Resource {
    session.resource(kind, ANY).with("build_id", build_id).with("image", image)
}

/// Remove one resource (`tree`: where its build's wait history is, if known).
pub async fn destroy(b: &AwsBuilder, tree: Option<&Tree>, r: &Resource, events: &EventSink) -> Result<(), BuildError> {
    if r.builder != "aws" {
        return Err(BuildError::new(ErrorKind::Local, format!("{} is not an aws resource", r.describe())));
    }
    let session = Session::of_resource(r);
    if session.region.is_empty() {
        return Err(BuildError::new(ErrorKind::Local, format!("{} has no region", r.describe())));
    }
    let c = b.clients(&session).await;
    let ids = if r.id == ANY { settled(b, &c, r).await? } else { vec![r.id.clone()] };
    let cleanup = b.options().polling.wait(b.options().cleanup_timeout);
    for id in ids {
        match r.kind.as_str() {
            "instance" => {
                let learn = r.extra.get(launch::LEARN).is_none_or(|l| l != "off");
                let history = tree.and_then(|t| b.history_file(t, learn));
                let instance_type = r.extra.get(launch::INSTANCE_TYPE).map(String::as_str).unwrap_or("unknown");
                launch::terminate(b, &c, &id, history, instance_type, events).await?
            }
            "security_group" => security_group::delete(&c, &id, &cleanup).await?,
            "key_pair" => keypair::delete(&c, &id).await?,
            "image" => {
                let snaps: Vec<String> =
                    r.extra.get("snapshots").map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
                image::remove(&c, &id, &snaps, &cleanup).await?
            }
            "snapshot" => image::delete_snapshot(&c, &id, &cleanup).await?,
            "volume" => delete_volume(&c, &id, &cleanup).await?,
            other => {
                return Err(BuildError::new(
                    ErrorKind::Local,
                    format!("unknown aws resource kind `{other}` ({})", r.describe()),
                ));
            }
        }
    }
    Ok(())
}

async fn delete_volume(c: &Clients, id: &str, wait: &imgbake_core::wait::Wait) -> Result<(), BuildError> {
    waiters::retry(
        wait,
        &format!("volume {id} ({}) to be deletable", c.region()),
        |e: &crate::error::ApiError| e.code_is("VolumeInUse"),
        || async {
            match c.ec2.delete_volume().volume_id(id).send().await.api("DeleteVolume", c.region(), Some(id.into())) {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        },
    )
    .await
}

/// The ids of the resources an intent entry stands for, looked up until EC2 lists them: a create
/// interrupted in flight may have made a resource that DescribeX shows only seconds later. Nothing
/// listed within `intent_settle` means the call made nothing.
async fn settled(b: &AwsBuilder, c: &Clients, r: &Resource) -> Result<Vec<String>, BuildError> {
    use imgbake_core::wait::{Poll, WaitError, until};
    let wait = b.options().polling.wait(b.options().intent_settle);
    let what = format!("{} made by an interrupted create to be listed", r.describe());
    let found = until(&wait, &what, || async {
        match tagged(c, r).await {
            Ok(ids) if ids.is_empty() => Poll::Pending("not listed".into()),
            Ok(ids) => Poll::Ready(ids),
            Err(e) => Poll::Failed(e),
        }
    })
    .await;
    match found {
        Ok(ids) => Ok(ids),
        Err(WaitError::TimedOut { .. }) => Ok(Vec::new()),
        Err(WaitError::Failed(e)) => Err(e),
    }
}

/// The ids of the resources an intent entry stands for (one lookup).
async fn tagged(c: &Clients, r: &Resource) -> Result<Vec<String>, BuildError> {
    let (Some(build), Some(img)) = (r.extra.get("build_id"), r.extra.get("image")) else {
        return Err(BuildError::new(ErrorKind::Local, format!("{} names no build id and image", r.describe())));
    };
    let by_build = tags::filter(keys::BUILD_ID, build);
    let by_image = tags::filter(keys::IMAGE, img);
    let region = c.region();
    Ok(match r.kind.as_str() {
        "instance" => {
            let out = c
                .ec2
                .describe_instances()
                .filters(by_build)
                .filters(by_image)
                .filters(tags::attr("instance-state-name", &["pending", "running", "stopping", "stopped"]))
                .send()
                .await
                .api("DescribeInstances", region, None)?;
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect()
        }
        "security_group" => {
            let out = c.ec2.describe_security_groups().filters(by_build).filters(by_image).send().await.api(
                "DescribeSecurityGroups",
                region,
                None,
            )?;
            out.security_groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect()
        }
        "image" => {
            let out = c.ec2.describe_images().owners("self").filters(by_build).filters(by_image).send().await.api(
                "DescribeImages",
                region,
                None,
            )?;
            out.images().iter().filter_map(|i| i.image_id().map(str::to_string)).collect()
        }
        "snapshot" => {
            let out =
                c.ec2.describe_snapshots().owner_ids("self").filters(by_build).filters(by_image).send().await.api(
                    "DescribeSnapshots",
                    region,
                    None,
                )?;
            out.snapshots().iter().filter_map(|s| s.snapshot_id().map(str::to_string)).collect()
        }
        "key_pair" => {
            let out = c.ec2.describe_key_pairs().filters(by_build).filters(by_image).send().await.api(
                "DescribeKeyPairs",
                region,
                None,
            )?;
            out.key_pairs().iter().filter_map(|k| k.key_name().map(str::to_string)).collect()
        }
        other => {
            return Err(BuildError::new(ErrorKind::Local, format!("no tag lookup for aws resource kind `{other}`")));
        }
    })
}
