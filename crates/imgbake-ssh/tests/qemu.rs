//! Reboots of a real machine: the bed's QEMU/TCG guest (busybox + dropbear, a new boot id at every
//! boot, ~13 s per boot). One guest walks through every scenario in turn to keep the run short:
//! explicit reboot, a step that reboots the machine itself, a chain of two reboots, the race where
//! logins keep working after the reboot command, and a machine that never comes back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_core::communicator::{BootIdentity, Communicator, ExecRequest, ExecStatus};
use imgbake_core::event::{EventKind, EventLog, EventSink};
use imgbake_core::reboot::{PlatformReboot, RebootError, RebootOptions, Recovery, reboot, recover};
use imgbake_core::wait::Wait;
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::{GuestOptions, QemuGuest, SshTarget};

fn config_for(g: &QemuGuest) -> SshConfig {
    SshConfig::new(g.host(), g.port(), g.user())
        .with_auth(Auth::key_file(g.client_key_path()))
        .with_host_key(HostKeyPolicy::Pinned(vec![g.host_public_key().to_string()]))
}

fn options() -> RebootOptions {
    RebootOptions { timeout: Duration::from_secs(120), ..RebootOptions::default() }
}

fn state_seen(log: &EventLog, needle: &str) -> bool {
    log.events().iter().any(|e| matches!(&e.kind, EventKind::State { state, .. } if state.contains(needle)))
}

/// QEMU's monitor freezes the guest right after resetting it: a machine that never comes back.
struct ResetAndFreeze(Arc<QemuGuest>);

#[async_trait]
impl PlatformReboot for ResetAndFreeze {
    fn describe(&self) -> String {
        "QMP system_reset + stop".into()
    }
    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.qmp("system_reset").await?;
        self.0.qmp("stop").await?;
        Ok(())
    }
}

async fn boot_id(c: &SshCommunicator) -> BootIdentity {
    c.boot_identity().await.expect("read the boot id")
}

#[tokio::test]
async fn reboots_of_a_real_machine() {
    let guest = Arc::new(
        QemuGuest::start(GuestOptions::default())
            .await
            .expect("starting the bed's QEMU guest (run tests/bed/install.sh if it is missing)"),
    );
    guest.wait_ssh_banner(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"));
    let c = SshCommunicator::new(config_for(&guest));
    c.connect(&Wait::new(Duration::from_secs(60)).interval(Duration::from_millis(100), Duration::from_millis(500)))
        .await
        .unwrap();
    let first = boot_id(&c).await;
    assert_eq!(guest.boot_log().unwrap().last(), Some(&first.0), "the guest records its boots");

    // 1. Explicit reboot with the OS default command.
    eprintln!("scenario 1: explicit reboot");
    let (events, log) = EventSink::memory();
    let report =
        reboot(&c, &options(), &events).await.unwrap_or_else(|e| panic!("{e}; console:\n{}", guest.console_log()));
    assert_eq!(report.before, first);
    assert_ne!(report.after, first);
    assert_eq!(report.reboots, 1);
    assert_eq!(boot_id(&c).await, report.after);
    assert_eq!(guest.boot_log().unwrap().last(), Some(&report.after.0));
    assert!(
        log.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Settled { boot_id, .. } if *boot_id == report.after.0))
    );
    let second = report.after;

    // 2. A step that reboots the machine itself (abruptly, sessions left hanging): the command ends
    // without an exit status, recover() finds the new boot.
    eprintln!("scenario 2: a step reboots the machine");
    let out = c
        .exec(&ExecRequest::new("echo step-start; reboot -f; sleep 60; echo not-reached"), &EventSink::discard())
        .await;
    match out {
        Ok(o) => assert_eq!(o.status, ExecStatus::ConnectionLost),
        Err(e) => assert!(e.is_not_up(), "{e}"),
    }
    let (events, log) = EventSink::memory();
    let r = recover(&c, &second, &options(), &events)
        .await
        .unwrap_or_else(|e| panic!("{e}; console:\n{}", guest.console_log()));
    let third = match r {
        Recovery::Rebooted { from, to, reboots } => {
            assert_eq!(from, second);
            assert_ne!(to, second);
            assert_eq!(reboots, 1);
            to
        }
        other => panic!("expected a reboot, got {other:?}"),
    };
    assert!(log.events().iter().any(|e| matches!(&e.kind, EventKind::Rebooted { from, .. } if *from == second.0)));

    // 3. Two reboots in a row (the guest's own chain, like an update that reboots twice): the first
    // 3 s after the command, the second 3 s after SSH is up again (time enough for a TCG guest to
    // let us log in and see that boot). The settle window is long enough to see the second coming.
    eprintln!("scenario 3: a chain of two reboots");
    let boots_before = guest.boot_log().unwrap().len();
    let opts = RebootOptions {
        command: Some("imgbake-guest reboot-chain 2 3".into()),
        settle: Some(Duration::from_secs(8)),
        ..options()
    };
    let report = reboot(&c, &opts, &EventSink::discard())
        .await
        .unwrap_or_else(|e| panic!("{e}; console:\n{}", guest.console_log()));
    let log_now = guest.boot_log().unwrap();
    assert_eq!(log_now.len(), boots_before + 2, "{log_now:?}");
    assert_eq!(report.before, third);
    assert_eq!(report.reboots, 2, "{report:?}");
    assert_eq!(Some(&report.after.0), log_now.last());
    assert_eq!(guest.pending_reboots().unwrap(), 0);
    let fourth = report.after;

    // 4. The race: the reboot command returns at once and logins keep working for seconds, still
    // on the old boot. Those logins must not count as "back".
    eprintln!("scenario 4: logins keep working after the reboot command");
    let (events, log) = EventSink::memory();
    let opts = RebootOptions { command: Some("(sleep 5; reboot -f) </dev/null >/dev/null 2>&1 &".into()), ..options() };
    let report = reboot(&c, &opts, &events).await.unwrap_or_else(|e| panic!("{e}; console:\n{}", guest.console_log()));
    assert!(
        state_seen(&log, &format!("still up with the old boot {fourth}")),
        "the race was not exercised: {:#?}",
        log.events()
    );
    assert_ne!(report.after, fourth);
    assert_eq!(report.reboots, 1);
    assert_eq!(guest.boot_log().unwrap().last(), Some(&report.after.0));

    // 5. Never comes back: the clear timeout error.
    eprintln!("scenario 5: never comes back");
    let opts = RebootOptions {
        platform: Some(Arc::new(ResetAndFreeze(guest.clone()))),
        timeout: Duration::from_secs(15),
        ..options()
    };
    match reboot(&c, &opts, &EventSink::discard()).await {
        Err(RebootError::NeverCameBack { waited, last_state, .. }) => {
            assert!(waited >= Duration::from_secs(15) && waited < Duration::from_secs(30), "{waited:?}");
            assert!(last_state.contains("banner") || last_state.contains("old boot"), "{last_state}");
        }
        other => panic!("expected NeverCameBack, got {other:?}"),
    }
    c.disconnect().await;
}
