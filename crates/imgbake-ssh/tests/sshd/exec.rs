//! Exec: output streaming, exit statuses, environment, working directory, wrappers, timeouts, large
//! outputs, lost connections and frozen peers.

use std::time::{Duration, Instant};

use imgbake_core::communicator::{CommError, Communicator, ExecRequest, ExecStatus};
use imgbake_core::event::{EventKind, EventSink, Stream};
use imgbake_core::wait::{self, Poll, Wait};
use imgbake_testbed::{descendants, pid_alive};

use crate::support::*;

fn lines(log: &imgbake_core::event::EventLog, stream: Stream) -> Vec<String> {
    log.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Output { stream: s, line } if s == stream => Some(line),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn streams_lines_and_reports_exit_codes() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    let (sink, log) = EventSink::memory();
    let mut req = ExecRequest::new("echo out1; echo err1 >&2; echo out2; printf 'no newline'; exit 3");
    req.capture = true;
    let out = c.exec(&req, &sink).await.unwrap();
    assert_eq!(out.status, ExecStatus::Exited(3));
    assert_eq!(lines(&log, Stream::Stdout), vec!["out1", "out2", "no newline"]);
    assert_eq!(lines(&log, Stream::Stderr), vec!["err1"]);
    assert_eq!(out.stdout, b"out1\nout2\nno newline");
    assert_eq!(out.stderr, b"err1\n");

    // Quiet: captured but not streamed.
    let (sink, log) = EventSink::memory();
    let out = c.exec(&ExecRequest::new("echo hidden").captured(), &sink).await.unwrap();
    assert_eq!(out.stdout_text(), "hidden");
    assert!(log.output_lines().is_empty());

    // A signal is not an exit code.
    let out = run(&c, "kill -TERM $$").await;
    assert_eq!(out.status, ExecStatus::Signaled("TERM".into()));
    // stdin is closed: a command reading it does not hang.
    assert_eq!(run(&c, "cat; echo done").await.stdout_text(), "done");
    c.disconnect().await;
}

#[tokio::test]
async fn env_workdir_and_execute_command() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    let mut req = ExecRequest::new("printf '%s|%s|%s' \"$A\" \"$B\" \"$PWD\"").captured();
    req.env = vec![("A".into(), "it's $HOME".into()), ("B".into(), "two words".into())];
    req.workdir = Some("/usr/share".into());
    let out = c.exec(&req, &EventSink::discard()).await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's $HOME|two words|/usr/share");

    // A sudo-like wrapper: the command runs inside it, with the variables passed along.
    req.command = "printf '%s %s' \"$WRAPPED\" \"$A\"".into();
    req.execute_command = Some("env WRAPPED=yes {{vars}} sh -c {{quote command}}".into());
    let out = c.exec(&req, &EventSink::discard()).await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "yes it's $HOME");

    // A broken template is an error before anything runs.
    req.execute_command = Some("sudo {{comand}}".into());
    assert!(matches!(c.exec(&req, &EventSink::discard()).await, Err(CommError::Command(_))));
    c.disconnect().await;
}

#[tokio::test]
async fn timeout_kills_the_remote_command() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    let pidfile = remote_path(&sshd, "sleeper.pid");
    let (sink, log) = EventSink::memory();
    // A child of the command, through a wrapper and a working directory: the whole group goes.
    let mut req = ExecRequest::new(format!("echo started; sleep 300 & echo $! > {pidfile}; wait"));
    req.execute_command = Some("env WRAPPED=1 sh -c {{quote command}}".into());
    req.workdir = Some("/".into());
    req.timeout = Some(Duration::from_secs(1));
    let t0 = Instant::now();
    let err = c.exec(&req, &sink).await.unwrap_err();
    assert!(matches!(err, CommError::Timeout { after, .. } if after == Duration::from_secs(1)), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_eq!(log.output_lines(), vec!["started"]);
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The server signals the process group; give the kernel a moment (polled, not slept).
    let gone: Result<(), wait::WaitError<String>> =
        wait::until(&Wait::new(Duration::from_secs(10)), "sleeper to die", || {
            let alive = pid_alive(pid);
            async move { if alive { Poll::Pending("alive".into()) } else { Poll::Ready(()) } }
        })
        .await;
    gone.expect("the timed-out command was killed");
    // The connection is still usable.
    assert_eq!(run(&c, "echo ok").await.stdout_text(), "ok");
    c.disconnect().await;
}

