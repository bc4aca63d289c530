//! The reboot state machine in seconds: the "machine" is the bed's sshd, its boot identity a file the
//! test changes, and a reboot is stopping sshd (which kills every session), changing the file and
//! starting sshd again. The test plays the machine concurrently with `reboot`/`recover`, reacting to
//! the events they emit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_core::communicator::{BootIdentity, Communicator, ExecRequest, ExecStatus};
use imgbake_core::event::{EventKind, EventLog, EventSink};
use imgbake_core::reboot::{PlatformReboot, RebootError, RebootOptions, Recovery, reboot, recover};
use imgbake_ssh::SshCommunicator;
use imgbake_testbed::Sshd;

use crate::support::*;

struct Machine {
    sshd: Sshd,
    id_file: std::path::PathBuf,
}

impl Machine {
    async fn start(first_boot: &str) -> Machine {
        let sshd = sshd().await;
        let id_file = sshd.dir().join("boot_id");
        std::fs::write(&id_file, format!("{first_boot}\n")).unwrap();
        Machine { sshd, id_file }
    }

    fn communicator(&self, events: EventSink) -> SshCommunicator {
        let mut cfg = config_for(&self.sshd);
        cfg.boot_identity_command = Some(format!("cat {}", self.id_file.display()));
        SshCommunicator::new(cfg).with_events(events)
    }

    fn go_down(&mut self) {
        self.sshd.stop();
    }

    async fn boot(&mut self, id: &str) {
        std::fs::write(&self.id_file, format!("{id}\n")).unwrap();
        self.sshd.start_again().await.unwrap();
    }

    async fn reboot_as(&mut self, id: &str) {
        self.go_down();
        self.boot(id).await;
    }
}

fn options() -> RebootOptions {
    RebootOptions {
        // The test plays the machine: the "reboot command" itself does nothing.
        command: Some("true".into()),
        timeout: Duration::from_secs(60),
        ..RebootOptions::default()
    }
}

/// Wait until `reboot` has read the old identity and is about to issue the reboot.
async fn issued(log: &EventLog) {
    until_event(
        log,
        "the reboot request",
        |k| matches!(k, EventKind::State { state, .. } if state.starts_with("rebooting from boot")),
    )
    .await;
}

fn saw_state(log: &EventLog, needle: &str) -> bool {
    log.events().iter().any(|e| matches!(&e.kind, EventKind::State { state, .. } if state.contains(needle)))
}

fn rebooted_events(log: &EventLog) -> Vec<(String, String)> {
    log.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Rebooted { from, to } => Some((from, to)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn old_identity_after_the_reboot_request_does_not_count() {
    let mut m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let (events, log) = EventSink::memory();
    let opts = options();
    let waiting = reboot(&c, &opts, &events);
    let machine = async {
        // Still up, still boot-a, logins keep working: the waiter must keep polling.
        until_event(
            &log,
            "a poll that saw the old boot",
            |k| matches!(k, EventKind::State { state, .. } if state.contains("still up with the old boot boot-a")),
        )
        .await;
        m.reboot_as("boot-b").await;
    };
    let (report, ()) = tokio::join!(waiting, machine);
    let report = report.unwrap();
    assert_eq!(report.before, BootIdentity("boot-a".into()));
    assert_eq!(report.after, BootIdentity("boot-b".into()));
    assert_eq!(report.reboots, 1);
    assert_eq!(rebooted_events(&log), vec![("boot-a".into(), "boot-b".into())]);
    let settled = log
        .events()
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Settled { boot_id, reboots: 1, .. } if boot_id == "boot-b"));
    assert!(settled, "{:#?}", log.events());
    // The communicator is connected to the new boot.
    assert_eq!(c.boot_identity().await.unwrap().0, "boot-b");
    c.disconnect().await;
}

