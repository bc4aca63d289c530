//! When a wait polls: around the moment the change is expected when earlier builds taught it
//! ([`crate::timing::expect`]), else a check right away and a backoff.
//!
//! With an expectation `from..to` (seconds after the call that started the change) the wait sleeps
//! through `from`, polls every `tight` (the window split in [`SPLITS`], at least [`MIN_TIGHT`], at
//! most the polling cap) up to just after `to`, then backs off from `tight` to the cap like a wait
//! without history. A sharp expectation costs two polls: one just before, one just after. Times are measured from the call, so a wait that starts late
//! (the process was busy) polls at once for the moments already past.
//!
//! ```
//! use std::time::Duration;
//! use imgbake_aws::Polling;
//! use imgbake_aws::schedule::Schedule;
//! use imgbake_aws::timing::Expect;
//!
//! let e = Expect { from: Duration::from_secs(20), to: Duration::from_secs(20) };
//! let mut s = Schedule::warm(Polling::default(), e, false);
//! // Sleep until just before 20 s, one check there, one right after.
//! assert_eq!(s.pause(Duration::ZERO), Duration::from_millis(19_850));
//! assert_eq!(s.pause(Duration::from_millis(19_850)), Duration::from_millis(200));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use imgbake_core::wait::Wait;

use crate::timing::Expect;
use crate::waiters::Polling;

/// The shortest pause of the tight phase: EC2 answers in tens of milliseconds, and a change seen
/// 0.1 s late on average is as good as at once for a build.
pub const MIN_TIGHT: Duration = Duration::from_millis(200);
/// How many pauses the expected window is split into: more means less lateness, more calls.
pub const SPLITS: u32 = 3;
/// The last tight poll comes this long after the latest expected moment (the calls' latency varies).
const SETTLE: Duration = Duration::from_millis(50);

/// The pauses of one wait.
pub struct Schedule {
    /// Planned poll moments (since the call), earliest first.
    planned: VecDeque<Duration>,
    /// Pauses once the plan is used up.
    then: Box<dyn Iterator<Item = Duration> + Send>,
    /// Whether this schedule came from history (for the record and events).
    learned: bool,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule").field("planned", &self.planned).field("learned", &self.learned).finish()
    }
}

fn backoff(initial: Duration, max: Duration, jitter: bool) -> Box<dyn Iterator<Item = Duration> + Send> {
    let w = Wait { jitter, ..Wait::default() }.interval(initial, max);
    Box::new(w.pauses())
}

impl Schedule {
    /// No history: one check right away (the change may be done already, and one call is cheap),
    /// then `polling`'s backoff.
    pub fn cold(polling: Polling, jitter: bool) -> Schedule {
        Schedule {
            planned: VecDeque::from([Duration::ZERO]),
            then: backoff(polling.initial, polling.max, jitter),
            learned: false,
        }
    }

    /// Around the expected window `e`, then a backoff from the tight pause up to `polling.max`.
    pub fn warm(polling: Polling, e: Expect, jitter: bool) -> Schedule {
        // The window runs from `from` to just after `to`, split in steps anchored at its end; a poll
        // that still sees the old state narrows the change's start for the next build.
        let end = e.to + SETTLE;
        let span = end.saturating_sub(e.from);
        let cap = polling.max.max(MIN_TIGHT);
        let tight = (span / SPLITS).clamp(MIN_TIGHT, cap);
        // (Less a hair: `span / SPLITS` rounds down to whole nanoseconds.)
        let steps = ((span.as_secs_f64() / tight.as_secs_f64() - 1e-6).ceil() as u32).max(1);
        // A poll right at `from` is almost surely still the old state: worth a call only when the
        // window is one step, to keep `from` pinned build after build.
        let first = if steps == 1 { 1 } else { steps - 1 };
        let planned = (0..=first).rev().map(|k| end.saturating_sub(tight * k)).collect();
        Schedule { planned, then: backoff(tight, cap, jitter), learned: true }
    }

    /// Whether the plan came from history.
    pub fn learned(&self) -> bool {
        self.learned
    }

    /// The pause before the next poll, `elapsed` after the call that started the change. Planned
    /// moments already past collapse into one poll now.
    pub fn pause(&mut self, elapsed: Duration) -> Duration {
        let mut next = self.planned.pop_front();
        while let (Some(at), Some(following)) = (next, self.planned.front())
            && at <= elapsed
            && *following <= elapsed
        {
            next = self.planned.pop_front();
        }
        match next {
            Some(at) => at.saturating_sub(elapsed),
            None => self.then.next().unwrap_or(MIN_TIGHT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Poll moments when every poll answers at once and the change never comes, up to `until`.
    fn moments(mut s: Schedule, until: Duration) -> Vec<Duration> {
        let mut t = Duration::ZERO;
        let mut out = Vec::new();
        loop {
            t += s.pause(t);
            if t > until {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn cold_checks_at_once_then_backs_off() {
        let p = Polling { initial: ms(1000), max: ms(3500) };
        let m = moments(Schedule::cold(p, false), Duration::from_secs(20));
        let first: Vec<u128> = m[..3].iter().map(Duration::as_millis).collect();
        assert_eq!(first, [0, 1000, 2600]);
        assert!(m.windows(2).all(|w| w[1] - w[0] <= ms(3500)));
        assert!(m.len() <= 9, "{m:?}");
    }

    #[test]
    fn a_sharp_expectation_costs_two_polls() {
        let e = Expect { from: ms(20_000), to: ms(20_100) };
        let m = moments(Schedule::warm(Polling::default(), e, false), ms(20_150));
        assert_eq!(m, vec![ms(19_950), ms(20_150)]);
    }

    #[test]
    fn a_wide_expectation_is_split_and_bounded_by_the_cap() {
        // From one cold build: somewhere in 17..20.5 s.
        let e = Expect { from: ms(17_000), to: ms(20_500) };
        let m = moments(Schedule::warm(Polling::default(), e, false), ms(20_550));
        assert_eq!(m.len() as u32, SPLITS, "{m:?}");
        assert!(m[0] > ms(17_000) && *m.last().unwrap() == ms(20_550), "{m:?}");
        // A very uncertain one never pauses longer than the cap.
        let e = Expect { from: ms(60_000), to: ms(600_000) };
        let m = moments(Schedule::warm(Polling::default(), e, false), ms(600_050));
        assert!(m.windows(2).all(|w| w[1] - w[0] <= ms(3500)), "{m:?}");
    }

    #[test]
    fn after_the_window_it_backs_off_from_the_tight_pause() {
        let e = Expect { from: ms(10_000), to: ms(10_000) };
        let m = moments(Schedule::warm(Polling::default(), e, false), Duration::from_secs(30));
        let after: Vec<_> = m.windows(2).map(|w| w[1] - w[0]).skip(1).collect();
        assert_eq!(after[0], MIN_TIGHT);
        assert!(after.windows(2).all(|w| w[0] <= w[1]) && *after.last().unwrap() <= ms(3500), "{after:?}");
    }

    #[test]
    fn an_expectation_of_at_once_polls_at_once() {
        let e = Expect { from: ms(0), to: ms(30) };
        let mut s = Schedule::warm(Polling::default(), e, false);
        assert_eq!(s.pause(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn moments_already_past_collapse_into_one_poll() {
        let e = Expect { from: ms(5_000), to: ms(8_000) };
        let mut s = Schedule::warm(Polling::default(), e, false);
        assert_eq!(s.pause(ms(7_000)), Duration::ZERO);
        let next = s.pause(ms(7_000));
        assert!(next > Duration::ZERO && next <= ms(1_050), "{next:?}");
    }
}
