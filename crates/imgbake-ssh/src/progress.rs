//! Transfer progress events, throttled so a fast transfer does not flood the event stream.

use std::time::Duration;

use imgbake_core::event::{EventKind, EventSink};
use tokio::time::Instant;

const EVERY: Duration = Duration::from_millis(250);

pub(crate) struct Progress<'a> {
    events: &'a EventSink,
    path: String,
    total: Option<u64>,
    done: u64,
    last: Instant,
}

impl<'a> Progress<'a> {
    pub(crate) fn new(events: &'a EventSink, path: &str, total: Option<u64>) -> Self {
        let p = Progress { events, path: path.to_string(), total, done: 0, last: Instant::now() };
        p.emit();
        p
    }

    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= EVERY {
            self.last = Instant::now();
            self.emit();
        }
    }

    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// The final event (always sent, so consumers see 100 %).
    pub(crate) fn finish(&mut self) {
        self.emit();
    }

    fn emit(&self) {
        self.events.emit(EventKind::Transfer { path: self.path.clone(), done: self.done, total: self.total });
    }
}
