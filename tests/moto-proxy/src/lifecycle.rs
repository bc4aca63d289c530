//! The states moto skips: instances `pending`, `stopping`, `shutting-down`, images `pending` (and
//! optionally `failed`), each held for a configured time after the call that started it. Every
//! transition is logged with the moment it really happened and the moment a client first saw it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rewrite::Shown;

/// How long each in-between state lasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delays {
    /// A new instance stays `pending` this long after RunInstances.
    #[serde(with = "secs")]
    pub instance_pending: Duration,
    /// An instance stays `stopping` this long after StopInstances.
    #[serde(with = "secs")]
    pub instance_stopping: Duration,
    /// An instance stays `shutting-down` this long after TerminateInstances.
    #[serde(with = "secs")]
    pub instance_shutting_down: Duration,
    /// A new AMI (CreateImage, CopyImage) stays `pending` this long.
    #[serde(with = "secs")]
    pub image_pending: Duration,
}

impl Delays {
    /// The same delay for every state.
    pub fn all(d: Duration) -> Self {
        Delays { instance_pending: d, instance_stopping: d, instance_shutting_down: d, image_pending: d }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// What new AMIs turn into once their pending time is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageOutcome {
    /// `available` (what moto says).
    #[default]
    Available,
    /// `failed`, for good (a terminal state a waiter must stop on).
    Failed,
}

/// One state change of one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// `instance` or `image`.
    pub kind: String,
    /// The resource id.
    pub id: String,
    /// The region it is in.
    pub region: String,
    /// The state it changed from (`pending`, `stopping`...).
    pub from: String,
    /// The state it changed to (`running`, `stopped`, `terminated`, `available`, `failed`).
    pub to: String,
    /// When it really changed (Unix milliseconds).
    pub at_unix_ms: u64,
    /// When a client first got an answer showing the new state (Unix milliseconds).
    pub noticed_unix_ms: Option<u64>,
}

impl Transition {
    /// How long after the change a client saw it.
    pub fn lateness(&self) -> Option<Duration> {
        self.noticed_unix_ms.map(|n| Duration::from_millis(n.saturating_sub(self.at_unix_ms)))
    }
}

#[derive(Debug)]
struct Hold {
    /// What moto already says (`running`, `stopped`, `terminated`, `available`).
    real: &'static str,
    /// What the proxy shows until `until`.
    shown: Shown,
    /// What it shows after `until` instead of `real`, if anything (a failed image).
    after: Option<Shown>,
    until: Instant,
    /// Index into the transition log.
    transition: usize,
}

/// Everything the proxy knows about resources' lifecycles.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// The delays for new holds.
    pub delays: Delays,
    /// What new images become.
    pub image_outcome: ImageOutcome,
    holds: HashMap<String, Hold>,
    transitions: Vec<Transition>,
}

fn unix_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let wall = if at >= now { wall + (at - now) } else { wall.saturating_sub(now - at) };
    wall.as_millis() as u64
}

impl Lifecycle {
    /// `what` is (kind, id, region).
    fn hold(
        &mut self,
        (kind, id, region): (&str, &str, &str),
        real: &'static str,
        shown: Shown,
        after: Option<Shown>,
        d: Duration,
    ) {
        let now = Instant::now();
        let until = now + d;
        let to = after.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| real.to_string());
        self.transitions.push(Transition {
            kind: kind.into(),
            id: id.into(),
            region: region.into(),
            from: shown.name.clone(),
            to,
            at_unix_ms: unix_ms(until),
            noticed_unix_ms: None,
        });
        let transition = self.transitions.len() - 1;
        self.holds.insert(id.to_string(), Hold { real, shown, after, until, transition });
    }

    /// RunInstances created `id`.
    pub fn launched(&mut self, id: &str, region: &str) {
        let d = self.delays.instance_pending;
        self.hold(("instance", id, region), "running", Shown { code: Some(0), name: "pending".into() }, None, d);
    }

    /// StopInstances was called on `id`.
    pub fn stopping(&mut self, id: &str, region: &str) {
        let d = self.delays.instance_stopping;
        self.hold(("instance", id, region), "stopped", Shown { code: Some(64), name: "stopping".into() }, None, d);
    }

    /// TerminateInstances was called on `id`.
    pub fn terminating(&mut self, id: &str, region: &str) {
        let d = self.delays.instance_shutting_down;
        let shown = Shown { code: Some(32), name: "shutting-down".into() };
        self.hold(("instance", id, region), "terminated", shown, None, d);
    }

    /// CreateImage or CopyImage created `id`.
    pub fn image_created(&mut self, id: &str, region: &str) {
        let d = self.delays.image_pending;
        let after = match self.image_outcome {
            ImageOutcome::Available => None,
            ImageOutcome::Failed => Some(Shown { code: None, name: "failed".into() }),
        };
        self.hold(("image", id, region), "available", Shown { code: None, name: "pending".into() }, after, d);
    }

    /// The state to show for `id` whose real state is `real`, right now; records the first time a
    /// finished transition is shown.
    pub fn show(&mut self, id: &str, real: &str) -> Option<Shown> {
        let hold = self.holds.get(id)?;
        if hold.real != real {
            // moto moved on (started again, deleted...): the hold no longer applies.
            return None;
        }
        let now = Instant::now();
        if now < hold.until {
            return Some(hold.shown.clone());
        }
        let t = &mut self.transitions[hold.transition];
        if t.noticed_unix_ms.is_none() {
            t.noticed_unix_ms = Some(unix_ms(now));
        }
        hold.after.clone()
    }

    /// The transition log so far.
    pub fn transitions(&self) -> Vec<Transition> {
        self.transitions.clone()
    }

    /// Forget every hold and transition.
    pub fn clear(&mut self) {
        self.holds.clear();
        self.transitions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_then_notices_once() {
        let mut l = Lifecycle { delays: Delays::all(Duration::from_millis(30)), ..Default::default() };
        l.launched("i-1", "r");
        assert_eq!(l.show("i-1", "running").unwrap().name, "pending");
        assert_eq!(l.show("i-2", "running"), None);
        // moto says stopped: not what the hold is about.
        assert_eq!(l.show("i-1", "stopped"), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(l.show("i-1", "running"), None);
        let t = l.transitions();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from.as_str(), t[0].to.as_str()), ("pending", "running"));
        let first = t[0].noticed_unix_ms.unwrap();
        assert!(first >= t[0].at_unix_ms);
        std::thread::sleep(Duration::from_millis(5));
        l.show("i-1", "running");
        assert_eq!(l.transitions()[0].noticed_unix_ms, Some(first), "only the first sighting counts");
    }

    #[test]
    fn failed_images_stay_failed() {
        let mut l = Lifecycle { image_outcome: ImageOutcome::Failed, ..Default::default() };
        l.image_created("ami-1", "r");
        assert_eq!(l.show("ami-1", "available").unwrap().name, "failed");
        assert_eq!(l.transitions()[0].to, "failed");
    }
}
