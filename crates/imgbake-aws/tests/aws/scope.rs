//! What the builder finds and changes in an account is its own tree's: found by tree id and role,
//! never by the tree's name; build machines end themselves when they power off; durations handed to
//! EC2 stay within what it accepts; a key pair imgbake did not make is never adopted.

use imgbake_core::builder::{Builder, SweepFilter};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_moto_proxy::{Fault, FaultRule};

use crate::support::*;

#[tokio::test]
async fn two_trees_with_the_same_name_do_not_see_or_prune_each_others_amis() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    // Both trees are called `aws-test`; only their ids differ. AMI names are unique per account and
    // region, and the default (`base-<unix seconds>`) of two builds in one second would collide;
    // a uuid keeps every build's name apart (the killed build of `theirs` too).
    let mine = bed.tree_at("mine", "mine-00000001", "ami_name = \"mine-{{ uuid }}\"", "");
    let theirs = bed.tree_at("theirs", "theirs-0000001", "ami_name = \"theirs-{{ uuid }}\"", "");
    let (job, _) = bed.job(&builder, &mine, "base", Steps::new(&["true"])).await;
    let my_ami = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let (job, _) = bed.job(&builder, &theirs, "base", Steps::new(&["true"])).await;
    let their_ami = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;

    let listed = |tree: imgbake_config::Tree| {
        let b = &builder;
        async move {
            let images: Vec<_> = tree.images().values().collect();
            b.list_artifacts(&tree, &images).await.unwrap().into_iter().map(|a| a.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(mine.clone()).await, vec![my_ami.id.clone()], "plan/prune of `mine` sees only its AMI");
    assert_eq!(listed(theirs.clone()).await, vec![their_ami.id.clone()]);

    // A killed build of theirs (no unwinding): `clean` of mine does not sweep it.
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let n = notify.clone();
    let sink = EventSink::callback(move |e| {
        if matches!(&e.kind, EventKind::Phase { phase } if phase == "provision") {
            n.notify_one();
        }
    });
    let killed = bed.job_from(&theirs, "base", Steps::new(&["sleep 20"]), &bed.source, sink);
    tokio::select! {
        r = builder.build(killed.clone()) => panic!("ended: {:?}", r.map(|a| a.id).map_err(|e| e.chain())),
        _ = notify.notified() => {}
    }
    assert!(builder.sweep(&mine, &SweepFilter::default()).await.unwrap().is_empty());
    let theirs_left = builder.sweep(&theirs, &SweepFilter::default()).await.unwrap();
    assert!(theirs_left.iter().any(|r| r.kind == "instance"), "{theirs_left:?}");

    // Pruning mine to nothing deletes only mine.
    let gone = builder.list_artifacts(&mine, &mine.images().values().collect::<Vec<_>>()).await.unwrap();
    for a in &gone {
        builder.delete_artifact(&mine, a, &EventSink::discard()).await.unwrap();
    }
    let ec2 = bed.ec2(REGION).await;
    let left: Vec<String> = ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_string))
        .collect();
    assert!(left.contains(&their_ami.id), "{left:?}");
    assert!(!left.contains(&my_ami.id), "{left:?}");
    bed.unwind(&builder, &killed).await;
}

#[tokio::test]
async fn a_tree_without_an_id_is_refused_before_any_call_with_a_new_id_to_paste() {
    let bed = Bed::start().await;
    let path = bed.dir.path().join("tree.toml");
    bed.tree("", "");
    let text = std::fs::read_to_string(&path).unwrap().replace(&format!("id = \"{TREE_ID}\"\n"), "");
    std::fs::write(&path, text).unwrap();
    let opts = imgbake_config::LoadOptions {
        env: Default::default(),
        schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
        ..Default::default()
    };
    let e = imgbake_config::Tree::load(&path, &opts).unwrap_err().to_string();
    assert!(e.contains("has no `settings.id`"), "{e}");
    assert!(e.contains("tree.toml:"), "{e}");
    assert!(e.contains("add `id = \""), "{e}");
    assert_eq!(bed.proxy.report().total_calls, 0);
}

