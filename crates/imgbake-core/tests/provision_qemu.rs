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
use imgbake_core::reboot::{MachineState, PlatformReboot};
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

    async fn machine_state(&self) -> MachineState {
        match self.0.pid() {
            Some(pid) if imgbake_testbed::pid_alive(pid) => MachineState::Running,
            _ => MachineState::Gone("the QEMU process has exited".into()),
        }
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

/// The boot id a step printed last (`boot=<id>` lines).
fn last_boot_printed(log: &imgbake_core::event::EventLog, step: &str) -> Option<String> {
    step_output(log, step).iter().rev().find_map(|l| l.strip_prefix("boot=").map(str::to_owned))
}

/// Provision under a hard limit; on timeout, show what happened.
async fn provision_within(
    runner: &imgbake_core::provision::StepRunner,
    comm: &dyn Communicator,
    log: &imgbake_core::event::EventLog,
) -> Result<(), imgbake_core::error::BuildError> {
    match tokio::time::timeout(Duration::from_secs(240), runner.provision(comm, None)).await {
        Ok(r) => r,
        Err(_) => panic!("provisioning did not end within 240 s; events:\n{}", all_text(&log.events())),
    }
}

const PRINT_BOOT: &str = "echo boot=$(cat /proc/sys/kernel/random/boot_id)";

#[tokio::test]
async fn a_second_reboot_after_a_reboot_never_leaves_a_step_counted_on_the_middle_boot() {
    let guest = Arc::new(
        QemuGuest::start(GuestOptions::default())
            .await
            .expect("starting the QEMU guest failed: run tests/bed/install.sh"),
    );
    guest.wait_ssh_banner(BOOT).await.expect("the guest's first boot");
    let comm = communicator(&*guest);
    let arm = |delay_secs| {
        guest
            .arm_reboot_chain(imgbake_testbed::RebootChain { reboots: 1, delay_secs, force: false })
            .expect("arming the second reboot")
    };

    // 1. The second reboot hits an idempotent step while it runs (2 s after SSH is up): it is run
    //    again on the final boot, and the build succeeds.
    for delay in [0, 2] {
        arm(delay);
        let boots = guest.boot_log().unwrap().len();
        let fx = fixture(
            &format!(
                r#"
[[images.box.steps]]
reboot = {{}}

[[images.box.steps]]
name = "work"
idempotent = true
shell = {{ inline = ["sleep 5", "{PRINT_BOOT}"] }}

[[images.box.steps]]
name = "wait here"
local = {{ command = "sleep 8" }}
"#
            ),
            &[],
        );
        let (runner, log) = new_runner(&fx, "qemu");
        provision_within(&runner, &comm, &log).await.unwrap_or_else(|e| panic!("delay {delay}s: {}", e.chain()));
        eprintln!("delay {delay}s: ok, {:?}", warnings(&log));
        let log_now = guest.boot_log().unwrap();
        // The reboot step and the armed second reboot; one more when the second came right after
        // the reboot step settled (the reboot step, idempotent, is then run again).
        assert!(log_now.len() >= boots + 2, "delay {delay}s: {} boots, expected at least {}", log_now.len(), boots + 2);
        assert_eq!(
            last_boot_printed(&log, "work").as_deref(),
            log_now.last().map(String::as_str),
            "delay {delay}s: `work` counted as done on the final boot only; warnings: {:?}",
            warnings(&log)
        );
    }

    // 2. The second reboot comes after a quick step finished (6 s after SSH is up, while a local
    //    step runs): the step's boot ended right after it. Not idempotent: the build fails naming
    //    the step and both boots.
    arm(6);
    let boots = guest.boot_log().unwrap().len();
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
reboot = {{}}

[[images.box.steps]]
name = "work"
shell = {{ inline = ["{PRINT_BOOT}"] }}

[[images.box.steps]]
name = "wait here"
local = {{ command = "sleep 14" }}

[[images.box.steps]]
name = "after"
shell = {{ inline = ["{PRINT_BOOT}"] }}
"#
        ),
        &[],
    );
    let (runner, log) = new_runner(&fx, "qemu");
    let err =
        provision_within(&runner, &comm, &log).await.expect_err("a step on the middle boot must not count as done");
    let log_now = guest.boot_log().unwrap();
    assert_eq!(log_now.len(), boots + 2);
    let (middle, last) = (&log_now[boots], &log_now[boots + 1]);
    assert_eq!(last_boot_printed(&log, "work").as_ref(), Some(middle), "`work` ran on the middle boot");
    assert!(
        err.message.contains("work") && err.message.contains(middle.as_str()) && err.message.contains(last.as_str()),
        "the error names the step and both boots: {}",
        err.message
    );
    assert!(step_output(&log, "after").is_empty(), "nothing ran after it");

    // 3. The same with an idempotent step: it runs again on the final boot and the build goes on.
    arm(6);
    let boots = guest.boot_log().unwrap().len();
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
reboot = {{}}

[[images.box.steps]]
name = "work"
idempotent = true
shell = {{ inline = ["{PRINT_BOOT}"] }}

[[images.box.steps]]
name = "wait here"
local = {{ command = "sleep 14" }}

[[images.box.steps]]
name = "after"
shell = {{ inline = ["{PRINT_BOOT}"] }}
"#
        ),
        &[],
    );
    let (runner, log) = new_runner(&fx, "qemu");
    provision_within(&runner, &comm, &log).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    let log_now = guest.boot_log().unwrap();
    assert_eq!(log_now.len(), boots + 2);
    let last = log_now.last().unwrap();
    assert_eq!(step_output(&log, "work").len(), 2, "`work` ran on the middle boot, then again");
    assert_eq!(last_boot_printed(&log, "work").as_ref(), Some(last));
    assert_eq!(last_boot_printed(&log, "after").as_ref(), Some(last));
    assert!(
        warnings(&log).iter().any(|w| w.contains("right after work") && w.contains("again")),
        "{:?}",
        warnings(&log)
    );
    comm.disconnect().await;
}

#[tokio::test]
async fn a_guest_that_powers_off_during_a_reboot_wait_fails_the_build_within_seconds() {
    let guest = Arc::new(
        QemuGuest::start(GuestOptions::default())
            .await
            .expect("starting the QEMU guest failed: run tests/bed/install.sh"),
    );
    guest.wait_ssh_banner(BOOT).await.expect("the guest's first boot");
    let comm = communicator(&*guest);
    let platform: Arc<dyn PlatformReboot> = Arc::new(QmpReset(guest.clone()));
    // The "reboot" powers the machine off instead: QEMU exits and the port refuses connections.
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "reboot that powers off"
reboot = { command = "poweroff -f" }
"#,
        &[],
    );
    let (runner, log) = new_runner(&fx, "qemu");
    let t = Instant::now();
    // Before the platform was asked, this waited the whole reboot timeout (30 minutes).
    let err = tokio::time::timeout(Duration::from_secs(120), runner.provision(&comm, Some(platform)))
        .await
        .expect("the build must fail by itself within seconds")
        .expect_err("a machine that powered off does not come back");
    let took = t.elapsed();
    eprintln!("timing: powered off during a reboot wait, failed after {took:.1?}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        err.message.contains("will not come back") && err.message.contains("QEMU process has exited"),
        "the error says why: {}\n{:#?}",
        err.message,
        warnings(&log)
    );
}
