//! One image built through the delaying proxy (instance pending 20 s, stopping 10 s, AMI pending 61 s,
//! shutting-down 10 s), with an SSH step on the bed's sshd: how late imgbake notices each real state
//! change, how many API calls it makes, its wall time and peak RSS — and the same build by Packer 1.6.6
//! (`amazon-ebs`) against the same proxy and moto, when `packer` is installed
//! (`scripts/bench-with-packer.sh imgbake-aws` installs it).
//!
//! `cargo bench -p imgbake-aws --bench build` (release). The build runs in a child process (this
//! binary again), so its peak RSS (VmHWM) is the builder's alone, not the proxy's or the bed's.
//! Results: a table on stdout and `target/imgbake-bench-aws.json`.
//!
//! One run prints, side by side: the floor (the proxy's delays plus the step's time: the build cannot
//! be faster with termination after the AMI), imgbake cold (no wait history), warm (the history
//! the cold run left; and once more, with what the first warm run added), Packer's figures (measured
//! when `packer` is installed, else the ones recorded in issue 15, labelled so), then the same with
//! no delays at all.
//!
//! Environment: `IMGBAKE_BENCH_SCALE` (default 1.0) multiplies the delays, for a quick look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use imgbake_aws::{AwsBuilder, AwsOptions, ClientOptions, Environment};
use imgbake_config::{LoadOptions, Stamp, Tree};
use imgbake_core::builder::{BuildJob, BuildSource, Builder, Provision};
use imgbake_core::cleanup::Journal;
use imgbake_core::communicator::{Communicator, ExecRequest};
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::EventSink;
use imgbake_core::reboot::PlatformReboot;
use imgbake_moto_proxy::{Delays, MotoProxy, Report};
use imgbake_testbed::{Moto, MotoOptions, SshTarget, Sshd};
use serde::{Deserialize, Serialize};

const REGION: &str = "eu-west-1";
const CHILD: &str = "IMGBAKE_BENCH_CHILD";

/// What the parent tells the child.
#[derive(Serialize, Deserialize)]
struct ChildArgs {
    tree: PathBuf,
}

/// What the child reports.
#[derive(Serialize, Deserialize, Debug)]
struct ChildResult {
    wall_s: f64,
    step_s: f64,
    vm_hwm_kib: u64,
    ami: String,
}

/// The SSH step: what a small shell provisioner does.
struct Step;

