//! Ctrl-C, SIGTERM and kill -9 against a real `imgbake build` process on the bed (moto behind the
//! moto proxy, which holds instances and AMIs pending; the bed's sshd as the machine): whatever the
//! build was doing — launching, provisioning, waiting for its AMI — nothing is left in the account,
//! and the exit code is the signal's (130, 143).

#[path = "support/events.rs"]
mod events;
#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use events::spawn_until;
use watchdog::watched_async;

use std::time::Duration;

use imgbake_moto_proxy::Delays;
use imgbake_testbed::SshTarget;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Bed, REGION};
use tokio::process::{Child, Command};

/// Where the build is when the signal arrives.
#[derive(Clone, Copy, Debug)]
enum At {
    /// The instance was requested and is pending.
    Launch,
    /// A step is running on the machine.
    Provision,
    /// The AMI exists and is pending.
    ImageCreation,
}

impl At {
    fn reached(self, event: &serde_json::Value) -> bool {
        match self {
            At::Launch => event["event"] == "resource_created" && event["kind"] == "aws.instance",
            At::Provision => event["event"] == "step_started",
            At::ImageCreation => event["event"] == "resource_created" && event["kind"] == "aws.image",
        }
    }
}

async fn bed() -> Bed {
    let bed = Bed::start().await;
    // Long enough that the signal lands inside each phase, short enough for a quick cleanup.
    bed.proxy.set_delays(Delays {
        instance_pending: Duration::from_secs(4),
        instance_stopping: Duration::from_secs(1),
        instance_shutting_down: Duration::from_secs(1),
        image_pending: Duration::from_secs(8),
    });
    let tree = format!(
        r#"[images.base]
builder = "aws"
source = {{ ami = "{source}" }}
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms" }}
[[images.base.steps]]
shell = {{ inline = ["sleep 2"] }}

[settings]
id = "cli-signals-0001"
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    );
    std::fs::write(bed.dir.path().join("tree.toml"), tree).unwrap();
    bed
}

fn imgbake(bed: &Bed, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).current_dir(bed.dir.path());
    moto_env::on_moto(c.as_std_mut());
    c
}

/// Start `imgbake build --json` and read its events until `at`; returns the child and the build id.
async fn build_until(bed: &Bed, at: At) -> (Child, String) {
    spawn_until(&mut imgbake(bed, &["build", "tree.toml", "--json"]), &format!("{at:?}"), |e| at.reached(e)).await
}

async fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let status = tokio::time::timeout(within, child.wait()).await.expect("imgbake did not exit in time").unwrap();
    status.code().unwrap_or(-1)
}

