//! The staleness audit (issue 16) on moto behind the project's proxy: AMIs seeded with imgbake's
//! tags (as builds leave them: complete artifacts with copies, the `imgbake:parent` lineage) in two
//! regions, release channels written as imgbake writes them, instances launched with RunInstances
//! from old and new AMIs; `imgbake audit` judged through the CLI (text, `--json`, `--deadline` exit
//! codes) and the library (an injected clock: no sleeping); and a 500-instance account that the
//! audit pages through, with its time and API calls printed.

#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use watchdog::Watched;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use chrono::{DateTime, Duration, Utc};
use imgbake_core::audit::{AuditOptions, AuditReport, Status};
use imgbake_core::channel::{PointAction, PointRecord};
use support::{Bed, COPY_REGION, REGION};

const TREE_ID: &str = "cli-audit-0001";

fn tree(bed: &Bed, channels: bool) -> String {
    let channels = if channels { "[channels.stable]\ndescription = \"production\"\n" } else { "" };
    format!(
        r#"[settings]
id = "{TREE_ID}"

{channels}
[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = 22 }}
aws = {{ region = "{REGION}", copy_regions = ["{COPY_REGION}"], endpoint = "{endpoint}" }}

[images.java-runtime]
source = {{ ami = "{source}" }}

[images.app]
parent = "java-runtime"
"#,
        source = bed.source,
        endpoint = bed.proxy.endpoint(),
    )
}

fn imgbake(bed: &Bed, dir: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).current_dir(bed.dir.path().join(dir)).env("RUST_LOG", "error");
    moto_env::on_moto(&mut c);
    c
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// One complete artifact as a build leaves it: an AMI in the build region and its copy, tagged
/// alike. Returns (primary id, copy id).
async fn artifact(
    bed: &Bed,
    image: &str,
    build: &str,
    created: DateTime<Utc>,
    parent: Option<&str>,
    tree_id: &str,
) -> (String, String) {
    let mut ids = Vec::new();
    for region in [REGION, COPY_REGION] {
        let id = bed.moto.register_image(region, &format!("{image}-{build}"), &[]).await.unwrap();
        let mut tags = vec![
            tag("imgbake:tree-id", tree_id),
            tag("imgbake:tree", "audit"),
            tag("imgbake:image", image),
            tag("imgbake:build-id", build),
            tag("imgbake:role", "artifact"),
            tag("imgbake:complete", "true"),
            tag("imgbake:fingerprint", &format!("fp-{build}")),
            tag("imgbake:created", &created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ];
        match parent {
            Some(p) => {
                tags.push(tag("imgbake:parent", p));
                tags.push(tag("imgbake:source", p));
            }
            None => tags.push(tag("imgbake:source", &bed.source)),
        }
        // moto ignores tags on RegisterImage: CreateTags, straight to moto (not counted by the proxy).
        bed.ec2(region).await.create_tags().resources(&id).set_tags(Some(tags)).send().await.unwrap();
        ids.push(id);
    }
    (ids[0].clone(), ids[1].clone())
}

/// Point `image`'s channel at an artifact as imgbake does (one SSM parameter per region, the move
/// recorded in its description), straight to moto.
async fn point(bed: &Bed, image: &str, channel: &str, ids: &(String, String)) {
    let record = PointRecord::new(PointAction::Promote).to_text();
    for (region, id) in [(COPY_REGION, &ids.1), (REGION, &ids.0)] {
        let ssm = aws_sdk_ssm::Client::new(&bed.moto.sdk_config(region).await);
        ssm.put_parameter()
            .name(format!("/images/{image}/{channel}"))
            .value(id)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .description(&record)
            .send()
            .await
            .unwrap();
    }
}

/// Launch `count` instances of `ami` in `region` (one reservation), tagged `tags`.
async fn launch(bed: &Bed, region: &str, ami: &str, count: i32, tags: &[(&str, &str)]) -> Vec<String> {
    let mut run = bed
        .ec2(region)
        .await
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::T3Micro)
        .min_count(count)
        .max_count(count);
    if !tags.is_empty() {
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()))
            .build();
        run = run.tag_specifications(spec);
    }
    let out = run.send().await.unwrap();
    out.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect()
}

