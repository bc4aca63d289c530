//! Waiting through the proxy: pending states, throttling, 5xx and "not found yet" answers are ridden
//! out; each state change is noticed promptly.

use std::time::Duration;

use imgbake_core::builder::Builder;
use imgbake_moto_proxy::{Delays, Fault, FaultRule};

use crate::support::*;

#[tokio::test]
async fn throttling_5xx_and_not_found_yet_are_retried() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    bed.proxy.set_delays(Delays::all(Duration::from_millis(700)));
    bed.proxy.inject(FaultRule::new("RunInstances", Fault::unavailable(), 1));
    bed.proxy.inject(FaultRule::new("DescribeInstances", Fault::throttle(), 3));
    // Right after creation EC2 may not list the instance yet.
    bed.proxy.inject(FaultRule::new(
        "DescribeInstances",
        Fault::error(400, "InvalidInstanceID.NotFound", "not yet"),
        2,
    ));
    bed.proxy.inject(FaultRule::new("CreateImage", Fault::throttle(), 2));
    bed.proxy.inject(FaultRule::new("DescribeImages", Fault::server_error(), 2));
    bed.proxy.inject(FaultRule::new("CreateTags", Fault::throttle(), 1));
    bed.proxy.inject(FaultRule::new("TerminateInstances", Fault::server_error(), 1));

    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    for (action, n) in [
        ("RunInstances", 1),
        ("DescribeInstances", 5),
        ("CreateImage", 2),
        ("DescribeImages", 2),
        ("CreateTags", 1),
        ("TerminateInstances", 1),
    ] {
        assert_eq!(bed.proxy.injected(action), n, "{action}");
    }
    // One machine only: the retried RunInstances did not start a second one.
    let ec2 = bed.ec2(REGION).await;
    let all = ec2.describe_instances().send().await.unwrap();
    assert_eq!(all.reservations().iter().flat_map(|r| r.instances()).count(), 1);
    assert_eq!(bed.leftovers(&[&artifact.id]).await, Vec::<String>::new());
    for t in bed.proxy.transitions() {
        assert!(t.lateness().is_some(), "never noticed: {t:?}");
    }
}

#[tokio::test]
async fn lost_answers_of_create_calls_are_not_doubled() {
    // The call took effect, its answer was lost, the SDK retried: EC2 says "duplicate", and that is
    // the resource made by the first try. (moto ignores RunInstances' client token and accepts
    // duplicate AMI names, so those two cannot be checked this way here.)
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    bed.proxy.inject(FaultRule::new("ImportKeyPair", Fault::server_error().after_forwarding(), 1));
    bed.proxy.inject(FaultRule::new("CreateSecurityGroup", Fault::server_error().after_forwarding(), 1));
    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.proxy.count("ImportKeyPair"), 2);
    assert_eq!(bed.proxy.count("CreateSecurityGroup"), 2);
    assert_eq!(bed.leftovers(&[&artifact.id]).await, Vec::<String>::new());
}

#[tokio::test]
async fn transitions_are_noticed_within_the_poll_cap() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, log) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    bed.proxy.set_delays(Delays {
        instance_pending: Duration::from_secs(2),
        instance_stopping: Duration::from_secs(1),
        instance_shutting_down: Duration::from_secs(1),
        image_pending: Duration::from_secs(3),
    });
    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let t = bed.proxy.transitions();
    let kinds: Vec<(&str, &str)> = t.iter().map(|t| (t.kind.as_str(), t.to.as_str())).collect();
    assert_eq!(
        kinds,
        vec![("instance", "running"), ("instance", "stopped"), ("image", "available"), ("instance", "terminated")]
    );
    for tr in &t {
        let late = tr.lateness().unwrap();
        // Polls pause at most 300 ms here; allow for a slow machine.
        assert!(late <= Duration::from_millis(1200), "{tr:?} noticed {late:?} late");
    }
    // The waits reported the states they saw.
    let states: Vec<String> = log
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            imgbake_core::event::EventKind::State { what, state } => Some(format!("{what}: {state}")),
            _ => None,
        })
        .collect();
    assert!(states.iter().any(|s| s.ends_with(": pending") && s.starts_with("instance i-")), "{states:?}");
    assert!(states.iter().any(|s| s == &format!("image {}: pending", artifact.id)), "{states:?}");
    assert!(states.iter().any(|s| s.ends_with(": stopping")), "{states:?}");
    assert!(states.iter().any(|s| s.ends_with(": shutting-down")), "{states:?}");
}

/// Describe calls of the waits (what learning saves).
fn describes(bed: &Bed) -> u32 {
    bed.proxy.count("DescribeInstances") + bed.proxy.count("DescribeImages")
}

#[tokio::test]
async fn a_warm_build_polls_less_than_a_cold_one_and_still_sees_every_change() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    bed.proxy.set_delays(Delays {
        instance_pending: Duration::from_secs(3),
        instance_stopping: Duration::from_secs(2),
        instance_shutting_down: Duration::from_secs(2),
        image_pending: Duration::from_secs(3),
    });
    let history = tree.state_dir().join(imgbake_aws::timing::FILE_NAME);
    let mut polls = Vec::new();
    for run in ["cold", "warm"] {
        bed.proxy.reset();
        let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
        let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{run}: {}", e.chain()));
        bed.unwind(&builder, &job).await;
        for t in bed.proxy.transitions() {
            assert!(t.lateness().is_some(), "{run}: never noticed {t:?}");
        }
        assert!(history.exists(), "{run}: no history at {}", history.display());
        let tags = bed.ec2(REGION).await.describe_images().image_ids(&artifact.id).send().await.unwrap();
        let waits = tags.images()[0].tags().iter().find(|t| t.key() == Some(imgbake_aws::timing::TAG)).cloned();
        assert!(
            waits.and_then(|t| t.value().map(|v| v.contains("available="))).unwrap_or(false),
            "{run}: no waits tag"
        );
        polls.push(describes(&bed));
    }
    // Cold: a check at once, then pauses of 100–300 ms through 10 s of waiting. Warm: a few polls
    // around each learned moment.
    assert!(polls[1] < polls[0], "cold {} vs warm {} describe calls", polls[0], polls[1]);
}

#[tokio::test]
async fn with_learn_waits_off_nothing_is_kept() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("learn_waits = false", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    assert!(!tree.state_dir().join(imgbake_aws::timing::FILE_NAME).exists());
    let out = bed.ec2(REGION).await.describe_images().image_ids(&artifact.id).send().await.unwrap();
    assert!(out.images()[0].tags().iter().all(|t| t.key() != Some(imgbake_aws::timing::TAG)));
}
