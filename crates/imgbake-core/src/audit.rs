//! `imgbake audit`: which running machines were built from an image of the tree that is no longer
//! current, how far behind they are, whose they are, and whether any is past the deadline.
//!
//! A builder lists the machines running where its images are ([`Builder::running_machines`], AWS:
//! EC2 instances in the images' regions) with the tags of the image each one runs; the rest is
//! here and the same for every builder:
//!
//! - **What is current** for an image: what the audit's channel points at ([`AuditOptions::channel`],
//!   else `[audit] channel`, else [`default_channel`]); the image's newest artifact when the tree
//!   declares no channels or the channel was never set for the image.
//! - **Behind**: the machine's artifact is older than the current one, *or* any artifact it was built
//!   from (the `imgbake:parent` tag, up the chain) is older than its image's current one — an app
//!   image that is current itself but was built from a superseded `java-runtime` is behind.
//! - **Superseded at**: when the machine's artifact stopped being current — the start of the
//!   channel's latest stretch of pointing at artifacts newer than it (from the pointer's history;
//!   a rollback to it ends a stretch), or, comparing with the newest artifact, when the first newer
//!   artifact was created. For a machine behind through its lineage, the earliest such moment
//!   along the chain.
//! - **Overdue**: behind, and superseded longer than the deadline ago. Any overdue machine fails the
//!   audit ([`AuditReport::failed`]).
//!
//! Machines whose image is not of this tree (no `imgbake:tree-id` of it) are only counted.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use imgbake_config::channels::CANDIDATE;
use imgbake_config::{Image, Tree};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, tags};
use crate::channel::ChannelState;
use crate::error::{BuildError, ErrorKind};
use crate::registry::Registry;

/// A machine running where a builder's images are (AWS: an EC2 instance), as the builder found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningMachine {
    /// Its id (an instance id).
    pub id: String,
    /// The id of the image it runs (an AMI id, in its location).
    pub image_id: String,
    /// Where it runs (a region).
    pub location: String,
    /// The account (or project) it runs in, if the platform says.
    pub account: Option<String>,
    /// Its state (`running`, `pending`).
    pub state: String,
    /// When it was started.
    pub launched: Option<DateTime<Utc>>,
    /// Its tags (labels).
    pub tags: BTreeMap<String, String>,
    /// The tags of the image it runs; `None` when the image cannot be seen (deregistered, not shared).
    pub image_tags: Option<BTreeMap<String, String>>,
    /// When the image it runs was created, as the platform says.
    pub image_created: Option<DateTime<Utc>>,
}

/// How to audit.
#[derive(Clone, Debug, Default)]
pub struct AuditOptions {
    /// The channel that says what is current (default `[audit] channel`, else [`default_channel`]).
    pub channel: Option<String>,
    /// Fail when a machine's image was superseded longer ago than this (default `[audit] deadline`).
    pub deadline: Option<std::time::Duration>,
    /// The tag keys naming a machine's owner (default `[audit] owner_tags`, else
    /// [`imgbake_config::audit::DEFAULT_OWNER_TAGS`]).
    pub owner_tags: Option<Vec<String>>,
    /// The time to judge at (default: now).
    pub now: Option<DateTime<Utc>>,
}

/// Where a machine stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It runs the current artifact, built from current parents.
    Current,
    /// It runs an older artifact than the current one, or one built from a superseded parent.
    Behind,
    /// It runs an artifact newer than the current one (e.g. a candidate not promoted yet).
    Ahead,
    /// Its image is of the tree but cannot be placed (no longer in the tree, nothing current yet).
    Unknown,
}

/// Where the current artifact of an image comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrentFrom {
    /// The audit's channel points at it.
    Channel,
    /// The image's newest artifact (no channel, or the channel was never set for the image).
    Newest,
    /// The image has no artifact.
    Nothing,
}

