//! `imgbake promote`: point a release channel at an artifact, under the channel's policies, and
//! `imgbake channels`: where each channel points, with its history.
//!
//! A promotion takes the artifact the `from` channel points at (or one named with
//! [`PromoteOptions::artifact`] that was in it), checks the target channel's policies —
//! `require_tests` (the artifact's [`tests`](crate::artifact::tags::TESTS) label says passed) and
//! `soak` (its latest stretch in `from` is long enough, from the pointer's history) — and points the
//! channel at it through each of the image's builders that keep channels. A policy that is not met
//! is a [`Refusal`]: one line, nothing written. `--rollback` points the channel back at the value
//! before the current one ([`ChannelState::rollback_target`]), recorded as a move too; it checks no
//! policy (the artifact was in the channel already).

use chrono::{DateTime, Utc};
use imgbake_config::channels::CANDIDATE;
use imgbake_config::{Image, Tree};
use serde::Serialize;

use crate::artifact::Artifact;
use crate::builder::Builder;
use crate::channel::{ChannelState, PointAction, PointRecord};
use crate::error::{BuildError, ErrorKind};
use crate::event::EventSink;
use crate::registry::Registry;

/// What to promote.
#[derive(Clone, Debug, Default)]
pub struct PromoteOptions {
    /// The channel to point.
    pub to: String,
    /// The channel to take the artifact from; must be the one `to` declares (`from`, default
    /// `candidate`), so its policies cannot be sidestepped.
    pub from: Option<String>,
    /// This artifact (its primary id or its id in any location) instead of what `from` points at
    /// now; it must have been in `from`.
    pub artifact: Option<String>,
    /// Point `to` back at its previous artifact instead.
    pub rollback: bool,
    /// Check everything, write nothing.
    pub dry_run: bool,
    /// The time policies are judged at (default: now). For tests and for "could it go at 9:00?".
    pub now: Option<DateTime<Utc>>,
}

/// A policy that is not met: why nothing was promoted, as one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The `from` channel points at nothing yet.
    #[error(
        "{image}: channel `{from}` points at nothing yet: build with publishing first (or name an artifact with --artifact)"
    )]
    EmptySource {
        /// The image.
        image: String,
        /// The channel.
        from: String,
    },
    /// The artifact was never in the `from` channel.
    #[error("{image}: {artifact} was never in channel `{from}`: `{to}` takes artifacts from `{from}` only")]
    NotInSource {
        /// The image.
        image: String,
        /// The artifact.
        artifact: String,
        /// The channel it should have been in.
        from: String,
        /// The target channel.
        to: String,
    },
    /// The artifact has not soaked long enough in `from`.
    #[error("{image}: {artifact} has been in `{from}` for {held}; `{to}` needs {soak} of soak (promotable at {ready})", held = short(*held), soak = short(*soak), ready = ready.format("%Y-%m-%dT%H:%M:%SZ"))]
    NotSoaked {
        /// The image.
        image: String,
        /// The artifact.
        artifact: String,
        /// The source channel.
        from: String,
        /// The target channel.
        to: String,
        /// How long it has been in `from`.
        held: std::time::Duration,
        /// How long it must be.
        soak: std::time::Duration,
        /// When it will have soaked enough, if it stays.
        ready: DateTime<Utc>,
    },
    /// The artifact carries no passing test result.
    #[error("{image}: {artifact} {what}; `{to}` requires passing on-box tests (require_tests)", what = match tests { Some(t) => format!("has test result `{t}`"), None => "carries no test result (its image ran no `test` step, or it was built before imgbake recorded results)".to_string() })]
    TestsNotPassed {
        /// The image.
        image: String,
        /// The artifact.
        artifact: String,
        /// The target channel.
        to: String,
        /// Its test label, if any.
        tests: Option<String>,
    },
    /// Nothing earlier to roll back to.
    #[error("{image}: channel `{channel}` has no earlier artifact to roll back to")]
    NothingToRollBack {
        /// The image.
        image: String,
        /// The channel.
        channel: String,
    },
}

/// Why a promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// A policy is not met.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Something failed (configuration, the platform).
    #[error(transparent)]
    Failed(#[from] BuildError),
}

/// One channel moved (or, in a dry run, that would move) through one builder.
#[derive(Clone, Debug, Serialize)]
pub struct Promotion {
    /// The image.
    pub image: String,
    /// The builder that keeps the channel.
    pub builder: String,
    /// The channel moved.
    pub channel: String,
    /// Promotion, or rollback.
    pub action: PointAction,
    /// The channel the artifact came from (promotions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The artifact it points at now.
    pub artifact: Artifact,
    /// What it pointed at before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// It pointed there already: nothing was written.
    pub unchanged: bool,
    /// Nothing was written: a dry run.
    pub dry_run: bool,
    /// What was written, for people.
    pub written: Vec<String>,
}

