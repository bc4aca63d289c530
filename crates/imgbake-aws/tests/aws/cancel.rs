//! A build future dropped in the middle of each step (what Ctrl-C does to a build: the scheduler drops
//! it, then unwinds its journal) leaves nothing behind.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbake_core::builder::Builder;
use imgbake_core::event::{Event, EventKind, EventSink};
use imgbake_moto_proxy::Delays;
use tokio::sync::Notify;

use crate::support::*;

/// Start a build, drop it when `cut` first holds for an event, unwind, check that nothing is left.
async fn cancel_when(aws_extra: &str, commands: &[&str], cut: impl Fn(&Event) -> bool + Send + Sync + 'static) {
    let bed = Bed::start().await;
    bed.proxy.set_delays(Delays::all(Duration::from_millis(1500)));
    let builder = bed.builder();
    let tree = bed.tree(aws_extra, "");
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let sink = EventSink::callback(move |e| {
        if cut(&e) {
            n.notify_one();
        }
    });
    let job = bed.job_from(&tree, "base", Steps::new(commands), &bed.source, sink);
    tokio::select! {
        r = builder.build(job.clone()) => panic!("the build ended before the cut: {:?}", r.map(|a| a.id).map_err(|e| e.chain())),
        _ = notify.notified() => {}
    }
    assert!(!job.journal.pending().is_empty(), "the cut came after resources existed");
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}

fn state(e: &Event, what: &str, s: &str) -> bool {
    matches!(&e.kind, EventKind::State { what: w, state } if w.starts_with(what) && state == s)
}

#[tokio::test]
async fn cancelled_while_launching() {
    cancel_when("", &["true"], |e| state(e, "instance i-", "pending")).await;
}

#[tokio::test]
async fn cancelled_while_provisioning() {
    cancel_when("", &["sleep 20"], |e| matches!(&e.kind, EventKind::Phase { phase } if phase == "provision")).await;
}

#[tokio::test]
async fn cancelled_while_the_image_is_pending() {
    cancel_when("", &["true"], |e| state(e, "image ami-", "pending")).await;
}

#[tokio::test]
async fn cancelled_while_copying() {
    // The second image that shows `pending` is the copy.
    let seen = Mutex::new(BTreeSet::new());
    cancel_when("copy_regions = [\"us-east-1\"]", &["true"], move |e| match &e.kind {
        EventKind::State { what, state } if what.starts_with("image ami-") && state == "pending" => {
            let mut s = seen.lock().unwrap();
            s.insert(what.clone());
            s.len() == 2
        }
        _ => false,
    })
    .await;
}

#[tokio::test]
async fn cancelled_while_the_launch_answer_is_in_flight_and_ec2_does_not_list_the_machine_yet() {
    let bed = Bed::start().await;
    // The machine exists, its id never reaches the build, and EC2 lists it only 3 s later.
    bed.proxy.hide_new_instances(Duration::from_secs(3));
    bed.proxy.hold_answers("RunInstances", Duration::from_secs(60));
    let builder = bed.builder();
    let tree = bed.tree("", "");
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let ec2 = bed.ec2(REGION).await;
    let made = imgbake_core::wait::Wait::new(Duration::from_secs(30))
        .interval(Duration::from_millis(50), Duration::from_millis(200));
    let in_moto = imgbake_core::wait::until(&made, "moto to hold the machine", || async {
        let out = ec2.describe_instances().send().await.unwrap();
        match out.reservations().iter().flat_map(|r| r.instances()).next() {
            Some(_) => imgbake_core::wait::Poll::<(), ()>::Ready(()),
            None => imgbake_core::wait::Poll::Pending("none".into()),
        }
    });
    tokio::select! {
        r = builder.build(job.clone()) => panic!("the build ended before the cut: {:?}", r.map(|a| a.id).map_err(|e| e.chain())),
        r = in_moto => r.unwrap(),
    }
    let pending = job.journal.pending();
    assert!(pending.iter().any(|r| r.kind == "instance" && r.id == "*"), "{pending:?}");
    bed.unwind(&builder, &job).await;
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}