/// What is current for one image, through one builder.
#[derive(Clone, Debug, Serialize)]
pub struct ImageCurrent {
    /// The image.
    pub image: String,
    /// The builder.
    pub builder: String,
    /// The current artifact (primary id).
    pub current: Option<String>,
    /// Its id in each location.
    pub locations: BTreeMap<String, String>,
    /// Where it comes from.
    pub from: CurrentFrom,
    /// Since when it is current (the channel's move, or the artifact's creation).
    pub since: Option<DateTime<Utc>>,
    /// How many artifacts of the image exist.
    pub artifacts: usize,
}

/// An artifact a machine's image was built from that is behind its own image's current one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ancestor {
    /// The parent image.
    pub image: String,
    /// The artifact the machine's image was built from.
    pub artifact: String,
    /// What is current for that image.
    pub current: Option<String>,
    /// How many newer artifacts of that image exist, up to the current one.
    pub versions_behind: u32,
    /// When it stopped being current.
    pub superseded_at: Option<DateTime<Utc>>,
}

/// One running machine of the tree, judged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineReport {
    /// The machine (instance id).
    pub machine: String,
    /// Its `Name` tag, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The builder that found it.
    pub builder: String,
    /// Where it runs (region).
    pub location: String,
    /// The account it runs in.
    pub account: Option<String>,
    /// When it was started.
    pub launched: Option<DateTime<Utc>>,
    /// The tree image its artifact is of.
    pub image: String,
    /// The image id it runs (in its location).
    pub artifact: String,
    /// The build that made it.
    pub build_id: Option<String>,
    /// When its artifact was created.
    pub created: Option<DateTime<Utc>>,
    /// What is current for its image (in its location when known, else the primary id).
    pub current: Option<String>,
    /// Where it stands.
    pub status: Status,
    /// How many newer artifacts of its image exist, up to the current one.
    pub versions_behind: u32,
    /// The artifacts it was built from that are behind theirs (nearest parent first).
    pub lineage: Vec<Ancestor>,
    /// When what it runs stopped being current (the earliest along its lineage).
    pub superseded_at: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub behind_seconds: Option<u64>,
    /// Seconds since its artifact was created.
    pub age_seconds: Option<u64>,
    /// Behind for longer than the deadline.
    pub overdue: bool,
    /// Its owner tags (those of the configured keys it has).
    pub owners: BTreeMap<String, String>,
    /// Why it could not be placed, or anything else worth saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counts, for dashboards.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Machines of the tree found running.
    pub machines: usize,
    /// ... running the current artifacts.
    pub current: usize,
    /// ... behind.
    pub behind: usize,
    /// ... newer than current.
    pub ahead: usize,
    /// ... that could not be placed.
    pub unknown: usize,
    /// ... behind for longer than the deadline.
    pub overdue: usize,
    /// Machines found that run images of no image of this tree (ignored).
    pub other_machines: usize,
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// The tree's name.
    pub tree: String,
    /// The tree's id.
    pub tree_id: Option<String>,
    /// The channel that said what is current (`None`: the newest artifacts).
    pub channel: Option<String>,
    /// The deadline in seconds, if any.
    pub deadline_seconds: Option<u64>,
    /// When it was judged.
    pub checked_at: DateTime<Utc>,
    /// Counts.
    pub summary: Summary,
    /// Every machine of the tree: overdue first, then by how long behind.
    pub machines: Vec<MachineReport>,
    /// What is current for each image.
    pub images: Vec<ImageCurrent>,
    /// Builders of the tree that cannot list running machines.
    pub unsupported: Vec<String>,
}

impl AuditReport {
    /// Did a machine run past the deadline?
    pub fn failed(&self) -> bool {
        self.summary.overdue > 0
    }
}

fn config(msg: impl Into<String>) -> BuildError {
    BuildError::new(ErrorKind::Config, msg)
}

/// The channel the audit compares with when none is named: the end of the promotion chain — the
/// last declared channel that no other channel is promoted from (`candidate` only when it is the
/// sole channel). `None` when the tree declares no channels.
pub fn default_channel(tree: &Tree) -> Option<String> {
    let channels = tree.channels();
    if channels.is_empty() {
        return None;
    }
    let sources: BTreeSet<&str> = channels.values().filter_map(|c| c.source()).collect();
    channels
        .keys()
        .rfind(|n| n.as_str() != CANDIDATE && !sources.contains(n.as_str()))
        .or_else(|| channels.keys().find(|n| n.as_str() != CANDIDATE))
        .cloned()
        .or_else(|| Some(CANDIDATE.to_string()))
}