fn machine<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["machines"].as_array().unwrap().iter().find(|m| m["machine"] == id).unwrap_or_else(|| panic!("{id} not in {r:#}"))
}

fn by_id<'a>(r: &'a AuditReport, id: &str) -> &'a imgbake_core::audit::MachineReport {
    r.machines.iter().find(|m| m.machine == id).unwrap_or_else(|| panic!("{id} not in {:#?}", r.machines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_stale_machines_in_two_regions_follows_lineage_and_fails_past_the_deadline() {
    let bed = Bed::start().await;
    for (dir, channels) in [("channels", true), ("newest", false)] {
        std::fs::create_dir_all(bed.dir.path().join(dir)).unwrap();
        std::fs::write(bed.dir.path().join(dir).join("tree.toml"), tree(&bed, channels)).unwrap();
    }
    let now = Utc::now();
    let days = |d: i64| now - Duration::days(d);
    // java-runtime: J1 (60 days old), superseded by J2 (40 days old).
    let j1 = artifact(&bed, "java-runtime", "b-j1", days(60), None, TREE_ID).await;
    let j2 = artifact(&bed, "java-runtime", "b-j2", days(40), None, TREE_ID).await;
    // app: A1 and A2 built from J1 (A2 is an app change 30 days ago, still on the old runtime),
    // A3 from J2 yesterday (a candidate, not promoted).
    let a1 = artifact(&bed, "app", "b-a1", days(59), Some(&j1.0), TREE_ID).await;
    let a2 = artifact(&bed, "app", "b-a2", days(30), Some(&j1.0), TREE_ID).await;
    let a3 = artifact(&bed, "app", "b-a3", days(1), Some(&j2.0), TREE_ID).await;
    // Another tree's AMI with the same image name: its machines are not ours.
    let foreign = artifact(&bed, "app", "b-x", days(90), None, "some-other-tree").await;
    // Channels: stable moved J1 → J2 and A1 → A2; candidate is what builds left.
    point(&bed, "java-runtime", "stable", &j1).await;
    point(&bed, "java-runtime", "stable", &j2).await;
    point(&bed, "app", "stable", &a1).await;
    point(&bed, "app", "stable", &a2).await;
    point(&bed, "app", "candidate", &a3).await;
    point(&bed, "java-runtime", "candidate", &j2).await;

    // Machines in both regions.
    let old_app = launch(&bed, REGION, &a1.0, 1, &[("Owner", "alice"), ("Name", "old-app")]).await.remove(0);
    let app_old_runtime = launch(&bed, COPY_REGION, &a2.1, 1, &[("Team", "payments")]).await.remove(0);
    let runtime_now = launch(&bed, REGION, &j2.0, 1, &[("owner", "bob")]).await.remove(0);
    let ahead = launch(&bed, COPY_REGION, &a3.1, 1, &[("Owner", "carol")]).await.remove(0);
    let old_runtime = launch(&bed, REGION, &j1.0, 1, &[]).await.remove(0);
    let _unrelated = launch(&bed, REGION, &bed.source, 1, &[("Owner", "dave")]).await;
    let _other_tree = launch(&bed, COPY_REGION, &foreign.1, 1, &[]).await;
    // A stopped machine is not running: not listed.
    let stopped = launch(&bed, REGION, &a1.0, 1, &[]).await;
    bed.ec2(REGION).await.stop_instances().set_instance_ids(Some(stopped.clone())).send().await.unwrap();

    // Against stable, through the CLI, as JSON.
    let o = imgbake(&bed, "channels", &["audit", "tree.toml", "--json"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    println!("{r:#}");
    assert_eq!(r["channel"], "stable");
    assert_eq!(r["tree_id"], TREE_ID);
    let s = &r["summary"];
    assert_eq!((s["machines"].as_u64(), s["behind"].as_u64()), (Some(5), Some(3)), "{s}");
    assert_eq!((s["current"].as_u64(), s["ahead"].as_u64(), s["unknown"].as_u64()), (Some(1), Some(1), Some(0)), "{s}");
    assert_eq!(s["other_machines"].as_u64(), Some(2), "{s}");
    assert_eq!(s["overdue"].as_u64(), Some(0), "no deadline: {s}");
    assert!(r["machines"].as_array().unwrap().iter().all(|m| m["machine"] != stopped[0].as_str()), "stopped listed");

    let m = machine(&r, &old_app);
    assert_eq!(m["status"], "behind", "{m}");
    assert_eq!(m["image"], "app");
    assert_eq!(m["location"], REGION);
    assert_eq!(m["artifact"], a1.0.as_str());
    assert_eq!(m["current"], a2.0.as_str(), "{m}");
    assert_eq!(m["versions_behind"], 1, "A2 is the one newer up to stable (A3 is not in stable): {m}");
    assert_eq!(m["owners"]["Owner"], "alice");
    assert_eq!(m["name"], "old-app");
    assert!(m["account"].as_str().is_some_and(|a| a.len() == 12), "{m}");
    assert!(m["age_seconds"].as_u64().unwrap() >= 59 * 86400, "{m}");
    assert_eq!(m["lineage"][0]["image"], "java-runtime", "{m}");
    assert_eq!(m["lineage"][0]["artifact"], j1.0.as_str(), "{m}");

    // The app image itself is what stable points at (in the copy region: its copy), but it was
    // built from J1, which java-runtime's stable moved away from: behind.
    let m = machine(&r, &app_old_runtime);
    assert_eq!(m["status"], "behind", "{m}");
    assert_eq!(m["location"], COPY_REGION);
    assert_eq!(m["current"], a2.1.as_str(), "the current AMI of its region: {m}");
    assert_eq!(m["versions_behind"], 0, "{m}");
    assert_eq!(m["lineage"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["lineage"][0]["artifact"], j1.0.as_str(), "{m}");
    assert_eq!(m["lineage"][0]["current"], j2.0.as_str(), "{m}");
    assert_eq!(m["lineage"][0]["versions_behind"], 1, "{m}");
    assert_eq!(m["owners"]["Team"], "payments");

    let m = machine(&r, &runtime_now);
    assert_eq!(m["status"], "current", "{m}");
    assert_eq!(m["owners"]["owner"], "bob");
    assert_eq!(machine(&r, &ahead)["status"], "ahead");
    assert_eq!(machine(&r, &old_runtime)["status"], "behind");
    assert_eq!(machine(&r, &old_runtime)["owners"], serde_json::json!({}));

    // Text for people; stable moved a moment ago, so nothing is past a 30-day deadline yet: the
    // clock of the rule starts when the channel moved, not when the image was built.
    let o = imgbake(&bed, "channels", &["audit", "tree.toml", "--deadline", "30d"]).watched();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    println!("{out}");
    assert!(out.starts_with("audit of tree `channels` against channel `stable`\n"), "{out}");
    assert!(out.contains(&format!("built from java-runtime {}", j1.0)), "{out}");
    assert!(out.contains("Owner=alice"), "{out}");
    assert!(
        out.contains("5 machine(s) of the tree: 1 current, 3 behind, 1 ahead, 0 unknown, 0 past the 30d deadline"),
        "{out}"
    );

    // The library with the clock 31 days on: the three behind machines are overdue.
    let t = imgbake_config::Tree::load(&bed.dir.path().join("channels/tree.toml"), &imgbake::load_options()).unwrap();
    let mut registry = imgbake_core::registry::Registry::new();
    registry.register(Arc::new(bed.builder()));
    let opts = AuditOptions {
        deadline: Some(std::time::Duration::from_secs(30 * 86400)),
        now: Some(now + Duration::days(31)),
        ..Default::default()
    };
    let later = imgbake_core::audit::audit(&t, &registry, &opts).await.unwrap();
    assert!(later.failed());
    assert_eq!(later.summary.overdue, 3, "{:#?}", later.machines);
    for id in [&old_app, &app_old_runtime, &old_runtime] {
        assert!(by_id(&later, id).overdue, "{id}");
    }
    assert!(!by_id(&later, &ahead).overdue && by_id(&later, &ahead).status == Status::Ahead);
    // An explicit channel: against candidate, A3 is current and A2 (from J1, behind J2) is behind.
    let cand = imgbake_core::audit::audit(
        &t,
        &registry,
        &AuditOptions { channel: Some("candidate".into()), ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(by_id(&cand, &ahead).status, Status::Current);
    assert_eq!(by_id(&cand, &old_app).versions_behind, 2);
    let err =
        imgbake_core::audit::audit(&t, &registry, &AuditOptions { channel: Some("beta".into()), ..Default::default() })
            .await
            .unwrap_err();
    assert!(err.to_string().contains("the tree has no channel `beta` (channels: stable, candidate)"), "{err}");

    // Without channels, the newest artifact is current and a machine was superseded when the first
    // newer artifact (along its lineage) was made: J1 by J2, 40 days ago.
    let o = imgbake(&bed, "newest", &["audit", "tree.toml", "--json", "--deadline", "30d"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("audit failed: 3 machine(s)"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["channel"], serde_json::Value::Null);
    assert_eq!(r["deadline_seconds"], 30 * 86400);
    let m = machine(&r, &old_app);
    assert_eq!(m["current"], a3.0.as_str(), "{m}");
    assert_eq!(m["versions_behind"], 2, "{m}");
    assert!(m["overdue"].as_bool().unwrap(), "{m}");
    let behind = m["behind_seconds"].as_u64().unwrap();
    assert!((40 * 86400..40 * 86400 + 600).contains(&behind), "superseded when J2 was made: {m}");
    assert_eq!(machine(&r, &ahead)["status"], "current");
    let o = imgbake(&bed, "newest", &["audit", "tree.toml", "--deadline", "45d"]).watched();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The deadline from tree.toml, as CI would have it.
    let with_deadline = format!("{}\n[audit]\ndeadline = \"30d\"\nowner_tags = [\"Team\"]\n", tree(&bed, false));
    std::fs::write(bed.dir.path().join("newest/tree.toml"), with_deadline).unwrap();
    let o = imgbake(&bed, "newest", &["audit", "tree.toml", "--json"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(machine(&r, &old_app)["owners"], serde_json::json!({}), "only Team is an owner tag now");
    assert_eq!(machine(&r, &app_old_runtime)["owners"]["Team"], "payments");
    // A bad key is caught offline, with its place.
    std::fs::write(
        bed.dir.path().join("newest/tree.toml"),
        format!("{}\n[audit]\nchannel = \"stabel\"\n", tree(&bed, true)),
    )
    .unwrap();
    let o = imgbake(&bed, "newest", &["validate", "tree.toml"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("tree.toml:"), "{}", text(&o));
    assert!(text(&o).contains("audit.channel names `stabel`"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_of_a_500_instance_account_pages_and_batches() {
    let bed = Bed::start().await;
    let dir = bed.dir.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        r#"[settings]
id = "{TREE_ID}"

[images.app]
builder = "aws"
source = {{ ami = "{source}" }}
communicator = {{ username = "root", host = "127.0.0.1", port = 22 }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}" }}
"#,
        source = bed.source,
        endpoint = bed.proxy.endpoint(),
    );
    std::fs::write(dir.join("tree.toml"), text).unwrap();
    // 125 builds of app; 500 instances in 125 reservations of 4 (moto pages DescribeInstances by
    // reservation, EC2 by instance), one build each; the newest build's machines are current.
    const BUILDS: usize = 125;
    let now = Utc::now();
    let ec2 = bed.ec2(REGION).await;
    let mut amis = Vec::new();
    for b in 0..BUILDS {
        let id = bed.moto.register_image(REGION, &format!("app-{b}"), &[]).await.unwrap();
        let created = now - Duration::hours((BUILDS - b) as i64);
        let tags = vec![
            tag("imgbake:tree-id", TREE_ID),
            tag("imgbake:image", "app"),
            tag("imgbake:build-id", &format!("b-{b:03}")),
            tag("imgbake:role", "artifact"),
            tag("imgbake:complete", "true"),
            tag("imgbake:created", &created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ];
        ec2.create_tags().resources(&id).set_tags(Some(tags)).send().await.unwrap();
        amis.push(id);
    }
    for (b, ami) in amis.iter().enumerate() {
        launch(&bed, REGION, ami, 4, &[("Owner", &format!("team-{}", b % 7))]).await;
    }

    // MaxResults as every DescribeInstances sent it.
    let max_results = Arc::new(Mutex::new(Vec::<String>::new()));
    let image_filters = Arc::new(Mutex::new(Vec::<usize>::new()));
    let (mr, imf) = (max_results.clone(), image_filters.clone());
    bed.proxy.on_call(move |call| {
        if call.action == "DescribeInstances" {
            mr.lock().unwrap().push(call.param("MaxResults").unwrap_or("-").to_string());
        }
        if call.action == "DescribeImages" && call.param("Filter.1.Name") == Some("image-id") {
            let values = call.params.iter().filter(|(k, _)| k.starts_with("Filter.1.Value.")).count();
            imf.lock().unwrap().push(values);
        }
    });
    bed.proxy.reset();

    let t = imgbake_config::Tree::load(&dir.join("tree.toml"), &imgbake::load_options()).unwrap();
    let mut registry = imgbake_core::registry::Registry::new();
    let page_size = 50;
    let options = imgbake_aws::AwsOptions { audit_page_size: page_size, ..bed.builder().options().clone() };
    registry.register(Arc::new(imgbake_aws::AwsBuilder::new(options)));
    let started = std::time::Instant::now();
    let report = imgbake_core::audit::audit(&t, &registry, &AuditOptions::default()).await.unwrap();
    let took = started.elapsed();
    let calls: BTreeMap<String, u32> = bed.proxy.calls();
    println!("audit of 500 instances: {took:?}; calls: {calls:?}");
    println!(
        "DescribeInstances MaxResults: {:?}; DescribeImages image-id values per call: {:?}",
        max_results.lock().unwrap(),
        image_filters.lock().unwrap()
    );

    assert_eq!(report.summary.machines, 500, "{:?}", report.summary);
    assert_eq!(report.summary.current, 4);
    assert_eq!(report.summary.behind, 496);
    assert_eq!(report.summary.other_machines, 0);
    let oldest = report.machines.iter().find(|m| m.build_id.as_deref() == Some("b-000")).unwrap();
    assert_eq!(oldest.versions_behind, BUILDS as u32 - 1);
    assert!(oldest.owners.contains_key("Owner"));
    // Paged: 125 reservations at 50 a page (moto) is 3 pages, each asking MaxResults.
    let mr = max_results.lock().unwrap().clone();
    assert_eq!(mr.len(), 3, "{mr:?}");
    assert!(mr.iter().all(|m| m == "50"), "{mr:?}");
    // 125 distinct AMIs in batches of 100: two DescribeImages by image id, not one per instance or AMI.
    let imf = image_filters.lock().unwrap().clone();
    assert_eq!(imf, vec![100, 25], "{imf:?}");
    // Besides those: the tree's artifacts (one paged listing) and nothing per machine.
    assert!(calls.values().sum::<u32>() < 20, "{calls:?}");
}
