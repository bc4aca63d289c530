//! The configuration-management step kinds (`chef_solo`, `puppet_apply`, `powershell_dsc`): parsing,
//! offline validation with file:line spans, and their local files in the image's inputs.

use imgbake_config::{ChefFlavor, LoadOptions, StepKind, Tree};

/// A tree with one image `box` whose communicator has `communicator` extra keys, and `steps`; the
/// temp dir holds cookbooks/, roles/, modules/, hiera/ and a few files.
fn load(communicator: &str, steps: &str) -> (tempfile::TempDir, Result<Tree, String>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("disk.raw"), b"").unwrap();
    for d in ["cookbooks/base/recipes", "roles", "modules/app/manifests", "hiera/data", "dsc/MyModule"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    for (f, c) in [
        ("cookbooks/base/recipes/default.rb", "log 'hi'\n"),
        ("roles/web.json", "{}\n"),
        ("site.pp", "notice('x')\n"),
        ("modules/app/manifests/init.pp", "class app {}\n"),
        ("hiera/hiera.yaml", "version: 5\n"),
        ("hiera/data/common.yaml", "a: 1\n"),
        ("dsc/Web.ps1", "Configuration Web { }\n"),
        ("dsc/data.psd1", "@{ AllNodes = @() }\n"),
        ("dsc/MyModule/MyModule.psm1", "\n"),
    ] {
        std::fs::write(p.join(f), c).unwrap();
    }
    let toml = format!(
        r#"
[images.box]
builder = "box"
source = {{ disk = "disk.raw" }}

[images.box.communicator]
username = "root"
{communicator}
{steps}
"#
    );
    std::fs::write(p.join("tree.toml"), toml).unwrap();
    let schemas = imgbake_config::Schemas::new().with(imgbake_config::schema::Open::new("box", &["disk"]).arc());
    let opts = LoadOptions { env: Default::default(), schemas, ..LoadOptions::default() };
    let tree = Tree::load(&p.join("tree.toml"), &opts).map_err(|e| e.to_string());
    (dir, tree)
}

#[test]
fn the_three_kinds_parse_and_their_local_files_are_inputs_of_the_image() {
    let (dir, tree) = load(
        "",
        r#"
[[images.box.steps]]
chef_solo = { run_list = ["recipe[base]"], cookbook_paths = ["cookbooks"], roles_path = "roles", json = { app = { port = 8080 } } }

[[images.box.steps]]
puppet_apply = { manifest = "site.pp", module_paths = ["modules"], hiera_config = "hiera/hiera.yaml", hiera_data = "hiera/data", facts = { role = "web" } }
"#,
    );
    let tree = tree.unwrap_or_else(|e| panic!("{e}"));
    let img = tree.image("box").unwrap();
    let kinds: Vec<&str> = img.steps.iter().map(|s| s.kind.kind()).collect();
    assert_eq!(kinds, vec!["chef_solo", "puppet_apply"]);
    match &img.steps[0].kind {
        StepKind::ChefSolo(c) => {
            assert_eq!(c.flavor, ChefFlavor::Cinc, "Cinc is the default: no license to accept");
            assert_eq!(c.run_list[0].get_ref(), "recipe[base]");
        }
        other => panic!("{other:?}"),
    }
    let files = tree.local_files(img);
    let p = dir.path();
    for f in ["cookbooks", "roles", "site.pp", "modules", "hiera/hiera.yaml", "hiera/data"] {
        assert!(files.contains(&p.join(f)), "{f} is an input of the image's fingerprint: {files:?}");
    }

    let (dir, tree) = load(
        "os = \"windows\"",
        r#"
[[images.box.steps]]
powershell_dsc = { configuration = "dsc/Web.ps1", configuration_data = "dsc/data.psd1", module_paths = ["dsc/MyModule"], modules = { ComputerManagementDsc = "9.1.0" }, test = true }
"#,
    );
    let tree = tree.unwrap_or_else(|e| panic!("{e}"));
    let files = tree.local_files(tree.image("box").unwrap());
    for f in ["dsc/Web.ps1", "dsc/data.psd1", "dsc/MyModule"] {
        assert!(files.contains(&dir.path().join(f)), "{f}: {files:?}");
    }
}

#[test]
fn empty_run_lists_missing_paths_and_wrong_os_are_reported_with_their_lines() {
    let (_dir, tree) = load(
        "",
        r#"
[[images.box.steps]]
chef_solo = { run_list = [], cookbook_paths = ["no-such-cookbooks"], data_bags_path = "site.pp" }

[[images.box.steps]]
puppet_apply = { manifest = "missing.pp", module_paths = ["modules"], hiera_data = "hiera/data" }

[[images.box.steps]]
powershell_dsc = { configuration = "dsc/Web.ps1" }
"#,
    );
    let err = tree.unwrap_err();
    for (line, what) in [
        ("tree.toml:10:", "chef_solo needs a `run_list`"),
        ("tree.toml:11:", "cookbook path `no-such-cookbooks` does not exist"),
        ("tree.toml:11:", "data_bags_path `site.pp` is a file"),
        ("tree.toml:14:", "puppet manifest `missing.pp` does not exist"),
        ("tree.toml:14:", "`hiera_data` needs `hiera_config`"),
        ("tree.toml:16:", "powershell_dsc needs communicator.os = \"windows\""),
    ] {
        assert!(err.contains(what), "missing `{what}` in:\n{err}");
        let at = err.find(what).unwrap();
        let before = &err[..at];
        let last_loc = before.rfind("tree.toml:").map(|i| &before[i..]).unwrap_or("");
        assert!(last_loc.starts_with(line), "`{what}` is reported at {line}: {last_loc:.40}\n{err}");
    }
}

#[test]
fn puppet_on_windows_and_unknown_keys_are_errors() {
    let (_dir, tree) = load(
        "os = \"windows\"",
        r#"
[[images.box.steps]]
puppet_apply = { manifest = "site.pp" }
"#,
    );
    let err = tree.unwrap_err();
    assert!(err.contains("puppet_apply runs on Linux machines only"), "{err}");

    let (_dir, tree) = load(
        "",
        r#"
[[images.box.steps]]
chef_solo = { run_list = ["recipe[base]"], cookbook_path = ["cookbooks"] }
"#,
    );
    let err = tree.unwrap_err();
    assert!(err.contains("unknown key `cookbook_path`") && err.contains("did you mean `cookbook_paths`?"), "{err}");
    assert!(err.contains("tree.toml:11:"), "the key's line: {err}");

    let (_dir, tree) = load(
        "",
        r#"
[[images.box.steps]]
chef_solo = { run_list = ["recipe[base]"], flavor = "cinq" }
"#,
    );
    let err = tree.unwrap_err();
    assert!(err.contains("unknown value `cinq`") || err.contains("unknown variant"), "{err}");
}

#[test]
fn two_kinds_in_one_step_name_the_new_kinds_too() {
    let (_dir, tree) = load(
        "",
        r#"
[[images.box.steps]]
shell = { inline = ["true"] }
puppet_apply = { manifest = "site.pp" }
"#,
    );
    let err = tree.unwrap_err();
    assert!(err.contains("several kinds (shell, puppet_apply)"), "{err}");
    assert!(err.contains("chef_solo, puppet_apply, powershell_dsc"), "the list of kinds names them: {err}");
}
