//! One template built from vcsim's template with one shell step on the bed's sshd: wall time and
//! SOAP requests (counted by the bed's vcsim request log) — imgbake's `vsphere` builder beside
//! Packer 1.6.6 `vsphere-clone` on the same vcsim and sshd, when `packer` is installed
//! (`scripts/bench-with-packer.sh imgbake-vsphere` installs it).
//!
//! `cargo bench -p imgbake-vsphere --bench build`. Results: a table on stdout.
//! `IMGBAKE_BENCH_RUNS` (default 3): builds per tool.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::event::EventSink;
use imgbake_core::plan::{PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, run};
use imgbake_core::wait::Wait;
use imgbake_testbed::{SshTarget, Sshd, Vcsim, VcsimOptions};
use imgbake_vsphere::{Environment, VsphereBuilder, VsphereOptions, VsphereSchema};

const SOURCE: &str = "DC0_H0_VM1";

struct Run {
    seconds: f64,
    requests: usize,
    by_method: BTreeMap<String, usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn count(requests: Vec<String>) -> (usize, BTreeMap<String, usize>) {
    let mut by = BTreeMap::new();
    for r in &requests {
        *by.entry(r.clone()).or_insert(0) += 1;
    }
    (requests.len(), by)
}

async fn imgbake_once(vcsim: &Vcsim, sshd: &Sshd, n: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let tree = format!(
        r#"[settings]
id = "bench-vsphere-{n:04}"
[images.base]
builder = "vsphere"
source = {{ template = "{SOURCE}" }}
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
vsphere = {{ url = "{url}", username = "{user}", ca_file = "{ca}", cpus = 2, memory = "1GiB" }}
[[images.base.steps]]
shell = {{ inline = ["echo provisioned"] }}
"#,
        port = sshd.port(),
        url = vcsim.url(),
        user = vcsim.username(),
        ca = vcsim.ca_file().display(),
    );
    std::fs::write(dir.path().join("tree.toml"), tree).unwrap();
    vcsim.clear_requests().unwrap();
    let start = Instant::now();
    let opts = LoadOptions { schemas: Schemas::new().with(VsphereSchema::arc()), ..LoadOptions::default() };
    let tree = Tree::load(&dir.path().join("tree.toml"), &opts).unwrap_or_else(|d| panic!("{d}"));
    let mut registry = Registry::new();
    registry.register(Arc::new(VsphereBuilder::new(VsphereOptions {
        environment: Environment::Fixed([("VSPHERE_PASSWORD".to_string(), vcsim.password().to_string())].into()),
        // Polls as often as Packer's task waits (it asks every second at most).
        poll: Wait::new(Duration::from_secs(600)).interval(Duration::from_millis(200), Duration::from_secs(1)),
        ..VsphereOptions::default()
    })));
    let events = EventSink::discard();
    let p = plan(&tree, &registry, &PlanOptions::default(), &events).await.unwrap();
    let s = run(&tree, &p, &registry, RunOptions::default(), &events).await.unwrap();
    assert!(s.ok(), "imgbake build failed: {s:#?}");
    let seconds = start.elapsed().as_secs_f64();
    let (requests, by_method) = count(vcsim.requests());
    Run { seconds, requests, by_method }
}

fn packer_once(vcsim: &Vcsim, sshd: &Sshd, n: usize) -> Option<Run> {
    let dir = tempfile::tempdir().unwrap();
    let template = serde_json::json!({
        "builders": [{
            "type": "vsphere-clone",
            "vcenter_server": format!("127.0.0.1:{}", vcsim.port()),
            "username": vcsim.username(),
            "password": vcsim.password(),
            "insecure_connection": true,
            "datacenter": "DC0",
            "host": "DC0_H0",
            "template": SOURCE,
            "vm_name": format!("packer-bench-{n}"),
            "CPUs": 2,
            "RAM": 1024,
            "convert_to_template": true,
            // vcsim reports a guest address only when told to.
            "configuration_parameters": { "SET.guest.ipAddress": "127.0.0.1" },
            "communicator": "ssh",
            "ssh_host": "127.0.0.1",
            "ssh_port": sshd.port(),
            "ssh_username": "root",
            "ssh_private_key_file": sshd.client_key_path(),
            "shutdown_timeout": "1m",
            // Measured: Packer 1.6.6 never gets past "Waiting for IP..." on vcsim 0.24, even with
            // SET.guest.ipAddress (which makes vcsim report guest.ipAddress): fail fast.
            "ip_wait_timeout": "30s"
        }],
        "provisioners": [{ "type": "shell", "inline": ["echo provisioned"] }]
    });
    std::fs::write(dir.path().join("template.json"), template.to_string()).unwrap();
    vcsim.clear_requests().unwrap();
    let start = Instant::now();
    let out = Command::new("timeout")
        .args(["300", "packer", "build", "-color=false", "template.json"])
        .current_dir(dir.path())
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.path().join("cache"))
        .output()
        .ok()?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!("packer failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let (requests, by_method) = count(vcsim.requests());
    Some(Run { seconds, requests, by_method })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("IMGBAKE_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let sshd = Sshd::start().await.expect("sshd (run tests/bed/install.sh)");
    let vcsim = Vcsim::start_with(VcsimOptions {
        templates: vec![SOURCE.into()],
        cloud_init: Some((sshd.dir().join("ssh_host_ed25519_key"), sshd.dir().join("authorized_keys"))),
        ..VcsimOptions::default()
    })
    .await
    .expect("vcsim (run tests/bed/install.sh)");
    // Packer logs in with the bed's client key.
    sshd.authorize_key(
        &std::fs::read_to_string(format!("{}.pub", sshd.client_key_path().display())).unwrap_or_default(),
    )
    .ok();

    let mut ours = Vec::new();
    for n in 0..runs {
        let r = imgbake_once(&vcsim, &sshd, n).await;
        eprintln!("imgbake run {n}: {:.2} s, {} requests", r.seconds, r.requests);
        ours.push(r);
    }
    let have_packer = Command::new("packer").arg("version").output().is_ok_and(|o| o.status.success());
    let mut theirs = Vec::new();
    if have_packer {
        for n in 0..runs {
            match packer_once(&vcsim, &sshd, n) {
                Some(r) => {
                    eprintln!("packer run {n}: {:.2} s, {} requests", r.seconds, r.requests);
                    theirs.push(r)
                }
                None => break,
            }
        }
    }
    println!("\none template from a template, one shell step; vcsim + the bed's sshd; {runs} runs each\n");
    println!("{:<28} {:>14} {:>16}", "", "imgbake", "Packer 1.6.6");
    let row = |what: &str, a: String, b: String| println!("{what:<28} {a:>14} {b:>16}");
    let na = || "n/a".to_string();
    row(
        "wall time (median, s)",
        format!("{:.2}", median(ours.iter().map(|r| r.seconds).collect())),
        if theirs.is_empty() { na() } else { format!("{:.2}", median(theirs.iter().map(|r| r.seconds).collect())) },
    );
    row(
        "SOAP requests (median)",
        format!("{}", median(ours.iter().map(|r| r.requests as f64).collect())),
        if theirs.is_empty() {
            na()
        } else {
            format!("{}", median(theirs.iter().map(|r| r.requests as f64).collect()))
        },
    );
    println!("\nrequests by method (last run):");
    let last_theirs = theirs.last().map(|r| r.by_method.clone()).unwrap_or_default();
    let last_ours = ours.last().map(|r| r.by_method.clone()).unwrap_or_default();
    let methods: std::collections::BTreeSet<&String> = last_ours.keys().chain(last_theirs.keys()).collect();
    for m in methods {
        row(
            m,
            last_ours.get(m).copied().unwrap_or(0).to_string(),
            last_theirs.get(m).copied().unwrap_or(0).to_string(),
        );
    }
    if have_packer && theirs.is_empty() {
        println!("\n(Packer 1.6.6 did not finish a build on vcsim: see its output above)");
    }
    if !have_packer {
        println!("\n(packer is not installed: scripts/bench-with-packer.sh imgbake-vsphere installs it)");
    }
}
