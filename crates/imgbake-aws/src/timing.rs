//! How long EC2 state changes take, learned from earlier builds, so a wait can sleep until shortly
//! before a change is due and then poll tightly (see [`crate::schedule`]) instead of polling all
//! along.
//!
//! A change is keyed by region, instance type, what changes ([`Change`]) and, for images, a disk
//! size bucket ([`Key`]). Each wait that ends in the wanted state records when the change happened
//! as an interval ([`Seen`]): after the last poll that still showed the old state, by the poll that
//! showed the new one. Sources, newest knowledge first:
//!
//! - a small local history file (default `<state_dir>/aws-waits.json`, next to the cleanup
//!   journals; [`WaitHistory`]), the last [`KEEP`] intervals per key;
//! - the `imgbake:waits` tag on the AMIs imgbake made ([`tag_value`]), read when `plan` lists the
//!   tree's artifacts: a fresh CI runner with no local history learns from the previous artifact.
//!
//! Only durations, region, instance type and disk sizes are kept: nothing secret.
//!
//! ```
//! use std::time::Duration;
//! use imgbake_aws::timing::{expect, Seen};
//!
//! // Two builds agree that the instance ran between 19.8 s and 20.2 s after RunInstances.
//! let e = expect(&[Seen::new(18.9, 20.2), Seen::new(19.8, 21.0)]).unwrap();
//! assert_eq!((e.from, e.to), (Duration::from_secs_f64(19.8), Duration::from_secs_f64(20.2)));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Intervals kept per key in the history file.
pub const KEEP: usize = 8;
/// Intervals an estimate looks at (the newest).
const RECENT: usize = 6;
/// The history file's name in the state directory.
pub const FILE_NAME: &str = "aws-waits.json";
/// The AMI tag carrying the build's observed durations.
pub const TAG: &str = "imgbake:waits";
/// No EC2 change is learned beyond this (a bogus value must not push polls out for days).
const LONGEST: f64 = 7.0 * 24.0 * 3600.0;

/// What changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// RunInstances → `running`.
    Running,
    /// StopInstances → `stopped`.
    Stopped,
    /// CreateImage → `available`.
    Available,
    /// TerminateInstances → `terminated`.
    Terminated,
    /// CopyImage → `available` in the destination region (keyed by it): copies take longer than
    /// captures and must not blur their timing.
    Copied,
}

impl Change {
    /// Every kind, in build order.
    pub const ALL: [Change; 5] =
        [Change::Running, Change::Stopped, Change::Available, Change::Terminated, Change::Copied];

    /// The state waited for (also the name in keys and tags).
    pub fn state(self) -> &'static str {
        match self {
            Change::Running => "running",
            Change::Stopped => "stopped",
            Change::Available => "available",
            Change::Terminated => "terminated",
            Change::Copied => "copied",
        }
    }

    fn parse(s: &str) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.state() == s)
    }
}

/// What a change's duration depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The region.
    pub region: String,
    /// The build machine's instance type (`unknown` when not known, e.g. `imgbake clean`).
    pub instance_type: String,
    /// What changes.
    pub change: Change,
    /// For images: the disks' total size rounded up to a power of two (GiB); `None`: not known.
    pub disk_gib: Option<u32>,
}

impl Key {
    /// A key; `disk_gib` is bucketed (powers of two from 8) and kept for images only.
    pub fn new(region: &str, instance_type: &str, change: Change, disk_gib: Option<u32>) -> Key {
        let disk_gib = disk_gib
            .filter(|_| matches!(change, Change::Available | Change::Copied))
            .map(|g| g.max(8).next_power_of_two());
        Key { region: region.into(), instance_type: instance_type.into(), change, disk_gib }
    }

    /// The key's text in the history file: `eu-west-1 t3.micro available 16GiB`.
    pub fn id(&self) -> String {
        let disk = self.disk_gib.map(|g| format!(" {g}GiB")).unwrap_or_default();
        format!("{} {} {}{disk}", self.region, self.instance_type, self.change.state())
    }
}

