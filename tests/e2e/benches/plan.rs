//! Benchmark: planning a large tree whose every image is already built (the nightly case).
//!
//! For trees of 200, 500 and 1,000 images (4 chain roots, each with children and grandchildren),
//! moto is seeded with one complete, correctly fingerprinted AMI per image; then `plan` runs against
//! the moto proxy, which counts the API calls. Goals (issues 5 and 15): 2,000 images in ≤ 2 s, time
//! growing linearly with the tree (the ratio column: seconds per image relative to the smallest
//! tree), and a call count that does not grow with the tree. The table is imgbake's own time: the
//! wall time less what moto took to answer and the proxy to rewrite (both printed per size; moto's
//! tag filtering is quadratic in the number of AMIs, EC2's is not). At 2,000 images
//! (`IMGBAKE_BENCH_SIZES=2000`) one DescribeImages answer from moto takes longer than the SDK's 60 s
//! attempt timeout on a 2-core machine, so the default stops at 1,000.
//!
//!     cargo bench -p imgbake-e2e --bench plan
//!
//! `IMGBAKE_BENCH_SIZES=50,100` picks other sizes.

#[allow(dead_code)]
#[path = "../../../crates/imgbake-aws/tests/aws/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::artifact::tags;
use imgbake_core::event::EventSink;
use imgbake_core::plan::{Action, Fingerprinter, PlanOptions, plan};
use imgbake_core::registry::Registry;
use support::{Bed, REGION};

const ROOTS: usize = 4;

/// The parent of image `i` (breadth-first: roots, then 7 children per image).
fn parent(i: usize) -> Option<usize> {
    (i >= ROOTS).then(|| (i - ROOTS) / 7)
}

fn tree_text(n: usize, bed: &Bed) -> String {
    let mut t = format!(
        r#"[settings]
name = "bench-{n}"
id = "bench-plan-{n:04}"

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = 22 }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"] }}
"#,
        endpoint = bed.proxy.endpoint()
    );
    for i in 0..n {
        t.push_str(&format!("\n[images.img{i:04}]\n"));
        match parent(i) {
            None if i % 2 == 0 => t.push_str(&format!("source = {{ ami = \"{}\" }}\n", bed.source)),
            None => t.push_str(
                "source = { ami_filter = { name = \"debian-12-amd64-*\", owners = [\"self\"], most_recent = true } }\n",
            ),
            Some(p) => t.push_str(&format!("parent = \"img{p:04}\"\n")),
        }
        t.push_str(&format!("[[images.img{i:04}.steps]]\nshell = {{ inline = [\"echo {i}\"] }}\n"));
    }
    t
}

/// Plan a seeded tree of `n` images; the plan's wall time in seconds.
async fn bench(n: usize) -> f64 {
    let bed = Bed::start().await;
    let path = bed.dir.path().join("tree.toml");
    std::fs::write(&path, tree_text(n, &bed)).unwrap();
    let tree = Tree::load(&path, &LoadOptions { env: Default::default(), ..imgbake::load_options() }).unwrap();
    let mut registry = Registry::new();
    registry.register(Arc::new(bed.builder()));

    // Seed: one complete artifact per image, fingerprinted exactly as a build would have.
    let seeding = Instant::now();
    let mut amis: HashMap<String, String> = HashMap::new();
    let fingerprints = Fingerprinter::new(&tree).unwrap();
    for name in tree.order() {
        let img = tree.image(name).unwrap();
        let origin = match &img.parent {
            Some(p) => amis[p.get_ref()].clone(),
            None => bed.source.clone(),
        };
        let fp = fingerprints.fingerprint(name, "aws", &origin).unwrap();
        let tree_name = tree.name();
        let tree_id = format!("bench-plan-{n:04}");
        let created = chrono::Utc::now().to_rfc3339();
        let id = bed
            .moto
            .register_image(
                REGION,
                &format!("{name}-seed"),
                &[
                    (tags::TREE, tree_name.as_str()),
                    (tags::TREE_ID, tree_id.as_str()),
                    (tags::ROLE, "artifact"),
                    (tags::IMAGE, name),
                    (tags::BUILD_ID, "b-seed"),
                    (tags::FINGERPRINT, fp.as_str()),
                    (tags::SOURCE, origin.as_str()),
                    (tags::CREATED, created.as_str()),
                    (tags::COMPLETE, "true"),
                ],
            )
            .await
            .unwrap();
        amis.insert(name.to_string(), id);
    }
    let seeded = seeding.elapsed();

    // Measure: a plan of the whole tree (warm clients, as in a real `imgbake plan`, after one
    // untimed run that loads the SDK clients).
    plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    bed.proxy.reset();
    let t0 = Instant::now();
    let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard()).await.unwrap();
    let took = t0.elapsed();
    // What is not imgbake's: moto answering (Python, slow on large listings) and the proxy
    // rewriting its answers.
    let log = bed.proxy.call_log();
    let platform: std::time::Duration = log.iter().map(|c| c.moto + c.rewrite).sum();
    let own = took.saturating_sub(platform);
    let stale: Vec<String> = p
        .decisions
        .iter()
        .filter(|d| d.action != Action::Reuse)
        .take(3)
        .map(|d| format!("{}: {:?} {}", d.image, d.action, d.reasons.join("; ")))
        .collect();
    assert!(stale.is_empty(), "every image is up to date, but: {stale:?}");
    let calls = bed.proxy.calls();
    let total: u32 = calls.values().sum();
    println!(
        "plan of {n:4} images (all up to date): {:7.3} s wall, {:7.3} s in moto and the proxy, {:6.3} s imgbake's own; {total} API calls {calls:?} (seeding took {:.1} s)",
        took.as_secs_f64(),
        platform.as_secs_f64(),
        own.as_secs_f64(),
        seeded.as_secs_f64()
    );
    own.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("IMGBAKE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![200, 500, 1000]);
    let mut results = Vec::new();
    for n in sizes {
        results.push((n, bench(n).await));
    }
    // Linear growth keeps seconds per image flat: the ratio stays near 1.
    let Some(&(n0, t0)) = results.first() else { return };
    println!("\n{:>7} {:>11} {:>13} {:>22}", "images", "imgbake s", "ms per image", "per image vs smallest");
    for (n, t) in results {
        let per = t / n as f64;
        println!("{n:>7} {t:>11.3} {:>13.3} {:>21.2}x", per * 1000.0, per / (t0 / n0 as f64));
    }
}
