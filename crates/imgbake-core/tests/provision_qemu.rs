//! Reboots through the step runner on the bed's QEMU guest, which really reboots (a new boot id each
//! time): a `reboot` step by command and by the platform (QEMU's `system_reset` over QMP), a script
//! that reboots the machine itself (`expect_reboot`), and unexpected reboots with `on_reboot` fail and
//! rerun. One guest for all of it: each reboot costs ~15 s under TCG.

mod provision_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use imgbake_core::builder::Provision;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::ErrorKind;
use imgbake_core::event::EventKind;
use imgbake_core::reboot::PlatformReboot;
use imgbake_testbed::{GuestOptions, QemuGuest};
use provision_support::*;

const BOOT: Duration = Duration::from_secs(180);

/// QEMU's own reset, as the qemu builder offers it.
struct QmpReset(Arc<QemuGuest>);

#[async_trait]
impl PlatformReboot for QmpReset {
    fn describe(&self) -> String {
        "QEMU system_reset".into()
    }

    async fn reboot(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.qmp("system_reset").await.map(|_| ()).map_err(|e| e.into())
    }
}

#[tokio::test]
async fn planned_and_unplanned_reboots_on_a_real_guest() {
    let guest = Arc::new(
        QemuGuest::start(GuestOptions::default())
            .await
            .expect("starting the QEMU guest failed: run tests/bed/install.sh"),
    );
    guest.wait_ssh_banner(BOOT).await.expect("the guest's first boot");
    let comm = communicator(&*guest);
    let platform: Arc<dyn PlatformReboot> = Arc::new(QmpReset(guest.clone()));

    // Planned reboots: three different ways, then a step that must run on the settled machine.
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "by command"
reboot = {}

[[images.box.steps]]
name = "by the platform"
reboot = { method = "platform" }

[[images.box.steps]]
name = "by itself"
shell = { inline = ["echo rebooting myself", "reboot -f", "sleep 60"], expect_reboot = true }

[[images.box.steps]]
name = "after"
shell = { inline = ["cat /proc/sys/kernel/random/boot_id"] }
"#,
        &[],
    );
    let (runner, log) = new_runner(&fx, "qemu");
    let t = Instant::now();
    runner
        .provision(&comm, Some(platform.clone()))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), guest.console_log()));
    eprintln!("timing: three planned reboots through the runner: {:.1?}", t.elapsed());
    let boots = guest.boot_log().unwrap();
    assert_eq!(boots.len(), 4, "first boot and three reboots: {boots:?}");
    let mut unique = boots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4);
    assert_eq!(step_output(&log, "after"), vec![boots[3].clone()], "the last step ran on the last boot");
    assert_eq!(step_output(&log, "by itself"), vec!["rebooting myself"], "`sleep 60` never ran: the machine went down");
    let rebooted = log.events().iter().filter(|e| matches!(e.kind, EventKind::Rebooted { .. })).count();
    assert!(rebooted >= 3, "{rebooted} reboot events");
    assert!(runner.report().steps.iter().all(|s| s.attempts == 1));

    // An unexpected reboot fails the step by default.
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "surprise"
shell = { inline = ["echo about to reboot", "reboot -f", "sleep 60"] }
"#,
        &[],
    );
    let (runner, _log) = new_runner(&fx, "qemu");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Step, "{}", err.chain());
    assert!(
        err.message.contains("rebooted during the step") && err.message.contains("expect_reboot = true"),
        "{}",
        err.message
    );
    assert_eq!(guest.boot_log().unwrap().len(), 5);

    // on_reboot = "rerun": the step reboots the machine on its first run only, then completes.
    let before = guest.boot_log().unwrap().len();
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
name = "rerun"
shell = {{ inline = ["n=$(imgbake-guest boot-log | wc -l)", "echo boots=$n", "if [ $n -le {before} ]; then reboot -f; sleep 60; fi", "echo done"], on_reboot = "rerun" }}
"#
        ),
        &[],
    );
    let (runner, log) = new_runner(&fx, "qemu");
    runner.provision(&comm, None).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(
        step_output(&log, "rerun"),
        vec![format!("boots={before}"), format!("boots={}", before + 1), "done".into()]
    );
    assert_eq!(runner.report().steps[0].attempts, 2);
    assert!(warnings(&log).iter().any(|w| w.contains("on_reboot = \"rerun\"")));
    comm.disconnect().await;
}