/// One observed change: it happened after `lo` and by `hi` seconds after the call that started it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The last poll that still showed the old state (0: none did).
    pub lo: f64,
    /// The poll that showed the new state.
    pub hi: f64,
}

impl Seen {
    /// An interval in seconds.
    pub fn new(lo: f64, hi: f64) -> Seen {
        Seen { lo, hi }
    }

    /// From the waiter's times.
    pub fn between(lo: Duration, hi: Duration) -> Seen {
        Seen { lo: lo.as_secs_f64(), hi: hi.as_secs_f64() }
    }

    /// Sane: finite, ordered, not negative, not absurdly long.
    fn valid(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite() && 0.0 <= self.lo && self.lo <= self.hi && self.hi <= LONGEST
    }

    fn mid(&self) -> f64 {
        (self.lo + self.hi) / 2.0
    }
}

/// Where the next change is expected: between `from` and `to` after the call that starts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expect {
    /// Not before.
    pub from: Duration,
    /// Most likely by.
    pub to: Duration,
}

impl Expect {
    fn secs(from: f64, to: f64) -> Expect {
        Expect { from: Duration::from_secs_f64(from.max(0.0)), to: Duration::from_secs_f64(to.max(from).max(0.0)) }
    }
}

/// Where the next change is expected, from earlier observations (oldest first); `None` without any.
///
/// While the newest intervals agree (they overlap), the change lies where they all overlap: each
/// build narrows it. When they do not (the duration varies), the median of their midpoints, give or
/// take 1.5 × their median absolute deviation (but no less than their typical half-width).
pub fn expect(seen: &[Seen]) -> Option<Expect> {
    let recent: Vec<Seen> = seen.iter().filter(|s| s.valid()).copied().collect();
    let recent = &recent[recent.len().saturating_sub(RECENT)..];
    let newest = recent.last()?;
    let e = estimate(recent, newest)?;
    if newest.lo == 0.0 && newest.hi > 0.0 {
        // Done by the first look: the change may have got faster than what was learned, and the
        // overlap alone would keep the old start for good. Start a little earlier (a tenth, at least
        // half a second): a change that did not get faster shows its old state there, a real lower
        // bound again; one that did is followed down build by build.
        let from = e.from.as_secs_f64();
        return Some(Expect::secs(from - (from / 10.0).max(0.5), e.to.as_secs_f64()));
    }
    Some(e)
}

fn estimate(recent: &[Seen], newest: &Seen) -> Option<Expect> {
    let (mut lo, mut hi, mut agree) = (newest.lo, newest.hi, 1);
    for s in recent.iter().rev().skip(1) {
        let (l, h) = (lo.max(s.lo), hi.min(s.hi));
        if l > h {
            break;
        }
        (lo, hi, agree) = (l, h, agree + 1);
    }
    if agree >= 2 || recent.len() == 1 {
        return Some(Expect::secs(lo, hi));
    }
    let mids: Vec<f64> = recent.iter().map(Seen::mid).collect();
    let m = median(mids.clone());
    let mad = median(mids.iter().map(|x| (x - m).abs()).collect());
    let half = median(recent.iter().map(|s| (s.hi - s.lo) / 2.0).collect());
    let spread = (1.5 * mad).max(half);
    Some(Expect::secs(m - spread, m + spread))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Recent intervals per key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Key id ([`Key::id`]) → intervals, oldest first.
    #[serde(default)]
    pub waits: BTreeMap<String, Vec<Seen>>,
}