/// What is current for one (image, builder), with what is needed to judge machines against it.
struct Current {
    view: ImageCurrent,
    /// The image's artifacts, newest first.
    list: Vec<Artifact>,
    /// The channel's history (newest first), when the channel says what is current.
    history: Option<ChannelState>,
}

impl Current {
    fn find(&self, id: &str) -> Option<&Artifact> {
        self.list.iter().find(|a| a.id == id || a.locations.values().any(|l| l == id))
    }

    fn created_of(&self, id: &str) -> Option<DateTime<Utc>> {
        self.find(id).map(|a| a.created)
    }

    /// Judge an artifact (primary id `id`, created `created`): versions behind and when it was
    /// superseded (`None`: not behind).
    fn judge(&self, id: &str, created: Option<DateTime<Utc>>) -> (Status, u32, Option<DateTime<Utc>>) {
        let Some(cur) = self.view.current.as_deref() else { return (Status::Unknown, 0, None) };
        if cur == id {
            return (Status::Current, 0, None);
        }
        let Some(created) = created else { return (Status::Unknown, 0, None) };
        let cur_created = self.created_of(cur);
        let behind = self
            .list
            .iter()
            .filter(|a| a.id != id && a.created > created && cur_created.is_none_or(|c| a.created <= c))
            .count() as u32;
        let newer = |artifact: &str, at: DateTime<Utc>| {
            artifact != id
                && match self.created_of(artifact) {
                    Some(c) => c > created,
                    None => at > created,
                }
        };
        let superseded = match &self.history {
            Some(h) => h.history.iter().take_while(|p| newer(&p.artifact, p.at)).last().map(|p| p.at),
            None => self.list.iter().filter(|a| a.id != id && a.created > created).map(|a| a.created).min(),
        };
        match superseded {
            Some(at) => (Status::Behind, behind.max(1), Some(at)),
            None => (Status::Ahead, 0, None),
        }
    }
}

