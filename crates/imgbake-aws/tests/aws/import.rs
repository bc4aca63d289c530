//! AMIs made from a disk file, with no build machine (`aws.import = "ebs-direct"`): a real disk made
//! here (sfdisk, mkfs.ext4) goes through the builder into moto's EBS direct APIs at moto's own
//! 512-byte blocks, and is read back block by block; a disk without the drivers EC2 needs is refused
//! before any AWS call; a failed upload leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbake_aws::{AwsBuilder, Session};
use imgbake_config::{LoadOptions, Schemas, Stamp, Tree};
use imgbake_core::artifact::{Artifact, DISK_LOCATION};
use imgbake_core::builder::{BuildJob, BuildSource, Builder};
use imgbake_core::cleanup::Journal;
use imgbake_core::event::{EventLog, EventSink};
use imgbake_moto_proxy::{Fault, FaultRule};

use crate::support::{Bed, REGION, Steps, image_tags};

const KERNEL: &str = "6.1.0-57-cloud-amd64";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 24 MiB MBR disk with an ext4 root holding a kernel's module lists (`dep`) and a program.
fn disk(dir: &Path, dep: &str) -> PathBuf {
    let root = dir.join("root");
    let modules = root.join("usr/lib/modules").join(KERNEL);
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(modules.join("modules.dep"), dep).unwrap();
    std::fs::copy("/usr/bin/true", root.join("usr/bin/true")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), "made from a disk, no machine\n".repeat(100)).unwrap();
    let disk = dir.join("disk.raw");
    run(Command::new("truncate").args(["-s", "24M"]).arg(&disk));
    let mut sfdisk = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(sfdisk.stdin.as_mut().unwrap(), b"label: dos\nstart=2048, type=83\n").unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .args(["-E", "offset=1048576"])
        .arg(&disk)
        .arg(format!("{}k", 23 * 1024)));
    // As the qemu builder leaves it: qcow2.
    let qcow2 = dir.join("disk.qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&disk).arg(&qcow2));
    qcow2
}

const DRIVERS: &str = "kernel/drivers/net/ethernet/amazon/ena/ena.ko:\nkernel/drivers/nvme/host/nvme.ko:\n";

/// `base` is a disk made by a local builder (`disk`, an open schema), `base-ami` its AMI.
fn tree(bed: &Bed, aws_extra: &str) -> Tree {
    let text = format!(
        r#"[settings]
name = "import-test"
id = "aws-import-0001"

[images.base]
builder = "disk"
source = {{ file = "disk.qcow2" }}
communicator = {{ username = "root" }}

[images.base-ami]
parent = "base"
builder = "aws"
tags = {{ team = "core" }}

[images.base-ami.aws]
region = "{REGION}"
endpoint = "{endpoint}"
import = "ebs-direct"
image_timeout = "60s"
ami_name = "base-ami-{{{{ uuid }}}}"
{aws_extra}
"#,
        endpoint = bed.proxy.endpoint(),
    );
    let path = bed.dir.path().join("tree.toml");
    std::fs::write(&path, text).unwrap();
    let opts = LoadOptions {
        env: Default::default(),
        schemas: Schemas::new()
            .with(imgbake_aws::AwsSchema::arc())
            .with(imgbake_config::schema::Open::new("disk", &["file"]).disks().arc()),
        ..LoadOptions::default()
    };
    Tree::load(&path, &opts).unwrap_or_else(|d| panic!("{d}"))
}