#[tokio::test]
async fn a_chain_of_two_reboots_is_followed() {
    let mut m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let (events, log) = EventSink::memory();
    // Long enough a window for the machine to reboot again before it counts as settled.
    let opts = RebootOptions { settle: Some(Duration::from_secs(3)), ..options() };
    let waiting = reboot(&c, &opts, &events);
    let machine = async {
        issued(&log).await;
        m.reboot_as("boot-b").await;
        until_event(&log, "boot-b seen", |k| matches!(k, EventKind::Rebooted { to, .. } if to == "boot-b")).await;
        m.reboot_as("boot-c").await;
    };
    let (report, ()) = tokio::join!(waiting, machine);
    let report = report.unwrap();
    assert_eq!(report.after, BootIdentity("boot-c".into()));
    assert_eq!(report.reboots, 2);
    assert_eq!(rebooted_events(&log), vec![("boot-a".into(), "boot-b".into()), ("boot-b".into(), "boot-c".into())]);
    assert!(report.waited >= Duration::from_secs(3));
    c.disconnect().await;
}

#[tokio::test]
async fn never_back_is_a_timeout_with_the_last_state() {
    let mut m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let opts = RebootOptions { timeout: Duration::from_secs(4), ..options() };
    let (events, log) = EventSink::memory();
    let waiting = reboot(&c, &opts, &events);
    let machine = async {
        issued(&log).await;
        m.go_down();
    };
    let (r, ()) = tokio::join!(waiting, machine);
    match r {
        Err(RebootError::NeverCameBack { waited, last_state, .. }) => {
            assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(10), "{waited:?}");
            // Either still the old boot (if the first polls won the race) or refused connections.
            assert!(last_state.contains("refused") || last_state.contains("old boot"), "{last_state}");
        }
        other => panic!("expected NeverCameBack, got {other:?}"),
    }
}

