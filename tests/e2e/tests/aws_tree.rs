//! Whole trees on the EC2 builder: moto behind the moto proxy (which plays EC2 and cloud-init for the
//! bed's sshd: imported key pairs become authorized keys, the injected host key becomes sshd's), and
//! every step really running over SSH. Builds run one at a time here (`parallel = 1`): all machines
//! are the same sshd, whose host key each launch replaces.

#[allow(dead_code)]
#[path = "../../../crates/imgbake-aws/tests/aws/support.rs"]
mod support;

use std::sync::Arc;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::EventSink;
use imgbake_core::plan::{Action, Plan, PlanOptions, plan};
use imgbake_core::prune::{PruneOptions, prune};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, RunSummary, Status, run};
use imgbake_e2e::write;
use imgbake_testbed::SshTarget;
use support::{Bed, REGION};

struct TreeBed {
    bed: Bed,
    registry: Registry,
}

/// base → runtime → {app, worker}, and base → tools.
async fn tree_bed() -> TreeBed {
    let bed = Bed::start().await;
    let text = format!(
        r#"[settings]
id = "e2e-aws-tree-0001"
name = "aws-e2e"
manifest = "manifest.json"
parallel = 1

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}

[defaults.aws]
region = "{REGION}"
endpoint = "{endpoint}"
ssh_cidrs = ["127.0.0.1/32"]
instance_timeout = "60s"
image_timeout = "60s"
# Builds on moto take well under a second: a name per build, not per second.
ami_name = "{{{{ image.name }}}}-{{{{ uuid }}}}"

[images.base]
source = {{ ami_filter = {{ name = "debian-12-amd64-*", owners = ["self"], most_recent = true }} }}
publish = {{ ssm_parameter = "/images/base/latest" }}
[[images.base.steps]]
shell = {{ inline = ["echo base"] }}

[images.runtime]
parent = "base"
[[images.runtime.steps]]
shell = {{ script = "scripts/runtime.sh" }}

[images.app]
parent = "runtime"
publish = {{ ssm_parameter = "/images/app/latest" }}
[[images.app.steps]]
shell = {{ script = "scripts/app.sh" }}

[images.worker]
parent = "runtime"
[[images.worker.steps]]
shell = {{ inline = ["echo worker"] }}

[images.tools]
parent = "base"
[[images.tools.steps]]
shell = {{ inline = ["echo tools"] }}
"#,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    );
    write(bed.dir.path(), "tree.toml", &text);
    write(bed.dir.path(), "scripts/runtime.sh", "echo runtime v1\n");
    write(bed.dir.path(), "scripts/app.sh", "echo app v1\n");
    let mut registry = Registry::new();
    registry.register(Arc::new(bed.builder()));
    TreeBed { bed, registry }
}

impl TreeBed {
    fn tree(&self) -> Tree {
        let opts = LoadOptions { env: Default::default(), ..imgbake::load_options() };
        Tree::load(&self.bed.dir.path().join("tree.toml"), &opts).unwrap_or_else(|d| panic!("{d}"))
    }

    async fn plan(&self, opts: &PlanOptions) -> Plan {
        plan(&self.tree(), &self.registry, opts, &EventSink::discard())
            .await
            .unwrap_or_else(|e| panic!("{}", e.chain()))
    }

    async fn build(&self, opts: &PlanOptions) -> RunSummary {
        let tree = self.tree();
        let p = self.plan(opts).await;
        run(&tree, &p, &self.registry, RunOptions::default(), &EventSink::discard()).await.unwrap()
    }

    fn launches(&self) -> u32 {
        self.bed.proxy.count("RunInstances")
    }

