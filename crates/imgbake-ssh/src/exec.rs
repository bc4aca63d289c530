//! Running one command on an exec channel: streamed output, exit status, timeout.

use std::time::Duration;

use imgbake_config::Os;
use imgbake_core::command::compose;
use imgbake_core::communicator::{CommError, ExecOutput, ExecRequest, ExecStatus};
use imgbake_core::event::{EventSink, LineSplitter, Stream};
use russh::client::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::time::Instant;

use crate::session::{Session, describe_ssh_error};

/// How long a timed-out command gets between TERM and KILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Open an exec channel for `command` (already composed) and ask the server to run it.
pub(crate) async fn start(session: &Session, command: &str, target: &str) -> Result<Channel<Msg>, CommError> {
    let lost = |e: russh::Error| CommError::Disconnected { target: target.into(), reason: describe_ssh_error(&e) };
    let channel = session.handle.channel_open_session().await.map_err(|e| match e {
        russh::Error::ChannelOpenFailure(f) => CommError::Protocol {
            target: target.into(),
            reason: format!("the server refused a session channel: {f:?}"),
        },
        _ if session.is_closed() => CommError::Disconnected { target: target.into(), reason: session.end_reason() },
        e => lost(e),
    })?;
    channel.exec(true, command.as_bytes()).await.map_err(lost)?;
    Ok(channel)
}

/// The first stderr line of a command run with a timeout: its process group, so a timeout can kill
/// the whole group. (OpenSSH ignores `signal` requests in root sessions, and a signal sent as the login
/// user cannot reach what `sudo` started.)
const PGID_MARKER: &str = "IMGBAKE-PGID:";

/// Stderr held back looking for that line before giving up on it.
const MAX_SNIFF: usize = 64 * 1024;

/// Run `req` (composed for `os`) to its end. Output streams to `events` as lines unless `req.quiet`.
pub(crate) async fn run(
    session: &Session,
    os: Os,
    req: &ExecRequest,
    events: &EventSink,
    target: &str,
) -> Result<ExecOutput, CommError> {
    let composed = compose(os, req)?;
    // sshd makes every session command a session (and group) leader: `$$` of the login shell is the
    // group of everything the command line starts.
    let track_group = req.timeout.is_some() && os == Os::Linux;
    let command = if track_group { format!("printf '{PGID_MARKER}%s\\n' \"$$\" >&2; {composed}") } else { composed };
    let mut channel = start(session, &command, target).await?;
    // Nothing to feed: a command that reads stdin sees its end instead of hanging.
    let _ = channel.eof().await;
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let mut sink = OutputSink::new(req, events, track_group);
    let mut status = None;
    loop {
        let msg = match deadline {
            Some(d) => match tokio::time::timeout_at(d, channel.wait()).await {
                Ok(m) => m,
                Err(_) => {
                    sink.finish();
                    kill(session, os, req, &mut channel, sink.pgid, target).await;
                    return Err(CommError::Timeout {
                        what: format!("command `{}` on {target}", req.command),
                        after: req.timeout.unwrap_or_default(),
                    });
                }
            },
            None => channel.wait().await,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => sink.push(Stream::Stdout, &data),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => sink.push(Stream::Stderr, &data),
            Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(ExecStatus::Exited(exit_status as i32)),
            Some(ChannelMsg::ExitSignal { signal_name, error_message, .. }) => {
                let name = signal_text(&signal_name);
                status = Some(ExecStatus::Signaled(if error_message.is_empty() {
                    name
                } else {
                    format!("{name} ({error_message})")
                }));
            }
            Some(ChannelMsg::Failure) if status.is_none() => {
                return Err(CommError::Protocol {
                    target: target.into(),
                    reason: format!("the server refused to run `{}`", req.command),
                });
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    sink.finish();
    let (stdout, stderr) = sink.into_captured();
    Ok(ExecOutput { status: status.unwrap_or(ExecStatus::ConnectionLost), stdout, stderr })
}

/// Stop a command that ran too long: TERM to its process group (through the same `execute_command`,
/// so `sudo` can reach root processes) and as an SSH signal, a short grace, then KILL, then close
/// the channel.
async fn kill(
    session: &Session,
    os: Os,
    req: &ExecRequest,
    channel: &mut Channel<Msg>,
    pgid: Option<u32>,
    target: &str,
) {
    for (sig, ssh_sig) in [("TERM", Sig::TERM), ("KILL", Sig::KILL)] {
        let _ = channel.signal(ssh_sig).await;
        if let Some(pg) = pgid {
            let killer = ExecRequest {
                // `kill -SIG -PGID` (no `--`: dash rejects it), the leader alone if the group is gone.
                command: format!("kill -{sig} -{pg} 2>/dev/null || kill -{sig} {pg} 2>/dev/null; true"),
                execute_command: req.execute_command.clone(),
                timeout: None,
                quiet: true,
                capture: true,
                ..ExecRequest::default()
            };
            if let Ok(line) = compose(os, &killer)
                && let Ok(mut ch) = start(session, &line, target).await
            {
                let _ = ch.eof().await;
                let _ = tokio::time::timeout(KILL_GRACE, async { while ch.wait().await.is_some() {} }).await;
            }
        }
        let grace = Instant::now() + KILL_GRACE;
        let ended = loop {
            match tokio::time::timeout_at(grace, channel.wait()).await {
                Ok(Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } | ChannelMsg::Close))
                | Ok(None) => break true,
                Ok(Some(_)) => {}
                Err(_) => break false,
            }
        };
        if ended {
            break;
        }
    }
    let _ = channel.close().await;
}

pub(crate) fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Where output goes: line events (unless quiet) and the captured buffers (if asked). When the
/// command reports its process group first on stderr, that line is taken out.
struct OutputSink<'a> {
    events: Option<&'a EventSink>,
    capture: bool,
    out: (LineSplitter, Vec<u8>),
    err: (LineSplitter, Vec<u8>),
    /// Stderr bytes held back until the process group line is complete.
    sniffing: Option<Vec<u8>>,
    pgid: Option<u32>,
}