/// Why the history file could not be used (a build goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    /// Reading it.
    #[error("cannot read the wait history {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its content.
    #[error("the wait history {path} is not valid (it is rewritten from scratch): {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Writing it.
    #[error("cannot write the wait history {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl History {
    /// Add an observation (invalid ones are dropped); keeps the newest [`KEEP`].
    pub fn add(&mut self, key: &Key, seen: Seen) {
        if !seen.valid() {
            return;
        }
        let v = self.waits.entry(key.id()).or_default();
        v.push(seen);
        let extra = v.len().saturating_sub(KEEP);
        v.drain(..extra);
    }

    /// The intervals of `key`, oldest first.
    pub fn get(&self, key: &Key) -> &[Seen] {
        self.waits.get(&key.id()).map(Vec::as_slice).unwrap_or_default()
    }

    /// The file's history; empty when there is no file yet.
    pub async fn load(path: &Path) -> Result<History, TimingError> {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
            Err(source) => return Err(TimingError::Read { path: path.into(), source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| TimingError::Parse { path: path.into(), source })
    }

    /// Write it whole (a temporary file renamed over the old one, so a reader never sees half).
    pub async fn save(&self, path: &Path) -> Result<(), TimingError> {
        let err = |source| TimingError::Write { path: path.into(), source };
        let text = serde_json::to_vec_pretty(&History { version: 1, waits: self.waits.clone() })
            .map_err(|e| err(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(err)?;
        }
        let tmp = path.with_extension(format!("json.{}-{}.tmp", std::process::id(), uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, text).await.map_err(err)?;
        if let Err(e) = tokio::fs::rename(&tmp, path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err(e));
        }
        Ok(())
    }
}

/// The `imgbake:waits` tag value: `v1 t3.micro 16GiB running=19.80-20.20 available=60.9-61.3 ...`
/// (`-` for an unknown disk size). Newest interval per change in `history` for these keys.
pub fn tag_value(history: &History, region: &str, instance_type: &str, disk_gib: Option<u32>) -> Option<String> {
    let key = |c| Key::new(region, instance_type, c, disk_gib);
    let parts: Vec<String> = Change::ALL
        .into_iter()
        .filter_map(|c| history.get(&key(c)).last().map(|s| format!("{}={:.2}-{:.2}", c.state(), s.lo, s.hi)))
        .collect();
    if parts.is_empty() || instance_type.contains(char::is_whitespace) {
        return None;
    }
    let disk = key(Change::Available).disk_gib.map(|g| format!("{g}GiB")).unwrap_or_else(|| "-".into());
    Some(format!("v1 {instance_type} {disk} {}", parts.join(" ")))
}

/// The observations a tag value carries, for an AMI in `region`; what does not parse is skipped.
pub fn parse_tag(region: &str, value: &str) -> Vec<(Key, Seen)> {
    let mut words = value.split_whitespace();
    let (Some("v1"), Some(instance_type), Some(disk)) = (words.next(), words.next(), words.next()) else {
        return Vec::new();
    };
    let disk_gib = disk.strip_suffix("GiB").and_then(|g| g.parse().ok());
    words
        .filter_map(|w| {
            let (change, range) = w.split_once('=')?;
            let (lo, hi) = range.split_once('-')?;
            let seen = Seen::new(lo.parse().ok()?, hi.parse().ok()?);
            let change = Change::parse(change)?;
            seen.valid().then(|| (Key::new(region, instance_type, change, disk_gib), seen))
        })
        .collect()
}

/// Where the builder keeps its history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WaitHistory {
    /// `<state_dir>/aws-waits.json` of the tree being built (the default).
    #[default]
    StateDir,
    /// This file, for every tree.
    File(PathBuf),
    /// Learn nothing: every wait polls with the plain backoff.
    Off,
}

/// The builder's knowledge of durations: a history per file (loaded on first use), and what the
/// artifacts' tags taught (used for keys no local history knows yet).
#[derive(Debug, Default)]
pub struct Timing {
    files: Mutex<HashMap<PathBuf, History>>,
    tagged: Mutex<History>,
    /// One save at a time, each writing the state as it is then: parallel builds of this process
    /// never replace a newer file with an older snapshot.
    saving: tokio::sync::Mutex<()>,
}

