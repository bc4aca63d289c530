//! The vsphere builder against the bed: VMware's own simulator (vcsim, built from Debian's govmomi)
//! for the API, the bed's OpenSSH server for the machine (vcsim's VMs do not run: the communicator
//! goes to `communicator.host`/`port`). vcsim plays cloud-init for the bed: on power-on it installs
//! the host key and the login key from the VM's `guestinfo.userdata` into the bed's sshd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, run};
use imgbake_core::wait::Wait;
use imgbake_testbed::{SshTarget, Sshd, Vcsim, VcsimOptions};
use imgbake_vsphere::soap::{Client, Tls};
use imgbake_vsphere::vim::{MoRef, Vim, extra_config, text};
use imgbake_vsphere::{Endpoint, Environment, VsphereBuilder, VsphereOptions, VsphereSchema, vm};

/// A VM of vcsim's default inventory, made a template at start: the chain's source.
const SOURCE: &str = "DC0_H0_VM1";
const TREE_ID: &str = "vsphere-test-0001";

struct Bed {
    vcsim: Vcsim,
    sshd: Sshd,
    dir: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Bed {
        let sshd = Sshd::start().await.expect("sshd (run tests/bed/install.sh)");
        let vcsim = Vcsim::start_with(VcsimOptions {
            templates: vec![SOURCE.into()],
            // Distinctive, so finding it anywhere in the output means it leaked.
            password: "vc-Secret-7f3a9".into(),
            cloud_init: Some((sshd.dir().join("ssh_host_ed25519_key"), sshd.dir().join("authorized_keys"))),
            ..VcsimOptions::default()
        })
        .await
        .expect("vcsim (run tests/bed/install.sh)");
        Bed { vcsim, sshd, dir: tempfile::tempdir().unwrap() }
    }

    fn environment(&self) -> Environment {
        Environment::Fixed(BTreeMap::from([("VSPHERE_PASSWORD".to_string(), self.vcsim.password().to_string())]))
    }

    fn builder(&self) -> VsphereBuilder {
        VsphereBuilder::new(VsphereOptions {
            environment: self.environment(),
            request_timeout: Duration::from_secs(30),
            poll: Wait::new(Duration::from_secs(60)).interval(Duration::from_millis(50), Duration::from_millis(300)),
        })
    }

    /// base (from the template) → app (from base's template), reaching the bed's sshd.
    fn write_tree(&self, app_step: &str, vsphere_extra: &str) {
        let text = format!(
            r#"[settings]
name = "vsphere-test"
id = "{TREE_ID}"

[defaults]
builder = "vsphere"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}

[defaults.vsphere]
url = "{url}"
username = "{user}"
ca_file = "{ca}"
cpus = 2
memory = "1GiB"
notes = "built by imgbake"
shutdown_timeout = "5s"
{vsphere_extra}

[images.base]
source = {{ template = "{SOURCE}" }}
[[images.base.steps]]
shell = {{ inline = ["echo base > {home}/base.txt"] }}

[images.app]
parent = "base"
[[images.app.steps]]
shell = {{ inline = ["{app_step}"] }}
"#,
            port = self.sshd.port(),
            url = self.vcsim.url(),
            user = self.vcsim.username(),
            ca = self.vcsim.ca_file().display(),
            home = self.sshd.home_dir().display(),
        );
        std::fs::write(self.dir.path().join("tree.toml"), text).unwrap();
    }

    fn tree(&self) -> Tree {
        let opts = LoadOptions {
            schemas: Schemas::new().with(VsphereSchema::arc()),
            env: Default::default(),
            ..LoadOptions::default()
        };
        Tree::load(&self.dir.path().join("tree.toml"), &opts).unwrap_or_else(|d| panic!("{d}"))
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::new();
        r.register(Arc::new(self.builder()));
        r
    }

    async fn vim(&self) -> Vim {
        let tls = Tls { insecure: false, ca_file: Some(self.vcsim.ca_file()) };
        let vim = Vim::connect(Client::new(&self.vcsim.url(), &tls, Duration::from_secs(30)).unwrap()).await.unwrap();
        vim.login(self.vcsim.username(), self.vcsim.password()).await.unwrap();
        vim
    }

    /// Every VM imgbake made for the test tree: (name, is a template, extraConfig).
    async fn imgbake_vms(&self) -> Vec<(String, bool, BTreeMap<String, String>)> {
        let vim = self.vim().await;
        let dc = vim.find_by_path("/DC0").await.unwrap().unwrap();
        let all = vim.all_of(&dc, "VirtualMachine", &["name", "config.template", "config.extraConfig"]).await.unwrap();
        let mut out: Vec<_> = all
            .into_iter()
            .map(|(_, p)| {
                (text(&p, "name").unwrap().to_string(), text(&p, "config.template") == Some("true"), extra_config(&p))
            })
            .filter(|(_, _, e)| e.get("imgbake.tree-id").map(String::as_str) == Some(TREE_ID))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn journals(&self) -> usize {
        std::fs::read_dir(self.dir.path().join(".imgbake/journal")).map(|d| d.count()).unwrap_or(0)
    }
}

