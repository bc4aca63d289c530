//! Benchmark: many builds at once in one process (issue 15, "Many builds at once").
//!
//! A tree of N independent root images (default 500; `IMGBAKE_BENCH_BUILDS=100` for other counts),
//! each with one shell step, built with `parallel = N` through the library's scheduler against moto
//! behind the project's proxy, every build's SSH going to the bed's one sshd. Two passes in one run:
//! with the API rate limiter at EC2's documented limits (`imgbake_aws::rate`, the default), then
//! without it. Each pass runs in a child process (this binary again), so the peak RSS (VmHWM) is the
//! builder's alone, not the proxy's or the bed's.
//!
//! Printed per pass: images built, wall time, peak RSS, API calls, the peak number of calls in any
//! one second and the mean per second — in total and per EC2 throttling category — from the proxy's
//! call log (the moment each call arrived); beside them the figure recorded in issue 15 (100 builds,
//! `-j 100`: 41 s, 41 MB) and the goal (500 at once in ≤ 150 MB).
//!
//!     cargo bench -p imgbake-e2e --bench many
//!
//! The bed: one sshd serves every build, so its `MaxStartups` is raised (OpenSSH drops unauthenticated
//! connections beyond 10 by default), and the builds trust it through its `known_hosts` file
//! (`communicator.host_key = "known_hosts"`): the default pinning of a fresh host key per build needs
//! one machine per build, and one sshd presents one ed25519 host key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use imgbake_aws::rate::{Category, RateLimiter, RateLimits, ec2_category, ssm_category};
use imgbake_aws::{AwsBuilder, AwsOptions, ClientOptions, Environment, WaitHistory};
use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::EventSink;
use imgbake_core::plan::{PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, Status, run};
use imgbake_moto_proxy::{CallRecord, MotoProxy};
use imgbake_testbed::{Moto, SshTarget, Sshd, SshdOptions};
use serde::{Deserialize, Serialize};

const REGION: &str = "eu-west-1";
const CHILD: &str = "IMGBAKE_BENCH_CHILD";
/// Issue 15's recorded figure (100 builds, `imgbake build -j 100`).
const RECORDED: (usize, f64, f64) = (100, 41.0, 41.0);
const GOAL_MB: f64 = 150.0;

