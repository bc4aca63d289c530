//! [`Recorder`]: keeps what a report needs from a run's event stream, in bounded memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use imgbake_core::event::{Event, EventKind, EventStream};

/// How many output lines are kept per image (the end of a failed build's output is what explains it).
pub const OUTPUT_TAIL: usize = 40;

/// Records events for a report: every event except file-transfer progress, waiter state changes
/// and output lines, of which only the last [`OUTPUT_TAIL`] per image are kept. A long build's
/// output therefore does not pile up in memory. Clones share one record.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    kept: Vec<(u64, Event)>,
    output: HashMap<Option<String>, VecDeque<(u64, Event)>>,
}

impl Recorder {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one event (a copy, when the report needs it).
    pub fn push(&self, e: &Event) {
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.seq += 1;
        let seq = inner.seq;
        match &e.kind {
            EventKind::Transfer { .. } | EventKind::State { .. } => {}
            EventKind::Output { .. } => {
                let tail = inner.output.entry(e.image.clone()).or_default();
                if tail.len() == OUTPUT_TAIL {
                    tail.pop_front();
                }
                tail.push_back((seq, e.clone()));
            }
            _ => inner.kept.push((seq, e.clone())),
        }
    }

    /// The recorded events, in the order they were pushed.
    pub fn events(&self) -> Vec<Event> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        let mut all: Vec<&(u64, Event)> = inner.kept.iter().chain(inner.output.values().flatten()).collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, e)| e.clone()).collect()
    }

    /// Records every event of `rx` and passes it on: the returned stream sees the same events, in
    /// order, and ends when `rx` does. Spawns a task on the current tokio runtime.
    pub fn tee(&self, mut rx: EventStream) -> EventStream {
        let (tx, out) = tokio::sync::mpsc::unbounded_channel();
        let rec = self.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                rec.push(&e);
                // The consumer may have stopped (the renderer gave up): keep recording anyway.
                let _ = tx.send(e);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgbake_core::event::{EventSink, Stream};

    #[test]
    fn output_is_kept_as_a_tail_per_image_and_progress_is_dropped() {
        let rec = Recorder::new();
        let (sink, log) = EventSink::memory();
        let web = sink.for_image("web");
        web.info("started");
        for i in 0..(OUTPUT_TAIL + 5) {
            web.output(Stream::Stdout, &format!("line {i}"));
        }
        sink.for_image("db").output(Stream::Stderr, "db line");
        web.emit(EventKind::Transfer { path: "f".into(), done: 1, total: Some(2) });
        web.state("instance", "running");
        web.warn("done");
        for e in log.events() {
            rec.push(&e);
        }
        let kept = rec.events();
        let lines: Vec<String> = kept
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Output { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), OUTPUT_TAIL + 1);
        assert_eq!(lines[0], "line 5", "the oldest lines of web were dropped");
        assert_eq!(lines.last().map(String::as_str), Some("db line"), "order is kept across images");
        assert!(matches!(kept[0].kind, EventKind::Info { .. }));
        assert!(matches!(kept.last().map(|e| &e.kind), Some(EventKind::Warning { .. })));
        assert!(!kept.iter().any(|e| matches!(e.kind, EventKind::Transfer { .. } | EventKind::State { .. })));
    }

    #[tokio::test]
    async fn tee_passes_every_event_on_and_ends_with_its_source() {
        let (sink, rx) = EventSink::channel();
        let rec = Recorder::new();
        let mut out = rec.tee(rx);
        sink.for_image("a").info("one");
        sink.for_image("a").output(Stream::Stdout, "two");
        drop(sink);
        let mut seen = Vec::new();
        while let Some(e) = out.recv().await {
            seen.push(e);
        }
        assert_eq!(seen.len(), 2, "the stream ended after both events");
        assert_eq!(rec.events().len(), 2);
    }
}
