//! The `ansible` and `ansible_local` steps against the bed's real OpenSSH server, with the real
//! `ansible-playbook` that tests/bed/install.sh puts in its own venv. The bed's sshd runs on this
//! machine, so what the playbooks did ("remote" files) can be inspected here.

mod provision_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imgbake_config::Os;
use imgbake_core::builder::Provision;
use imgbake_core::communicator::{CommError, Communicator, ExecOutput, ExecRequest};
use imgbake_core::error::ErrorKind;
use imgbake_core::event::EventSink;
use imgbake_core::fingerprint::Inputs;
use imgbake_core::ssh_access::{SshAccess, SshHostKeys};
use imgbake_core::wait::Wait;
use imgbake_ssh::{Auth, HostKeyPolicy, PrivateKey, SshCommunicator, SshConfig};
use imgbake_testbed::{SshTarget, Sshd};
use provision_support::*;

async fn sshd() -> Sshd {
    Sshd::start().await.expect("starting the bed's sshd failed: run tests/bed/install.sh")
}

/// The bed's ansible-playbook (tests/bed/install.sh).
fn ansible_playbook() -> PathBuf {
    let p = imgbake_testbed::ansible_bin_dir().join("ansible-playbook");
    assert!(p.is_file(), "{} is missing: run tests/bed/install.sh", p.display());
    p
}

/// A step's `command` pointing at the bed's ansible-playbook.
fn command() -> String {
    ansible_playbook().display().to_string()
}

/// No step may leave its private directory (key, variables, inventory) behind: the playbooks write
/// where it was to `inv_dir` (Ansible's `ansible_inventory_sources`).
fn assert_private_dir_gone(fx: &Fixture) {
    let dir = std::fs::read_to_string(fx.path("out/inv_dir")).expect("the playbook recorded its inventory's dir");
    let dir = dir.trim();
    assert!(dir.contains("imgbake-ansible-"), "{dir}");
    assert!(!Path::new(dir).exists(), "{dir} is still there");
}

const SITE: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: greeting from a template
      copy:
        dest: "{{ out }}/greeting"
        content: "hello {{ who }} from {{ imgbake_image }}\n"
    - name: the secret, used but never shown
      copy:
        dest: "{{ out }}/secret"
        content: "{{ secret_value }}"
        mode: "0600"
      no_log: false
    - name: show the secret in the output (imgbake must redact it)
      debug:
        msg: "the secret is {{ secret_value }}"
    - name: where the private files are
      copy:
        dest: "{{ out }}/inv_dir"
        content: "{{ ansible_inventory_sources[0] | dirname }}\n"
    - name: the private dir and the variables file are private
      stat:
        path: "{{ ansible_inventory_sources[0] | dirname }}/vars.json"
      register: vars_file
    - name: record their modes
      copy:
        dest: "{{ out }}/modes"
        content: "{{ vars_file.stat.mode }}\n"
    - name: become another user
      command: id -un
      become: true
      become_user: nobody
      register: who_became
    - name: record who
      copy:
        dest: "{{ out }}/became"
        content: "{{ who_became.stdout }}\n"
    - name: tagged and skipped
      file:
        path: "{{ out }}/skipped"
        state: touch
      tags: [skipme]
    - name: from the galaxy role
      include_role:
        name: greeter
"#;