#[tokio::test]
async fn large_outputs_on_both_streams_do_not_deadlock() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    const N: usize = 50_000_000;
    let out =
        run(&c, &format!("head -c {N} /dev/zero | tr '\\0' e >&2 & head -c {N} /dev/zero | tr '\\0' o; wait")).await;
    assert_eq!(out.status, ExecStatus::Exited(0));
    assert_eq!(out.stdout.len(), N);
    assert_eq!(out.stderr.len(), N);
    assert!(out.stdout.iter().all(|&b| b == b'o') && out.stderr.iter().all(|&b| b == b'e'));

    // Many lines, streamed as events in order.
    let (sink, log) = EventSink::memory();
    let out = c.exec(&ExecRequest::new("seq 1 200000"), &sink).await.unwrap();
    assert!(out.status.success());
    let got = log.output_lines();
    assert_eq!(got.len(), 200_000);
    assert_eq!(got[0], "1");
    assert_eq!(got[199_999], "200000");
    c.disconnect().await;
}

#[tokio::test]
async fn killed_session_is_connection_lost_then_reconnects() {
    let sshd = sshd().await;
    let (events, conn_log) = EventSink::memory();
    let c = imgbake_ssh::SshCommunicator::new(config_for(&sshd)).with_events(events);
    c.connect(&quick()).await.unwrap();
    let (sink, log) = EventSink::memory();
    let req = ExecRequest::new("echo ready; sleep 60");
    let running = c.exec(&req, &sink);
    let killer = async {
        until_event(&log, "the command to start", |k| matches!(k, EventKind::Output { line, .. } if line == "ready"))
            .await;
        assert!(sshd.kill_sessions() > 0);
    };
    let t0 = Instant::now();
    let (out, ()) = tokio::join!(running, killer);
    assert_eq!(out.unwrap().status, ExecStatus::ConnectionLost);
    assert!(t0.elapsed() < Duration::from_secs(20));
    // The dead session is noticed; connect makes a new one.
    let err = c.exec(&ExecRequest::new("true"), &EventSink::discard()).await.unwrap_err();
    assert!(matches!(err, CommError::Disconnected { .. }), "{err}");
    c.connect(&quick()).await.unwrap();
    assert_eq!(run(&c, "echo again").await.stdout_text(), "again");
    let kinds: Vec<&str> = conn_log
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Connected { .. } => Some("connected"),
            EventKind::Disconnected { .. } => Some("disconnected"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["connected", "disconnected", "connected"]);
    c.disconnect().await;
}

#[tokio::test]
async fn frozen_peer_is_noticed_by_keepalives() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    let listener = sshd.pid().unwrap();
    let (sink, log) = EventSink::memory();
    let req = ExecRequest::new("echo ready; sleep 120");
    let running = c.exec(&req, &sink);
    let freezer = async {
        until_event(&log, "the command to start", |k| matches!(k, EventKind::Output { line, .. } if line == "ready"))
            .await;
        // Freeze the session's processes: the TCP connection stays open but nobody answers.
        let frozen = descendants(listener);
        assert!(!frozen.is_empty());
        for pid in &frozen {
            // SAFETY: plain syscall on processes of our own sshd.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGSTOP) };
        }
        Instant::now()
    };
    let (out, frozen_at) = tokio::join!(running, freezer);
    let noticed = frozen_at.elapsed();
    assert_eq!(out.unwrap().status, ExecStatus::ConnectionLost);
    // Defaults: keepalive every 2 s, 3 unanswered → about 8 s.
    assert!(noticed < Duration::from_secs(15), "noticed after {noticed:?}");
    assert!(noticed >= Duration::from_secs(4), "noticed after {noticed:?}: too early for keepalives");
    // Dropping sshd kills the frozen processes too.
}

#[tokio::test]
async fn a_quiet_command_outlives_many_keepalive_rounds() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    // Silent for longer than keepalive interval × (max + 1): a healthy server answers the keepalives.
    let out = run(&c, "sleep 10; echo alive").await;
    assert_eq!(out.status, ExecStatus::Exited(0));
    assert_eq!(out.stdout_text(), "alive");
    c.disconnect().await;
}
