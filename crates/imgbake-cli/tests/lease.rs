//! One CI job per image (issue 15): `imgbake plan --format matrix` lists the jobs by level, and two
//! `imgbake build --only IMAGE --lease` processes racing on the same image (moto behind the moto
//! proxy, the bed's sshd as the machine) build it once: the loser waits for the lease, then reuses
//! what the winner built. No lease parameter is left behind.

#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use watchdog::Watched;

use std::process::{Command, Output};
use std::time::Duration;

use imgbake_moto_proxy::Delays;
use imgbake_testbed::SshTarget;
use support::{Bed, REGION};

const TREE_ID: &str = "cli-lease-0001";

fn tree(bed: &Bed) -> String {
    format!(
        r#"[settings]
id = "{TREE_ID}"

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms", ami_name = "{{{{ image.name }}}}-{{{{ uuid }}}}" }}

[images.base]
source = {{ ami = "{source}" }}
steps = [{{ shell = {{ inline = ["echo base"] }} }}]

[images.app]
parent = "base"
steps = [{{ shell = {{ inline = ["echo app"] }} }}]

[images.tools]
parent = "base"
steps = [{{ shell = {{ inline = ["echo tools"] }} }}]
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    )
}

fn imgbake(bed: &Bed, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).current_dir(bed.dir.path());
    moto_env::on_moto(&mut c);
    c
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The complete AMIs of `image` in moto.
async fn amis_of(bed: &Bed, image: &str) -> Vec<String> {
    let ec2 = bed.ec2(REGION).await;
    let out = ec2.describe_images().owners("self").send().await.unwrap();
    out.images()
        .iter()
        .filter(|i| {
            let t = support::image_tags(i);
            t.get("imgbake:image").map(String::as_str) == Some(image)
                && t.get("imgbake:complete").map(String::as_str) == Some("true")
        })
        .filter_map(|i| i.image_id().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_racing_on_one_image_build_it_once() {
    let bed = Bed::start().await;
    std::fs::write(bed.dir.path().join("tree.toml"), tree(&bed)).unwrap();

    // The matrix: base first, then its two children, each needing base.
    let o = imgbake(&bed, &["plan", "tree.toml", "--format", "matrix"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["count"], 3, "{m}");
    let level = |n: usize| -> Vec<String> {
        m["levels"][n].as_array().unwrap().iter().map(|j| j["image"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(level(0), ["base"]);
    assert_eq!(level(1), ["app", "tools"]);
    assert_eq!(m["levels"][1][0]["needs"], serde_json::json!(["base"]));

    // Builds long enough (the AMI stays pending 5 s) that both jobs plan `build` and meet at the lease.
    bed.proxy.set_delays(Delays {
        instance_pending: Duration::from_secs(1),
        instance_stopping: Duration::from_millis(500),
        instance_shutting_down: Duration::from_millis(500),
        image_pending: Duration::from_secs(5),
    });
    let jobs: Vec<std::thread::JoinHandle<Output>> = (0..2)
        .map(|_| {
            let mut c = imgbake(&bed, &["build", "tree.toml", "--only", "base", "--lease=30s"]);
            std::thread::spawn(move || c.watched())
        })
        .collect();
    let outs: Vec<Output> = jobs.into_iter().map(|j| j.join().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let waited: Vec<&Output> = outs.iter().filter(|o| text(o).contains("built meanwhile by")).collect();
    assert_eq!(waited.len(), 1, "exactly one job waited and reused:\n{}\n---\n{}", text(&outs[0]), text(&outs[1]));
    assert_eq!(amis_of(&bed, "base").await.len(), 1, "base was built once");

    // The children's jobs, as the next level runs them: base is reused, each builds its own image.
    // (One after the other: the bed has one sshd, whose host key each build machine would replace.)
    for image in ["app", "tools"] {
        let o = imgbake(&bed, &["build", "tree.toml", "--only", image, "--lease"]).watched();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(amis_of(&bed, "app").await.len(), 1);
    assert_eq!(amis_of(&bed, "tools").await.len(), 1);
    assert_eq!(amis_of(&bed, "base").await.len(), 1, "the children's jobs reused base");

    // Every lease was released.
    let ssm = aws_sdk_ssm::Client::new(&bed.moto.sdk_config(REGION).await);
    let left = ssm.get_parameters_by_path().path("/imgbake/lease").recursive(true).send().await.unwrap();
    let names: Vec<&str> = left.parameters().iter().filter_map(|p| p.name()).collect();
    assert!(names.is_empty(), "lease parameters left behind: {names:?}");
    let after = imgbake(&bed, &["plan", "tree.toml", "--format", "matrix"]).watched();
    let m: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(m["count"], 0, "nothing left to build: {m}");
}