    /// The AMIs the instances of `image` were launched from, as moto records them.
    async fn launched_from(&self, image: &str) -> Vec<String> {
        let ec2 = self.bed.ec2(REGION).await;
        let filter = aws_sdk_ec2::types::Filter::builder().name("tag:imgbake:image").values(image).build();
        let out = ec2.describe_instances().filters(filter).send().await.unwrap();
        let mut ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.image_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    async fn ssm(&self, name: &str) -> Option<String> {
        let cfg = self.bed.moto.sdk_config(REGION).await;
        let ssm = aws_sdk_ssm::Client::new(&cfg);
        ssm.get_parameter()
            .name(name)
            .send()
            .await
            .ok()
            .and_then(|o| o.parameter().and_then(|p| p.value().map(str::to_string)))
    }

    async fn leftovers(&self, s: &[&RunSummary]) -> Vec<String> {
        let keep: Vec<String> = s
            .iter()
            .flat_map(|s| s.results.iter())
            .filter_map(|r| r.artifact.as_ref())
            .flat_map(|a| a.locations.values().cloned())
            .collect();
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        self.bed.leftovers(&keep).await
    }
}

fn art(s: &RunSummary, image: &str) -> String {
    s.results
        .iter()
        .find(|r| r.image == image)
        .and_then(|r| r.artifact.as_ref())
        .map(|a| a.id.clone())
        .unwrap_or_else(|| panic!("{image}: {s:#?}"))
}

fn status(s: &RunSummary, image: &str) -> Status {
    s.results.iter().find(|r| r.image == image).unwrap().status
}

fn why(p: &Plan, image: &str) -> String {
    p.get(image, "aws").unwrap().reasons.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_tree_builds_reuses_and_rebuilds_what_changed() {
    let t = tree_bed().await;
    let s1 = t.build(&PlanOptions::default()).await;
    assert!(s1.ok(), "{s1:#?}");
    for i in ["base", "runtime", "app", "worker", "tools"] {
        assert_eq!(status(&s1, i), Status::Built, "{i}");
    }
    assert_eq!(t.launches(), 5);
    // Each child was launched from its parent's new AMI.
    assert_eq!(t.launched_from("runtime").await, vec![art(&s1, "base")]);
    assert_eq!(t.launched_from("app").await, vec![art(&s1, "runtime")]);
    assert_eq!(t.launched_from("worker").await, vec![art(&s1, "runtime")]);
    // Published ids, after the tests passed.
    assert_eq!(t.ssm("/images/base/latest").await.as_deref(), Some(art(&s1, "base").as_str()));
    assert_eq!(t.ssm("/images/app/latest").await.as_deref(), Some(art(&s1, "app").as_str()));
    assert!(t.leftovers(&[&s1]).await.is_empty(), "{:?}", t.leftovers(&[&s1]).await);

    // Again: everything reused, zero instances launched; planning cost a few calls, not one per image.
    let describe_before = t.bed.proxy.count("DescribeImages");
    let s2 = t.build(&PlanOptions::default()).await;
    assert!(s2.ok());
    for i in ["base", "runtime", "app", "worker", "tools"] {
        assert_eq!(status(&s2, i), Status::Reused, "{i}");
    }
    assert_eq!(t.launches(), 5, "no instance launched");
    let describes = t.bed.proxy.count("DescribeImages") - describe_before;
    assert!(describes <= 3, "{describes} DescribeImages calls for a 5-image plan");

    // A mid-tree script changes: runtime and everything below it, siblings of the branch reused.
    write(t.bed.dir.path(), "scripts/runtime.sh", "echo runtime v2\n");
    let p = t.plan(&PlanOptions::default()).await;
    assert_eq!(p.get("base", "aws").unwrap().action, Action::Reuse);
    assert_eq!(p.get("tools", "aws").unwrap().action, Action::Reuse);
    assert_eq!(why(&p, "runtime"), "file scripts/runtime.sh changed");
    assert_eq!(why(&p, "app"), "parent runtime is rebuilt");
    assert_eq!(why(&p, "worker"), "parent runtime is rebuilt");
    let s3 = t.build(&PlanOptions::default()).await;
    assert!(s3.ok(), "{s3:#?}");
    assert_eq!(t.launches(), 8, "exactly runtime, app and worker were built");
    assert_eq!(status(&s3, "tools"), Status::Reused);
    let runtime2 = art(&s3, "runtime");
    assert_ne!(runtime2, art(&s1, "runtime"));
    for child in ["app", "worker"] {
        assert!(t.launched_from(child).await.contains(&runtime2), "{child} starts from the new runtime AMI");
    }
    assert_eq!(t.ssm("/images/app/latest").await.as_deref(), Some(art(&s3, "app").as_str()));
    assert!(t.leftovers(&[&s1, &s3]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_newer_source_ami_rebuilds_downstream() {
    let t = tree_bed().await;
    let s1 = t.build(&PlanOptions::default()).await;
    assert!(s1.ok(), "{s1:#?}");
    let newer = t.bed.moto.register_image(REGION, "debian-12-amd64-20991231", &[("os", "debian")]).await.unwrap();
    let p = t.plan(&PlanOptions::default()).await;
    let reason = why(&p, "base");
    assert!(reason.starts_with(&format!("source {} → {newer} (", t.bed.source)), "{reason}");
    assert!(reason.contains("debian-12-amd64-20991231"), "{reason}");
    for i in ["runtime", "app", "worker", "tools"] {
        assert_eq!(
            why(&p, i),
            format!("parent {} is rebuilt", if i == "app" || i == "worker" { "runtime" } else { "base" }),
            "{i}"
        );
    }
    let s2 = t.build(&PlanOptions::default()).await;
    assert!(s2.ok(), "{s2:#?}");
    assert!(t.launched_from("base").await.contains(&newer), "base starts from the newer AMI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_failing_image_skips_its_descendants_only() {
    let t = tree_bed().await;
    write(t.bed.dir.path(), "scripts/runtime.sh", "echo broken >&2; exit 7\n");
    let s = t.build(&PlanOptions::default()).await;
    assert!(!s.ok());
    assert_eq!(status(&s, "base"), Status::Built);
    assert_eq!(status(&s, "tools"), Status::Built, "the independent branch completes");
    assert_eq!(status(&s, "runtime"), Status::Failed);
    assert_eq!(status(&s, "app"), Status::Skipped);
    assert_eq!(status(&s, "worker"), Status::Skipped);
    assert!(t.ssm("/images/app/latest").await.is_none(), "nothing published for a skipped image");
    assert!(t.leftovers(&[&s]).await.is_empty(), "the failed build left nothing: {:?}", t.leftovers(&[&s]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_prune_keeps_n_and_never_a_live_parent() {
    let t = tree_bed().await;
    let s1 = t.build(&PlanOptions::default()).await;
    assert!(s1.ok());
    // A new runtime, built alone: app and worker keep running on the old runtime AMI.
    write(t.bed.dir.path(), "scripts/runtime.sh", "echo runtime v2\n");
    let s2 = t.build(&PlanOptions { only: vec!["runtime".into()], ..Default::default() }).await;
    assert!(s2.ok(), "{s2:#?}");
    // A new app on the new runtime.
    write(t.bed.dir.path(), "scripts/app.sh", "echo app v2\n");
    let s3 = t.build(&PlanOptions { only: vec!["app".into()], ..Default::default() }).await;
    assert!(s3.ok(), "{s3:#?}");
    assert_eq!(art(&s3, "runtime"), art(&s2, "runtime"), "app's ancestors are reused");

    let report =
        prune(&t.tree(), &t.registry, &PruneOptions { keep: Some(1), ..Default::default() }, &EventSink::discard())
            .await
            .unwrap();
    let deleted: Vec<String> = report.deleted.iter().map(|a| a.id.clone()).collect();
    assert_eq!(deleted, vec![art(&s1, "app")], "only the old app goes: {report:#?}");
    let kept_old_runtime = report.kept.iter().find(|k| k.artifact.id == art(&s1, "runtime")).expect("old runtime kept");
    assert_eq!(kept_old_runtime.why, "a kept child image was built from it", "worker still uses it");
    // The published app AMI is the kept one.
    assert_eq!(t.ssm("/images/app/latest").await.as_deref(), Some(art(&s3, "app").as_str()));
    let ec2 = t.bed.ec2(REGION).await;
    let gone =
        ec2.describe_images().image_ids(art(&s1, "app")).send().await.map(|o| o.images().is_empty()).unwrap_or(true);
    assert!(gone, "the pruned AMI is deregistered");

    // A newer app built without publishing (--no-publish, or a failed publish): SSM still points at
    // the older one, which must survive pruning.
    write(t.bed.dir.path(), "scripts/app.sh", "echo app v3\n");
    let tree = t.tree();
    let p = t.plan(&PlanOptions { only: vec!["app".into()], ..Default::default() }).await;
    let s4 = run(&tree, &p, &t.registry, RunOptions { publish: false, ..Default::default() }, &EventSink::discard())
        .await
        .unwrap();
    assert!(s4.ok(), "{s4:#?}");
    assert_eq!(t.ssm("/images/app/latest").await.as_deref(), Some(art(&s3, "app").as_str()), "not republished");
    let report =
        prune(&t.tree(), &t.registry, &PruneOptions { keep: Some(1), ..Default::default() }, &EventSink::discard())
            .await
            .unwrap();
    assert!(report.deleted.iter().all(|a| a.image != "app"), "{report:#?}");
    let published = report.kept.iter().find(|k| k.artifact.id == art(&s3, "app")).expect("the published app is kept");
    assert_eq!(published.why, "published: consumers launch it");
}

/// Two app AMIs built back to back (moto makes each build take about a second, so they often share
/// one): the listing orders them by creation to the millisecond, the newer first, and prune keeps
/// the newer one. Whole-second `imgbake:created` tags made them tie, and prune deleted the newer.
#[tokio::test]
async fn artifacts_built_within_one_second_keep_their_order() {
    let t = tree_bed().await;
    assert!(t.build(&PlanOptions::default()).await.ok());
    let app = |s: &RunSummary| s.results.iter().find(|r| r.image == "app").and_then(|r| r.artifact.clone()).unwrap();
    let only_app = PlanOptions { only: vec!["app".into()], force: true, ..Default::default() };
    let (first, second) = (t.build(&only_app).await, t.build(&only_app).await);
    let (first, second) = (app(&first), app(&second));
    assert!(second.created > first.created, "{} then {}", first.created, second.created);

    let tree = t.tree();
    let listed = t.registry.artifacts_of(&tree, tree.images().values()).await.unwrap();
    let apps = &listed[&("app".to_string(), "aws".to_string())];
    assert_eq!(apps[0].id, second.id, "the newest first: {apps:#?}");
    assert_eq!(apps[0].created, second.created, "creation time is kept to the millisecond");
    assert_eq!(apps[1].created, first.created);
    let sub_second = [&first, &second, &apps[2]].iter().any(|a| a.created.timestamp_subsec_millis() != 0);
    assert!(sub_second, "creation times carry milliseconds: {apps:#?}");

    let report =
        prune(&tree, &t.registry, &PruneOptions { keep: Some(1), ..Default::default() }, &EventSink::discard())
            .await
            .unwrap();
    let deleted: Vec<&str> = report.deleted.iter().filter(|a| a.image == "app").map(|a| a.id.as_str()).collect();
    assert!(!deleted.contains(&second.id.as_str()), "the newest app is never pruned: {report:#?}");
    assert!(deleted.contains(&first.id.as_str()), "{report:#?}");
}