async fn build(bed: &Bed) -> (imgbake_core::schedule::RunSummary, imgbake_core::plan::Plan) {
    let (tree, registry) = (bed.tree(), bed.registry());
    let events = EventSink::discard();
    let p = plan(&tree, &registry, &PlanOptions::default(), &events).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    let s = run(&tree, &p, &registry, RunOptions::default(), &events).await.unwrap();
    (s, p)
}

fn action(p: &imgbake_core::plan::Plan, image: &str) -> Action {
    p.get(image, "vsphere").unwrap_or_else(|| panic!("no decision for {image}")).action
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_chain_is_built_reused_and_rebuilt_downstream_only() {
    let bed = Bed::start().await;
    bed.write_tree("echo app v1 > /dev/null", "");

    let (s, p) = build(&bed).await;
    assert_eq!((action(&p, "base"), action(&p, "app")), (Action::Build, Action::Build));
    assert!(s.ok(), "{s:#?}\nvcsim:\n{}", bed.vcsim.log());
    assert_eq!(std::fs::read_to_string(bed.sshd.home_dir().join("base.txt")).unwrap(), "base\n");
    // Only templates are left, each with its fingerprint and the guestinfo keys blanked.
    let vms = bed.imgbake_vms().await;
    assert_eq!(vms.len(), 2, "{vms:#?}");
    for (name, template, extra) in &vms {
        assert!(template, "{name} is a template");
        assert_eq!(extra["imgbake.complete"], "true");
        assert_eq!(extra["imgbake.role"], "artifact");
        assert!(extra["imgbake.fingerprint"].len() > 10, "{extra:?}");
        assert_eq!(extra.get("guestinfo.userdata").map(String::as_str).unwrap_or(""), "", "{name}: keys blanked");
    }
    let app = vms.iter().find(|v| v.0.starts_with("app-")).unwrap();
    let base = vms.iter().find(|v| v.0.starts_with("base-")).unwrap();
    assert_eq!(app.2["imgbake.parent"], base.2["imgbake.path"], "app was cloned from base's template");
    assert_eq!(bed.journals(), 0);

    // Nothing changed: both reused, from vCenter's records alone.
    let (_, p) = build(&bed).await;
    assert_eq!((action(&p, "base"), action(&p, "app")), (Action::Reuse, Action::Reuse));

    // A changed step rebuilds app only.
    bed.write_tree("echo app v2 > /dev/null", "");
    let (s, p) = build(&bed).await;
    assert_eq!((action(&p, "base"), action(&p, "app")), (Action::Reuse, Action::Build));
    assert!(s.ok(), "{s:#?}");
    assert_eq!(bed.imgbake_vms().await.len(), 3, "the old app template stays until pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_leaves_no_vm_and_no_journal() {
    let bed = Bed::start().await;
    bed.write_tree("exit 3", "");
    let (s, _) = build(&bed).await;
    assert!(!s.ok());
    let vms = bed.imgbake_vms().await;
    assert_eq!(vms.len(), 1, "only base's template: {vms:#?}");
    assert!(vms[0].0.starts_with("base-") && vms[0].1);
    assert_eq!(bed.journals(), 0);
}

#[tokio::test]
async fn a_failed_task_yields_its_fault_and_the_session_stays_usable() {
    let bed = Bed::start().await;
    let vim = bed.vim().await;
    let source = vim.find_by_path(&format!("/DC0/vm/{SOURCE}")).await.unwrap().expect("the bed's template");
    let folder = vim.find_by_path("/DC0/vm").await.unwrap().unwrap();
    let pool = vim.find_by_path("/DC0/host/DC0_H0/Resources").await.unwrap().unwrap();
    let clone = |name: &'static str, location: String| {
        let (vim, source, folder) = (vim.clone(), source.clone(), folder.clone());
        async move {
            let spec = format!("<location>{location}</location><template>false</template><powerOn>false</powerOn>");
            let task = vim.clone_vm(&source, &folder, name, &spec).await?;
            vim.wait_task(&task, &format!("cloning to {name}"), Duration::from_secs(30)).await
        }
    };
    // A template cloned without a resource pool: the task fails with vSphere's fault.
    let e = clone("copy-1", String::new()).await.unwrap_err();
    assert_eq!(e.fault(), Some("InvalidArgument"), "{e}");
    assert!(e.to_string().starts_with("cloning to copy-1: "), "{e}");
    // The session is fine: the next task succeeds.
    let made = clone("copy-2", pool.xml("pool")).await.expect("a clone after a failed task");
    let vm = MoRef::of(made.as_ref().unwrap()).unwrap();
    assert_eq!(vim.find_by_path("/DC0/vm/copy-2").await.unwrap().as_ref(), Some(&vm));
    vm::destroy(&vim, &vm, Duration::from_secs(30)).await.unwrap();
    assert_eq!(vim.find_by_path("/DC0/vm/copy-2").await.unwrap(), None);
    // Deleting what is gone already is success (cleanup retries).
    vm::destroy(&vim, &vm, Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn bad_credentials_a_wrong_certificate_and_a_missing_template_fail_with_one_clear_line() {
    let bed = Bed::start().await;
    let endpoint = Endpoint {
        url: bed.vcsim.url(),
        username: bed.vcsim.username().into(),
        password_env: "VSPHERE_PASSWORD".into(),
        insecure: false,
        ca_file: Some(bed.vcsim.ca_file()),
    };
    let wrong = Environment::Fixed(BTreeMap::from([("VSPHERE_PASSWORD".to_string(), "wrong".to_string())]));
    let e = endpoint.login(&wrong, Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "vSphere at {} refused the login of user: check the user and the password in VSPHERE_PASSWORD",
            bed.vcsim.url()
        )
    );
    let e = endpoint.login(&Environment::Fixed(BTreeMap::new()), Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().contains("set the environment variable VSPHERE_PASSWORD"), "{e}");
    // Without the CA file, the self-signed certificate is refused, and the message says what to do.
    let untrusted = Endpoint { ca_file: None, ..endpoint.clone() };
    let e = untrusted.login(&bed.environment(), Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().contains("vsphere.ca_file"), "{e}");
    // insecure = true is an explicit opt-in that works.
    let insecure = Endpoint { ca_file: None, insecure: true, ..endpoint.clone() };
    insecure.login(&bed.environment(), Duration::from_secs(10)).await.expect("insecure login");
    // Nothing listens: one line naming the URL.
    let closed = Endpoint { url: "https://127.0.0.1:9/sdk".into(), ..endpoint.clone() };
    let e = closed.login(&bed.environment(), Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().starts_with("connecting to vSphere at https://127.0.0.1:9/sdk: cannot reach"), "{e}");

    // A template that does not exist: planning fails at the source line, before anything is made.
    std::fs::write(bed.dir.path().join("missing.txt"), "").unwrap();
    bed.write_tree("true", "");
    let text = std::fs::read_to_string(bed.dir.path().join("tree.toml")).unwrap().replace(SOURCE, "no-such-template");
    std::fs::write(bed.dir.path().join("tree.toml"), text).unwrap();
    let (tree, registry) = (bed.tree(), bed.registry());
    let e = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap_err();
    assert!(e.to_string().contains("no template or VM `no-such-template` in /DC0"), "{e}");
    assert!(bed.imgbake_vms().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_the_phases_and_no_password() {
    let bed = Bed::start().await;
    bed.write_tree("true", "");
    let (tree, registry) = (bed.tree(), bed.registry());
    let (events, log) = EventSink::memory();
    let p = plan(&tree, &registry, &PlanOptions { only: vec!["base".into()], ..Default::default() }, &events)
        .await
        .unwrap();
    let s = run(&tree, &p, &registry, RunOptions::default(), &events).await.unwrap();
    assert!(s.ok(), "{s:#?}");
    let phases: Vec<String> = log
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase } => Some(phase.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(phases, ["prepare", "launch", "connect", "provision", "sanitize", "shutdown", "capture", "distribute"]);
    let all = format!("{:?}", log.events());
    assert!(!all.contains(bed.vcsim.password()), "the password leaked into events");
    let manifest = std::fs::read_to_string(tree.manifest_path()).unwrap_or_default();
    assert!(!manifest.is_empty() && !manifest.contains(bed.vcsim.password()), "the manifest: {manifest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_clone_leaves_one_template_and_deletes_the_build_vm() {
    let bed = Bed::start().await;
    bed.write_tree("true", "output = \"clone\"");
    let (s, _) = build(&bed).await;
    assert!(s.ok(), "{s:#?}");
    let vms = bed.imgbake_vms().await;
    assert_eq!(vms.len(), 2, "one template per image, no build VM left: {vms:#?}");
    for (name, template, extra) in &vms {
        assert!(*template && name.ends_with("-t"), "{name}");
        assert_eq!(extra["imgbake.complete"], "true");
        assert!(extra["imgbake.path"].ends_with(&format!("/{name}")), "{extra:?}");
    }
    assert_eq!(bed.journals(), 0);
    let (_, p) = build(&bed).await;
    assert_eq!((action(&p, "base"), action(&p, "app")), (Action::Reuse, Action::Reuse));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_template_name_is_refused_on_the_rebuild_and_the_old_template_stays() {
    let bed = Bed::start().await;
    bed.write_tree("echo v1", "template_name = \"golden-{{ image.name }}\"");
    let (s, _) = build(&bed).await;
    assert!(s.ok(), "{s:#?}");
    bed.write_tree("echo v2", "template_name = \"golden-{{ image.name }}\"");
    let (s, _) = build(&bed).await;
    assert!(!s.ok());
    let err = format!("{s:?}");
    assert!(err.contains("/DC0/vm/golden-app exists already"), "{err}");
    let names: Vec<String> = bed.imgbake_vms().await.into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["golden-app", "golden-base"], "the existing templates were not touched");
}

#[tokio::test]
async fn an_expired_session_is_renewed_once() {
    let bed = Bed::start().await;
    let vim = bed.vim().await;
    assert!(vim.find_by_path("/DC0/vm").await.unwrap().is_some());
    // What vCenter does to an idle session: it ends. The next call logs in again by itself.
    vim.logout().await;
    let before = bed.vcsim.requests().iter().filter(|r| *r == "Login").count();
    assert!(vim.find_by_path("/DC0/vm").await.unwrap().is_some(), "the call after the session ended");
    let after = bed.vcsim.requests().iter().filter(|r| *r == "Login").count();
    assert_eq!(after, before + 1, "exactly one new login");
}

/// Clone template `template` (a name in /DC0/vm) to a VM `name`, powered on or not, as a consumer
/// of the tree's templates would. vSphere copies a template's extraConfig into its clones; vcsim
/// does not, so the spec carries the template's `imgbake.*` keys as vCenter would copy them.
async fn clone_from(bed: &Bed, template: &str, name: &str, power_on: bool) {
    let vim = bed.vim().await;
    let source = vim.find_by_path(&format!("/DC0/vm/{template}")).await.unwrap().expect("the template");
    let folder = vim.find_by_path("/DC0/vm").await.unwrap().unwrap();
    let pool = vim.find_by_path("/DC0/host/DC0_H0/Resources").await.unwrap().unwrap();
    let copied: String = bed
        .imgbake_vms()
        .await
        .into_iter()
        .find(|v| v.0 == template)
        .expect("the template's record")
        .2
        .iter()
        .filter(|(k, _)| k.starts_with("imgbake."))
        .map(|(k, v)| imgbake_vsphere::vim::option_value(k, v))
        .collect();
    let spec = format!(
        "<location>{}</location><template>false</template><config>{copied}</config><powerOn>false</powerOn>",
        pool.xml("pool")
    );
    let task = vim.clone_vm(&source, &folder, name, &spec).await.unwrap();
    let made = vim.wait_task(&task, &format!("cloning to {name}"), Duration::from_secs(30)).await.unwrap();
    // (vcsim ignores `powerOn` in a clone spec: powered on by its own call.)
    if power_on {
        let vm = MoRef::of(made.as_ref().expect("the clone")).expect("the clone's id");
        vm::power_on(&vim, &vm, Duration::from_secs(30)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_running_clones_of_superseded_templates() {
    use imgbake_core::audit::{AuditOptions, Status, audit};
    let bed = Bed::start().await;
    bed.write_tree("echo app v1 > /dev/null", "");
    let (s, _) = build(&bed).await;
    assert!(s.ok(), "{s:#?}");
    let template = |prefix: &'static str, vms: &[(String, bool, BTreeMap<String, String>)]| {
        vms.iter().filter(|v| v.1 && v.0.starts_with(prefix)).map(|v| v.0.clone()).max().expect("a template")
    };
    let app_v1 = template("app-", &bed.imgbake_vms().await);
    let base = template("base-", &bed.imgbake_vms().await);
    clone_from(&bed, &app_v1, "web-old", true).await;
    clone_from(&bed, &app_v1, "web-stopped", false).await;
    clone_from(&bed, &base, "base-user", true).await;

    // app is rebuilt: machines cloned from its first template are one version behind.
    bed.write_tree("echo app v2 > /dev/null", "");
    let (s, _) = build(&bed).await;
    assert!(s.ok(), "{s:#?}");
    let vms = bed.imgbake_vms().await;
    let app_v2 = vms.iter().filter(|v| v.1 && v.0.starts_with("app-") && v.0 != app_v1).map(|v| v.0.clone()).next();
    clone_from(&bed, &app_v2.expect("app's second template"), "web-new", true).await;

    let report = audit(&bed.tree(), &bed.registry(), &AuditOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let by_name: BTreeMap<String, &imgbake_core::audit::MachineReport> =
        report.machines.iter().map(|m| (m.name.clone().unwrap_or_default(), m)).collect();
    let names: Vec<&String> = by_name.keys().collect();
    assert_eq!(
        names,
        ["base-user", "web-new", "web-old"],
        "running clones only, never templates or build VMs: {report:#?}"
    );
    assert!(report.unsupported.is_empty(), "{:?}", report.unsupported);
    let old = by_name["web-old"];
    assert_eq!((old.status, old.versions_behind, old.image.as_str()), (Status::Behind, 1, "app"), "{old:#?}");
    assert_eq!(old.artifact, format!("/DC0/vm/{app_v1}"), "{old:#?}");
    assert_eq!(by_name["web-new"].status, Status::Current, "{:#?}", by_name["web-new"]);
    assert_eq!(by_name["base-user"].status, Status::Current, "{:#?}", by_name["base-user"]);

    // Superseded just now: within a 30-day deadline; 31 days later it is overdue.
    let deadline = Some(Duration::from_secs(30 * 86_400));
    let now = audit(&bed.tree(), &bed.registry(), &AuditOptions { deadline, ..Default::default() }).await.unwrap();
    assert!(now.machines.iter().all(|m| !m.overdue), "{now:#?}");
    let later = chrono::Utc::now() + chrono::Duration::days(31);
    let opts = AuditOptions { deadline, now: Some(later), ..Default::default() };
    let then = audit(&bed.tree(), &bed.registry(), &opts).await.unwrap();
    let overdue: Vec<_> = then.machines.iter().filter(|m| m.overdue).filter_map(|m| m.name.clone()).collect();
    assert_eq!(overdue, ["web-old"], "{then:#?}");
}
