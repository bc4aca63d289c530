//! The step key `idempotent`: its per-kind default and its type check.

use imgbake_config::{LoadOptions, Tree};

fn load(steps: &str) -> Result<Tree, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), b"").unwrap();
    std::fs::write(dir.path().join("f.txt"), b"x").unwrap();
    let toml = format!(
        r#"
[images.box]
builder = "box"
source = {{ disk = "disk.raw" }}

[images.box.communicator]
username = "root"
{steps}
"#
    );
    std::fs::write(dir.path().join("tree.toml"), toml).unwrap();
    let schemas = imgbake_config::Schemas::new().with(imgbake_config::schema::Open::new("box", &["disk"]).arc());
    let opts = LoadOptions { env: Default::default(), schemas, ..LoadOptions::default() };
    Tree::load(&dir.path().join("tree.toml"), &opts).map_err(|e| e.to_string())
}

#[test]
fn idempotent_defaults_to_true_for_reboot_file_and_test_and_can_be_set() {
    let tree = load(
        r#"
[[images.box.steps]]
shell = { inline = ["true"] }

[[images.box.steps]]
idempotent = true
shell = { inline = ["true"] }

[[images.box.steps]]
file = { source = "f.txt", destination = "/tmp/f.txt" }

[[images.box.steps]]
reboot = {}

[[images.box.steps]]
idempotent = false
reboot = {}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let steps = &tree.image("box").unwrap().steps;
    let got: Vec<bool> = steps.iter().map(|s| s.is_idempotent()).collect();
    assert_eq!(got, vec![false, true, true, true, false]);
}

#[test]
fn idempotent_that_is_not_a_bool_is_rejected_with_its_line() {
    let err = load(
        r#"
[[images.box.steps]]
idempotent = "yes"
shell = { inline = ["true"] }
"#,
    )
    .unwrap_err();
    assert!(err.contains("tree.toml:10:") && err.contains("expected a boolean"), "points at the key's line: {err}");
}
