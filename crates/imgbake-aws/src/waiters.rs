//! Waiting for EC2 state changes, through the one generic waiter ([`imgbake_core::wait`]).
//!
//! A state change whose usual duration earlier builds taught ([`crate::timing`]) is polled around the
//! moment it is due ([`crate::schedule`]); without history the first poll comes right away and later
//! ones back off from [`Polling::initial`] to [`Polling::max`] with jitter. A terminal state
//! (`failed`, `terminated` while waiting for `running`...) stops the wait at once with AWS's reason.
//! "Not found" right after creation is eventual consistency, not an error: it is polled again, as are
//! throttling and 5xx answers that outlived the SDK's own retries.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::types::{Image, Instance};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;
use imgbake_core::wait::{self, Poll, Wait, WaitError};
use tokio::time::Instant;

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::schedule::Schedule;
use crate::timing::{Key, Seen, Timing};

/// How often waits poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polling {
    /// First pause between polls.
    pub initial: Duration,
    /// Longest pause between polls. It bounds how late a state change is noticed (about half of it on
    /// average) and the number of calls a long wait makes (about one per `max`).
    pub max: Duration,
}

impl Default for Polling {
    /// 1 s growing to 3.5 s: a change is noticed about 1.75 s late on average (measured by the
    /// `build` benchmark); an AMI that takes ten minutes costs about 170 DescribeImages calls, far
    /// below EC2's request limits.
    fn default() -> Self {
        Polling { initial: Duration::from_secs(1), max: Duration::from_millis(3500) }
    }
}

impl Polling {
    /// A wait with this polling and `timeout`.
    pub fn wait(&self, timeout: Duration) -> Wait {
        Wait::new(timeout).interval(self.initial, self.max)
    }
}

/// What one describe call found.
enum Described<T> {
    Found(T),
    /// Not (yet) visible, or a transient failure: poll again.
    NotYet(String),
}

fn classify<T>(r: Result<Option<T>, ApiError>) -> Result<Described<T>, ApiError> {
    match r {
        Ok(Some(v)) => Ok(Described::Found(v)),
        Ok(None) => Ok(Described::NotYet("not visible yet".into())),
        Err(e) if e.is_not_found() => Ok(Described::NotYet("not visible yet".into())),
        Err(e) if e.is_transient() => Ok(Described::NotYet(format!("API trouble, retrying: {}", e.detail))),
        Err(e) => Err(e),
    }
}

/// One image, or `None` when EC2 does not list it.
pub async fn describe_image(c: &Clients, id: &str) -> Result<Option<Image>, ApiError> {
    let out = c.ec2.describe_images().image_ids(id).send().await.api("DescribeImages", c.region(), Some(id.into()))?;
    Ok(out.images().iter().find(|i| i.image_id() == Some(id)).cloned())
}

/// The name of an instance's state.
pub fn instance_state(i: &Instance) -> &str {
    i.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or("unknown")
}

/// One wait's link to the learned durations: what changes, where the history is, and when the
/// call that started the change was made (the schedule and the record count from there).
pub struct Watch<'a> {
    /// The builder's knowledge.
    pub timing: &'a Timing,
    /// The history file (`None`: learning is off).
    pub file: Option<PathBuf>,
    /// What changes.
    pub key: Key,
    /// Just before the call that started the change.
    pub started: Instant,
    /// The backoff without history, and the cap on every pause.
    pub polling: Polling,
}

impl Watch<'_> {
    /// The schedule: around the expected moment when history knows one, else cold.
    async fn schedule(&self, events: &EventSink) -> Schedule {
        let Some(file) = &self.file else { return Schedule::cold(self.polling, true) };
        let (expected, warning) = self.timing.expect(file, &self.key).await;
        if let Some(w) = warning {
            events.warn(format!("{w}; waits poll without history"));
        }
        match expected {
            Some(e) => {
                tracing::debug!(key = %self.key.id(), from = ?e.from, to = ?e.to, "polling around the expected moment");
                Schedule::warm(self.polling, e, true)
            }
            None => Schedule::cold(self.polling, true),
        }
    }

    /// Remember when the change happened (a failure to write the history only warns).
    async fn record(&self, seen: Seen, events: &EventSink) {
        let Some(file) = &self.file else { return };
        if let Err(e) = self.timing.record(file, &self.key, seen).await {
            events.warn(format!("{e}; the next build polls without this wait's timing"));
        }
    }
}

/// When polls saw the old state last and the new state first (since the watch started).
#[derive(Default)]
struct Track {
    last_old: Duration,
    first_new: Option<Duration>,
}

impl Track {
    fn saw_old(t: &Mutex<Track>, at: Duration) {
        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
        t.last_old = t.last_old.max(at);
    }

    fn saw_new(t: &Mutex<Track>, at: Duration) {
        t.lock().unwrap_or_else(|p| p.into_inner()).first_new.get_or_insert(at);
    }

    fn seen(t: Mutex<Track>) -> Option<Seen> {
        let t = t.into_inner().unwrap_or_else(|p| p.into_inner());
        t.first_new.map(|hi| Seen::between(t.last_old.min(hi), hi))
    }
}

/// What one poll of a change found.
enum Step<T> {
    /// The wanted state.
    Done(T),
    /// Still the old state (this one).
    Old(String),
    /// Not visible, or API trouble: says nothing about the change.
    Unknown(String),
    /// A terminal state or a hard error.
    Failed(BuildError),
}