fn config(msg: impl Into<String>) -> BuildError {
    BuildError::new(ErrorKind::Config, msg)
}

/// `6h`, `1h 30m`, `45s`.
pub fn short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m, sec) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

type BuilderRef = std::sync::Arc<dyn Builder>;

/// The image and its registered builders (an error when the tree declares no channels or lacks the image).
fn channel_builders<'a>(
    tree: &'a Tree,
    registry: &'a Registry,
    image: &str,
) -> Result<(&'a Image, Vec<&'a BuilderRef>), BuildError> {
    if tree.channels().is_empty() {
        return Err(config(format!(
            "tree `{}` declares no release channels: add [channels.stable] (see docs/channels.md)",
            tree.name()
        )));
    }
    let img = tree.image(image).ok_or_else(|| {
        let names: Vec<&str> = tree.images().keys().map(String::as_str).collect();
        config(format!("the tree has no image `{image}` (images: {})", names.join(", ")))
    })?;
    let builders: Vec<_> = img.builders.iter().filter_map(|b| registry.get(b.get_ref())).collect();
    Ok((img, builders))
}

fn check_channel(tree: &Tree, name: &str) -> Result<(), BuildError> {
    if tree.channel(name).is_none() {
        let names: Vec<&str> = tree.channels().keys().map(String::as_str).collect();
        return Err(config(format!("the tree has no channel `{name}` (channels: {})", names.join(", "))));
    }
    Ok(())
}