/// A job building `base-ami` from the parent's disk artifact.
fn job(bed: &Bed, tree: &Tree, disk: &Path) -> (BuildJob, EventLog) {
    let build_id = format!("b-{}", uuid::Uuid::new_v4().simple().to_string().get(..10).unwrap());
    let tree = Arc::new(tree.rerender(&Stamp::new(&build_id, chrono::Utc::now())).unwrap());
    let parent = Artifact {
        image: "base".into(),
        builder: "disk".into(),
        id: disk.display().to_string(),
        locations: BTreeMap::from([(DISK_LOCATION.to_string(), disk.display().to_string())]),
        fingerprint: "fp-base".into(),
        source: "test".into(),
        parent: None,
        build_id: "b-parent".into(),
        created: chrono::Utc::now(),
        extra: BTreeMap::new(),
    };
    let (events, log) = EventSink::memory();
    let journal = Arc::new(Journal::create(&bed.dir.path().join(".imgbake"), &build_id, "base-ami").unwrap());
    let job = BuildJob {
        tree,
        image: "base-ami".into(),
        build_id,
        fingerprint: "fp-0123456789".into(),
        source: BuildSource::Parent(parent),
        events: events.for_image("base-ami"),
        journal,
        provisioner: Steps::new(&[]),
        debug: false,
        keep_on_failure: false,
        key_file: None,
    };
    (job, log)
}

