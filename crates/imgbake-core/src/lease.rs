//! Leases: one build of an image at a time across machines, for trees built by a CI system as one
//! job per image (`imgbake plan --format matrix`, then `imgbake build --only IMAGE --lease`).
//!
//! A builder with a shared place to keep them (AWS: SSM parameters in the image's region) hands out a
//! [`LeaseStore`]; the protocol lives here, so every store behaves the same way. A lease is a series
//! of numbered *generations*, each created only if absent — the one atomic operation a store needs.
//! The holder of a live generation may build; a generation is live until its holder deletes it
//! (release) or its `expires` passes (the holder died and stopped renewing). Taking over an expired
//! lease creates the *next* generation, so of two runners that both find it expired, exactly one wins.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use imgbake_core::error::BuildError;
//! use imgbake_core::lease::{self, Attempt, LeaseRecord, LeaseStore};
//!
//! /// A store in memory (a real one is shared between machines).
//! #[derive(Default)]
//! struct Memory(Mutex<BTreeMap<u64, LeaseRecord>>);
//!
//! #[async_trait::async_trait]
//! impl LeaseStore for Memory {
//!     fn describe(&self) -> String { "memory".into() }
//!     async fn list(&self) -> Result<Vec<(u64, LeaseRecord)>, BuildError> {
//!         Ok(self.0.lock().unwrap().iter().map(|(g, r)| (*g, r.clone())).collect())
//!     }
//!     async fn create(&self, generation: u64, record: &LeaseRecord) -> Result<bool, BuildError> {
//!         let mut m = self.0.lock().unwrap();
//!         if m.contains_key(&generation) { return Ok(false) }
//!         m.insert(generation, record.clone());
//!         Ok(true)
//!     }
//!     async fn renew(&self, generation: u64, record: &LeaseRecord) -> Result<(), BuildError> {
//!         self.0.lock().unwrap().insert(generation, record.clone());
//!         Ok(())
//!     }
//!     async fn delete(&self, generation: u64) -> Result<(), BuildError> {
//!         self.0.lock().unwrap().remove(&generation);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store: Arc<dyn LeaseStore> = Arc::new(Memory::default());
//! let ttl = Duration::from_secs(60);
//! let Attempt::Acquired(held) = lease::try_acquire(store.clone(), "runner-a", "b-1", ttl).await.unwrap() else {
//!     panic!("a free lease is acquired")
//! };
//! // Another runner finds it busy, and who holds it.
//! match lease::try_acquire(store.clone(), "runner-b", "b-2", ttl).await.unwrap() {
//!     Attempt::Busy(r) => assert_eq!(r.holder, "runner-a"),
//!     Attempt::Acquired(_) => panic!("two holders"),
//! }
//! held.release().await.unwrap();
//! assert!(matches!(lease::try_acquire(store, "runner-b", "b-2", ttl).await.unwrap(), Attempt::Acquired(_)));
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, ErrorKind};
use crate::wait::{self, Poll, Wait, WaitError};

/// What a generation of a lease says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it: host and process, for people reading why a build waits.
    pub holder: String,
    /// The holder's build id.
    pub build_id: String,
    /// When it lapses unless renewed.
    pub expires: DateTime<Utc>,
}

impl LeaseRecord {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expires > now
    }
}

/// Where a builder keeps the generations of one image's lease.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Where the lease is, for messages ("SSM parameter /imgbake/lease/... in eu-west-1").
    fn describe(&self) -> String;
    /// Every generation there is now.
    async fn list(&self) -> Result<Vec<(u64, LeaseRecord)>, BuildError>;
    /// Create `generation` unless it exists; `false` when it does (another runner won it).
    async fn create(&self, generation: u64, record: &LeaseRecord) -> Result<bool, BuildError>;
    /// Overwrite `generation` (its holder renewing it, after checking it is still there and the
    /// newest).
    async fn renew(&self, generation: u64, record: &LeaseRecord) -> Result<(), BuildError>;
    /// Delete `generation`; one that is gone already is success.
    async fn delete(&self, generation: u64) -> Result<(), BuildError>;
}

/// The result of one attempt to take a lease.
#[derive(Debug)]
pub enum Attempt {
    /// Ours until released.
    Acquired(Held),
    /// Someone else's, as it says.
    Busy(LeaseRecord),
}