/// Promote (or roll back) `image`'s channel `opts.to`, through every builder of the image that
/// keeps channels. Policies are checked for every builder before anything is written.
pub async fn promote(
    tree: &Tree,
    registry: &Registry,
    image: &str,
    opts: &PromoteOptions,
    events: &EventSink,
) -> Result<Vec<Promotion>, PromoteError> {
    let (img, builders) = channel_builders(tree, registry, image)?;
    check_channel(tree, &opts.to)?;
    let to = tree.channel(&opts.to).ok_or_else(|| config("unreachable: checked channel"))?;
    let now = opts.now.unwrap_or_else(Utc::now);
    let from = if opts.rollback {
        None
    } else {
        let declared = to.source().ok_or_else(|| {
            config(format!(
                "`{CANDIDATE}` is pointed by builds that publish, not by promote: promote to a channel declared with `from`"
            ))
        })?;
        if let Some(f) = &opts.from {
            check_channel(tree, f)?;
            if f != declared {
                return Err(config(format!(
                    "`{}` is promoted from `{declared}`, not `{f}`{}: use --from {declared}",
                    to.name,
                    to.from
                        .as_ref()
                        .map(|s| format!(" (channels.{}.from at {})", to.name, tree.locate(s.span())))
                        .unwrap_or_default()
                ))
                .into());
            }
        }
        Some(declared.to_string())
    };
    let artifacts = registry.artifacts_of(tree, [img]).await?;
    // Decide for every builder first: a refusal leaves every pointer as it was.
    let mut plans = Vec::new();
    let mut any = false;
    for b in builders {
        let Some(target) = b.channel(tree, img, &to.name).await? else { continue };
        any = true;
        let list = artifacts.get(&(img.name.clone(), b.kind().to_string())).cloned().unwrap_or_default();
        let find = |id: &str| list.iter().find(|a| a.id == id || a.locations.values().any(|l| l == id)).cloned();
        let previous = target.artifact().map(str::to_string);
        let (artifact, record) = match &from {
            None => {
                let t = target
                    .rollback_target()
                    .ok_or_else(|| Refusal::NothingToRollBack { image: img.name.clone(), channel: to.name.clone() })?;
                let a = find(&t.artifact).ok_or_else(|| {
                    config(format!(
                        "{}: cannot roll `{}` back to {}: that artifact no longer exists (pruned or deleted)",
                        img.name, to.name, t.artifact
                    ))
                })?;
                let mut r = PointRecord::new(PointAction::Rollback);
                r.reverts = previous.clone();
                r.build = Some(a.build_id.clone());
                (a, r)
            }
            Some(from) => {
                let source = b.channel(tree, img, from).await?.unwrap_or_else(|| ChannelState {
                    channel: from.clone(),
                    location: String::new(),
                    current: Default::default(),
                    history: Vec::new(),
                });
                let wanted = match &opts.artifact {
                    Some(id) => find(id).map(|a| a.id).unwrap_or_else(|| id.clone()),
                    None => source
                        .artifact()
                        .ok_or_else(|| Refusal::EmptySource { image: img.name.clone(), from: from.clone() })?
                        .to_string(),
                };
                let held = source.held(&wanted, now).ok_or_else(|| Refusal::NotInSource {
                    image: img.name.clone(),
                    artifact: wanted.clone(),
                    from: from.clone(),
                    to: to.name.clone(),
                })?;
                let a = find(&wanted).ok_or_else(|| {
                    config(format!(
                        "{}: {wanted} is not a complete artifact of the image (pruned, deleted, or another tree's)",
                        img.name
                    ))
                })?;
                if to.require_tests && !crate::channel::tests_passed(&a) {
                    return Err(Refusal::TestsNotPassed {
                        image: img.name.clone(),
                        artifact: a.id.clone(),
                        to: to.name.clone(),
                        tests: a.extra.get(crate::channel::EXTRA_TESTS).cloned(),
                    }
                    .into());
                }
                if let Some(soak) = &to.soak {
                    let soak = soak.get_ref().get();
                    if held < soak {
                        let ready = now + chrono::Duration::from_std(soak - held).unwrap_or_default();
                        return Err(Refusal::NotSoaked {
                            image: img.name.clone(),
                            artifact: a.id.clone(),
                            from: from.clone(),
                            to: to.name.clone(),
                            held,
                            soak,
                            ready,
                        }
                        .into());
                    }
                }
                let mut r = PointRecord::new(PointAction::Promote);
                r.from = Some(from.clone());
                r.build = Some(a.build_id.clone());
                (a, r)
            }
        };
        plans.push((b, artifact, record, previous));
    }
    if !any {
        return Err(config(format!(
            "no builder of image `{}` ({}) keeps release channels yet",
            img.name,
            img.builders.iter().map(|b| b.get_ref().as_str()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    let mut out = Vec::new();
    for (b, artifact, record, previous) in plans {
        let unchanged = previous.as_deref() == Some(artifact.id.as_str());
        let written = if opts.dry_run || unchanged {
            Vec::new()
        } else {
            b.point(tree, img, &to.name, &artifact, &record, &events.for_image(&img.name)).await?
        };
        out.push(Promotion {
            image: img.name.clone(),
            builder: b.kind().to_string(),
            channel: to.name.clone(),
            action: record.action,
            from: record.from.clone(),
            artifact,
            previous,
            unchanged,
            dry_run: opts.dry_run,
            written,
        });
    }
    Ok(out)
}

/// One image's channel as one builder keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelView {
    /// The image.
    pub image: String,
    /// The builder.
    pub builder: String,
    /// The channel, its pointers and history.
    #[serde(flatten)]
    pub state: ChannelState,
}

/// Every channel of `images` (all when empty), through every builder that keeps them.
pub async fn channels(tree: &Tree, registry: &Registry, images: &[String]) -> Result<Vec<ChannelView>, BuildError> {
    for i in images {
        if tree.image(i).is_none() {
            return Err(config(format!("the tree has no image `{i}`")));
        }
    }
    let mut out = Vec::new();
    for img in tree.images().values().filter(|i| images.is_empty() || images.contains(&i.name)) {
        for b in img.builders.iter().filter_map(|b| registry.get(b.get_ref())) {
            for ch in tree.channels().keys() {
                if let Some(state) = b.channel(tree, img, ch).await? {
                    out.push(ChannelView { image: img.name.clone(), builder: b.kind().to_string(), state });
                }
            }
        }
    }
    Ok(out)
}

/// The artifact ids (every location) a channel of `image` points at, and the ones its rollbacks
/// would return to: pruning keeps them all.
pub async fn pointed(tree: &Tree, builder: &dyn Builder, image: &Image) -> Result<Vec<(String, String)>, BuildError> {
    let mut out = Vec::new();
    for ch in tree.channels().keys() {
        let Some(state) = builder.channel(tree, image, ch).await? else { continue };
        for id in state.current.values() {
            out.push((id.clone(), format!("channel `{ch}` points at it")));
        }
        if let Some(a) = state.artifact() {
            out.push((a.to_string(), format!("channel `{ch}` points at it")));
        }
        if let Some(t) = state.rollback_target() {
            out.push((t.artifact.clone(), format!("channel `{ch}` rolls back to it")));
        }
    }
    Ok(out)
}