/// The flattened disk's bytes.
fn raw_bytes(qcow2: &Path) -> Vec<u8> {
    let raw = qcow2.with_extension("check.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(qcow2).arg(&raw));
    std::fs::read(&raw).unwrap()
}

async fn clients(builder: &AwsBuilder, bed: &Bed) -> Arc<imgbake_aws::Clients> {
    builder
        .clients(&Session { region: REGION.into(), profile: None, endpoint: Some(bed.proxy.endpoint()), role: None })
        .await
}

/// The volume moto makes behind a snapshot started through its EBS direct APIs (EC2 makes none).
async fn moto_volume(bed: &Bed, snapshot: &str) -> String {
    let out = bed.ec2(REGION).await.describe_snapshots().snapshot_ids(snapshot).send().await.unwrap();
    out.snapshots()[0].volume_id().unwrap_or_default().to_string()
}

/// Everything left in moto, but moto's own volume behind the snapshot.
async fn leftovers(bed: &Bed, moto_volume: &str) -> Vec<String> {
    bed.leftovers(&[]).await.into_iter().filter(|l| moto_volume.is_empty() || !l.contains(moto_volume)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ami_is_made_from_a_disk_without_a_machine_and_holds_exactly_its_data() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let qcow2 = disk(bed.dir.path(), DRIVERS);
    let tree = tree(&bed, "");
    let (job, log) = job(&bed, &tree, &qcow2);

    let registered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = registered.clone();
    bed.proxy.on_call(move |c| {
        if c.action == "RegisterImage" {
            seen.lock().unwrap().push(c.params.iter().cloned().collect::<BTreeMap<String, String>>());
        }
    });
    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(job.journal.pending().is_empty(), "a finished build keeps nothing on its journal");
    let calls = bed.proxy.calls();
    assert!(!calls.contains_key("RunInstances"), "no machine: {calls:?}");
    assert!(calls.get("PutSnapshotBlock").copied().unwrap_or(0) > 0, "{calls:?}");

    // What RegisterImage was told (moto keeps little of it), and the AMI's tags.
    let registered = registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 1, "{registered:?}");
    let r = &registered[0];
    let uploaded = bed.proxy.ebs_snapshots();
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    let snap = &uploaded[0].snapshot_id;
    for (k, v) in [
        ("Architecture", "x86_64"),
        ("BootMode", "legacy-bios"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("ImdsSupport", "v2.0"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snap.as_str()),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
    ] {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k} in {r:?}");
    }
    let ec2 = bed.ec2(REGION).await;
    let out = ec2.describe_images().image_ids(&artifact.id).send().await.unwrap();
    let ami = &out.images()[0];
    let tags = image_tags(ami);
    assert_eq!(tags.get("imgbake:fingerprint").map(String::as_str), Some("fp-0123456789"));
    assert_eq!(tags.get("imgbake:parent").map(String::as_str), Some(qcow2.display().to_string().as_str()));
    assert_eq!(tags.get("team").map(String::as_str), Some("core"));
    assert!(!uploaded[0].fast && uploaded[0].completed && uploaded[0].rejected == 0, "{uploaded:?}");
    // (moto gives a registered AMI a root snapshot of its own: the artifact names both, so pruning
    // removes both; on EC2 they are the same.)
    assert!(artifact.extra[&format!("snapshots.{REGION}")].split(',').any(|s| s == snap), "{artifact:?}");
    let s = ec2.describe_snapshots().snapshot_ids(snap).send().await.unwrap();
    let s = &s.snapshots()[0];
    assert_eq!(s.volume_size(), Some(1), "24 MiB rounds up to 1 GiB");
    assert!(s.tags().iter().any(|t| t.key() == Some("imgbake:image") && t.value() == Some("base-ami")), "{s:?}");

    // The snapshot holds the disk, block for block; blocks of zeroes were not sent.
    let c = clients(&builder, &bed).await;
    let mut listed = BTreeMap::new();
    let mut token = None;
    loop {
        let page = c.ebs.list_snapshot_blocks().snapshot_id(snap).set_next_token(token).send().await.unwrap();
        let size = page.block_size().unwrap() as usize;
        for b in page.blocks() {
            listed.insert(b.block_index().unwrap() as usize, (b.block_token().unwrap().to_string(), size));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let raw = raw_bytes(&qcow2);
    let size = listed.values().next().map(|(_, s)| *s).expect("some blocks were written");
    let non_zero: Vec<usize> =
        raw.chunks(size).enumerate().filter(|(_, b)| b.iter().any(|x| *x != 0)).map(|(i, _)| i).collect();
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), non_zero, "exactly the blocks with data");
    for (i, (token, _)) in listed.iter().take(64) {
        let got = c
            .ebs
            .get_snapshot_block()
            .snapshot_id(snap)
            .block_index(*i as i32)
            .block_token(token)
            .send()
            .await
            .unwrap();
        let data = got.block_data.collect().await.unwrap().into_bytes();
        assert_eq!(&data[..], &raw[i * size..(i + 1) * size], "block {i}");
    }
    let said: Vec<String> = log
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            imgbake_core::event::EventKind::Info { message } => Some(message),
            _ => None,
        })
        .collect();
    let said = said.join("\n");
    assert!(said.contains("boot mode legacy-bios, x86_64, kernel 6.1.0-57-cloud-amd64"), "{said}");
    assert!(
        bed.dir
            .path()
            .join(".imgbake")
            .read_dir()
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("import-")),
        "the raw copy is gone"
    );

    // Pruning it removes AMI and snapshot.
    let moto_volume = moto_volume(&bed, snap).await;
    builder.delete_artifact(&tree, &artifact, &EventSink::discard()).await.unwrap();
    assert_eq!(leftovers(&bed, &moto_volume).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_without_the_drivers_ec2_needs_is_refused_before_any_aws_call() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let qcow2 = disk(bed.dir.path(), "kernel/drivers/nvme/host/nvme.ko:\n");
    let tree = tree(&bed, "");
    let (job, _log) = job(&bed, &tree, &qcow2);
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(e.message.contains("lacks the ena driver EC2 needs"), "{}", e.chain());
    assert!(e.message.contains("set aws.check_drivers = false"), "{}", e.chain());
    assert!(bed.proxy.call_log().is_empty(), "no AWS call: {:?}", bed.proxy.calls());
    assert!(job.journal.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_leaves_no_snapshot_after_unwinding() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let qcow2 = disk(bed.dir.path(), DRIVERS);
    let tree = tree(&bed, "");
    let (job, _log) = job(&bed, &tree, &qcow2);
    bed.proxy.inject(
        FaultRule::new("PutSnapshotBlock", Fault::error(400, "ValidationException", "The block is bad"), 1).after(3),
    );
    let e = builder.build(job.clone()).await.unwrap_err();
    let text = e.chain();
    assert!(text.contains("uploading the disk into a snapshot for image base-ami"), "{text}");
    assert!(text.contains("ValidationException") || text.contains("The block is bad"), "{text}");
    assert!(!job.journal.pending().is_empty(), "the snapshot is on the journal");
    let uploaded = bed.proxy.ebs_snapshots();
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    let moto_volume = moto_volume(&bed, &uploaded[0].snapshot_id).await;
    bed.unwind(&builder, &job).await;
    assert_eq!(leftovers(&bed, &moto_volume).await, Vec::<String>::new());
}