/// One try: take the lease if no generation is live.
pub async fn try_acquire(
    store: Arc<dyn LeaseStore>,
    holder: &str,
    build_id: &str,
    ttl: Duration,
) -> Result<Attempt, BuildError> {
    let now = Utc::now();
    let generations = store.list().await?;
    if let Some((_, r)) = generations.iter().filter(|(_, r)| r.live(now)).max_by_key(|(g, _)| *g) {
        return Ok(Attempt::Busy(r.clone()));
    }
    let next = generations.iter().map(|(g, _)| *g).max().unwrap_or(0) + 1;
    let record = LeaseRecord { holder: holder.into(), build_id: build_id.into(), expires: expiry(ttl) };
    let briefly =
        || LeaseRecord { holder: "another run (it just let go)".into(), build_id: "?".into(), expires: Utc::now() };
    if !store.create(next, &record).await? {
        let winner = store.list().await?.into_iter().find(|(g, _)| *g == next).map(|(_, r)| r);
        // Created and released between our two reads: busy for a moment, the next try sees it free.
        return Ok(Attempt::Busy(winner.unwrap_or_else(briefly)));
    }
    // Our list may have been stale (numbers restart once every generation is released): if another
    // generation is live now, back off — whoever holds it goes on.
    let now_there = store.list().await?;
    let now = Utc::now();
    if let Some((_, other)) = now_there.iter().find(|(g, r)| *g != next && r.live(now)) {
        let other = other.clone();
        if let Err(e) = store.delete(next).await {
            tracing::debug!("could not withdraw lease generation {next} of {}: {e}", store.describe());
        }
        return Ok(Attempt::Busy(other));
    }
    // Older generations are dead (expired or released): tidy them up; failing to is harmless.
    for (g, _) in now_there.iter().filter(|(g, _)| *g < next) {
        if let Err(e) = store.delete(*g).await {
            tracing::debug!("could not delete the dead lease generation {g} of {}: {e}", store.describe());
        }
    }
    Ok(Attempt::Acquired(Held::start(store, next, record, ttl)))
}

/// Take the lease, waiting (under `wait`) while another runner holds it; `busy` hears who does.
pub async fn acquire(
    store: Arc<dyn LeaseStore>,
    holder: &str,
    build_id: &str,
    ttl: Duration,
    wait: &Wait,
    busy: impl Fn(&LeaseRecord),
) -> Result<Held, BuildError> {
    let what = format!("the lease {}", store.describe());
    let r = wait::until(wait, &what, || {
        let store = store.clone();
        let busy = &busy;
        async move {
            match try_acquire(store, holder, build_id, ttl).await {
                Ok(Attempt::Acquired(h)) => Poll::Ready(h),
                Ok(Attempt::Busy(r)) => {
                    busy(&r);
                    Poll::Pending(format!("held by {} (build {}) until {}", r.holder, r.build_id, r.expires))
                }
                Err(e) => Poll::Failed(e),
            }
        }
    })
    .await;
    r.map_err(|e| match e {
        WaitError::Failed(e) => e,
        e @ WaitError::TimedOut { .. } => BuildError::new(
            ErrorKind::Timeout,
            format!(
                "{e}; another run is still building this image (it renews its lease while it lives): wait for it, or stop it — its lease lapses one time-to-live later"
            ),
        ),
    })
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1))
}