#[derive(Serialize, Deserialize)]
struct ChildArgs {
    tree: PathBuf,
    builds: usize,
    limiter: bool,
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct ChildResult {
    wall_s: f64,
    vm_hwm_kib: u64,
    built: usize,
    failed: Vec<String>,
    /// Per category: (calls, waited, total wait s, max wait s), from the limiter.
    waits: BTreeMap<String, (u64, u64, f64, f64)>,
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The child: plan and run the whole tree at once, as `imgbake build -j N` does.
fn child(args: ChildArgs) {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let result = rt.block_on(async {
        let tree = Tree::load(&args.tree, &LoadOptions { env: Default::default(), ..imgbake::load_options() })
            .unwrap_or_else(|d| panic!("{d}"));
        let creds = aws_sdk_ec2::config::Credentials::new(
            imgbake_testbed::ACCESS_KEY_ID,
            imgbake_testbed::SECRET_ACCESS_KEY,
            None,
            None,
            "bench",
        );
        let limiter = args.limiter.then(|| Arc::new(RateLimiter::new(RateLimits::documented())));
        let builder = AwsBuilder::new(AwsOptions {
            client: ClientOptions {
                credentials: Some(aws_sdk_ec2::config::SharedCredentialsProvider::new(creds)),
                environment: Environment::Isolated,
                rate_limiter: limiter.clone(),
                ..ClientOptions::default()
            },
            wait_history: WaitHistory::Off,
            ..AwsOptions::default()
        });
        let mut registry = Registry::new();
        registry.register(Arc::new(builder));
        let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.expect("plan");
        let opts =
            RunOptions { parallel: Some(args.builds), publish: false, write_manifest: false, ..RunOptions::default() };
        let summary = run(&tree, &p, &registry, opts, &EventSink::discard()).await.expect("run");
        let failed: Vec<String> = summary
            .results
            .iter()
            .filter(|r| r.status != Status::Built)
            .map(|r| format!("{}: {} {}", r.image, r.status, r.error.clone().unwrap_or_default()))
            .collect();
        let waits = limiter
            .map(|l| {
                l.stats()
                    .into_iter()
                    .map(|(c, s)| {
                        (
                            c.as_str().to_string(),
                            (s.calls, s.waited, s.total_wait.as_secs_f64(), s.max_wait.as_secs_f64()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ChildResult { built: summary.count(Status::Built), failed, waits, ..ChildResult::default() }
    });
    let result = ChildResult { wall_s: start.elapsed().as_secs_f64(), vm_hwm_kib: vm_hwm_kib(), ..result };
    println!("{}", serde_json::to_string(&result).expect("json"));
}

fn write_tree(dir: &Path, pass: usize, n: usize, source: &str, proxy: &MotoProxy, sshd: &Sshd) -> PathBuf {
    let mut t = format!(
        r#"[settings]
name = "many-{pass}"
id = "bench-many-{pass}-{n:04}"

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, host_key = "known_hosts", known_hosts_file = "{known}", timeout = "10m" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], instance_timeout = "30m", image_timeout = "30m" }}
"#,
        port = sshd.port(),
        known = sshd.known_hosts_path().display(),
        endpoint = proxy.endpoint(),
    );
    for i in 0..n {
        t.push_str(&format!(
            "\n[images.img{i:04}]\nsource = {{ ami = \"{source}\" }}\n[[images.img{i:04}.steps]]\nshell = {{ inline = [\"echo {i}\"] }}\n"
        ));
    }
    std::fs::create_dir_all(dir).expect("tree dir");
    let path = dir.join("tree.toml");
    std::fs::write(&path, t).expect("tree.toml");
    path
}

/// Calls per second of a set of arrival times (ms): (peak in any one second, mean over their span).
fn rates(mut at: Vec<u64>) -> (usize, f64) {
    if at.is_empty() {
        return (0, 0.0);
    }
    at.sort_unstable();
    let peak =
        at.iter().enumerate().map(|(i, a)| at[i..].iter().take_while(|b| **b < a + 1000).count()).max().unwrap_or(0);
    let span = (at[at.len() - 1] - at[0]).max(1000) as f64 / 1000.0;
    (peak, at.len() as f64 / span)
}

fn category_of(c: &CallRecord) -> String {
    match c.service.as_str() {
        "ec2" => ec2_category(&c.action, c.bare).as_str().to_string(),
        "ssm" => ssm_category(&c.action).as_str().to_string(),
        other => other.to_string(),
    }
}

struct Pass {
    label: String,
    r: ChildResult,
    calls: usize,
    throttled: usize,
    /// category → (calls, peak per second, mean per second)
    by_category: BTreeMap<String, (usize, usize, f64)>,
    total: (usize, f64),
}

async fn pass(label: &str, proxy: &MotoProxy, tree: &Path, builds: usize, limiter: bool) -> Pass {
    proxy.reset();
    let exe = std::env::current_exe().expect("current exe");
    let args = serde_json::to_string(&ChildArgs { tree: tree.to_path_buf(), builds, limiter }).expect("json");
    eprintln!("{label}: {builds} builds at once...");
    let out = tokio::process::Command::new(exe).env(CHILD, args).output().await.expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}\n{}\n{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    let r: ChildResult = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("child said {text:?}: {e}"));
    let log = proxy.call_log();
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &log {
        per.entry(category_of(c)).or_default().push(c.at_unix_ms);
    }
    let by_category = per
        .into_iter()
        .map(|(k, at)| {
            let n = at.len();
            let (peak, mean) = rates(at);
            (k, (n, peak, mean))
        })
        .collect();
    Pass {
        label: label.into(),
        calls: log.len(),
        throttled: log.iter().filter(|c| c.status == 503).count(),
        total: rates(log.iter().map(|c| c.at_unix_ms).collect()),
        by_category,
        r,
    }
}

fn print(builds: usize, passes: &[Pass]) {
    let w = 26;
    println!();
    println!("{builds} independent images at once, one shell step each (moto + proxy, one sshd)");
    print!("{:<34}", "");
    for p in passes {
        print!("{:>w$}", p.label);
    }
    println!("{:>w$}", "recorded (issue 15)");
    let row = |name: &str, cell: &dyn Fn(&Pass) -> String, recorded: &str| {
        print!("{name:<34}");
        for p in passes {
            print!("{:>w$}", cell(p));
        }
        println!("{recorded:>w$}");
    };
    let (rn, rs, rmb) = RECORDED;
    row("images built", &|p| format!("{}/{builds}", p.r.built), &rn.to_string());
    row("wall time (s)", &|p| format!("{:.1}", p.r.wall_s), &format!("{rs:.0}"));
    row("peak RSS (MB)", &|p| format!("{:.1}", p.r.vm_hwm_kib as f64 / 1024.0), &format!("{rmb:.0}"));
    row("API calls", &|p| p.calls.to_string(), "-");
    row("  answered 503 (throttled)", &|p| p.throttled.to_string(), "-");
    row("calls/s: peak 1-s window / mean", &|p| format!("{} / {:.1}", p.total.0, p.total.1), "-");
    let cats: Vec<String> = passes.iter().flat_map(|p| p.by_category.keys().cloned()).fold(Vec::new(), |mut v, k| {
        if !v.contains(&k) {
            v.push(k);
        }
        v
    });
    for c in &cats {
        row(
            &format!("  {c}"),
            &|p| p.by_category.get(c).map(|(n, peak, mean)| format!("{n}: {peak} / {mean:.1}")).unwrap_or("-".into()),
            "-",
        );
    }
    for c in &cats {
        row(
            &format!("  waits {c}"),
            &|p| {
                p.r.waits
                    .get(c)
                    .map(|(n, waited, total, max)| format!("{waited}/{n}, max {max:.1} s, sum {total:.0} s"))
                    .unwrap_or("-".into())
            },
            "-",
        );
    }
    let limits = RateLimits::documented();
    println!(
        "\nlimits (per action, per region): non-mutating {:?}, unfiltered {:?}, mutating {:?}, resource-intensive {:?}",
        limits.of(Category::NonMutating),
        limits.of(Category::Unfiltered),
        limits.of(Category::Mutating),
        limits.of(Category::ResourceIntensive)
    );
    for p in passes {
        let mb = p.r.vm_hwm_kib as f64 / 1024.0;
        let met = if builds >= 500 && mb <= GOAL_MB && p.r.built == builds { "met" } else { "not met" };
        println!(
            "goal: 500 at once in ≤ {GOAL_MB:.0} MB — {}: {builds} builds, {mb:.1} MB: {met}{}",
            p.label,
            if builds < 500 { " (fewer than 500 builds in this run)" } else { "" }
        );
        for f in p.r.failed.iter().take(5) {
            println!("  not built: {f}");
        }
    }
}

fn main() {
    if let Ok(args) = std::env::var(CHILD) {
        child(serde_json::from_str(&args).expect("child args"));
        return;
    }
    let builds: usize = std::env::var("IMGBAKE_BENCH_BUILDS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let moto = Moto::start().await.expect("moto (run tests/bed/install.sh)");
        // One sshd for every build: let it take them all at once (default MaxStartups 10:30:100
        // drops unauthenticated connections beyond 10).
        let sshd = Arc::new(
            Sshd::start_with(SshdOptions {
                extra_config: vec![format!("MaxStartups {}", builds * 2 + 10)],
                ..SshdOptions::default()
            })
            .await
            .expect("sshd (run tests/bed/install.sh)"),
        );
        let proxy = MotoProxy::start(&moto.endpoint()).await.expect("proxy");
        // EC2 as far as the bed's sshd is concerned: an imported key pair becomes an authorized key.
        let s = sshd.clone();
        proxy.on_call(move |call| {
            if call.action == "ImportKeyPair"
                && let Some(material) = call.param("PublicKeyMaterial")
                && let Ok(line) = base64::engine::general_purpose::STANDARD.decode(material.trim())
            {
                s.authorize_key(&String::from_utf8_lossy(&line)).expect("authorized_keys");
            }
        });
        let source = moto.register_image(REGION, "debian-12-amd64-20240101", &[]).await.expect("source AMI");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut passes = Vec::new();
        // Two trees apart (names and ids), so the second pass builds rather than reuses the first's AMIs.
        for (i, (label, limiter)) in [("with limiter", true), ("without limiter", false)].into_iter().enumerate() {
            let tree = write_tree(&dir.path().join(label.replace(' ', "-")), i, builds, &source, &proxy, &sshd);
            passes.push(pass(label, &proxy, &tree, builds, limiter).await);
        }
        print(builds, &passes);
    });
}
