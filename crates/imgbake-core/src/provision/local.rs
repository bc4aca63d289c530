//! `local`: run a command on the machine running imgbake (`sh -c`, in the directory of the tree file
//! naming the step), with the build's values (`IMGBAKE_IMAGE`, `IMGBAKE_BUILD_ID`, ...) and the step's
//! `env` in its environment. Its output streams as events; a non-zero exit fails the step; at the step's
//! timeout its whole process group is stopped.

use std::process::Stdio;
use std::time::Duration;

use imgbake_config::{Local, Span};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Ctx;
use crate::error::{BuildError, ErrorKind};
use crate::event::{EventSink, LineSplitter, Stream};

/// Time between SIGTERM and SIGKILL for a command that ran past its timeout.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Kills the command's process group when dropped (timeout, Ctrl-C, a failed build): children of
/// `sh -c` must not outlive the step.
pub(crate) struct GroupGuard(pub(crate) Option<i32>);

impl GroupGuard {
    pub(crate) fn signal(&self, sig: i32) {
        if let Some(pgid) = self.0 {
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::killpg(pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, stream: Stream, events: EventSink) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = LineSplitter::default();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for l in lines.push(&buf[..n]) {
                    events.output(stream, &l);
                }
            }
        }
    }
    if let Some(l) = lines.flush() {
        events.output(stream, &l);
    }
}

pub(crate) async fn run(cx: &Ctx<'_>, l: &Local) -> Result<(), BuildError> {
    let dir = cx.tree().sources().resolve(Span::new(l.command.span()), ".");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(l.command.get_ref())
        .current_dir(&dir)
        .envs(&cx.runner.cx.values)
        .envs(&l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child =
        cmd.spawn().map_err(|e| cx.fail(ErrorKind::Local, format!("cannot run `sh -c` in {}: {e}", dir.display())))?;
    let guard = GroupGuard(child.id().map(|p| p as i32));
    let out = child.stdout.take().map(|o| tokio::spawn(pump(o, Stream::Stdout, cx.events.clone())));
    let err = child.stderr.take().map(|e| tokio::spawn(pump(e, Stream::Stderr, cx.events.clone())));
    let status = wait_in_time(cx, &mut child, guard, [out, err], "the local command").await?;
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => {
            Err(cx.fail(ErrorKind::Step, format!("the local command exited with code {c}; see its output above")))
        }
        None => Err(cx.fail(ErrorKind::Step, format!("the local command was killed ({status})"))),
    }
}

/// Wait for a host process under the step's deadline. Past it: SIGTERM to its process group,
/// SIGKILL after [`KILL_GRACE`], the output pumps drained, and the step's timeout error. Either
/// way, whatever the process left running in its group goes (the pipes close) before the pumps end.
pub(super) async fn wait_in_time(
    cx: &Ctx<'_>,
    child: &mut tokio::process::Child,
    guard: GroupGuard,
    pumps: [Option<tokio::task::JoinHandle<()>>; 2],
    what: &str,
) -> Result<std::process::ExitStatus, BuildError> {
    let status = match cx.remaining() {
        None => child.wait().await,
        Some(left) => match tokio::time::timeout(left, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                guard.signal(libc::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                    guard.signal(libc::SIGKILL);
                    let _ = child.wait().await;
                }
                drop(guard);
                for t in pumps.into_iter().flatten() {
                    let _ = t.await;
                }
                return Err(cx.timed_out(cx.step.timeout.map(|t| t.get()).unwrap_or_default()));
            }
        },
    }
    .map_err(|e| cx.fail(ErrorKind::Local, format!("waiting for {what}: {e}")))?;
    drop(guard);
    for t in pumps.into_iter().flatten() {
        let _ = t.await;
    }
    Ok(status)
}
