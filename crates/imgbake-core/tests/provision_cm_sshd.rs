//! `puppet_apply` and `chef_solo` against the bed's real OpenSSH server (on this machine: "remote"
//! paths are temp paths we can inspect, and only temp paths are touched — Puppet's own state
//! directories are pointed into the temp dir too).
//!
//! Puppet is Debian's (installed by tests/bed/install.sh) and really runs: a manifest with a module
//! and Hiera data, facts, a sensitive fact, `--detailed-exitcodes` 2 and 0, failed resources (4, 6).
//! Chef and Cinc cannot be obtained here (not in Debian 12, PyPI or npm): the client is a stand-in
//! script that records what it was given, which checks the upload, `solo.rb`, the 0600 attributes
//! file and the clean-up; and a missing client whose install fails gives one clear error.

mod provision_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use imgbake_core::builder::Provision;
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::provision::StepRunner;
use imgbake_ssh::SshCommunicator;
use imgbake_testbed::Sshd;
use provision_support::*;

async fn sshd() -> Sshd {
    Sshd::start().await.expect("starting the bed's sshd failed: run tests/bed/install.sh")
}

fn require_puppet() {
    let ok =
        std::process::Command::new("sh").args(["-c", "command -v puppet"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "puppet is missing (Debian `puppet`): run tests/bed/install.sh");
}

/// Run the steps under a hard limit: a hung tool must fail the test, not stall it.
async fn provision(runner: &StepRunner, comm: &SshCommunicator) -> Result<(), BuildError> {
    tokio::time::timeout(Duration::from_secs(240), runner.provision(comm, None))
        .await
        .expect("provisioning did not end within 240s")
}

/// Puppet's state, config and code directories in the temp dir, so a run as root leaves nothing in
/// /var/cache/puppet or /etc/puppet of this machine.
const PUPPET_DIRS: &str = r#"extra_arguments = ["--vardir", "@DIR@/pvar", "--confdir", "@DIR@/pconf", "--codedir", "@DIR@/pcode", "--logdir", "@DIR@/plog", "--rundir", "@DIR@/prun"]"#;

const MODULE: &str = r#"class motd (String $greeting) {
  file { "${facts['target_dir']}/motd":
    content => "${greeting} ${facts['role']}\n",
  }
  file { "${facts['target_dir']}/secret":
    content => $facts['db_password'],
    mode    => '0600',
  }
}
"#;

#[tokio::test]
async fn puppet_apply_with_a_module_hiera_data_and_facts_then_again_without_changes() {
    require_puppet();
    let bed = sshd().await;
    let step = format!(
        r#"puppet_apply = {{ manifest = "manifests/site.pp", module_paths = ["modules"], hiera_config = "hiera/hiera.yaml", hiera_data = "hiera/data", facts = {{ role = "web", target_dir = "@DIR@/out", db_password = "{{{{ var.secret }}}}" }}, staging_dir = "@DIR@/staging", {PUPPET_DIRS} }}"#
    );
    let fx = fixture(
        &format!(
            "[[images.box.steps]]\nname = \"puppet\"\ntimeout = \"3m\"\n{step}\n\n[[images.box.steps]]\nname = \"puppet again\"\ntimeout = \"3m\"\n{step}\n"
        ),
        &[
            (
                "manifests/site.pp",
                "include motd\nnotice(\"role is ${facts['role']}\")\nnotice(\"the password is ${facts['db_password']}\")\n",
            ),
            ("modules/motd/manifests/init.pp", MODULE),
            ("hiera/hiera.yaml", "version: 5\nhierarchy:\n  - name: common\n    path: common.yaml\n"),
            ("hiera/data/common.yaml", "motd::greeting: hello from hiera\n"),
            ("out/.keep", ""),
        ],
    );
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    provision(&runner, &comm).await.unwrap_or_else(|e| panic!("{}\n{:#?}", e.chain(), log.events()));

    assert_eq!(
        std::fs::read_to_string(fx.path("out/motd")).unwrap(),
        "hello from hiera web\n",
        "module, Hiera data, facts"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("out/secret")).unwrap(),
        SECRET,
        "the sensitive fact reached the manifest"
    );
    let first = step_output(&log, "puppet");
    assert!(first.iter().any(|l| l.contains("role is web")), "{first:?}");
    assert!(first.iter().any(|l| l.contains("the password is <sensitive>")), "redacted: {first:?}");
    let infos = infos(&log);
    assert!(infos.iter().any(|i| i.contains("changes applied (exit code 2)")), "2 is success: {infos:?}");
    assert!(infos.iter().any(|i| i.contains("no changes (exit code 0)")), "the second run changes nothing: {infos:?}");
    assert_eq!(finished(&log), vec![(1, "ok".into()), (2, "ok".into())]);
    assert!(!fx.path("staging").exists(), "the staging directory is removed");
    let everything = format!("{}\n{}", all_text(&log.events()), serde_json::to_string(&runner.report()).unwrap());
    assert!(!everything.contains(SECRET), "the sensitive fact leaked:\n{everything}");
    comm.disconnect().await;
}