/// How long the step took (milliseconds), for the floor.
static STEP_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[async_trait]
impl Provision for Step {
    async fn provision(&self, comm: &dyn Communicator, _: Option<Arc<dyn PlatformReboot>>) -> Result<(), BuildError> {
        let start = Instant::now();
        let out = comm.exec(&ExecRequest::new("echo provisioned; uname -s").captured(), &EventSink::discard()).await?;
        STEP_MS.store(start.elapsed().as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
        if !out.status.success() {
            return Err(BuildError::new(ErrorKind::Step, format!("step {}", out.status)));
        }
        Ok(())
    }
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

/// The child: one build with the builder's production settings (default polling and retries).
fn child(args: ChildArgs) {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let ami = rt.block_on(async {
        let tree = Tree::load(
            &args.tree,
            &LoadOptions {
                env: Default::default(),
                schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
                ..LoadOptions::default()
            },
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let creds = aws_sdk_ec2::config::Credentials::new(
            imgbake_testbed::ACCESS_KEY_ID,
            imgbake_testbed::SECRET_ACCESS_KEY,
            None,
            None,
            "bench",
        );
        let builder = AwsBuilder::new(AwsOptions {
            client: ClientOptions {
                credentials: Some(aws_sdk_ec2::config::SharedCredentialsProvider::new(creds)),
                environment: Environment::Isolated,
                ..ClientOptions::default()
            },
            ..AwsOptions::default()
        });
        let image = tree.image("bench").expect("image");
        let source = builder.resolve_source(&tree, image).await.unwrap_or_else(|e| panic!("{}", e.chain()));
        // Unique, so back-to-back builds (the no-delay runs take well under a second) name their AMIs apart.
        let build_id = format!("b-bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let tree = Arc::new(tree.rerender(&Stamp::new(&build_id, chrono::Utc::now())).expect("render"));
        let journal = Arc::new(Journal::create(&tree.state_dir(), &build_id, "bench").expect("journal"));
        let job = BuildJob {
            tree: tree.clone(),
            image: "bench".into(),
            build_id,
            fingerprint: "bench".into(),
            source: BuildSource::Root(source),
            events: EventSink::discard(),
            journal: journal.clone(),
            provisioner: Arc::new(Step),
            debug: false,
            keep_on_failure: false,
            key_file: None,
        };
        let r = builder.build(job).await;
        let failed = imgbake_core::builder::unwind(&journal, &builder, &tree, &EventSink::discard()).await;
        assert!(
            failed.is_empty(),
            "cleanup failed: {:?}",
            failed.iter().map(|(r, e)| (r.describe(), e.chain())).collect::<Vec<_>>()
        );
        r.unwrap_or_else(|e| panic!("build failed: {}", e.chain())).id
    });
    let step_s = STEP_MS.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1000.0;
    let result = ChildResult { wall_s: start.elapsed().as_secs_f64(), step_s, vm_hwm_kib: vm_hwm_kib(), ami };
    println!("{}", serde_json::to_string(&result).expect("json"));
}

/// Figures of one tool's run.
#[derive(Serialize, Debug, Default)]
struct Figures {
    tool: String,
    wall_s: f64,
    api_calls: u32,
    calls: BTreeMap<String, u32>,
    /// (kind → state, seconds late)
    noticed: Vec<(String, Option<f64>)>,
    mean_late_s: Option<f64>,
    peak_rss_mib: f64,
    /// The step's time (imgbake runs only).
    step_s: f64,
}

fn figures(tool: &str, wall: Duration, report: &Report, rss_kib: u64) -> Figures {
    let noticed: Vec<(String, Option<f64>)> = report
        .transitions
        .iter()
        .map(|t| (format!("{} {}", t.kind, t.to), t.lateness().map(|d| d.as_secs_f64())))
        .collect();
    let late: Vec<f64> = noticed.iter().filter_map(|(_, l)| *l).collect();
    Figures {
        tool: tool.into(),
        wall_s: wall.as_secs_f64(),
        api_calls: report.total_calls,
        calls: report.calls.clone(),
        mean_late_s: (!late.is_empty()).then(|| late.iter().sum::<f64>() / late.len() as f64),
        noticed,
        peak_rss_mib: rss_kib as f64 / 1024.0,
        step_s: 0.0,
    }
}

/// The transitions of one build, in order (the lag rows).
const TRANSITIONS: [&str; 4] = ["instance running", "instance stopped", "image available", "instance terminated"];

/// Packer 1.6.6's figures as recorded in issue 15 (3 runs on this bed), for when it is not installed.
fn packer_recorded(no_delays: bool) -> Figures {
    let (wall_s, api_calls, late) =
        if no_delays { (0.7, 0, [None; 4]) } else { (136.8, 26, [Some(10.0), Some(5.0), Some(14.1), Some(5.0)]) };
    Figures {
        tool: "packer (recorded)".into(),
        wall_s,
        api_calls,
        noticed: TRANSITIONS.iter().zip(late).map(|(t, l)| (t.to_string(), l)).collect(),
        ..Figures::default()
    }
}

/// The floor: the proxy's delays plus the step, with termination after the AMI (what both tools do).
fn floor(d: &Delays, step_s: f64) -> Figures {
    let wall_s = (d.instance_pending + d.instance_stopping + d.image_pending + d.instance_shutting_down).as_secs_f64();
    Figures {
        tool: "floor".into(),
        wall_s: wall_s + step_s,
        noticed: TRANSITIONS.iter().map(|t| (t.to_string(), Some(0.0))).collect(),
        ..Figures::default()
    }
}

fn delays() -> Delays {
    let scale: f64 = std::env::var("IMGBAKE_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let s = |secs: f64| Duration::from_secs_f64(secs * scale);
    Delays {
        instance_pending: s(20.0),
        instance_stopping: s(10.0),
        instance_shutting_down: s(10.0),
        image_pending: s(61.0),
    }
}

fn write_tree(dir: &Path, source: &str, proxy: &str, sshd: &Sshd) -> PathBuf {
    let text = format!(
        r#"[settings]
name = "bench"
id = "imgbake-bench-0001"

[images.bench]
builder = "aws"
source = {{ ami = "{source}" }}
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, private_key_file = "{key}" }}

[images.bench.aws]
region = "{REGION}"
endpoint = "{proxy}"
key_pair_name = "bench"
ami_name = "bench-{{{{build.id}}}}"
ssh_cidrs = ["127.0.0.1/32"]
"#,
        port = sshd.port(),
        key = sshd.client_key_path().display(),
    );
    let path = dir.join("tree.toml");
    std::fs::write(&path, text).expect("tree.toml");
    path
}

async fn run_imgbake(proxy: &MotoProxy, tree: &Path) -> Figures {
    proxy.reset();
    let start = Instant::now();
    let exe = std::env::current_exe().expect("current exe");
    let args = serde_json::to_string(&ChildArgs { tree: tree.to_path_buf() }).expect("json");
    let out = tokio::process::Command::new(exe).env(CHILD, args).output().await.expect("child");
    let wall = start.elapsed();
    assert!(out.status.success(), "imgbake child failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let r: ChildResult = serde_json::from_str(line).unwrap_or_else(|e| panic!("child said {text:?}: {e}"));
    eprintln!("imgbake: AMI {} in {:.1} s (child's own clock {:.1} s)", r.ami, wall.as_secs_f64(), r.wall_s);
    let mut f = figures("imgbake", wall, &proxy.report(), r.vm_hwm_kib);
    f.step_s = r.step_s;
    f
}

/// Packer 1.6.6's amazon-ebs, the same build: same source, same existing key pair and key file, a
/// temporary security group, one shell step.
async fn run_packer(proxy: &MotoProxy, dir: &Path, source: &str, sshd: &Sshd) -> Option<Figures> {
    let packer = ["/usr/bin/packer", "/usr/local/bin/packer"].into_iter().find(|p| Path::new(p).exists())?;
    let template = serde_json::json!({
        "builders": [{
            "type": "amazon-ebs",
            "region": REGION,
            "source_ami": source,
            "instance_type": "t3.micro",
            "ami_name": "packer-bench-{{timestamp}}",
            "access_key": imgbake_testbed::ACCESS_KEY_ID,
            "secret_key": imgbake_testbed::SECRET_ACCESS_KEY,
            "custom_endpoint_ec2": proxy.endpoint(),
            "skip_credential_validation": true,
            "skip_metadata_api_check": true,
            "skip_region_validation": true,
            "communicator": "ssh",
            "ssh_username": "root",
            "ssh_host": "127.0.0.1",
            "ssh_port": sshd.port(),
            "ssh_keypair_name": "bench",
            "ssh_private_key_file": sshd.client_key_path(),
            "temporary_security_group_source_cidrs": ["127.0.0.1/32"]
        }],
        "provisioners": [{ "type": "shell", "inline": ["echo provisioned; uname -s"] }]
    });
    let path = dir.join("packer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&template).expect("json")).expect("packer.json");
    proxy.reset();
    let start = Instant::now();
    let mut cmd = std::process::Command::new(packer);
    cmd.arg("build")
        .arg("-machine-readable")
        .arg(&path)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("packer-cache"))
        .env("HOME", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Run it on a blocking thread and take its rusage: the peak RSS of the largest process it ran.
    let out = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn().expect("packer");
        let out = child.wait_with_output().expect("packer output");
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall writing into our struct.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
        (out, usage.ru_maxrss as u64)
    })
    .await
    .expect("packer thread");
    let wall = start.elapsed();
    let (out, maxrss_kib) = out;
    if !out.status.success() {
        eprintln!(
            "packer failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(figures("packer 1.6.6", wall, &proxy.report(), maxrss_kib))
}

fn print(title: &str, all: &[Figures]) {
    println!();
    println!("{title}");
    print!("{:<34}", "");
    for f in all {
        print!("{:>18}", f.tool);
    }
    println!();
    let row = |name: &str, cell: &dyn Fn(&Figures) -> String| {
        print!("{name:<34}");
        for f in all {
            print!("{:>18}", cell(f));
        }
        println!();
    };
    let floor = all.iter().find(|f| f.tool == "floor").map(|f| f.wall_s);
    row("wall time (s)", &|f| format!("{:.1}", f.wall_s));
    if let Some(floor) = floor {
        row("  over the floor (s)", &|f| format!("{:+.1}", f.wall_s - floor));
    }
    row("API calls", &|f| if f.api_calls == 0 && f.calls.is_empty() { "-".into() } else { f.api_calls.to_string() });
    for k in TRANSITIONS {
        row(&format!("lag behind {} (s)", k.rsplit(' ').next().unwrap_or(k)), &|f| {
            f.noticed
                .iter()
                .find(|(x, _)| x == k)
                .and_then(|(_, l)| *l)
                .map(|l| format!("{l:.2}"))
                .unwrap_or("-".into())
        });
    }
    row("peak RSS (MiB)", &|f| if f.peak_rss_mib > 0.0 { format!("{:.1}", f.peak_rss_mib) } else { "-".into() });
    let actions: Vec<String> = all.iter().flat_map(|f| f.calls.keys().cloned()).fold(Vec::new(), |mut v, k| {
        if !v.contains(&k) {
            v.push(k);
        }
        v
    });
    for a in &actions {
        row(&format!("  {a}"), &|f| f.calls.get(a).map(|n| n.to_string()).unwrap_or("-".into()));
    }
}

/// One scenario: imgbake cold, warm, warm again (same tree dir, so the history carries over), then
/// Packer, beside the floor.
async fn scenario(proxy: &MotoProxy, dir: &Path, source: &str, sshd: &Sshd, d: Delays) -> Vec<Figures> {
    std::fs::create_dir_all(dir).expect("scenario dir");
    let tree = write_tree(dir, source, &proxy.endpoint(), sshd);
    proxy.set_delays(d);
    let no_delays = d == Delays::default();
    let mut runs = Vec::new();
    for label in ["imgbake cold", "imgbake warm", "imgbake warm 2"] {
        if no_delays && label == "imgbake warm 2" {
            break;
        }
        let mut f = run_imgbake(proxy, &tree).await;
        f.tool = label.into();
        runs.push(f);
    }
    let step_s = runs.iter().map(|f| f.step_s).fold(f64::INFINITY, f64::min);
    let mut all = vec![floor(&d, step_s)];
    all.extend(runs);
    match run_packer(proxy, dir, source, sshd).await {
        Some(f) => all.push(f),
        None => {
            eprintln!(
                "packer not installed or failed: its recorded figures are shown (scripts/bench-with-packer.sh imgbake-aws installs it)"
            );
            all.push(packer_recorded(no_delays));
        }
    }
    all
}

fn main() {
    if let Ok(args) = std::env::var(CHILD) {
        child(serde_json::from_str(&args).expect("child args"));
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // moto's own AMIs: Packer insists on an EBS-backed source, and moto registers `standard` ones.
        let moto = Moto::start_with(MotoOptions { load_default_amis: true, ..MotoOptions::default() })
            .await
            .expect("moto (run tests/bed/install.sh)");
        let sshd = Arc::new(Sshd::start().await.expect("sshd (run tests/bed/install.sh)"));
        let proxy = MotoProxy::start(&moto.endpoint()).await.expect("proxy");
        // cloud-init's part on the bed: the injected host key becomes sshd's.
        let s = sshd.clone();
        proxy.on_launch(move |l| {
            if let Some(key) = l.user_data.as_deref().and_then(imgbake_aws::userdata::host_private_key_of) {
                let path = s.dir().join("ssh_host_ed25519_key");
                std::fs::write(&path, key).expect("host key");
            }
        });
        let ec2 = moto.ec2_client(REGION).await;
        let images = ec2
            .describe_images()
            .owners("amazon")
            .filters(aws_sdk_ec2::types::Filter::builder().name("root-device-type").values("ebs").build())
            .filters(aws_sdk_ec2::types::Filter::builder().name("architecture").values("x86_64").build())
            .send()
            .await
            .expect("moto's AMIs");
        let mut ids: Vec<String> = images.images().iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
        ids.sort();
        let source = ids.first().cloned().expect("an EBS-backed x86_64 AMI in moto");
        eprintln!("source AMI: {source}");
        // The existing key pair both tools log in with.
        let public = std::fs::read_to_string(format!("{}.pub", sshd.client_key_path().display())).expect("client key");
        ec2.import_key_pair()
            .key_name("bench")
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(public.trim().as_bytes()))
            .send()
            .await
            .expect("key pair");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = delays();
        eprintln!("delays: {d:?}");
        let delayed = scenario(&proxy, &dir.path().join("delays"), &source, &sshd, d).await;
        let secs = |d: Duration| d.as_secs_f64();
        let title = format!(
            "EC2 states held: instance pending {:.0} s, stopping {:.0} s, AMI pending {:.0} s, shutting-down {:.0} s",
            secs(d.instance_pending),
            secs(d.instance_stopping),
            secs(d.image_pending),
            secs(d.instance_shutting_down)
        );
        print(&title, &delayed);
        let none = scenario(&proxy, &dir.path().join("no-delays"), &source, &sshd, Delays::default()).await;
        print("no delays", &none);
        let all: Vec<&Figures> = delayed.iter().chain(&none).collect();
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("target"));
        let out = target.join("imgbake-bench-aws.json");
        let _ = std::fs::write(&out, serde_json::to_string_pretty(&all).unwrap_or_default());
        eprintln!("results: {}", out.display());
    });
}