/// Audit the machines running from the tree's images.
pub async fn audit(tree: &Tree, registry: &Registry, opts: &AuditOptions) -> Result<AuditReport, BuildError> {
    let now = opts.now.unwrap_or_else(Utc::now);
    let settings = tree.audit();
    let channel = match opts.channel.clone().or_else(|| settings.channel.as_ref().map(|c| c.get_ref().clone())) {
        Some(c) if tree.channel(&c).is_none() => {
            let names: Vec<&str> = tree.channels().keys().map(String::as_str).collect();
            return Err(config(if names.is_empty() {
                format!(
                    "the tree declares no release channels, so there is no channel `{c}`: leave --channel out to compare with each image's newest artifact, or declare [channels.{c}] (docs/channels.md)"
                )
            } else {
                format!("the tree has no channel `{c}` (channels: {})", names.join(", "))
            }));
        }
        Some(c) => Some(c),
        None => default_channel(tree),
    };
    let deadline = opts.deadline.or_else(|| settings.deadline.as_ref().map(|d| d.get_ref().get()));
    let owner_tags = opts.owner_tags.clone().unwrap_or_else(|| settings.owner_tags());

    let images: Vec<&Image> = tree.images().values().collect();
    let artifacts = registry.artifacts_of(tree, images.iter().copied()).await?;
    // What is current, per (image, builder).
    let mut current: BTreeMap<(String, String), Current> = BTreeMap::new();
    for img in &images {
        for b in &img.builders {
            let Some(builder) = registry.get(b.get_ref()) else { continue };
            let key = (img.name.clone(), b.get_ref().clone());
            let list = artifacts.get(&key).cloned().unwrap_or_default();
            let state = match &channel {
                Some(ch) => {
                    builder.channel(tree, img, ch).await?.filter(|s| !s.history.is_empty() || !s.current.is_empty())
                }
                None => None,
            };
            let view = match (&state, list.first()) {
                (Some(s), _) => {
                    let id = s.artifact().or_else(|| s.current.values().next().map(String::as_str)).map(str::to_string);
                    let locations = id
                        .as_deref()
                        .and_then(|id| list.iter().find(|a| a.id == id || a.locations.values().any(|l| l == id)))
                        .map(|a| a.locations.clone())
                        .unwrap_or_else(|| s.current.clone());
                    ImageCurrent {
                        image: img.name.clone(),
                        builder: b.get_ref().clone(),
                        current: id,
                        locations,
                        from: CurrentFrom::Channel,
                        since: s.history.first().map(|p| p.at),
                        artifacts: list.len(),
                    }
                }
                (None, Some(a)) => ImageCurrent {
                    image: img.name.clone(),
                    builder: b.get_ref().clone(),
                    current: Some(a.id.clone()),
                    locations: a.locations.clone(),
                    from: CurrentFrom::Newest,
                    since: Some(a.created),
                    artifacts: list.len(),
                },
                (None, None) => ImageCurrent {
                    image: img.name.clone(),
                    builder: b.get_ref().clone(),
                    current: None,
                    locations: BTreeMap::new(),
                    from: CurrentFrom::Nothing,
                    since: None,
                    artifacts: 0,
                },
            };
            current.insert(key, Current { view, list, history: state });
        }
    }

    // The machines, once per builder.
    let mut kinds: Vec<String> = Vec::new();
    for img in &images {
        for b in &img.builders {
            if !kinds.contains(b.get_ref()) {
                kinds.push(b.get_ref().clone());
            }
        }
    }
    let mut unsupported = Vec::new();
    let mut summary = Summary::default();
    let mut machines = Vec::new();
    let mut seen = BTreeSet::new();
    for kind in kinds {
        let Some(builder) = registry.get(&kind) else { continue };
        let of: Vec<&Image> = images.iter().copied().filter(|i| i.has_builder(&kind)).collect();
        let Some(found) = builder.running_machines(tree, &of).await? else {
            unsupported.push(format!("builder {kind} cannot list running machines"));
            continue;
        };
        for m in found {
            // Two account setups of the images (profiles) may reach the same account and region.
            if !seen.insert((kind.clone(), m.location.clone(), m.account.clone(), m.id.clone())) {
                continue;
            }
            match judge_machine(tree, &kind, &m, &current, &owner_tags, deadline, now) {
                Some(r) => machines.push(r),
                None => summary.other_machines += 1,
            }
        }
    }
    for m in &machines {
        summary.machines += 1;
        match m.status {
            Status::Current => summary.current += 1,
            Status::Behind => summary.behind += 1,
            Status::Ahead => summary.ahead += 1,
            Status::Unknown => summary.unknown += 1,
        }
        if m.overdue {
            summary.overdue += 1;
        }
    }
    machines.sort_by(|a, b| {
        b.overdue
            .cmp(&a.overdue)
            .then(b.behind_seconds.cmp(&a.behind_seconds))
            .then(a.image.cmp(&b.image))
            .then(a.location.cmp(&b.location))
            .then(a.machine.cmp(&b.machine))
    });
    Ok(AuditReport {
        tree: tree.name(),
        tree_id: tree.id().map(str::to_string),
        channel,
        deadline_seconds: deadline.map(|d| d.as_secs()),
        checked_at: now,
        summary,
        machines,
        images: current.into_values().map(|c| c.view).collect(),
        unsupported,
    })
}

