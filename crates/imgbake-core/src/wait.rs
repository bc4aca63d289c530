//! The one generic waiter: poll a condition with jittered exponential backoff until it is ready, fails
//! for good, or runs out of time.
//!
//! Every wait in imgbake goes through [`until`]: an instance reaching `running`, an AMI becoming
//! `available`, an SSH server coming back after a reboot. Nothing sleeps a fixed time for readiness.
//!
//! ```
//! use std::time::Duration;
//! use imgbake_core::wait::{self, Poll, Wait};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut calls = 0;
//! let ready: Result<u32, wait::WaitError<String>> = wait::until(
//!     &Wait::new(Duration::from_secs(5)).interval(Duration::from_millis(1), Duration::from_millis(5)),
//!     "counter reaches 3",
//!     || {
//!         calls += 1;
//!         let now = calls;
//!         async move { if now >= 3 { Poll::Ready(now) } else { Poll::Pending(format!("at {now}")) } }
//!     },
//! )
//! .await;
//! assert_eq!(ready.unwrap(), 3);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// How to wait: overall timeout, the backoff between polls and how many ready polls in a row count.
#[derive(Clone, Debug, PartialEq)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// First pause between two polls.
    pub initial: Duration,
    /// Longest pause between two polls; the backoff grows up to this.
    pub max_interval: Duration,
    /// Growth factor of the pause.
    pub factor: f32,
    /// Randomise pauses so many waiters do not poll in lockstep (and to spread API load).
    pub jitter: bool,
    /// Number of `Ready` answers in a row needed (eventual consistency: one good read may be stale).
    pub successes: u32,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            timeout: Duration::from_secs(600),
            initial: Duration::from_millis(500),
            max_interval: Duration::from_secs(5),
            factor: 1.6,
            jitter: true,
            successes: 1,
        }
    }
}

impl Wait {
    /// The defaults with another overall timeout.
    pub fn new(timeout: Duration) -> Self {
        Wait { timeout, ..Wait::default() }
    }

    /// Set the first and the longest pause between polls.
    pub fn interval(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max_interval = max.max(initial);
        self
    }

    /// Require `n` ready polls in a row.
    pub fn successes(mut self, n: u32) -> Self {
        self.successes = n.max(1);
        self
    }

    /// The pauses this wait would take, forever (the caller bounds them by the deadline).
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max_interval)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        let max = self.max_interval;
        // backon's jitter adds up to one more delay on top; keep the cap honest.
        builder.build().map(move |d| d.min(max))
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll<T, E> {
    /// The condition holds; carries the value the caller waits for.
    Ready(T),
    /// Not yet; carries a short description of the current state (shown in events and timeouts).
    Pending(String),
    /// It will never hold (a terminal state such as `failed`): stop waiting.
    Failed(E),
}

/// Why a wait ended without the condition.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    /// The overall timeout passed.
    #[error("timed out after {waited:?} waiting for {what} (last state: {last_state})")]
    TimedOut {
        /// What was being waited for.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// The last state a poll reported.
        last_state: String,
    },
    /// A poll reported a terminal failure.
    #[error("{0}")]
    Failed(E),
}

impl<E> WaitError<E> {
    /// Map the failure type, keeping a timeout as it is.
    pub fn map_failed<F>(self, f: impl FnOnce(E) -> F) -> WaitError<F> {
        match self {
            WaitError::TimedOut { what, waited, last_state } => WaitError::TimedOut { what, waited, last_state },
            WaitError::Failed(e) => WaitError::Failed(f(e)),
        }
    }
}

/// Poll `poll` until it is ready `wait.successes` times in a row, fails, or `wait.timeout` passes.
///
/// The first poll happens at once; later ones after the backoff pauses. A pause never runs past the
/// deadline: the last poll happens right at it.
pub async fn until<T, E, F, Fut>(wait: &Wait, what: &str, poll: F) -> Result<T, WaitError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll<T, E>>,
{
    until_observed(wait, what, poll, |_| {}).await
}

/// Like [`until`], and calls `observe` with each new state (only when it differs from the previous one),
/// so callers can turn state changes into events.
pub async fn until_observed<T, E, F, Fut, O>(wait: &Wait, what: &str, poll: F, observe: O) -> Result<T, WaitError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll<T, E>>,
    O: FnMut(&str),
{
    let mut pauses = wait.pauses();
    let mut first = true;
    let backoff = move |_: Duration| {
        if std::mem::take(&mut first) { Duration::ZERO } else { pauses.next().unwrap_or(wait.max_interval) }
    };
    until_paced(wait, what, backoff, poll, observe).await
}