impl Timing {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, History>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tagged(&self) -> std::sync::MutexGuard<'_, History> {
        self.tagged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Load `file` once; a broken one is reported and replaced by an empty history.
    async fn ensure(&self, file: &Path) -> Option<TimingError> {
        if self.files().contains_key(file) {
            return None;
        }
        let (h, err) = match History::load(file).await {
            Ok(h) => (h, None),
            Err(e) => (History::default(), Some(e)),
        };
        self.files().entry(file.to_path_buf()).or_insert(h);
        err
    }

    /// Where a change of `key` is expected: the local history's estimate, else the tags'. An
    /// unreadable history is returned as a warning.
    pub async fn expect(&self, file: &Path, key: &Key) -> (Option<Expect>, Option<TimingError>) {
        let warning = self.ensure(file).await;
        let local = self.files().get(file).and_then(|h| expect(h.get(key)));
        (local.or_else(|| expect(self.tagged().get(key))), warning)
    }

    /// Record a change and write the history file.
    pub async fn record(&self, file: &Path, key: &Key, seen: Seen) -> Result<(), TimingError> {
        let _ = self.ensure(file).await;
        self.files().entry(file.to_path_buf()).or_default().add(key, seen);
        let _saving = self.saving.lock().await;
        let snapshot = self.files().get(file).cloned().unwrap_or_default();
        snapshot.save(file).await
    }

    /// Learn from an artifact's `imgbake:waits` tag (AMI in `region`).
    pub fn learn_tag(&self, region: &str, value: &str) {
        let mut t = self.tagged();
        for (key, seen) in parse_tag(region, value) {
            if !t.get(&key).contains(&seen) {
                t.add(&key, seen);
            }
        }
    }