/// A lease we hold: renewed in the background (every third of its time to live) until released or
/// dropped. Dropping it without [`Held::release`] stops renewing, so it lapses after its time to live.
#[derive(Debug)]
#[must_use = "a lease is held until released; dropping it leaves it to lapse"]
pub struct Held {
    store: Arc<dyn LeaseStore>,
    generation: u64,
    renewal: tokio::task::JoinHandle<()>,
    lost: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for dyn LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Held {
    fn start(store: Arc<dyn LeaseStore>, generation: u64, record: LeaseRecord, ttl: Duration) -> Self {
        let renewing = store.clone();
        let lost = tokio_util::sync::CancellationToken::new();
        let losing = lost.clone();
        let renewal = tokio::spawn(async move {
            // A schedule, not a readiness wait: the record must be rewritten before it lapses.
            let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
            tick.tick().await;
            loop {
                tick.tick().await;
                // Renew only what is still ours: a renewal after another run took over (our
                // renewals failed for a whole time to live) would bring a second live generation.
                match renewing.list().await {
                    Ok(l) if l.iter().any(|(g, _)| *g > generation) || !l.iter().any(|(g, _)| *g == generation) => {
                        tracing::warn!("lost the lease {} to another run", renewing.describe());
                        losing.cancel();
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("could not check {}: {e}; retrying", renewing.describe());
                        continue;
                    }
                }
                let r = LeaseRecord { expires: expiry(ttl), ..record.clone() };
                if let Err(e) = renewing.renew(generation, &r).await {
                    tracing::warn!("could not renew {}: {e}; retrying", renewing.describe());
                }
            }
        });
        Held { store, generation, renewal, lost }
    }

    /// Whether another run took the lease over while we held it (our renewals failed for a whole
    /// time to live): it may be building the same image.
    pub fn lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// The generation held.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stop renewing and delete the lease, so a waiting runner goes on at once. The renewal task is
    /// waited for first, so a renewal in flight cannot bring the lease back after the delete.
    pub async fn release(mut self) -> Result<(), BuildError> {
        self.renewal.abort();
        let _ = (&mut self.renewal).await;
        if self.lost() {
            return Ok(()); // not ours any more: the next generation's holder owns what is there
        }
        self.store.delete(self.generation).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Who this process is, for lease records: host name and process id.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Memory(Mutex<BTreeMap<u64, LeaseRecord>>);

    #[async_trait]
    impl LeaseStore for Memory {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn list(&self) -> Result<Vec<(u64, LeaseRecord)>, BuildError> {
            Ok(self.0.lock().unwrap().iter().map(|(g, r)| (*g, r.clone())).collect())
        }
        async fn create(&self, generation: u64, record: &LeaseRecord) -> Result<bool, BuildError> {
            let mut m = self.0.lock().unwrap();
            if m.contains_key(&generation) {
                return Ok(false);
            }
            m.insert(generation, record.clone());
            Ok(true)
        }
        async fn renew(&self, generation: u64, record: &LeaseRecord) -> Result<(), BuildError> {
            self.0.lock().unwrap().insert(generation, record.clone());
            Ok(())
        }
        async fn delete(&self, generation: u64) -> Result<(), BuildError> {
            self.0.lock().unwrap().remove(&generation);
            Ok(())
        }
    }

    fn expired(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            build_id: "b-old".into(),
            expires: Utc::now() - chrono::Duration::hours(1),
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_by_the_next_generation_and_tidied() {
        let mem = Arc::new(Memory::default());
        mem.0.lock().unwrap().insert(3, expired("dead runner"));
        let store: Arc<dyn LeaseStore> = mem.clone();
        let Attempt::Acquired(h) = try_acquire(store, "me", "b-1", Duration::from_secs(60)).await.unwrap() else {
            panic!("an expired lease is free");
        };
        assert_eq!(h.generation(), 4);
        let left: Vec<u64> = mem.0.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![4], "the dead generation is removed");
    }

    /// A store whose first `list` answers an old view (another runner's read, or a lagging replica).
    struct Stale {
        real: Arc<Memory>,
        first: Mutex<Option<Vec<(u64, LeaseRecord)>>>,
    }

    #[async_trait]
    impl LeaseStore for Stale {
        fn describe(&self) -> String {
            "stale".into()
        }
        async fn list(&self) -> Result<Vec<(u64, LeaseRecord)>, BuildError> {
            let old = self.first.lock().unwrap().take();
            match old {
                Some(old) => Ok(old),
                None => self.real.list().await,
            }
        }
        async fn create(&self, generation: u64, record: &LeaseRecord) -> Result<bool, BuildError> {
            self.real.create(generation, record).await
        }
        async fn renew(&self, generation: u64, record: &LeaseRecord) -> Result<(), BuildError> {
            self.real.renew(generation, record).await
        }
        async fn delete(&self, generation: u64) -> Result<(), BuildError> {
            self.real.delete(generation).await
        }
    }

    fn live(holder: &str) -> LeaseRecord {
        LeaseRecord { holder: holder.into(), build_id: "b-live".into(), expires: expiry(Duration::from_secs(60)) }
    }

    #[tokio::test]
    async fn of_two_runners_that_find_a_lease_expired_one_wins() {
        // Both read generation 1 as expired; `a` created 2 first, so `b`'s create of 2 is refused.
        let real = Arc::new(Memory::default());
        real.0.lock().unwrap().insert(1, expired("dead runner"));
        real.0.lock().unwrap().insert(2, live("a"));
        let store = Arc::new(Stale { real: real.clone(), first: Mutex::new(Some(vec![(1, expired("dead runner"))])) });
        match try_acquire(store, "b", "b-b", Duration::from_secs(60)).await.unwrap() {
            Attempt::Busy(r) => assert_eq!(r.holder, "a"),
            Attempt::Acquired(_) => panic!("the loser must not hold the lease"),
        }
        assert_eq!(real.0.lock().unwrap()[&2].holder, "a", "the winner's record is untouched");
    }

    #[tokio::test]
    async fn a_runner_with_a_stale_view_backs_off_from_a_live_lease() {
        // `b` saw nothing (every generation released a moment ago), so it creates generation 1 —
        // while `a` holds generation 5. `b` must withdraw.
        let real = Arc::new(Memory::default());
        real.0.lock().unwrap().insert(5, live("a"));
        let store = Arc::new(Stale { real: real.clone(), first: Mutex::new(Some(Vec::new())) });
        match try_acquire(store, "b", "b-b", Duration::from_secs(60)).await.unwrap() {
            Attempt::Busy(r) => assert_eq!(r.holder, "a"),
            Attempt::Acquired(_) => panic!("two holders"),
        }
        let left: Vec<u64> = real.0.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![5], "b withdrew its generation and left a's alone");
    }

    #[tokio::test]
    async fn a_holder_whose_lease_was_taken_over_stops_renewing_and_leaves_it() {
        let mem = Arc::new(Memory::default());
        let store: Arc<dyn LeaseStore> = mem.clone();
        let ttl = Duration::from_millis(300);
        let Attempt::Acquired(h) = try_acquire(store.clone(), "a", "b-a", ttl).await.unwrap() else { panic!() };
        // Another run took over (a's renewals had failed for a whole time to live).
        mem.0.lock().unwrap().clear();
        mem.0.lock().unwrap().insert(h.generation() + 1, live("b"));
        let noticed = wait::until(
            &Wait::new(Duration::from_secs(5)).interval(Duration::from_millis(20), Duration::from_millis(50)),
            "loss noticed",
            || {
                let lost = h.lost();
                async move { if lost { Poll::<(), BuildError>::Ready(()) } else { Poll::Pending("held".into()) } }
            },
        )
        .await;
        assert!(noticed.is_ok(), "the holder never noticed");
        h.release().await.unwrap();
        let left: Vec<(u64, String)> = mem.0.lock().unwrap().iter().map(|(g, r)| (*g, r.holder.clone())).collect();
        assert_eq!(left, vec![(2, "b".to_string())], "a neither renewed its old generation nor deleted b's");
    }

    #[tokio::test]
    async fn a_holder_renews_and_a_waiter_goes_on_when_it_releases() {
        let store: Arc<dyn LeaseStore> = Arc::new(Memory::default());
        let ttl = Duration::from_millis(600);
        let Attempt::Acquired(h) = try_acquire(store.clone(), "a", "b-a", ttl).await.unwrap() else { panic!() };
        let first = store.list().await.unwrap()[0].1.expires;
        // Renewal moves the expiry forward while the holder lives.
        let moved = wait::until(
            &Wait::new(Duration::from_secs(5)).interval(Duration::from_millis(50), Duration::from_millis(100)),
            "renewal",
            || {
                let store = store.clone();
                async move {
                    match store.list().await {
                        Ok(l) if l.first().is_some_and(|(_, r)| r.expires > first) => Poll::<(), BuildError>::Ready(()),
                        _ => Poll::Pending("not yet".into()),
                    }
                }
            },
        )
        .await;
        assert!(moved.is_ok(), "the lease was never renewed");
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                let w =
                    Wait::new(Duration::from_secs(10)).interval(Duration::from_millis(20), Duration::from_millis(50));
                acquire(store, "b", "b-b", ttl, &w, |_| {}).await
            })
        };
        h.release().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert_eq!(store.list().await.unwrap()[0].1.holder, "b");
        got.release().await.unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }
}