fn is_ours(tree: &Tree, t: &BTreeMap<String, String>) -> bool {
    match tree.id() {
        Some(id) => t.get(tags::TREE_ID).map(String::as_str) == Some(id),
        None => t.get(tags::TREE).is_some_and(|n| *n == tree.name()),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

/// One machine of the tree judged; `None` when its image is not of the tree.
fn judge_machine(
    tree: &Tree,
    kind: &str,
    m: &RunningMachine,
    current: &BTreeMap<(String, String), Current>,
    owner_tags: &[String],
    deadline: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Option<MachineReport> {
    let t = m.image_tags.as_ref()?;
    if !is_ours(tree, t) {
        return None;
    }
    let image = t.get(tags::IMAGE).cloned().unwrap_or_default();
    let owners: BTreeMap<String, String> =
        owner_tags.iter().filter_map(|k| m.tags.get(k).map(|v| (k.clone(), v.clone()))).collect();
    let mut r = MachineReport {
        machine: m.id.clone(),
        name: m.tags.get("Name").cloned(),
        builder: kind.to_string(),
        location: m.location.clone(),
        account: m.account.clone(),
        launched: m.launched,
        image: image.clone(),
        artifact: m.image_id.clone(),
        build_id: t.get(tags::BUILD_ID).cloned(),
        created: t.get(tags::CREATED).and_then(|c| parse_time(c)).or(m.image_created),
        current: None,
        status: Status::Unknown,
        versions_behind: 0,
        lineage: Vec::new(),
        superseded_at: None,
        behind_seconds: None,
        age_seconds: None,
        overdue: false,
        owners,
        note: None,
    };
    r.age_seconds = r.created.map(|c| (now - c).num_seconds().max(0) as u64);
    let Some(img) = tree.image(&image) else {
        r.note = Some(format!("image `{image}` is no longer in the tree"));
        return Some(r);
    };
    let Some(cur) = current.get(&(image.clone(), kind.to_string())) else {
        r.note = Some(format!("image `{image}` is not built with {kind} any more"));
        return Some(r);
    };
    // The machine's artifact: one of the image's complete artifacts, else what its tags say.
    let known = cur.find(&m.image_id);
    let primary = known.map(|a| a.id.clone()).unwrap_or_else(|| m.image_id.clone());
    r.created = known.map(|a| a.created).or(r.created);
    r.current =
        cur.view.current.as_ref().map(|c| cur.view.locations.get(&m.location).cloned().unwrap_or_else(|| c.clone()));
    let (status, behind, superseded) = cur.judge(&primary, r.created);
    r.status = status;
    r.versions_behind = behind;
    r.superseded_at = superseded;
    if status == Status::Unknown {
        r.note = Some(match &cur.view.current {
            None => format!("image `{image}` has no current artifact"),
            Some(_) => "its image's creation time is unknown".to_string(),
        });
    } else if known.is_none() {
        r.note = Some("not a complete artifact of the tree (deleted, or a build that did not finish)".into());
    }
    // Up the lineage: the parent artifact this one was built from, then its own parent...
    let mut parent_id = t
        .get(tags::PARENT)
        .cloned()
        .or_else(|| known.filter(|_| img.parent.is_some()).map(|a| a.source.clone()))
        .filter(|p| !p.is_empty());
    let mut child = img;
    let mut child_kind = kind.to_string();
    while let (Some(pid), Some(pname)) = (parent_id.take(), child.parent.as_ref().map(|p| p.get_ref().clone())) {
        let pkind = child.parent_builder(&child_kind).to_string();
        let Some(pimg) = tree.image(&pname) else { break };
        let Some(pcur) = current.get(&(pname.clone(), pkind.clone())) else { break };
        let part = pcur.find(&pid);
        let pprimary = part.map(|a| a.id.clone()).unwrap_or_else(|| pid.clone());
        let (pstatus, pbehind, psuper) = pcur.judge(&pprimary, part.map(|a| a.created));
        if pstatus == Status::Behind {
            r.lineage.push(Ancestor {
                image: pname.clone(),
                artifact: pprimary.clone(),
                current: pcur.view.current.clone(),
                versions_behind: pbehind,
                superseded_at: psuper,
            });
            if r.status != Status::Unknown {
                r.status = Status::Behind;
            }
            r.superseded_at = match (r.superseded_at, psuper) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        parent_id = part.filter(|_| pimg.parent.is_some()).map(|a| a.source.clone()).filter(|p| !p.is_empty());
        child = pimg;
        child_kind = pkind;
    }
    if r.status == Status::Behind {
        r.behind_seconds = r.superseded_at.map(|s| (now - s).num_seconds().max(0) as u64);
        r.overdue = match (deadline, r.behind_seconds) {
            (Some(d), Some(b)) => b > d.as_secs(),
            _ => false,
        };
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use imgbake_config::{Image, Tree};

    use super::*;
    use crate::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
    use crate::channel::Pointing;
    use crate::cleanup::Resource;
    use crate::event::EventSink;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::days(days)
    }

    fn art(image: &str, id: &str, day: i64, source: &str) -> Artifact {
        Artifact {
            image: image.into(),
            builder: "vm".into(),
            id: id.into(),
            locations: BTreeMap::from([("here".to_string(), id.to_string())]),
            fingerprint: String::new(),
            source: source.into(),
            parent: None,
            build_id: format!("b-{id}"),
            created: at(day),
            extra: BTreeMap::new(),
        }
    }

    /// A builder with fixed artifacts, channels and machines; `machines: None` lists none.
    struct Fake {
        artifacts: Vec<Artifact>,
        channels: BTreeMap<(String, String), Vec<(String, i64)>>,
        machines: Option<Vec<(String, String)>>,
    }

    #[async_trait]
    impl Builder for Fake {
        fn kind(&self) -> &'static str {
            "vm"
        }
        async fn resolve_source(&self, _: &Tree, _: &Image) -> Result<ResolvedSource, BuildError> {
            Ok(ResolvedSource::default())
        }
        async fn list_artifacts(&self, _: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
            Ok(self.artifacts.iter().filter(|a| images.iter().any(|i| i.name == a.image)).cloned().collect())
        }
        async fn prepare<'a>(&'a self, _: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
            Err(config("not in this test"))
        }
        async fn destroy(&self, _: &Tree, _: &Resource, _: &EventSink) -> Result<(), BuildError> {
            Ok(())
        }
        async fn sweep(&self, _: &Tree, _: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
            Ok(Vec::new())
        }
        async fn delete_artifact(&self, _: &Tree, _: &Artifact, _: &EventSink) -> Result<(), BuildError> {
            Ok(())
        }
        async fn channel(&self, _: &Tree, image: &Image, channel: &str) -> Result<Option<ChannelState>, BuildError> {
            // Oldest first here; newest first in the state.
            let moves = self.channels.get(&(image.name.clone(), channel.to_string())).cloned().unwrap_or_default();
            let history: Vec<Pointing> = moves
                .iter()
                .rev()
                .map(|(id, day)| Pointing {
                    artifact: id.clone(),
                    at: at(*day),
                    record: None,
                    platform_user: None,
                    version: None,
                })
                .collect();
            let current =
                history.first().map(|p| BTreeMap::from([("here".to_string(), p.artifact.clone())])).unwrap_or_default();
            Ok(Some(ChannelState { channel: channel.into(), location: String::new(), current, history }))
        }
        async fn running_machines(&self, _: &Tree, _: &[&Image]) -> Result<Option<Vec<RunningMachine>>, BuildError> {
            let Some(m) = &self.machines else { return Ok(None) };
            Ok(Some(
                m.iter()
                    .map(|(id, ami)| {
                        let a = self.artifacts.iter().find(|a| a.id == *ami);
                        let image_tags = a.map(|a| {
                            BTreeMap::from([
                                (tags::TREE_ID.to_string(), "tree-0001".to_string()),
                                (tags::IMAGE.to_string(), a.image.clone()),
                                (tags::PARENT.to_string(), a.source.clone()),
                            ])
                        });
                        RunningMachine {
                            id: id.clone(),
                            image_id: ami.clone(),
                            location: "here".into(),
                            state: "running".into(),
                            tags: BTreeMap::from([("Team".to_string(), "core".to_string())]),
                            image_tags,
                            ..Default::default()
                        }
                    })
                    .collect(),
            ))
        }
    }

    fn load(text: &str) -> (tempfile::TempDir, Tree) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("d"), "disk").unwrap();
        std::fs::write(d.path().join("tree.toml"), text).unwrap();
        let vm = imgbake_config::schema::Open::new("vm", &["disk"]);
        let opts = imgbake_config::LoadOptions {
            schemas: imgbake_config::Schemas::new().with(vm.arc()),
            ..Default::default()
        };
        let tree = Tree::load(&d.path().join("tree.toml"), &opts).unwrap_or_else(|e| panic!("{e}"));
        (d, tree)
    }

    const TREE: &str = "[settings]\nid = \"tree-0001\"\n[channels.beta]\n[channels.stable]\nfrom = \"beta\"\n[images.base]\nbuilder = \"vm\"\nsource = { disk = \"d\" }\ncommunicator = { username = \"root\" }\n[images.app]\nparent = \"base\"\n";

    #[test]
    fn the_default_channel_ends_the_promotion_chain() {
        let (_d, t) = load(TREE);
        assert_eq!(default_channel(&t).as_deref(), Some("stable"));
        let (_d, t) =
            load(&TREE.replace("[channels.beta]\n[channels.stable]\nfrom = \"beta\"\n", "[channels.candidate]\n"));
        assert_eq!(default_channel(&t).as_deref(), Some("candidate"));
        let (_d, t) = load(&TREE.replace("[channels.beta]\n[channels.stable]\nfrom = \"beta\"\n", ""));
        assert_eq!(default_channel(&t), None);
    }

    #[tokio::test]
    async fn lineage_rollbacks_and_unsupported_builders() {
        let (_d, t) = load(TREE);
        let fake = Fake {
            artifacts: vec![
                art("base", "b1", 0, "disk"),
                art("base", "b2", 10, "disk"),
                art("app", "a1", 1, "b1"),
                art("app", "a2", 11, "b2"),
                art("app", "a3", 12, "b2"),
            ],
            channels: BTreeMap::from([
                (("base".to_string(), "stable".to_string()), vec![("b1".to_string(), 1), ("b2".to_string(), 20)]),
                // a2 at day 15, rolled back to a1 at day 16, a3 at day 30: a1 superseded since day 30.
                (
                    ("app".to_string(), "stable".to_string()),
                    vec![("a1".to_string(), 2), ("a2".to_string(), 15), ("a1".to_string(), 16), ("a3".to_string(), 30)],
                ),
            ]),
            machines: Some(vec![("m1".into(), "a1".into()), ("m3".into(), "a3".into()), ("mx".into(), "zz".into())]),
        };
        let mut registry = Registry::new();
        registry.register(Arc::new(fake));
        let opts = AuditOptions {
            now: Some(at(60)),
            deadline: Some(std::time::Duration::from_secs(35 * 86400)),
            ..Default::default()
        };
        let r = audit(&t, &registry, &opts).await.unwrap();
        assert_eq!(r.channel.as_deref(), Some("stable"));
        assert_eq!(r.summary.other_machines, 1);
        let m1 = r.machines.iter().find(|m| m.machine == "m1").unwrap();
        assert_eq!(m1.status, Status::Behind);
        assert_eq!(m1.versions_behind, 2);
        // Its own image since day 30 (after the rollback), its parent b1 since day 20: the earlier.
        assert_eq!(m1.lineage.len(), 1);
        assert_eq!(m1.lineage[0].superseded_at, Some(at(20)));
        assert_eq!(m1.superseded_at, Some(at(20)));
        assert_eq!(m1.behind_seconds, Some(40 * 86400));
        assert!(m1.overdue);
        assert_eq!(m1.owners.get("Team").map(String::as_str), Some("core"));
        let m3 = r.machines.iter().find(|m| m.machine == "m3").unwrap();
        assert_eq!((m3.status, m3.overdue), (Status::Current, false));
        assert!(r.failed());
        // Without a deadline nothing fails; a builder that cannot list machines is named.
        let mut registry = Registry::new();
        registry.register(Arc::new(Fake { artifacts: Vec::new(), channels: BTreeMap::new(), machines: None }));
        let r = audit(&t, &registry, &AuditOptions::default()).await.unwrap();
        assert_eq!(r.unsupported, vec!["builder vm cannot list running machines".to_string()]);
        assert!(!r.failed());
    }
}