    /// The tag value for an AMI built in `region` with this machine (see [`tag_value`]).
    pub fn tag_for(&self, file: &Path, region: &str, instance_type: &str, disk_gib: Option<u32>) -> Option<String> {
        self.files().get(file).and_then(|h| tag_value(h, region, instance_type, disk_gib))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(e: Expect) -> (f64, f64) {
        ((e.from.as_secs_f64() * 100.0).round() / 100.0, (e.to.as_secs_f64() * 100.0).round() / 100.0)
    }

    #[test]
    fn no_history_expects_nothing() {
        assert_eq!(expect(&[]), None);
        assert_eq!(expect(&[Seen::new(5.0, 1.0), Seen::new(f64::NAN, 2.0)]), None, "invalid ones are ignored");
    }

    #[test]
    fn agreeing_intervals_narrow_down() {
        assert_eq!(secs(expect(&[Seen::new(17.0, 20.5)]).unwrap()), (17.0, 20.5));
        let e = expect(&[Seen::new(17.0, 20.5), Seen::new(19.6, 20.4), Seen::new(19.9, 20.9)]).unwrap();
        assert_eq!(secs(e), (19.9, 20.4));
    }

    #[test]
    fn a_change_done_by_the_first_look_is_looked_for_earlier_next_time() {
        // Learned ~20 s; the change now takes 12 s, and the first look (at 19.9 s) already sees it:
        // each build looks a tenth earlier until a look sees the old state.
        let mut seen = vec![Seen::new(19.8, 20.1), Seen::new(19.9, 20.2), Seen::new(0.0, 19.9)];
        let (mut from, to) = secs(expect(&seen).unwrap());
        assert!(from < 19.9 * 0.95 && to >= 19.9, "{from}..{to}");
        for _ in 0..20 {
            if from < 12.0 {
                break;
            }
            seen.push(Seen::new(0.0, from));
            from = secs(expect(&seen).unwrap()).0;
        }
        assert!(from < 12.0, "followed the change down to {from}");
        // Then a poll sees the old state at 11 s and the new one at 12.5 s: the window follows.
        let seen = [Seen::new(19.8, 20.1), Seen::new(0.0, 19.9), Seen::new(11.0, 12.5)];
        let (from, to) = secs(expect(&seen).unwrap());
        assert!((11.0..=12.5).contains(&from) && to <= 12.5, "{from}..{to}");
    }

    #[test]
    fn varying_durations_use_median_and_spread() {
        // No overlap between the newest two: statistics over the recent ones.
        let seen = [Seen::new(29.0, 31.0), Seen::new(39.0, 41.0), Seen::new(34.0, 36.0), Seen::new(44.0, 46.0)];
        let (from, to) = secs(expect(&seen).unwrap());
        // midpoints 30, 40, 35, 45: median 37.5, MAD 5 → ±7.5.
        assert_eq!((from, to), (30.0, 45.0));
        // One outlier does not drag the estimate along.
        let seen = [Seen::new(19.9, 20.1), Seen::new(19.8, 20.2), Seen::new(19.9, 20.3), Seen::new(90.0, 95.0)];
        let (from, to) = secs(expect(&seen).unwrap());
        assert!(from > 15.0 && to < 30.0, "{from}..{to}");
    }

    #[test]
    fn history_keeps_the_newest_per_key() {
        let k = Key::new("eu-west-1", "t3.micro", Change::Running, Some(100));
        assert_eq!(k.disk_gib, None, "disk size matters for images only");
        let mut h = History::default();
        for i in 0..12 {
            h.add(&k, Seen::new(i as f64, i as f64 + 1.0));
        }
        h.add(&k, Seen::new(3.0, 1.0));
        assert_eq!(h.get(&k).len(), KEEP);
        assert_eq!(h.get(&k)[0], Seen::new(4.0, 5.0));
        let img = Key::new("eu-west-1", "t3.micro", Change::Available, Some(20));
        assert_eq!(img.id(), "eu-west-1 t3.micro available 32GiB");
    }

    #[test]
    fn tags_round_trip() {
        let mut h = History::default();
        let key = |c| Key::new("eu-west-1", "m5.large", c, Some(8));
        h.add(&key(Change::Running), Seen::new(19.8, 20.25));
        h.add(&key(Change::Available), Seen::new(60.5, 61.0));
        let v = tag_value(&h, "eu-west-1", "m5.large", Some(8)).unwrap();
        assert_eq!(v, "v1 m5.large 8GiB running=19.80-20.25 available=60.50-61.00");
        assert!(v.len() <= 256, "EC2 tag values hold 256 characters");
        let back = parse_tag("eu-west-1", &v);
        assert_eq!(
            back,
            vec![(key(Change::Running), Seen::new(19.8, 20.25)), (key(Change::Available), Seen::new(60.5, 61.0))]
        );
        assert!(parse_tag("r", "v2 what ever").is_empty());
        assert!(parse_tag("r", "v1 t3.micro - running=a-b stopped=3-1 bogus").is_empty());
        assert_eq!(tag_value(&History::default(), "r", "t3.micro", None), None);
    }

    #[tokio::test]
    async fn the_file_round_trips_and_a_broken_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE_NAME);
        let t = Timing::default();
        let k = Key::new("r", "t", Change::Stopped, None);
        assert_eq!(t.expect(&path, &k).await.0, None);
        t.record(&path, &k, Seen::new(9.5, 10.5)).await.unwrap();
        let fresh = Timing::default();
        assert_eq!(secs(fresh.expect(&path, &k).await.0.unwrap()), (9.5, 10.5));
        std::fs::write(&path, "{not json").unwrap();
        let (e, warning) = Timing::default().expect(&path, &k).await;
        assert_eq!(e, None);
        assert!(matches!(warning, Some(TimingError::Parse { .. })));
    }

    #[test]
    fn tags_teach_what_the_local_history_lacks() {
        let t = Timing::default();
        t.learn_tag("eu-west-1", "v1 t3.micro - stopped=9.00-10.00");
        t.learn_tag("eu-west-1", "v1 t3.micro - stopped=9.00-10.00");
        let k = Key::new("eu-west-1", "t3.micro", Change::Stopped, None);
        assert_eq!(t.tagged().get(&k).len(), 1, "the same artifact listed twice counts once");
    }
}