#[tokio::test]
async fn puppet_failed_resources_fail_the_step_with_the_exit_code_and_its_meaning() {
    require_puppet();
    let bed = sshd().await;
    for (manifest, code, meaning) in [
        (
            "file { '@DIR@/out/changed': content => \"x\\n\" }\nexec { 'fails': command => '/bin/false' }\n",
            6,
            "changes were made and some resources failed",
        ),
        ("exec { 'fails': command => '/bin/false' }\n", 4, "some resources failed"),
    ] {
        let fx = fixture(
            &format!(
                "[[images.box.steps]]\ntimeout = \"3m\"\npuppet_apply = {{ manifest = \"site.pp\", staging_dir = \"@DIR@/staging\", {PUPPET_DIRS} }}\n"
            ),
            // The manifest names the temp dir, known once the fixture exists: written after loading.
            &[("out/.keep", ""), ("site.pp", "")],
        );
        std::fs::write(fx.path("site.pp"), manifest.replace("@DIR@", &fx.dir.path().display().to_string())).unwrap();
        let comm = communicator(&bed);
        let (runner, log) = new_runner(&fx, "aws");
        let err = provision(&runner, &comm).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Step, "{}", err.chain());
        let want = format!("puppet_apply #1: puppet apply exited with code {code}: {meaning}");
        assert!(err.message.contains(&want), "want `{want}` in: {}\n{:#?}", err.message, output(&log));
        assert!(
            output(&log).iter().any(|l| l.contains("/bin/false")),
            "Puppet's own error is shown: {:?}",
            output(&log)
        );
        assert!(!fx.path("staging").exists(), "the staging directory is removed after a failure too");
        comm.disconnect().await;
    }
}

const FAKE_CLIENT: &str = r#"#!/bin/sh
# A stand-in for cinc-solo (no Chef or Cinc can be installed here): records what it was given.
echo "fake cinc-solo $*"
while [ $# -gt 0 ]; do
  case $1 in
    --config) cfg=$2; shift ;;
    --json-attributes) js=$2; shift ;;
  esac
  shift
done
# The first run's record is kept (a later step runs it again).
if [ ! -e @DIR@/seen-solo.rb ]; then
  cp "$cfg" @DIR@/seen-solo.rb
  cp "$js" @DIR@/seen.json
  stat -c %a "$js" > @DIR@/json-mode
  ls "$(dirname "$cfg")/cookbooks-1" > @DIR@/seen-cookbooks
fi
exit ${FAKE_EXIT:-0}
"#;

