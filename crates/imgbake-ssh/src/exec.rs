//! Running one command on an exec channel: streamed output, exit status, timeout.

use std::time::Duration;

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
        russh::Error::ChannelOpenFailure(f) => {
            CommError::Protocol { target: target.into(), reason: format!("the server refused a session channel: {f:?}") }
        }
        _ if session.is_closed() => CommError::Disconnected { target: target.into(), reason: session.end_reason() },
        e => lost(e),
    })?;
    channel.exec(true, command.as_bytes()).await.map_err(lost)?;
    Ok(channel)
}

/// Run a composed command to its end. Output streams to `events` as lines unless `req.quiet`.
pub(crate) async fn run(
    session: &Session,
    command: &str,
    req: &ExecRequest,
    events: &EventSink,
    target: &str,
) -> Result<ExecOutput, CommError> {
    let mut channel = start(session, command, target).await?;
    // Nothing to feed: a command that reads stdin sees its end instead of hanging.
    let _ = channel.eof().await;
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let mut sink = OutputSink::new(req, events);
    let mut status = None;
    loop {
        let msg = match deadline {
            Some(d) => match tokio::time::timeout_at(d, channel.wait()).await {
                Ok(m) => m,
                Err(_) => {
                    sink.finish();
                    kill(&mut channel).await;
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
                status = Some(ExecStatus::Signaled(if error_message.is_empty() { name } else { format!("{name} ({error_message})") }));
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

/// Stop a command that ran too long: TERM (the server signals the whole process group), a short
/// grace, KILL, then close the channel.
async fn kill(channel: &mut Channel<Msg>) {
    let _ = channel.signal(Sig::TERM).await;
    let grace = Instant::now() + KILL_GRACE;
    loop {
        match tokio::time::timeout_at(grace, channel.wait()).await {
            Ok(Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } | ChannelMsg::Close)) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => {
                let _ = channel.signal(Sig::KILL).await;
                break;
            }
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

/// Where output goes: line events (unless quiet) and the captured buffers (if asked).
struct OutputSink<'a> {
    events: Option<&'a EventSink>,
    capture: bool,
    out: (LineSplitter, Vec<u8>),
    err: (LineSplitter, Vec<u8>),
}

impl<'a> OutputSink<'a> {
    fn new(req: &ExecRequest, events: &'a EventSink) -> Self {
        OutputSink {
            events: (!req.quiet).then_some(events),
            capture: req.capture,
            out: Default::default(),
            err: Default::default(),
        }
    }

    fn push(&mut self, stream: Stream, data: &[u8]) {
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