/// Poll `step` on `watch`'s schedule until it is done; record when the change happened.
async fn watched<T, F, Fut>(
    watch: &Watch<'_>,
    wait: &Wait,
    what: &str,
    reported: Option<&str>,
    subject: &str,
    events: &EventSink,
    mut step: F,
) -> Result<T, WaitError<BuildError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Step<T>>,
{
    let mut schedule = watch.schedule(events).await;
    let track = Mutex::new(Track::default());
    let mut last = reported.map(str::to_string);
    if let Some(r) = reported {
        events.state(subject, r);
    }
    let started = watch.started;
    let r = wait::until_paced(
        wait,
        what,
        |_| schedule.pause(started.elapsed()),
        || {
            let sent = started.elapsed();
            let (fut, track) = (step(), &track);
            async move {
                match fut.await {
                    Step::Done(v) => {
                        Track::saw_new(track, started.elapsed());
                        Poll::Ready(v)
                    }
                    Step::Old(s) => {
                        Track::saw_old(track, sent);
                        Poll::Pending(s)
                    }
                    Step::Unknown(s) => Poll::Pending(s),
                    Step::Failed(e) => Poll::Failed(e),
                }
            }
        },
        |s| {
            if last.as_deref() != Some(s) {
                events.state(subject, s);
                last = Some(s.to_string());
            }
        },
    )
    .await;
    if r.is_ok()
        && let Some(seen) = Track::seen(track)
    {
        watch.record(seen, events).await;
    }
    r
}

/// Wait until instance `id` is in state `want`; `fail_on` states end the wait with an error.
/// `reported` is the state the call that started the change answered (RunInstances: `pending`,
/// StopInstances: `stopping`...), shown as the first state.
#[allow(clippy::too_many_arguments)]
pub async fn instance(
    c: &Clients,
    id: &str,
    want: &str,
    fail_on: &[&str],
    reported: Option<&str>,
    wait: &Wait,
    watch: &Watch<'_>,
    events: &EventSink,
) -> Result<Instance, BuildError> {
    let what = format!("instance {id} ({}) to be {want}", c.region());
    let subject = format!("instance {id}");
    let r = watched(watch, wait, &what, reported, &subject, events, || async move {
        match classify(crate::launch::describe_instance(c, id).await) {
            Err(e) => Step::Failed(BuildError::from(e)),
            Ok(Described::NotYet(s)) => Step::Unknown(s),
            Ok(Described::Found(i)) => {
                let state = instance_state(&i).to_string();
                if state == want {
                    Step::Done(i)
                } else if fail_on.contains(&state.as_str()) {
                    let reason = i.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                    Step::Failed(BuildError::new(
                        ErrorKind::Platform,
                        format!("instance {id} ({}) became `{state}` while waiting for `{want}`: {reason}", c.region()),
                    ))
                } else {
                    Step::Old(state)
                }
            }
        }
    })
    .await;
    finish(r, "aws.instance_timeout")
}

/// Wait until image `id` is `available`; `failed`, `error`, `invalid` and `deregistered` end the wait.
/// A new image is `pending`, shown as the first state.
pub async fn image(
    c: &Clients,
    id: &str,
    wait: &Wait,
    watch: &Watch<'_>,
    events: &EventSink,
) -> Result<Image, BuildError> {
    let what = format!("image {id} ({}) to be available", c.region());
    let subject = format!("image {id}");
    let r = watched(watch, wait, &what, Some("pending"), &subject, events, || async move {
        match classify(describe_image(c, id).await) {
            Err(e) => Step::Failed(BuildError::from(e)),
            Ok(Described::NotYet(s)) => Step::Unknown(s),
            Ok(Described::Found(img)) => {
                let state = img.state().map(|s| s.as_str()).unwrap_or("unknown").to_string();
                match state.as_str() {
                    "available" => Step::Done(img),
                    "failed" | "error" | "invalid" | "deregistered" | "disabled" => {
                        let reason = img.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                        Step::Failed(BuildError::new(
                            ErrorKind::Platform,
                            format!("image {id} ({}) became `{state}`: {reason}", c.region()),
                        ))
                    }
                    _ => Step::Old(state),
                }
            }
        }
    })
    .await;
    finish(r, "aws.image_timeout")
}

fn finish<T>(r: Result<T, WaitError<BuildError>>, setting: &str) -> Result<T, BuildError> {
    r.map_err(|e| match e {
        WaitError::Failed(e) => e,
        e @ WaitError::TimedOut { .. } => {
            BuildError::new(ErrorKind::Timeout, format!("{e}; raise {setting} if this is normal for this image"))
        }
    })
}

/// Retry `op` while it fails with a retryable error (`retry_if`), under `wait`. For calls that fail
/// for a while for known reasons: tagging a resource EC2 does not list yet, deleting a security group
/// whose instance is still shutting down, deleting a snapshot its just-deregistered AMI still holds.
pub async fn retry<T, F, Fut>(
    wait: &Wait,
    what: &str,
    retry_if: impl Fn(&ApiError) -> bool,
    mut op: F,
) -> Result<T, BuildError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let r = wait::until(wait, what, || {
        let fut = op();
        let retry_if = &retry_if;
        async move {
            match fut.await {
                Ok(v) => Poll::Ready(v),
                Err(e) if retry_if(&e) || e.is_transient() => Poll::Pending(e.to_string()),
                Err(e) => Poll::Failed(BuildError::from(e)),
            }
        }
    })
    .await;
    r.map_err(|e| match e {
        WaitError::Failed(e) => e,
        e @ WaitError::TimedOut { .. } => BuildError::new(ErrorKind::Timeout, e.to_string()),
    })
}