#[tokio::test]
async fn readiness_failing_then_passing() {
    let mut m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let ready_file = m.sshd.dir().join("ready");
    let (events, log) = EventSink::memory();
    let opts = RebootOptions {
        readiness: Some(format!("test -f {} || {{ echo 'updates pending' >&2; exit 1; }}", ready_file.display())),
        ..options()
    };
    let waiting = reboot(&c, &opts, &events);
    let machine = async {
        issued(&log).await;
        m.reboot_as("boot-b").await;
        until_event(&log, "readiness failing", |k| {
            matches!(k, EventKind::State { state, .. } if state.contains("readiness not passing") && state.contains("updates pending"))
        })
        .await;
        std::fs::write(&ready_file, "").unwrap();
    };
    let (report, ()) = tokio::join!(waiting, machine);
    assert_eq!(report.unwrap().after.0, "boot-b");
    c.disconnect().await;

    // Never ready: the error says the machine came back and shows the readiness output.
    std::fs::remove_file(&ready_file).unwrap();
    let opts = RebootOptions { timeout: Duration::from_secs(5), ..opts };
    let (events, log) = EventSink::memory();
    let waiting = reboot(&c, &opts, &events);
    let machine = async {
        issued(&log).await;
        m.reboot_as("boot-c").await
    };
    let (r, ()) = tokio::join!(waiting, machine);
    match r {
        Err(RebootError::NotReady { boot_id, last_output, .. }) => {
            assert_eq!(boot_id.0, "boot-c");
            assert!(last_output.contains("exited with 1") && last_output.contains("updates pending"), "{last_output}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    c.disconnect().await;
}

#[tokio::test]
async fn a_refused_reboot_command_is_an_error() {
    let m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let opts = RebootOptions {
        command: Some("echo 'must be root' >&2; exit 4".into()),
        execute_command: Some("env FROM_WRAPPER=1 sh -c {{quote command}}".into()),
        ..options()
    };
    match reboot(&c, &opts, &EventSink::discard()).await {
        Err(RebootError::CommandRefused { status, output, command, .. }) => {
            assert_eq!(status, ExecStatus::Exited(4));
            assert_eq!(output, "must be root");
            assert!(command.starts_with("env FROM_WRAPPER=1"), "{command}");
        }
        other => panic!("expected CommandRefused, got {other:?}"),
    }
    c.disconnect().await;
}

/// A platform reboot (like EC2 RebootInstances) played by the test.
struct Platform(tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

#[async_trait]
impl PlatformReboot for Platform {
    fn describe(&self) -> String {
        "test platform reboot".into()
    }
    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self.0.lock().await.take() {
            Some(tx) => tx.send(()).map_err(|_| "the machine is gone".into()),
            None => Err("already rebooted once".into()),
        }
    }
}

#[tokio::test]
async fn platform_reboot_is_used_instead_of_a_command() {
    let mut m = Machine::start("boot-a").await;
    let c = m.communicator(EventSink::discard());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The command would fail: it must not run.
    let opts = RebootOptions {
        command: Some("exit 9".into()),
        platform: Some(Arc::new(Platform(tokio::sync::Mutex::new(Some(tx))))),
        ..options()
    };
    let quiet = EventSink::discard();
    let waiting = reboot(&c, &opts, &quiet);
    let machine = async {
        rx.await.unwrap();
        m.reboot_as("boot-b").await;
    };
    let (r, ()) = tokio::join!(waiting, machine);
    assert_eq!(r.unwrap().after.0, "boot-b");
    // A platform that refuses: its error is reported.
    match reboot(&c, &opts, &EventSink::discard()).await {
        Err(RebootError::Platform { what, reason }) => {
            assert_eq!(what, "test platform reboot");
            assert!(reason.contains("already rebooted"));
        }
        other => panic!("expected Platform, got {other:?}"),
    }
    c.disconnect().await;
}

#[tokio::test]
async fn recover_tells_a_network_drop_from_a_reboot() {
    let mut m = Machine::start("boot-a").await;
    let (conn_events, _) = EventSink::memory();
    let c = m.communicator(conn_events);
    c.connect(&quick()).await.unwrap();
    let known = c.boot_identity().await.unwrap();
    let opts = options();

    // The connection dies under a step, the machine stays up: a network drop.
    let (sink, log) = EventSink::memory();
    let req = ExecRequest::new("echo step; sleep 60");
    let step = c.exec(&req, &sink);
    let cut = async {
        until_event(&log, "the step to run", |k| matches!(k, EventKind::Output { line, .. } if line == "step")).await;
        m.sshd.kill_sessions();
    };
    let (out, ()) = tokio::join!(step, cut);
    assert_eq!(out.unwrap().status, ExecStatus::ConnectionLost);
    let r = recover(&c, &known, &opts, &EventSink::discard()).await.unwrap();
    assert_eq!(r, Recovery::NetworkDrop { boot_id: known.clone() });
    // Reconnected.
    assert_eq!(run(&c, "echo still").await.stdout_text(), "still");

    // Now the machine reboots under a step.
    let (sink, log) = EventSink::memory();
    let req = ExecRequest::new("echo step; sleep 60");
    let step = c.exec(&req, &sink);
    let crash = async {
        until_event(&log, "the step to run", |k| matches!(k, EventKind::Output { line, .. } if line == "step")).await;
        m.go_down();
    };
    let (out, ()) = tokio::join!(step, crash);
    assert_eq!(out.unwrap().status, ExecStatus::ConnectionLost);
    let (events, log) = EventSink::memory();
    let recovering = recover(&c, &known, &opts, &events);
    let comes_back = async { m.boot("boot-b").await };
    let (r, ()) = tokio::join!(recovering, comes_back);
    assert_eq!(r.unwrap(), Recovery::Rebooted { from: known.clone(), to: BootIdentity("boot-b".into()), reboots: 1 });
    assert_eq!(rebooted_events(&log), vec![("boot-a".into(), "boot-b".into())]);
    assert!(!saw_state(&log, "network drop"));
    c.disconnect().await;
}