impl<'a> OutputSink<'a> {
    fn new(req: &ExecRequest, events: &'a EventSink, sniff_pgid: bool) -> Self {
        OutputSink {
            events: (!req.quiet).then_some(events),
            capture: req.capture,
            out: Default::default(),
            err: Default::default(),
            sniffing: sniff_pgid.then(Vec::new),
            pgid: None,
        }
    }

    fn push(&mut self, stream: Stream, data: &[u8]) {
        if stream == Stream::Stderr
            && let Some(held) = self.sniffing.as_mut()
        {
            held.extend_from_slice(data);
            // Lines before ours (a login shell's own messages) pass on; ours is taken out.
            while let Some(held) = self.sniffing.as_mut() {
                let Some(nl) = held.iter().position(|&b| b == b'\n') else {
                    if held.len() > MAX_SNIFF {
                        let all = self.sniffing.take().unwrap_or_default();
                        self.deliver(stream, &all);
                    }
                    return;
                };
                let line: Vec<u8> = held.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line);
                if let Some(pg) = text.trim_end().strip_prefix(PGID_MARKER) {
                    self.pgid = pg.trim().parse().ok();
                    let rest = self.sniffing.take().unwrap_or_default();
                    self.deliver(stream, &rest);
                    return;
                }
                self.deliver(stream, &line);
            }
            return;
        }
        self.deliver(stream, data);
    }

    fn deliver(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let (splitter, buf) = match stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        };
        if self.capture {
            buf.extend_from_slice(data);
        }
        if let Some(ev) = self.events {
            for line in splitter.push(data) {
                ev.output(stream, &line);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(held) = self.sniffing.take() {
            self.deliver(Stream::Stderr, &held);
        }
        if let Some(ev) = self.events {
            for (stream, (splitter, _)) in [(Stream::Stdout, &mut self.out), (Stream::Stderr, &mut self.err)] {
                if let Some(line) = splitter.flush() {
                    ev.output(stream, &line);
                }
            }
        }
    }

    fn into_captured(self) -> (Vec<u8>, Vec<u8>) {
        (self.out.1, self.err.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_for(log: &EventSink) -> OutputSink<'_> {
        let req = ExecRequest { capture: true, ..ExecRequest::default() };
        OutputSink::new(&req, log, true)
    }

    #[test]
    fn the_process_group_line_is_taken_out_of_stderr() {
        let (events, log) = EventSink::memory();
        let mut sink = sink_for(&events);
        // Split across chunks, after a line of the login shell's own, before the command's output.
        sink.push(Stream::Stderr, b"motd says hi\nIMGBAKE-PG");
        sink.push(Stream::Stdout, b"out\n");
        sink.push(Stream::Stderr, b"ID:4242\nerr 1\nerr");
        sink.finish();
        assert_eq!(sink.pgid, Some(4242));
        assert_eq!(log.output_lines(), vec!["motd says hi", "out", "err 1", "err"]);
        let (out, err) = sink.into_captured();
        assert_eq!(out, b"out\n");
        assert_eq!(err, b"motd says hi\nerr 1\nerr");
    }

    #[test]
    fn without_the_line_stderr_is_untouched() {
        let (events, log) = EventSink::memory();
        let mut sink = sink_for(&events);
        sink.push(Stream::Stderr, b"no newline at all");
        sink.finish();
        assert_eq!(sink.pgid, None);
        assert_eq!(log.output_lines(), vec!["no newline at all"]);
    }
}
