//! `imgbake clean`'s view: what a killed build (no unwinding) left is found by its tags and removed;
//! complete artifacts are never swept; planning is one DescribeImages per region for the whole tree.

use std::sync::Arc;
use std::time::Duration;

use imgbake_core::builder::{Builder, SweepFilter};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_moto_proxy::Delays;
use tokio::sync::Notify;

use crate::support::*;

#[tokio::test]
async fn a_killed_build_is_swept_by_tag() {
    let bed = Bed::start().await;
    bed.proxy.set_delays(Delays { image_pending: Duration::from_secs(2), ..Delays::default() });
    let builder = bed.builder();
    let tree = bed.tree("", "");
    // A complete artifact from an earlier build must survive the sweep.
    let (done, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let kept = builder.build(done.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &done).await;

    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let sink = EventSink::callback(move |e| {
        if matches!(&e.kind, EventKind::State { what, state } if what.starts_with("image ami-") && state == "pending") {
            n.notify_one();
        }
    });
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, sink);
    tokio::select! {
        r = builder.build(job.clone()) => panic!("ended: {:?}", r.map(|a| a.id).map_err(|e| e.chain())),
        _ = notify.notified() => {}
    }
    // Killed: the journal is never unwound. The sweep finds it all by tag.
    let other = SweepFilter { build_id: Some("b-other".into()), ..Default::default() };
    assert!(builder.sweep(&tree, &other).await.unwrap().is_empty());
    let young = SweepFilter { older_than: Some(Duration::from_secs(3600)), ..Default::default() };
    assert!(builder.sweep(&tree, &young).await.unwrap().is_empty());
    let found = builder
        .sweep(&tree, &SweepFilter { build_id: Some(job.build_id.clone()), ..Default::default() })
        .await
        .unwrap();
    let mut kinds: Vec<&str> = found.iter().map(|r| r.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["image", "instance", "key_pair", "security_group"], "{found:?}");
    let image = found.iter().find(|r| r.kind == "image").unwrap();
    assert!(image.extra["snapshots"].starts_with("snap-"), "{image:?}");
    assert!(found.iter().all(|r| r.id != kept.id));
    let all = builder.sweep(&tree, &SweepFilter::default()).await.unwrap();
    assert_eq!(all.len(), found.len(), "the complete artifact is not a leftover: {all:?}");

    for r in found.iter().rev() {
        builder
            .destroy(&tree, r, &EventSink::discard())
            .await
            .unwrap_or_else(|e| panic!("{}: {}", r.describe(), e.chain()));
    }
    assert_eq!(bed.leftovers(&[&kept.id]).await, Vec::<String>::new());
    assert!(builder.sweep(&tree, &SweepFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn planning_a_tree_is_one_describe_per_region() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let more = format!(
        "[images.web]\nbuilder = \"aws\"\nsource = {{ ami = \"{s}\" }}\ncommunicator = {{ username = \"root\" }}\naws = {{ region = \"{REGION}\", endpoint = \"{e}\" }}\n\n[images.db]\nbuilder = \"aws\"\nsource = {{ ami = \"{s}\" }}\ncommunicator = {{ username = \"root\" }}\naws = {{ region = \"{REGION}\", endpoint = \"{e}\" }}\n",
        s = bed.source,
        e = bed.proxy.endpoint()
    );
    // Two builds of base in one second would share the default `base-<unix seconds>` name.
    let tree = bed.tree("ami_name = \"base-{{ uuid }}\"", &more);
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let a = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let b = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;

    bed.proxy.reset();
    let images: Vec<_> = tree.images().values().collect();
    let found = builder.list_artifacts(&tree, &images).await.unwrap();
    assert_eq!(bed.proxy.count("DescribeImages"), 1, "{:?}", bed.proxy.calls());
    assert_eq!(bed.proxy.report().total_calls, 1);
    let mut ids: Vec<&str> = found.iter().map(|x| x.id.as_str()).collect();
    // Newest first (two builds may fall in the same second).
    assert!(found[0].created >= found[1].created, "{found:?}");
    ids.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
}