async fn interrupted_build_leaves_nothing(signal: Signal, at: At) {
    let bed = bed().await;
    let (mut child, build_id) = build_until(&bed, at).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), signal).unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(120)).await;
    assert_eq!(code, 128 + signal as i32, "{signal:?} at {at:?}: exit code");
    let left = bed.leftovers(&[]).await;
    assert!(left.is_empty(), "{signal:?} at {at:?} (build {build_id}) left {left:?}");
    let journals = std::fs::read_dir(bed.dir.path().join(".imgbake/journal")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(journals, 0, "the cleanup journal is finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_launch() {
    interrupted_build_leaves_nothing(Signal::SIGINT, At::Launch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_provisioning() {
    interrupted_build_leaves_nothing(Signal::SIGINT, At::Provision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_image_creation() {
    interrupted_build_leaves_nothing(Signal::SIGINT, At::ImageCreation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_launch() {
    interrupted_build_leaves_nothing(Signal::SIGTERM, At::Launch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_provisioning() {
    interrupted_build_leaves_nothing(Signal::SIGTERM, At::Provision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_image_creation() {
    interrupted_build_leaves_nothing(Signal::SIGTERM, At::ImageCreation).await;
}

/// kill -9 leaves resources behind; `imgbake clean` removes them from the journal — and, with the
/// journal lost too, by their tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_clean_finishes_the_job() {
    let bed = bed().await;
    let (mut child, build_id) = build_until(&bed, At::ImageCreation).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut child, Duration::from_secs(10)).await;
    assert!(!bed.leftovers(&[]).await.is_empty(), "kill -9 leaves the build's resources");

    let dry = watched_async(&mut imgbake(&bed, &["clean", "tree.toml", "--dry-run"])).await;
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(text.contains("would remove aws instance"), "{text}");
    assert!(!bed.leftovers(&[]).await.is_empty(), "a dry run removes nothing");

    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml"])).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let left = bed.leftovers(&[]).await;
    assert!(left.is_empty(), "clean from the journal left {left:?}");

    // Again, but the journal is lost as well: the build id's tags are enough.
    let (mut child, build_id2) = build_until(&bed, At::Provision).await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut child, Duration::from_secs(10)).await;
    std::fs::remove_dir_all(bed.dir.path().join(".imgbake")).unwrap();
    assert!(!bed.leftovers(&[]).await.is_empty());
    // No journal, and everything younger than the default age filter: nothing removed, and it says
    // how many it skipped and why.
    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("removed 0 resource(s)"), "{text}");
    assert!(text.contains("resource(s) younger than 6h") && text.contains("--older-than"), "{text}");
    assert!(!bed.leftovers(&[]).await.is_empty(), "the age filter spared them");
    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml", "--build-id", &build_id2])).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let left = bed.leftovers(&[]).await;
    assert!(left.is_empty(), "clean by tags (build {build_id2}, earlier {build_id}) left {left:?}");
}

/// A failing step: exit code 1, the error with its step, and nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_exits_1_and_leaves_nothing() {
    let bed = bed().await;
    let tree =
        std::fs::read_to_string(bed.dir.path().join("tree.toml")).unwrap().replace("sleep 2", "echo failing; exit 4");
    std::fs::write(bed.dir.path().join("tree.toml"), tree).unwrap();
    let out = watched_async(&mut imgbake(&bed, &["build", "tree.toml"])).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("failed    base (aws)"), "{stdout}");
    assert!(stderr.contains("exited with code 4"), "{stderr}");
    assert!(stderr.contains("tree.toml:6:1"), "the error points at the step: {stderr}");
    assert!(bed.leftovers(&[]).await.is_empty());
}

/// `imgbake clean` while a build runs on this machine: the build's journal says it is alive, so
/// neither the journal nor the build's tagged resources are touched, however old — the build finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_never_touches_a_running_build() {
    let bed = bed().await;
    let (mut child, build_id) = build_until(&bed, At::Launch).await;
    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml", "--older-than", "0s"])).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("build {build_id} is running")), "{stderr}");
    assert!(stdout.contains("removed 0 resource(s)"), "{stdout}");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(120)).await, 0, "the build finished undisturbed");
}

/// `--on-error=abort`: the failed build's instance stays for inspection, with its login key in a
/// 0600 file and how to remove it; `imgbake clean --build-id` removes it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_keeps_the_machine_and_its_key_then_clean_removes_them() {
    use std::os::unix::fs::PermissionsExt;
    let bed = bed().await;
    let tree = std::fs::read_to_string(bed.dir.path().join("tree.toml")).unwrap().replace("sleep 2", "exit 5");
    std::fs::write(bed.dir.path().join("tree.toml"), tree).unwrap();
    let out = watched_async(&mut imgbake(&bed, &["build", "tree.toml", "--on-error", "abort", "--json"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    let kept = stdout.lines().find(|l| l.contains("kept for inspection")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(kept.contains("aws instance"), "{kept}");
    let key = kept.split("log in with the key ").nth(1).and_then(|k| k.split(';').next()).expect("the key path");
    let meta = std::fs::metadata(key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(key).unwrap().contains("OPENSSH PRIVATE KEY"));
    let left = bed.leftovers(&[]).await;
    assert!(left.iter().any(|l| l.contains("instance")), "the instance is kept: {left:?}");

    let build_id = kept.split("--build-id ").nth(1).and_then(|b| b.split('`').next()).expect("the build id");
    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml", "--build-id", build_id])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(bed.leftovers(&[]).await.is_empty());
}

/// A build that succeeds but cannot remove its key pair: the summary line says what was left, the
/// exit code is 1 (they agree), imgbake names the `imgbake clean` command, and that command removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_leaves_something_behind_says_so_in_its_summary_and_exits_1() {
    let bed = bed().await;
    bed.proxy.inject(imgbake_moto_proxy::FaultRule::new(
        "DeleteKeyPair",
        imgbake_moto_proxy::Fault::error(400, "UnauthorizedOperation", "not allowed (injected)"),
        1000,
    ));
    let out = watched_async(&mut imgbake(&bed, &["build", "tree.toml"])).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("built     base (aws)"), "the image itself is good: {stdout}");
    assert!(
        stdout.contains("1 built, 0 reused, 0 failed, 0 skipped, 1 resource left behind"),
        "the summary agrees with the exit code: {stdout}"
    );
    assert!(stderr.contains("left behind: aws key-pair") || stderr.contains("left behind: aws"), "{stderr}");
    assert!(stderr.contains("run `imgbake clean"), "{stderr}");

    bed.proxy.clear_faults();
    let build_id = stdout.lines().find_map(|l| l.strip_prefix("build ")).map(|b| b.trim_end_matches(':')).unwrap();
    let out = watched_async(&mut imgbake(&bed, &["clean", "tree.toml", "--build-id", build_id])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The AMI is the build's result and stays; everything else of the build is gone.
    let ami = stdout.split_whitespace().find(|w| w.starts_with("ami-")).expect("the built AMI in the summary");
    let left = bed.leftovers(&[ami]).await;
    assert!(left.is_empty(), "{left:?}");
}
