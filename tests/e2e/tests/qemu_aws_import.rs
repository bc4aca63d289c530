//! One tree that builds locally and publishes to AWS without launching a build machine for it: the
//! Debian base image built with QEMU (TCG), its disk written into an AMI through the EBS direct APIs
//! (moto, behind the proxy answering AWS's 512 KiB blocks), and a child built on a "machine" from
//! that AMI (moto + the bed's sshd). Then a plan that reuses everything.

#[allow(dead_code)]
#[path = "../../../crates/imgbake-aws/tests/aws/support.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::EventSink;
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, Status, run};
use imgbake_e2e::{base_image, write};
use imgbake_testbed::SshTarget;
use support::{Bed, REGION};

/// AWS's block size, answered by the proxy (moto's 512 bytes would mean 4 million requests here).
const AWS_BLOCK: u32 = 524_288;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_image_becomes_an_ami_without_a_machine_and_children_build_from_it() {
    let bed = Bed::start().await;
    bed.proxy.ebs_block_size(AWS_BLOCK);
    let text = format!(
        r#"[settings]
name = "import-e2e"
id = "e2e-import-0001"
parallel = 1

[images.base]
builder = "qemu"
source = {{ disk = "{base}" }}
communicator = {{ username = "root" }}
qemu = {{ output_dir = "output", memory = "512MiB", boot_timeout = "5m", shutdown_timeout = "1m" }}
[[images.base.steps]]
shell = {{ inline = ["echo built-locally > /etc/imgbake-import"] }}

[images.base-ami]
parent = "base"
builder = "aws"
publish = {{ ssm_parameter = "/images/base/latest" }}
[images.base-ami.aws]
region = "{REGION}"
endpoint = "{endpoint}"
import = "ebs-direct"
image_timeout = "60s"
ami_name = "{{{{ image.name }}}}-{{{{ uuid }}}}"

[images.app]
parent = "base-ami"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
[images.app.aws]
ssh_cidrs = ["127.0.0.1/32"]
instance_timeout = "60s"
[[images.app.steps]]
shell = {{ inline = ["echo app"] }}
"#,
        base = base_image().display(),
        endpoint = bed.proxy.endpoint(),
        port = bed.sshd.port(),
    );
    write(bed.dir.path(), "tree.toml", &text);
    let opts = LoadOptions { env: Default::default(), ..imgbake::load_options() };
    let tree = Tree::load(&bed.dir.path().join("tree.toml"), &opts).unwrap_or_else(|d| panic!("{d}"));
    let mut registry = Registry::new();
    registry.register(Arc::new(bed.builder()));
    registry.register(Arc::new(imgbake_qemu::QemuBuilder::new()));

    let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    assert_eq!(p.get("base", "qemu").unwrap().action, Action::Build);
    let ami = p.get("base-ami", "aws").unwrap();
    assert_eq!((ami.action, ami.reasons.clone()), (Action::Build, vec!["parent base is rebuilt".to_string()]));
    assert_eq!(p.get("app", "aws").unwrap().action, Action::Build);
    let m = p.matrix();
    assert_eq!(
        m.images.iter().map(|j| (j.image.as_str(), j.depth)).collect::<Vec<_>>(),
        [("base", 0), ("base-ami", 1), ("app", 2)]
    );

    let s = run(&tree, &p, &registry, RunOptions { publish: true, ..Default::default() }, &EventSink::discard())
        .await
        .unwrap();
    assert!(s.ok(), "{s:#?}");
    let result = |image: &str| s.results.iter().find(|r| r.image == image).unwrap().clone();
    let base = result("base").artifact.unwrap();
    let base_ami = result("base-ami");
    assert_eq!(base_ami.status, Status::Built);
    let base_ami = base_ami.artifact.unwrap();
    let app = result("app").artifact.unwrap();
    assert_eq!(app.source, base_ami.id, "app starts from the imported AMI");
    assert_eq!(base_ami.source, base.id, "the AMI comes from base's disk");

    // No machine for base-ami: one RunInstances, app's. The disk went up in AWS-sized blocks, only
    // those with data, every one checked (sizes, SHA256s, the aggregate at CompleteSnapshot).
    assert_eq!(bed.proxy.count("RunInstances"), 1);
    let snaps = bed.proxy.ebs_snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = &snaps[0];
    assert!(snap.fast && snap.completed && snap.rejected == 0, "{snap:?}");
    let raw = bed.dir.path().join("check.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&base.locations["path"])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success());
    let data = std::fs::read(&raw).unwrap();
    let non_zero =
        data.chunks(AWS_BLOCK as usize).enumerate().filter(|(_, b)| b.iter().any(|x| *x != 0)).map(|(i, _)| i as u32);
    assert_eq!(snap.blocks.keys().copied().collect::<Vec<_>>(), non_zero.collect::<Vec<_>>());
    assert_eq!(snap.volume_size_gib, (data.len() as u64).div_ceil(1 << 30));

    // The AMI is complete and found again by its tags (RegisterImage's attributes: tests/aws/import.rs).
    let ec2 = bed.ec2(REGION).await;
    let out = ec2.describe_images().image_ids(&base_ami.id).send().await.unwrap();
    let tags = support::image_tags(&out.images()[0]);
    assert_eq!(tags.get("imgbake:complete").map(String::as_str), Some("true"), "{tags:?}");
    assert_eq!(tags.get("imgbake:parent"), Some(&base.id), "{tags:?}");
    assert!(base_ami.extra[&format!("snapshots.{REGION}")].split(',').any(|s| s == snap.snapshot_id), "{base_ami:?}");
    let cfg = bed.moto.sdk_config(REGION).await;
    let published = aws_sdk_ssm::Client::new(&cfg).get_parameter().name("/images/base/latest").send().await.unwrap();
    assert_eq!(published.parameter().and_then(|p| p.value()), Some(base_ami.id.as_str()));

    // Nothing changed: everything is reused.
    let again = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    for d in &again.decisions {
        assert_eq!(d.action, Action::Reuse, "{d:?}");
    }
    // moto keeps the uploaded snapshot apart from the AMI it registered (it ignores the block device
    // mapping), with a volume of its own behind it: on EC2 that snapshot is the AMI's root.
    let uploaded = ec2.describe_snapshots().snapshot_ids(&snap.snapshot_id).send().await.unwrap();
    let moto_volume = uploaded.snapshots()[0].volume_id().unwrap_or_default().to_string();
    let left: Vec<String> = bed
        .leftovers(&[base_ami.id.as_str(), app.id.as_str()])
        .await
        .into_iter()
        .filter(|l| !l.contains(&snap.snapshot_id) && (moto_volume.is_empty() || !l.contains(&moto_volume)))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
