//! Waiting for EC2 state changes, through the one generic waiter ([`imgbake_core::wait`]).
//!
//! Polls back off from [`Polling::initial`] to [`Polling::max`] with jitter. A terminal state
//! (`failed`, `terminated` while waiting for `running`...) stops the wait at once with AWS's reason.
//! "Not found" right after creation is eventual consistency, not an error: it is polled again, as are
//! throttling and 5xx answers that outlived the SDK's own retries.

use std::time::Duration;

use aws_sdk_ec2::types::{Image, Instance};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;
use imgbake_core::wait::{self, Poll, Wait, WaitError};

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};

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
enum Seen<T> {
    Found(T),
    /// Not (yet) visible, or a transient failure: poll again.
    NotYet(String),
}

fn classify<T>(r: Result<Option<T>, ApiError>) -> Result<Seen<T>, ApiError> {
    match r {
        Ok(Some(v)) => Ok(Seen::Found(v)),
        Ok(None) => Ok(Seen::NotYet("not visible yet".into())),
        Err(e) if e.is_not_found() => Ok(Seen::NotYet("not visible yet".into())),
        Err(e) if e.is_transient() => Ok(Seen::NotYet(format!("API trouble, retrying: {}", e.detail))),
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

/// Wait until instance `id` is in state `want`; `fail_on` states end the wait with an error.
/// `reported` is the state the call that started the change answered (RunInstances: `pending`,
/// StopInstances: `stopping`...): the first poll, which could only see that again, is skipped.
pub async fn instance(
    c: &Clients,
    id: &str,
    want: &str,
    fail_on: &[&str],
    reported: Option<&str>,
    wait: &Wait,
    events: &EventSink,
) -> Result<Instance, BuildError> {
    let what = format!("instance {id} ({}) to be {want}", c.region());
    let mut skip = reported.map(str::to_string);
    let r = wait::until_observed(
        wait,
        &what,
        || {
            let skip = skip.take();
            async move {
                if let Some(s) = skip {
                    return Poll::Pending(s);
                }
                match classify(crate::launch::describe_instance(c, id).await) {
                    Err(e) => Poll::Failed(BuildError::from(e)),
                    Ok(Seen::NotYet(s)) => Poll::Pending(s),
                    Ok(Seen::Found(i)) => {
                        let state = instance_state(&i).to_string();
                        if state == want {
                            Poll::Ready(i)
                        } else if fail_on.contains(&state.as_str()) {
                            let reason = i.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                            Poll::Failed(BuildError::new(
                                ErrorKind::Platform,
                                format!(
                                    "instance {id} ({}) became `{state}` while waiting for `{want}`: {reason}",
                                    c.region()
                                ),
                            ))
                        } else {
                            Poll::Pending(state)
                        }
                    }
                }
            }
        },
        |s| events.state(&format!("instance {id}"), s),
    )
    .await;
    finish(r, "aws.instance_timeout")
}

/// Wait until image `id` is `available`; `failed`, `error`, `invalid` and `deregistered` end the wait.
/// A new image is `pending` for a while at least, so the first poll (right after CreateImage or
/// CopyImage) is skipped when `just_created`.
pub async fn image(
    c: &Clients,
    id: &str,
    just_created: bool,
    wait: &Wait,
    events: &EventSink,
) -> Result<Image, BuildError> {
    let what = format!("image {id} ({}) to be available", c.region());
    let mut skip = just_created;
    let r = wait::until_observed(
        wait,
        &what,
        || {
            let first = std::mem::take(&mut skip);
            async move {
                if first {
                    return Poll::Pending("pending".into());
                }
                match classify(describe_image(c, id).await) {
                    Err(e) => Poll::Failed(BuildError::from(e)),
                    Ok(Seen::NotYet(s)) => Poll::Pending(s),
                    Ok(Seen::Found(img)) => {
                        let state = img.state().map(|s| s.as_str()).unwrap_or("unknown").to_string();
                        match state.as_str() {
                            "available" => Poll::Ready(img),
                            "failed" | "error" | "invalid" | "deregistered" | "disabled" => {
                                let reason = img.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                                Poll::Failed(BuildError::new(
                                    ErrorKind::Platform,
                                    format!("image {id} ({}) became `{state}`: {reason}", c.region()),
                                ))
                            }
                            _ => Poll::Pending(state),
                        }
                    }
                }
            }
        },
        |s| events.state(&format!("image {id}"), s),
    )
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
