//! Every example tree shipped under images/ must pass `validate` and then `plan` against the bed:
//! what `plan` refuses, `validate` must have refused first. AWS trees plan against moto (through the
//! moto proxy); the vSphere tree against vcsim; the QEMU and VirtualBox trees against the bed's local
//! base image.
//! Plan starts no machine.

#[allow(dead_code)]
#[path = "../../../crates/imgbake-aws/tests/aws/support.rs"]
mod support;

use imgbake_e2e::{base_image, repo};
use std::path::Path;
use std::sync::Arc;

use imgbake_config::{LoadOptions, Tree};
use imgbake_core::event::EventSink;
use imgbake_core::plan::{PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_testbed::{Vcsim, VcsimOptions};
use imgbake_vsphere::{Environment, VsphereBuilder, VsphereOptions};
use support::{Bed, REGION};

/// Copy `from` into `to`, leaving out build outputs and local state.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let name = e.file_name().to_string_lossy().into_owned();
        // images/local/base holds the made base disk (not part of the example); tests/base is.
        let made_disk = name == "base" && src.join("base.qcow2").exists();
        if made_disk || ["output", ".imgbake", "imgbake-manifest.json"].contains(&name.as_str()) {
            continue;
        }
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The example trees: every `images/*/tree.toml`.
fn example_trees() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("tree.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_tree_validates_and_plans_against_the_bed() {
    let bed = Bed::start().await;
    // The examples name files outside their folder (../../provisioners): keep the layout.
    let root = bed.dir.path();
    copy_dir(&repo().join("images"), &root.join("images"));
    copy_dir(&repo().join("provisioners"), &root.join("provisioners"));
    let vcsim = Vcsim::start_with(VcsimOptions { templates: vec!["DC0_H0_VM1".into()], ..Default::default() })
        .await
        .expect("vcsim (run tests/bed/install.sh)");
    let mut registry = imgbake::registry();
    registry.register(Arc::new(bed.builder()));
    registry.register(Arc::new(VsphereBuilder::new(VsphereOptions {
        environment: Environment::Fixed([("VSPHERE_PASSWORD".to_string(), vcsim.password().to_string())].into()),
        ..VsphereOptions::default()
    })));
    let registry: Registry = registry;

    let names = example_trees();
    for expected in ["aws", "boxes", "local", "security-gate", "vsphere"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    for name in &names {
        let path = root.join("images").join(name).join("tree.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut vars = Vec::new();
        if text.contains("builder = \"aws\"") {
            // Point the tree at moto, as a user would point it at another endpoint.
            assert!(text.contains("[defaults.aws]\n"), "{name}: the aws example keeps its [defaults.aws] table");
            let endpoint = format!("[defaults.aws]\nendpoint = \"{}\"\n", bed.proxy.endpoint());
            std::fs::write(&path, text.replacen("[defaults.aws]\n", &endpoint, 1)).unwrap();
            vars.push(("region".to_string(), REGION.to_string()));
            // moto owns what it registers: the examples' public owners (Debian's account, `amazon`)
            // become `self`, and moto gets an AMI for every filter the examples use.
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace(r#"owners = ["136693071363"]"#, r#"owners = ["self"]"#);
            let text = text.replace(r#"owners = ["amazon"]"#, r#"owners = ["self"]"#);
            // moto's RegisterImage ignores Architecture, so its images match no architecture filter.
            let text = text.replace(r#"architecture = "x86_64", "#, "");
            std::fs::write(&path, text).unwrap();
            bed.moto
                .register_image(REGION, "Windows_Server-2022-English-Full-Base-2024.01.10", &[("os", "windows")])
                .await
                .unwrap();
        }
        if text.contains("builder = \"vsphere\"") {
            // Point the tree at vcsim: its URL, user and CA; its template as the source.
            assert!(
                text.contains("[defaults.vsphere]\n"),
                "{name}: the vsphere example keeps its [defaults.vsphere] table"
            );
            let bed_keys = format!(
                "[defaults.vsphere]\nusername = \"{}\"\nca_file = \"{}\"\n",
                vcsim.username(),
                vcsim.ca_file().display()
            );
            std::fs::write(&path, text.replacen("[defaults.vsphere]\n", &bed_keys, 1)).unwrap();
            vars.push(("vcenter".to_string(), vcsim.url()));
            vars.push(("source_template".to_string(), "DC0_H0_VM1".to_string()));
        }
        if text.contains("var.base_disk") {
            vars.push(("base_disk".to_string(), base_image().display().to_string()));
        }
        let opts = LoadOptions { vars, env: Default::default(), ..imgbake::load_options() };
        let tree =
            Tree::load(&path, &opts).unwrap_or_else(|d| panic!("images/{name}/tree.toml does not validate:\n{d}"));
        let p = plan(&tree, &registry, &PlanOptions::default(), &EventSink::discard())
            .await
            .unwrap_or_else(|e| panic!("images/{name}/tree.toml validates but plan refuses it: {}", e.chain()));
        for img in tree.images().keys() {
            assert!(p.decisions.iter().any(|d| &d.image == img), "images/{name}: no plan decision for `{img}`");
        }
    }
}