#[tokio::test]
async fn chef_solo_uploads_writes_solo_rb_and_0600_attributes_and_cleans_up() {
    let bed = sshd().await;
    let fx = fixture(
        r#"
[[images.box.steps]]
name = "chef"
chef_solo = { run_list = ["recipe[base]"], cookbook_paths = ["cookbooks"], roles_path = "roles", json = { db = { password = "{{ var.secret }}" } }, staging_dir = "@DIR@/staging", install = "echo must-not-run; exit 9", execute_command = "PATH=@DIR@/bin:$PATH sh -c {{quote command}}" }

[[images.box.steps]]
name = "chef fails"
chef_solo = { run_list = ["recipe[base]"], cookbook_paths = ["cookbooks"], staging_dir = "@DIR@/staging", keep_staging = true, execute_command = "FAKE_EXIT=3 PATH=@DIR@/bin:$PATH sh -c {{quote command}}" }
"#,
        &[("cookbooks/base/recipes/default.rb", "log 'hello'\n"), ("roles/web.json", "{}\n"), ("bin/cinc-solo", "")],
    );
    std::fs::write(fx.path("bin/cinc-solo"), FAKE_CLIENT.replace("@DIR@", &fx.dir.path().display().to_string()))
        .unwrap();
    std::fs::set_permissions(fx.path("bin/cinc-solo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let comm = communicator(&bed);
    let (runner, log) = new_runner(&fx, "aws");
    let err = provision(&runner, &comm).await.unwrap_err();

    // The first step: the client was there (not installed), given solo.rb and the attributes.
    let d = fx.dir.path().display().to_string();
    let ran = step_output(&log, "chef");
    assert!(
        !ran.iter().any(|l| l.contains("must-not-run")),
        "the install command does not run when the client is there"
    );
    assert!(
        ran.iter().any(|l| l.starts_with(&format!(
            "fake cinc-solo --no-color --config {d}/staging/solo.rb --json-attributes {d}/staging/imgbake-box-1-attributes-"
        ))),
        "{ran:?}"
    );
    let solo = std::fs::read_to_string(fx.path("seen-solo.rb")).unwrap();
    assert!(solo.contains(&format!("cookbook_path ['{d}/staging/cookbooks-1']")), "{solo}");
    assert!(solo.contains(&format!("role_path '{d}/staging/roles'")), "{solo}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("seen.json")).unwrap()).unwrap();
    assert_eq!(json["run_list"], serde_json::json!(["recipe[base]"]));
    assert_eq!(json["db"]["password"], SECRET, "the attributes reached the client");
    assert_eq!(std::fs::read_to_string(fx.path("json-mode")).unwrap().trim(), "600");
    assert_eq!(std::fs::read_to_string(fx.path("seen-cookbooks")).unwrap().trim(), "base");

    // The second step: the client fails; keep_staging leaves the directory but not the attributes.
    assert_eq!(err.kind, ErrorKind::Step);
    assert!(err.message.contains("chef fails: Cinc Client (solo mode) exited with code 3"), "{}", err.message);
    assert_eq!(finished(&log), vec![(1, "ok".into()), (2, "failed".into())]);
    assert!(fx.path("staging/solo.rb").exists(), "keep_staging = true keeps the staging directory");
    assert_eq!(
        leftovers(&fx.path("staging"), "imgbake-"),
        Vec::<String>::new(),
        "the attributes file is always removed"
    );
    let everything = format!("{}\n{}", all_text(&log.events()), err.chain());
    assert!(!everything.contains(SECRET), "an attribute leaked:\n{everything}");
    comm.disconnect().await;
}

#[tokio::test]
async fn chef_solo_missing_client_whose_install_fails_is_one_clear_error_and_staging_is_removed() {
    let bed = sshd().await;
    for (install, want) in [
        (
            "echo 'cannot reach omnitruck' >&2; exit 7",
            "chef_solo #1: installing Cinc Client failed: the install command exited with code 7",
        ),
        ("true", "chef_solo #1: the install command succeeded but Cinc Client is still not there"),
    ] {
        let fx = fixture(
            &format!(
                r#"
[[images.box.steps]]
chef_solo = {{ run_list = ["recipe[base]"], cookbook_paths = ["cookbooks"], staging_dir = "@DIR@/staging", install = "{install}" }}
"#
            ),
            &[("cookbooks/base/recipes/default.rb", "log 'hello'\n")],
        );
        let comm = communicator(&bed);
        let (runner, log) = new_runner(&fx, "aws");
        let err = provision(&runner, &comm).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Step);
        assert!(err.message.contains(want), "want `{want}` in: {}", err.message);
        assert!(infos(&log).iter().any(|i| i.contains("Cinc Client is missing; installing it")), "{:?}", infos(&log));
        assert!(!fx.path("staging").exists(), "the staging directory is removed");
        comm.disconnect().await;
    }
}
