//! Ctrl-C and kill -9 against a real `imgbake build` of a vSphere tree (vcsim for the API, the bed's
//! sshd for the machine): an interrupted build leaves no VM; after kill -9, `imgbake clean` removes
//! the build VM, from the journal or, with the journal lost, by its extraConfig keys.

#[path = "support/events.rs"]
mod events;
#[path = "support/watchdog.rs"]
mod watchdog;
use events::spawn_until;
use watchdog::watched_async;

use std::time::Duration;

use imgbake_testbed::{SshTarget, Sshd, Vcsim, VcsimOptions};
use imgbake_vsphere::soap::{Client, Tls};
use imgbake_vsphere::vim::{Vim, extra_config, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

const TREE_ID: &str = "cli-vsphere-0001";

struct Bed {
    vcsim: Vcsim,
    sshd: Sshd,
    dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let sshd = Sshd::start().await.expect("sshd (run tests/bed/install.sh)");
    let vcsim = Vcsim::start_with(VcsimOptions {
        templates: vec!["DC0_H0_VM1".into()],
        cloud_init: Some((sshd.dir().join("ssh_host_ed25519_key"), sshd.dir().join("authorized_keys"))),
        ..VcsimOptions::default()
    })
    .await
    .expect("vcsim (run tests/bed/install.sh)");
    let dir = tempfile::tempdir().unwrap();
    let tree = format!(
        r#"[settings]
id = "{TREE_ID}"

[images.base]
builder = "vsphere"
source = {{ template = "DC0_H0_VM1" }}
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
vsphere = {{ url = "{url}", username = "{user}", ca_file = "{ca}", shutdown_timeout = "5s" }}
[[images.base.steps]]
shell = {{ inline = ["sleep 60"] }}
"#,
        port = sshd.port(),
        url = vcsim.url(),
        user = vcsim.username(),
        ca = vcsim.ca_file().display(),
    );
    std::fs::write(dir.path().join("tree.toml"), tree).unwrap();
    Bed { vcsim, sshd, dir }
}

impl Bed {
    fn imgbake(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("VSPHERE_PASSWORD", self.vcsim.password())
            .env_remove("VSPHERE_URL")
            .env_remove("GOVC_URL")
            .env("NO_COLOR", "1");
        c
    }

    /// The tree's VMs in vcsim: (name, is a template).
    async fn vms(&self) -> Vec<(String, bool)> {
        let tls = Tls { insecure: false, ca_file: Some(self.vcsim.ca_file()) };
        let vim = Vim::connect(Client::new(&self.vcsim.url(), &tls, Duration::from_secs(30)).unwrap()).await.unwrap();
        vim.login(self.vcsim.username(), self.vcsim.password()).await.unwrap();
        let dc = vim.find_by_path("/DC0").await.unwrap().unwrap();
        let all = vim.all_of(&dc, "VirtualMachine", &["name", "config.template", "config.extraConfig"]).await.unwrap();
        all.into_iter()
            .filter(|(_, p)| extra_config(p).get("imgbake.tree-id").map(String::as_str) == Some(TREE_ID))
            .map(|(_, p)| {
                (text(&p, "name").unwrap_or_default().to_string(), text(&p, "config.template") == Some("true"))
            })
            .collect()
    }

    fn journals(&self) -> usize {
        std::fs::read_dir(self.dir.path().join(".imgbake/journal")).map(|d| d.count()).unwrap_or(0)
    }

    /// `imgbake build --json` until its step runs; returns the child and the build id.
    async fn build_until_provisioning(&self) -> (Child, String) {
        let mut build = self.imgbake(&["build", "tree.toml", "--json"]);
        spawn_until(&mut build, "its step started", |e| e["event"] == "step_started").await
    }
}

async fn exit_code(child: &mut Child, within: Duration) -> i32 {
    let status = tokio::time::timeout(within, child.wait()).await.expect("imgbake did not exit in time").unwrap();
    status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_provisioning_leaves_no_vm() {
    let bed = bed().await;
    let (mut child, build_id) = bed.build_until_provisioning().await;
    assert_eq!(bed.vms().await.len(), 1, "the build VM exists while the step runs");
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGINT).unwrap();
    assert_eq!(exit_code(&mut child, Duration::from_secs(60)).await, 130);
    assert_eq!(bed.vms().await, vec![], "build {build_id} left a VM");
    assert_eq!(bed.journals(), 0);
    assert!(bed.sshd.log().contains("Accepted publickey"), "the step ran over SSH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_clean_removes_the_build_vm_from_the_journal_or_by_its_keys() {
    let bed = bed().await;
    let (mut child, _) = bed.build_until_provisioning().await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    exit_code(&mut child, Duration::from_secs(10)).await;
    assert_eq!(bed.vms().await.len(), 1, "kill -9 leaves the build VM");

    let dry = watched_async(&mut bed.imgbake(&["clean", "tree.toml", "--dry-run"])).await;
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(text.contains("would remove vsphere vm"), "{text}");
    assert_eq!(bed.vms().await.len(), 1, "a dry run removes nothing");
    let out = watched_async(&mut bed.imgbake(&["clean", "tree.toml"])).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(bed.vms().await, vec![], "clean from the journal");

    // The journal lost too: the VM's extraConfig (tree id, build id) is enough.
    let (mut child, build_id) = bed.build_until_provisioning().await;
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    exit_code(&mut child, Duration::from_secs(10)).await;
    std::fs::remove_dir_all(bed.dir.path().join(".imgbake")).unwrap();
    assert_eq!(bed.vms().await.len(), 1);
    let out = watched_async(&mut bed.imgbake(&["clean", "tree.toml", "--build-id", &build_id])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("removed 1 resource(s)"), "{text}");
    assert_eq!(bed.vms().await, vec![], "clean by the VM's keys");
}
