//! Builds that fail — a provisioning step, an API error injected mid-build, an AMI that ends
//! `failed` — leave nothing behind once the journal is unwound.

use std::time::{Duration, Instant};

use imgbake_core::builder::Builder;
use imgbake_core::error::ErrorKind;
use imgbake_moto_proxy::{Delays, Fault, FaultRule, ImageOutcome};

use crate::support::*;

#[tokio::test]
async fn a_failing_step_leaves_nothing() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["echo working", "exit 3"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Step, "{}", e.chain());
    assert!(e.message.contains("exited with 3"), "{}", e.message);
    assert!(!job.journal.pending().is_empty(), "the machine and its temporaries are still journaled");
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
    assert_eq!(bed.proxy.count("CreateImage"), 0);
}

#[tokio::test]
async fn an_api_error_at_image_creation_leaves_nothing() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    bed.proxy.inject(FaultRule::new(
        "CreateImage",
        Fault::error(400, "UnauthorizedOperation", "not allowed (injected)"),
        1,
    ));
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Platform);
    let text = e.chain();
    assert!(text.starts_with("creating the AMI for image base in eu-west-1: CreateImage in eu-west-1"), "{text}");
    assert!(text.contains("UnauthorizedOperation"), "{text}");
    assert!(text.contains("lack this IAM permission"), "{text}");
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_api_error_after_the_image_exists_removes_the_image_and_its_snapshots() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("copy_regions = [\"us-east-1\"]\nshare = { accounts = [\"111122223333\"] }", "");
    // Sharing fails for good once the AMI and its copy exist.
    bed.proxy.inject(FaultRule::new(
        "ModifyImageAttribute",
        Fault::error(400, "InvalidParameter", "no (injected)"),
        u32::MAX,
    ));
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(e.chain().contains("ModifyImageAttribute"), "{}", e.chain());
    assert_eq!(bed.proxy.count("CopyImage"), 1);
    let before = bed.leftovers(&[]).await;
    assert!(before.iter().any(|l| l.starts_with("eu-west-1 image")), "{before:?}");
    assert!(before.iter().any(|l| l.starts_with("us-east-1 image")), "{before:?}");
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_image_stops_the_wait_at_once_and_leaves_nothing() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    bed.proxy.set_delays(Delays { image_pending: Duration::from_millis(500), ..Delays::default() });
    bed.proxy.set_image_outcome(ImageOutcome::Failed);
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let start = Instant::now();
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(e.message.contains("became `failed`"), "{}", e.chain());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the image timeout is 60 s; a terminal state must not wait for it"
    );
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}