/// A role packed the way Galaxy serves them, for a requirements file that needs no network.
fn pack_role(fx: &Fixture) {
    let role = fx.path("role-src/greeter");
    std::fs::create_dir_all(role.join("tasks")).unwrap();
    std::fs::create_dir_all(role.join("meta")).unwrap();
    std::fs::write(role.join("meta/main.yml"), "galaxy_info:\n  author: imgbake\n  description: test\n  license: MIT\n  min_ansible_version: '2.9'\n  platforms: []\ndependencies: []\n").unwrap();
    std::fs::write(
        role.join("tasks/main.yml"),
        "- copy:\n    dest: \"{{ out }}/from_role\"\n    content: \"role says hi\\n\"\n",
    )
    .unwrap();
    let st = std::process::Command::new("tar")
        .args(["czf", "greeter.tar.gz", "greeter"])
        .current_dir(fx.path("role-src"))
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn ansible_runs_a_playbook_over_the_pinned_connection() {
    let bed = sshd().await;
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
name = "configure"
ansible = {{ playbook = "ansible/site.yml", command = "{cmd}", galaxy_file = "ansible/requirements.yml", extra_vars = {{ out = "@DIR@/out", who = "world", secret_value = "{{{{ var.secret }}}}" }}, skip_tags = ["skipme"], groups = ["web"], extra_arguments = ["--diff"] }}
"#,
            cmd = command()
        ),
        &[
            ("ansible/site.yml", SITE),
            ("ansible/requirements.yml", "- src: ../role-src/greeter.tar.gz\n  name: greeter\n"),
        ],
    );
    std::fs::create_dir_all(fx.path("out")).unwrap();
    // nobody writes there too (become_user): it may pass through the test's dir and write in out/.
    std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(fx.path("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
    pack_role(&fx);
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    tokio::time::timeout(Duration::from_secs(300), runner.provision(&comm, None))
        .await
        .expect("the ansible step did not end within 5 minutes")
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), output(&log).join("\n")));

    let read = |f: &str| std::fs::read_to_string(fx.path(&format!("out/{f}"))).unwrap_or_default();
    assert_eq!(read("greeting"), "hello world from box\n");
    assert_eq!(read("secret"), SECRET, "the sensitive value reached the playbook");
    assert_eq!(read("modes").trim(), "0600", "vars.json is private");
    assert_eq!(read("became").trim(), "nobody", "become + become_user");
    assert_eq!(read("from_role"), "role says hi\n", "the Galaxy requirement was installed and used");
    assert!(!fx.path("out/skipped").exists(), "skip_tags skipped the tagged task");
    let lines = step_output(&log, "configure");
    assert!(lines.iter().any(|l| l.contains("PLAY RECAP")), "ansible's output is the step's: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("the secret is <sensitive>")), "{lines:#?}");
    let text = all_text(&log.events());
    assert!(!text.contains(SECRET), "the secret leaked into the events");
    assert_private_dir_gone(&fx);
    // The ~/.ansible of the galaxy install stayed clean: roles went to the run's private path.
    assert_eq!(finished(&log), vec![(1, "ok".into())]);
    comm.disconnect().await;
}

/// The build's key only in memory (as cloud builders generate it): written out 0600 for the run.
#[tokio::test]
async fn an_in_memory_login_key_and_tags_work() {
    let bed = sshd().await;
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
ansible = {{ playbook = "pb/tagged.yml", command = "{cmd}", tags = ["wanted"], extra_vars = {{ out = "@DIR@/out", n = 3, flags = {{ a = true }} }} }}
"#,
            cmd = command()
        ),
        &[(
            "pb/tagged.yml",
            r#"
- hosts: default
  gather_facts: false
  tasks:
    - copy: { dest: "{{ out }}/wanted", content: "{{ n + 1 }} {{ flags.a }}" }
      tags: [wanted]
    - file: { path: "{{ out }}/unwanted", state: touch }
      tags: [other]
    - copy: { dest: "{{ out }}/inv_dir", content: "{{ ansible_inventory_sources[0] | dirname }}" }
      tags: [wanted]
"#,
        )],
    );
    std::fs::create_dir_all(fx.path("out")).unwrap();
    let pem = std::fs::read_to_string(bed.client_key_path()).unwrap();
    let key = PrivateKey::from_openssh(pem.trim()).expect("the bed's client key parses");
    let config = SshConfig::new(bed.host(), bed.port(), bed.user())
        .with_auth(Auth::Key(Arc::new(key)))
        .with_host_key(HostKeyPolicy::Pinned(vec![bed.host_public_key().to_string()]));
    let comm = SshCommunicator::new(config);
    let (runner, log) = new_runner(&fx, "aws");
    tokio::time::timeout(Duration::from_secs(300), runner.provision(&comm, None))
        .await
        .expect("the ansible step did not end within 5 minutes")
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), output(&log).join("\n")));
    assert_eq!(std::fs::read_to_string(fx.path("out/wanted")).unwrap(), "4 True");
    assert!(!fx.path("out/unwanted").exists(), "only the tagged tasks ran");
    assert_private_dir_gone(&fx);
    comm.disconnect().await;
}

/// The SSH communicator as built, but telling Ansible another host key is the machine's: what a man
/// in the middle (or a replaced machine) looks like to Ansible.
struct OtherHostKey {
    inner: SshCommunicator,
    key: String,
}

