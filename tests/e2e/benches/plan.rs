//! Benchmark: planning a large tree whose every image is already built (the nightly case).
//!
//! For trees of 50, 100 and 200 images (4 chain roots, each with children and grandchildren), moto is
//! seeded with one complete, correctly fingerprinted AMI per image; then `plan` runs against the moto
//! proxy, which counts the API calls. Goals (issue 5): ≤ 2 s for 200 images, and a call count that
//! does not grow with the tree.
//!
//!     cargo bench -p imgbake-e2e --bench plan

#[allow(dead_code)]
#[path = "../../../crates/imgbake-aws/tests/aws/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::artifact::tags;
use imgbake_core::event::EventSink;
use imgbake_core::plan::{Action, PlanOptions, fingerprint_for, plan};
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
        t.push_str(&format!("\n[images.img{i:03}]\n"));
        match parent(i) {
            None if i % 2 == 0 => t.push_str(&format!("source = {{ ami = \"{}\" }}\n", bed.source)),
            None => t.push_str(
                "source = { ami_filter = { name = \"debian-12-amd64-*\", owners = [\"self\"], most_recent = true } }\n",
            ),
            Some(p) => t.push_str(&format!("parent = \"img{p:03}\"\n")),
        }
        t.push_str(&format!("[[images.img{i:03}.steps]]\nshell = {{ inline = [\"echo {i}\"] }}\n"));
    }
    t
}

async fn bench(n: usize) {
    let bed = Bed::start().await;
    let path = bed.dir.path().join("tree.toml");
    std::fs::write(&path, tree_text(n, &bed)).unwrap();
    let tree = Tree::load(&path, &LoadOptions { env: Default::default(), ..imgbake::load_options() }).unwrap();
    let mut registry = Registry::new();
    registry.register(Arc::new(bed.builder()));

    // Seed: one complete artifact per image, fingerprinted exactly as a build would have.
    let seeding = Instant::now();
    let mut amis: HashMap<String, String> = HashMap::new();
    for name in tree.order() {
        let img = tree.image(name).unwrap();
        let origin = match &img.parent {
            Some(p) => amis[p.get_ref()].clone(),
            None => bed.source.clone(),
        };
        let fp = fingerprint_for(&tree, name, "aws", &origin).unwrap();
        let tree_name = tree.name();
        let created = chrono::Utc::now().to_rfc3339();
        let id = bed
            .moto
            .register_image(
                REGION,
                &format!("{name}-seed"),
                &[
                    (tags::TREE, tree_name.as_str()),
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
    assert_eq!(p.count(Action::Reuse), n, "every image is up to date");
    let calls = bed.proxy.calls();
    let total: u32 = calls.values().sum();
    println!(
        "plan of {n:3} images (all up to date): {:6.3} s, {total} API calls {calls:?} (seeding took {:.1} s)",
        took.as_secs_f64(),
        seeded.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for n in [50, 100, 200] {
        bench(n).await;
    }
}