#[tokio::test]
async fn deprecate_after_beyond_what_ec2_accepts_is_refused_offline_with_its_location() {
    let bed = Bed::start().await;
    let path = bed.dir.path().join("tree.toml");
    bed.tree("", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("image_timeout", "deprecate_after = \"300000y\"\nimage_timeout");
    std::fs::write(&path, text).unwrap();
    let opts = imgbake_config::LoadOptions {
        env: Default::default(),
        schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
        ..Default::default()
    };
    let e = imgbake_config::Tree::load(&path, &opts).unwrap_err().to_string();
    assert!(e.contains("deprecate_after `300000years` is too far ahead"), "{e}");
    assert!(e.contains("tree.toml:"), "{e}");
    assert_eq!(bed.proxy.report().total_calls, 0);
}

#[tokio::test]
async fn the_longest_deprecate_after_is_accepted_by_ec2() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("deprecate_after = \"3650d\"", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let a = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let asked = bed.proxy.deprecations();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, a.id);
    let at = chrono::DateTime::parse_from_rfc3339(&asked[0].1).unwrap().with_timezone(&chrono::Utc);
    let days = (at - chrono::Utc::now()).num_days();
    assert!((3649..=3650).contains(&days), "3650 days ahead: {at}");
}

#[tokio::test]
async fn build_machines_terminate_when_they_power_off() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let ec2 = bed.ec2(REGION).await;
    let out = ec2
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:imgbake:build-id").values(&job.build_id).build())
        .send()
        .await
        .unwrap();
    let id = out.reservations()[0].instances()[0].instance_id().unwrap().to_string();
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    let behavior = attr.instance_initiated_shutdown_behavior().and_then(|v| v.value()).unwrap_or_default();
    assert_eq!(behavior, "terminate");
}

#[tokio::test]
async fn a_duplicate_key_pair_that_is_not_ours_fails_the_build_and_is_left_alone() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    // Someone else's key under the name this build will use.
    let name = imgbake_aws::keypair::name(&job.build_id, "base");
    let (_, other) = imgbake_ssh::generate_ed25519("someone-else").unwrap();
    let ec2 = bed.ec2(REGION).await;
    ec2.import_key_pair()
        .key_name(&name)
        .public_key_material(aws_sdk_ec2::primitives::Blob::new(other.as_bytes()))
        .send()
        .await
        .unwrap();
    let e = builder.build(job.clone()).await.unwrap_err();
    let text = e.chain();
    assert!(text.contains(&format!("key pair {name} already exists in {REGION} with another public key")), "{text}");
    bed.unwind(&builder, &job).await;
    let keys = ec2.describe_key_pairs().send().await.unwrap();
    let names: Vec<&str> = keys.key_pairs().iter().filter_map(|k| k.key_name()).collect();
    assert_eq!(names, vec![name.as_str()], "their key stays");
    assert_eq!(bed.proxy.count("RunInstances"), 0);
}

#[tokio::test]
async fn an_injected_duplicate_with_no_such_key_is_not_taken_as_imported() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    bed.proxy.inject(FaultRule::new(
        "ImportKeyPair",
        Fault::error(400, "InvalidKeyPair.Duplicate", "The keypair already exists (injected)"),
        1,
    ));
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(e.chain().contains("could not be read back"), "{}", e.chain());
    assert_eq!(bed.proxy.count("RunInstances"), 0);
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_duplicate_answer_to_our_own_import_adopts_the_key() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    // The import reached EC2, its answer was lost: the SDK's retry would see Duplicate.
    bed.proxy.inject(FaultRule::new(
        "ImportKeyPair",
        Fault::error(400, "InvalidKeyPair.Duplicate", "The keypair already exists (injected)").after_forwarding(),
        1,
    ));
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let a = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[&a.id]).await, Vec::<String>::new());
}