#[async_trait]
impl Communicator for OtherHostKey {
    fn target(&self) -> String {
        self.inner.target()
    }
    fn os(&self) -> Os {
        self.inner.os()
    }
    async fn connect(&self, wait: &Wait) -> Result<(), CommError> {
        self.inner.connect(wait).await
    }
    async fn disconnect(&self) {
        self.inner.disconnect().await
    }
    async fn exec(&self, req: &ExecRequest, events: &EventSink) -> Result<ExecOutput, CommError> {
        self.inner.exec(req, events).await
    }
    async fn upload(&self, local: &Path, remote: &str, events: &EventSink) -> Result<u64, CommError> {
        self.inner.upload(local, remote, events).await
    }
    async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), CommError> {
        self.inner.upload_bytes(data, remote, mode).await
    }
    async fn download(&self, remote: &str, local: &Path, events: &EventSink) -> Result<u64, CommError> {
        self.inner.download(remote, local, events).await
    }
    fn ssh_access(&self) -> Option<SshAccess> {
        let mut a = self.inner.ssh_access()?;
        a.host_keys = SshHostKeys::Pinned(vec![self.key.clone()]);
        Some(a)
    }
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused() {
    let bed = sshd().await;
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
ansible = {{ playbook = "site.yml", command = "{cmd}", extra_vars = {{ out = "@DIR@" }} }}
"#,
            cmd = command()
        ),
        &[(
            "site.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - file: { path: \"{{ out }}/ran\", state: touch }\n",
        )],
    );
    let (_key, other) = imgbake_ssh::generate_ed25519("not the machine").unwrap();
    let comm = OtherHostKey { inner: communicator(&bed), key: other };
    let (runner, log) = new_runner(&fx, "aws");
    let err = tokio::time::timeout(Duration::from_secs(120), runner.provision(&comm, None))
        .await
        .expect("the ansible step did not end within 2 minutes")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Step, "{}", err.chain());
    assert!(err.message.contains("host key is not the one imgbake trusts"), "{}", err.message);
    assert!(err.message.contains("(the machine was unreachable)"), "{}", err.message);
    assert!(!fx.path("ran").exists(), "nothing ran on a machine with an unexpected host key");
    assert!(output(&log).iter().any(|l| l.contains("Host key verification failed")), "{:#?}", output(&log));
    comm.disconnect().await;
}

#[tokio::test]
async fn a_failing_task_fails_the_build_with_a_clear_message() {
    let bed = sshd().await;
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
ansible = {{ playbook = "site.yml", command = "{cmd}" }}

[[images.box.steps]]
shell = {{ inline = ["touch @DIR@/must-not-run"] }}
"#,
            cmd = command()
        ),
        &[(
            "site.yml",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: this one fails\n      command: /bin/false\n",
        )],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let err = tokio::time::timeout(Duration::from_secs(120), runner.provision(&comm, None))
        .await
        .expect("the ansible step did not end within 2 minutes")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Step);
    assert!(
        err.message.contains("ansible #1")
            && err.message.contains("exited with code 2 (one or more tasks failed)")
            && err.message.contains("PLAY RECAP"),
        "{}",
        err.message
    );
    assert!(err.span.is_some(), "the error points at the step");
    assert!(output(&log).iter().any(|l| l.contains("this one fails")), "{:#?}", output(&log));
    assert!(!fx.path("must-not-run").exists());
    comm.disconnect().await;
}

#[tokio::test]
async fn a_missing_ansible_playbook_says_how_to_get_it() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
ansible = { playbook = "site.yml", command = "imgbake-no-such-ansible-playbook" }
"#,
        &[("site.yml", "- hosts: all\n  tasks: []\n")],
    );
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Local);
    assert!(err.message.contains("pip install ansible-core"), "{}", err.message);
    comm.disconnect().await;
}

