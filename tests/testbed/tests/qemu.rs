//! The rebooting guest: real reboots (new boot id each time), reboot chains it runs by itself,
//! freezing through QMP, and a state disk that survives QEMU restarts.
//! Timings are printed (run with `--nocapture --test-threads=1` to read them undisturbed).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use imgbake_testbed::{
    Backoff, BedError, GuestOptions, Nic, QemuGuest, RebootChain, SshTarget, pid_alive, read_ssh_banner, ssh_output,
    wait_for_port,
};

const BOOT: Duration = Duration::from_secs(120);

async fn boot() -> (QemuGuest, Duration) {
    let started = Instant::now();
    let guest = QemuGuest::start(GuestOptions::default()).await.expect("start guest (run tests/bed/install.sh?)");
    guest.wait_ssh_banner(BOOT).await.expect("first boot");
    (guest, started.elapsed())
}

/// Waits until the guest has logged `count` boots on its state disk.
async fn wait_boots(guest: &QemuGuest, count: usize, timeout: Duration) -> Vec<String> {
    let mut backoff = Backoff::new(timeout);
    loop {
        let log = guest.boot_log().expect("boot log");
        if log.len() >= count {
            return log;
        }
        assert!(
            backoff.wait().await,
            "only {} of {count} boots after {timeout:?}; console:\n{}",
            log.len(),
            guest.console_log()
        );
    }
}

async fn run(guest: &QemuGuest, command: &str) -> String {
    let out = ssh_output(guest, command).await.expect("ssh");
    assert!(out.status.success(), "`{command}` failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn reboots_change_the_boot_id_and_chains_run_by_themselves() {
    let (guest, first_boot) = boot().await;
    eprintln!("timing: QEMU start -> SSH banner: {first_boot:.1?}");
    let first = guest.boot_id().await.expect("boot id");
    assert_eq!(guest.boot_log().expect("log"), vec![first.clone()]);
    assert!(guest.host_public_key().starts_with("ssh-ed25519 "));

    // Abrupt reboot: the SSH command itself never gets an answer, so do not wait for it.
    let mut reboot = guest
        .ssh_command("reboot -f")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh reboot -f");
    let t = Instant::now();
    let log = wait_boots(&guest, 2, BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("back after reboot -f");
    eprintln!("timing: reboot -f -> SSH banner: {:.1?}", t.elapsed());
    let second = guest.boot_id().await.expect("boot id");
    assert_ne!(second, first);
    assert_eq!(log[1], second);
    let _ = reboot.kill().await;

    // Clean reboot through init: sessions are closed, the command returns.
    let t = Instant::now();
    let out = ssh_output(&guest, "reboot").await.expect("ssh reboot");
    assert!(out.status.code().is_some());
    wait_boots(&guest, 3, BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("back after reboot");
    eprintln!("timing: reboot -> SSH banner: {:.1?}", t.elapsed());
    let third = guest.boot_id().await.expect("boot id");
    assert!(third != second && third != first);

    // Two reboots the guest does on its own, each 1 s after its SSH is up.
    let t = Instant::now();
    run(&guest, "imgbake-guest reboot-chain 2 1").await;
    let log = wait_boots(&guest, 5, 2 * BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("back after chain");
    eprintln!("timing: reboot-chain 2 -> settled: {:.1?}", t.elapsed());
    assert_eq!(guest.pending_reboots().expect("record"), 0);
    let last = guest.boot_id().await.expect("boot id");
    assert_eq!(log.last(), Some(&last));
    let chain = &log[2..];
    assert_eq!(chain[0], third);
    let mut distinct = chain.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "chain boots: {chain:?}");
    assert_eq!(run(&guest, "imgbake-guest state").await.lines().next(), Some("reboots=0"));
    // The machine stays up once the chain is done.
    assert_eq!(guest.boot_log().expect("log").len(), 5);
}

#[tokio::test]
async fn chain_from_the_first_boot_via_options_on_e1000() {
    let started = Instant::now();
    let guest = QemuGuest::start(GuestOptions {
        nic: Nic::E1000,
        reboot_chain: RebootChain { reboots: 1, delay_secs: 0, force: true },
        ..GuestOptions::default()
    })
    .await
    .expect("start guest");
    let log = wait_boots(&guest, 2, 2 * BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("up after chain");
    eprintln!("timing: boot + 1 forced chain reboot -> SSH banner: {:.1?}", started.elapsed());
    assert_ne!(log[0], log[1]);
    assert_eq!(guest.boot_id().await.expect("boot id"), log[1]);
    assert_eq!(guest.pending_reboots().expect("record"), 0);
}

#[tokio::test]
async fn qmp_freezes_resets_and_quits_and_state_survives_restart() {
    let (mut guest, _) = boot().await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, guest.ssh_port()));
    let first = guest.boot_id().await.expect("boot id");

    // Frozen: QEMU still accepts TCP, but no banner comes (the "never comes back" case).
    guest.qmp("stop").await.expect("stop");
    let status = guest.qmp("query-status").await.expect("query-status");
    assert_eq!(status["status"], "paused", "{status}");
    wait_for_port(addr, Duration::from_secs(5)).await.expect("TCP accepted while frozen");
    match read_ssh_banner(addr, Duration::from_secs(3)).await {
        Err(BedError::Timeout { .. }) => {}
        other => panic!("banner from a frozen guest: {other:?}"),
    }
    guest.qmp("cont").await.expect("cont");
    guest.wait_ssh_banner(Duration::from_secs(30)).await.expect("back after cont");
    assert_eq!(guest.boot_id().await.expect("boot id"), first, "cont must not reboot");

    // Hardware reset: a new boot.
    guest.qmp("system_reset").await.expect("system_reset");
    wait_boots(&guest, 2, BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("back after reset");
    assert_ne!(guest.boot_id().await.expect("boot id"), first);

    // quit ends QEMU; start_again powers on with the same port, keys and state disk.
    let pid = guest.pid().expect("pid");
    guest.qmp("quit").await.expect("quit");
    let mut backoff = Backoff::new(Duration::from_secs(10));
    while guest.is_running() {
        assert!(backoff.wait().await, "QEMU still running after quit");
    }
    assert!(!pid_alive(pid));
    guest.start_again().await.expect("start again");
    wait_boots(&guest, 3, BOOT).await;
    guest.wait_ssh_banner(BOOT).await.expect("up after power-on");
    let log = guest.boot_log().expect("log");
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(guest.boot_id().await.expect("boot id"), log[2]);

    let (pid, dir) = (guest.pid().expect("pid"), guest.dir().to_path_buf());
    drop(guest);
    assert!(!pid_alive(pid), "QEMU {pid} survived drop");
    assert!(!dir.exists());
}