/// Like [`until_observed`], with the pauses chosen by `pace` instead of the wait's backoff: before
/// every poll (the first one too) the waiter sleeps `pace(time since the wait started)`. For callers
/// that know when the condition is likely to change (a transition whose usual duration was
/// learned) and poll around that moment. The timeout, `successes` and early failure work as in
/// [`until`]; a pause never runs past the deadline.
pub async fn until_paced<T, E, F, Fut, O, P>(
    wait: &Wait,
    what: &str,
    mut pace: P,
    mut poll: F,
    mut observe: O,
) -> Result<T, WaitError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll<T, E>>,
    O: FnMut(&str),
    P: FnMut(Duration) -> Duration,
{
    let start = Instant::now();
    let deadline = start + wait.timeout;
    let mut in_a_row = 0u32;
    let mut last_state = String::from("not polled yet");
    loop {
        let pause = pace(Instant::now() - start);
        if !pause.is_zero() {
            // A pause past the deadline (or too large to add) ends at the deadline: one last look.
            let until = Instant::now().checked_add(pause).map_or(deadline, |t| t.min(deadline));
            tokio::time::sleep_until(until).await;
        }
        match poll().await {
            Poll::Ready(value) => {
                in_a_row += 1;
                if in_a_row >= wait.successes.max(1) {
                    return Ok(value);
                }
                if last_state != "ready" {
                    last_state = "ready".into();
                    observe(&last_state);
                }
            }
            Poll::Pending(state) => {
                in_a_row = 0;
                if state != last_state {
                    observe(&state);
                    last_state = state;
                }
            }
            Poll::Failed(e) => return Err(WaitError::Failed(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::TimedOut { what: what.to_string(), waited: now - start, last_state });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn times_out_with_last_state() {
        let wait = Wait::new(Duration::from_secs(10)).interval(Duration::from_secs(1), Duration::from_secs(2));
        let polls = AtomicU32::new(0);
        let r: Result<(), WaitError<()>> = until(&wait, "thing", || {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            async move { Poll::Pending(format!("pending {n}")) }
        })
        .await;
        match r {
            Err(WaitError::TimedOut { what, waited, last_state }) => {
                assert_eq!(what, "thing");
                assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
                assert!(last_state.starts_with("pending "));
            }
            other => panic!("unexpected {other:?}"),
        }
        // 10 s with pauses between 1 and 2 s: at least 6 polls, at most 11.
        let n = polls.load(Ordering::SeqCst);
        assert!((6..=11).contains(&n), "{n} polls");
    }

    #[tokio::test(start_paused = true)]
    async fn needs_successes_in_a_row() {
        // ready, pending, ready, ready → with successes(2) the value comes from the 4th poll.
        let answers = std::sync::Mutex::new(vec![true, true, false, true]);
        let n = AtomicU32::new(0);
        let wait = Wait::new(Duration::from_secs(60)).successes(2);
        let r: Result<u32, WaitError<()>> = until(&wait, "x", || {
            let ready = answers.lock().unwrap().pop().unwrap_or(true);
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            async move { if ready { Poll::Ready(i) } else { Poll::Pending("no".into()) } }
        })
        .await;
        assert_eq!(r.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_failure_at_once() {
        let start = Instant::now();
        let r: Result<(), WaitError<&str>> =
            until(&Wait::default(), "image", || async { Poll::Failed("state failed") }).await;
        assert!(matches!(r, Err(WaitError::Failed("state failed"))));
        assert_eq!(Instant::now(), start);
    }

    #[test]
    fn pauses_grow_and_are_capped() {
        let wait =
            Wait { jitter: false, ..Wait::default() }.interval(Duration::from_millis(100), Duration::from_secs(1));
        let p: Vec<_> = wait.pauses().take(10).collect();
        assert_eq!(p[0], Duration::from_millis(100));
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*p.last().unwrap(), Duration::from_secs(1));
        let jittered = Wait::default().interval(Duration::from_millis(100), Duration::from_secs(1));
        assert!(jittered.pauses().take(50).all(|d| d <= Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn observer_sees_each_state_once() {
        let states = std::sync::Mutex::new(vec!["b", "b", "a", "a"]);
        let mut seen = Vec::new();
        let r: Result<(), WaitError<()>> = until_observed(
            &Wait::default(),
            "x",
            || {
                let s = states.lock().unwrap().pop();
                async move {
                    match s {
                        Some(s) => Poll::Pending(s.to_string()),
                        None => Poll::Ready(()),
                    }
                }
            },
            |s| seen.push(s.to_string()),
        )
        .await;
        r.unwrap();
        assert_eq!(seen, vec!["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_polls_follow_the_pace_and_the_deadline() {
        let start = Instant::now();
        let mut at = Vec::new();
        let wait = Wait::new(Duration::from_secs(10));
        // 4 s, then 1 s pauses: polls at 4, 5, 6 ... until the third answer is ready.
        let mut n = 0;
        let r: Result<u32, WaitError<()>> = until_paced(
            &wait,
            "x",
            |elapsed| {
                if elapsed < Duration::from_secs(4) { Duration::from_secs(4) - elapsed } else { Duration::from_secs(1) }
            },
            || {
                n += 1;
                at.push(Instant::now() - start);
                let now = n;
                async move { if now >= 3 { Poll::Ready(now) } else { Poll::Pending("p".into()) } }
            },
            |_| {},
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(at, vec![Duration::from_secs(4), Duration::from_secs(5), Duration::from_secs(6)]);
        // A pace beyond the deadline polls once more right at it, then times out.
        let r: Result<(), WaitError<()>> =
            until_paced(&wait, "y", |_| Duration::from_secs(60), || async { Poll::Pending("p".into()) }, |_| {}).await;
        assert!(matches!(r, Err(WaitError::TimedOut { waited, .. }) if waited == Duration::from_secs(10)));
    }
}