#[tokio::test]
async fn ansible_local_uploads_the_playbook_dir_and_runs_it_on_the_machine() {
    let bed = sshd().await;
    let bin = imgbake_testbed::ansible_bin_dir();
    let fx = fixture(
        &format!(
            r#"
[[images.box.steps]]
name = "local ansible"
ansible_local = {{ playbook = "ansible/site.yml", playbook_dir = "ansible", command = "@DIR@/bin/ansible-playbook", install = "mkdir -p @DIR@/bin && ln -sf {bin}/ansible-playbook {bin}/ansible-galaxy @DIR@/bin/", staging_dir = "@DIR@/staging", tags = ["main"], extra_vars = {{ out = "@DIR@/out", secret_value = "{{{{ var.secret }}}}" }} }}
"#,
            bin = bin.display()
        ),
        &[
            (
                "ansible/site.yml",
                r#"
- hosts: localhost
  gather_facts: false
  roles: [writer]
  tasks:
    - debug: { msg: "the secret is {{ secret_value }}" }
      tags: [main]
    - copy: { dest: "{{ out }}/connection", content: "{{ ansible_connection }}" }
      tags: [main]
    - file: { path: "{{ out }}/untagged", state: touch }
"#,
            ),
            (
                "ansible/roles/writer/tasks/main.yml",
                "- copy: { dest: \"{{ out }}/secret\", content: \"{{ secret_value }}\" }\n  tags: [main]\n- stat: { path: \"{{ playbook_dir }}/../vars.json\" }\n  register: v\n  tags: [main]\n- copy: { dest: \"{{ out }}/vars_mode\", content: \"{{ v.stat.mode }}\" }\n  tags: [main]\n",
            ),
        ],
    );
    std::fs::create_dir_all(fx.path("out")).unwrap();
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    tokio::time::timeout(Duration::from_secs(300), runner.provision(&comm, None))
        .await
        .expect("the ansible_local step did not end within 5 minutes")
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), output(&log).join("\n")));
    let read = |f: &str| std::fs::read_to_string(fx.path(&format!("out/{f}"))).unwrap_or_default();
    assert_eq!(read("connection"), "local");
    assert_eq!(read("secret"), SECRET);
    assert_eq!(read("vars_mode"), "0600", "the uploaded variables file is private");
    assert!(!fx.path("out/untagged").exists(), "tags chose the tasks");
    assert!(fx.path("bin/ansible-playbook").exists(), "`install` ran because the command was missing");
    assert!(!fx.path("staging").exists(), "the staging directory (with the variables file) is removed");
    let lines = step_output(&log, "local ansible");
    assert!(lines.iter().any(|l| l.contains("the secret is <sensitive>")), "{lines:#?}");
    assert!(!all_text(&log.events()).contains(SECRET), "the secret leaked into the events");
    comm.disconnect().await;
}

#[tokio::test]
async fn ansible_local_without_ansible_and_without_install_fails_clearly() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
ansible_local = { playbook = "site.yml", command = "imgbake-no-such-ansible-playbook", install = "", staging_dir = "@DIR@/staging" }
"#,
        &[("site.yml", "- hosts: localhost\n  tasks: []\n")],
    );
    let comm = communicator(&bed);
    let (runner, _log) = new_runner(&fx, "aws");
    let err = runner.provision(&comm, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Step);
    assert!(err.message.contains("is not on the machine and `install` is empty"), "{}", err.message);
    assert!(!fx.path("staging").exists(), "the staging directory is removed on failure too");
    comm.disconnect().await;
}

/// The playbook, the files beside it and the galaxy file are part of the image's fingerprint.
#[test]
fn playbook_changes_change_the_fingerprint() {
    let fx = fixture(
        r#"
[[images.box.steps]]
ansible = { playbook = "ansible/site.yml", galaxy_file = "ansible/requirements.yml" }

[[images.box.steps]]
ansible_local = { playbook = "local/site.yml", playbook_dir = "local" }
"#,
        &[
            ("ansible/site.yml", "- hosts: all\n  roles: [base]\n"),
            ("ansible/roles/base/tasks/main.yml", "- debug: { msg: one }\n"),
            ("ansible/requirements.yml", "[]\n"),
            ("local/site.yml", "- hosts: localhost\n"),
            ("local/group_vars/all.yml", "x: 1\n"),
            ("unrelated.txt", "a"),
        ],
    );
    let fp = || {
        let img = fx.tree.image("box").unwrap();
        Inputs::compute(&fx.tree, img, "aws", "ami-1").unwrap().fingerprint()
    };
    let base = fp();
    let mut seen = vec![base.clone()];
    for (file, content) in [
        ("ansible/site.yml", "- hosts: all\n  roles: [base]\n  become: true\n"),
        ("ansible/roles/base/tasks/main.yml", "- debug: { msg: two }\n"),
        ("ansible/requirements.yml", "- src: x\n"),
        ("local/group_vars/all.yml", "x: 2\n"),
    ] {
        std::fs::write(fx.path(file), content).unwrap();
        let now = fp();
        assert!(!seen.iter().any(|f| f.matches(now.as_str())), "changing {file} did not change the fingerprint");
        seen.push(now);
    }
    // What the playbooks do not read does not count.
    let before = fp();
    std::fs::write(fx.path("unrelated.txt"), "b").unwrap();
    assert!(fp().matches(before.as_str()), "an unrelated file changed the fingerprint");
}
