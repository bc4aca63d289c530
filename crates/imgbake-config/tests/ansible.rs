//! The `ansible` and `ansible_local` step kinds: what loads, and every offline rejection with its
//! file:line:col.

use imgbake_config::{LoadOptions, StepKind, Tree};

/// A tree in a temp dir with one image `box` whose communicator has `communicator` and whose steps
/// are `steps`; plus `files`. Returns the loaded tree or the error text with the dir as `T`.
fn load(communicator: &str, steps: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Tree, String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), b"").unwrap();
    for (p, c) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    // Line 1 is empty; the steps start on line 9.
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
    std::fs::write(dir.path().join("tree.toml"), toml).unwrap();
    let schemas = imgbake_config::Schemas::new().with(imgbake_config::schema::Open::new("box", &["disk"]).arc());
    let opts = LoadOptions { env: Default::default(), schemas, ..LoadOptions::default() };
    let r = Tree::load(&dir.path().join("tree.toml"), &opts)
        .map_err(|e| e.to_string().replace(&dir.path().display().to_string(), "T"));
    (dir, r)
}

fn err(communicator: &str, steps: &str, files: &[(&str, &str)]) -> String {
    load(communicator, steps, files).1.expect_err("the tree should be rejected")
}

#[test]
fn both_kinds_load_with_every_key() {
    let (_d, t) = load(
        "",
        r#"[[images.box.steps]]
ansible = { playbook = "pb/site.yml", playbook_dir = "pb", command = "/opt/ansible/bin/ansible-playbook", galaxy_command = "ansible-galaxy", galaxy_file = "pb/requirements.yml", extra_vars = { a = "x", n = 2, list = [1, 2], t = { k = true } }, tags = ["a", "b"], skip_tags = ["c"], become = true, become_user = "app", extra_arguments = ["-v", "--diff"], env = { ANSIBLE_STDOUT_CALLBACK = "yaml" }, python_interpreter = "/usr/bin/python3", host_alias = "web-1", groups = ["web", "debian"] }

[[images.box.steps]]
ansible_local = { playbooks = ["pb/site.yml", "pb/more.yml"], playbook_dir = "pb", command = "ansible-playbook", galaxy_command = "ansible-galaxy", install = "pip install ansible-core", galaxy_file = "pb/requirements.yml", extra_vars = { a = "x" }, tags = ["a"], skip_tags = ["b"], become = true, become_user = "root", extra_arguments = ["-v"], env = { X = "1" }, python_interpreter = "auto", staging_dir = "/tmp/stage", execute_command = "sudo -n sh -c {{quote command}}" }
"#,
        &[("pb/site.yml", "- hosts: all\n"), ("pb/more.yml", "- hosts: all\n"), ("pb/requirements.yml", "[]\n")],
    );
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    let img = t.image("box").unwrap();
    assert_eq!(img.steps.len(), 2);
    match &img.steps[0].kind {
        StepKind::Ansible(a) => {
            assert!(a.become_);
            assert_eq!(a.extra_vars["n"].as_integer(), Some(2));
            assert_eq!(a.all_playbooks().len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(img.steps[0].kind.kind(), "ansible");
    assert_eq!(img.steps[1].kind.kind(), "ansible_local");
    assert_eq!(img.steps[1].label(2), "ansible_local #2");
    // Playbooks, the galaxy file and the playbook directory are local files of the image.
    let files = t.local_files(img);
    for f in ["pb/site.yml", "pb/more.yml", "pb/requirements.yml", "pb"] {
        assert!(files.iter().any(|p| p.ends_with(f)), "{f} not in {files:?}");
    }
}

#[test]
fn a_playbook_beside_the_tree_file_fingerprints_only_ansible_dirs() {
    let (_d, t) = load(
        "",
        "[[images.box.steps]]\nansible = { playbook = \"site.yml\" }\n",
        &[("site.yml", "- hosts: all\n"), ("roles/r/tasks/main.yml", "[]\n"), ("notes.txt", "")],
    );
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    let files = t.local_files(t.image("box").unwrap());
    assert!(files.iter().any(|p| p.ends_with("site.yml")), "{files:?}");
    assert!(files.iter().any(|p| p.ends_with("roles")), "{files:?}");
    // The tree's own directory (its state, its manifest) is not hashed whole.
    assert!(!files.iter().any(|p| p.ends_with("notes.txt") || p == &t.root_dir()), "{files:?}");
}

#[test]
fn a_missing_playbook_is_reported_where_it_is_named() {
    let e = err("", "[[images.box.steps]]\nansible = { playbook = \"gone.yml\" }\n", &[]);
    assert!(e.contains("T/tree.toml:10:24"), "{e}");
    assert!(e.contains("playbook `gone.yml` does not exist"), "{e}");
    let e =
        err("", "[[images.box.steps]]\nansible_local = { playbooks = [\"a.yml\", \"gone.yml\"] }\n", &[("a.yml", "")]);
    assert!(e.contains("playbook `gone.yml` does not exist"), "{e}");
}

#[test]
fn a_playbook_is_required_once() {
    let e = err("", "[[images.box.steps]]\nansible = { tags = [\"a\"] }\n", &[]);
    assert!(e.contains("T/tree.toml:9:") && e.contains("needs one of playbook, playbooks"), "{e}");
    let e = err(
        "",
        "[[images.box.steps]]\nansible = { playbook = \"a.yml\", playbooks = [\"a.yml\"] }\n",
        &[("a.yml", "")],
    );
    assert!(e.contains("takes only one of playbook, playbooks"), "{e}");
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let e = err("", "[[images.box.steps]]\nansible = { playbook = \"a.yml\", extra_var = {} }\n", &[("a.yml", "")]);
    assert!(e.contains("T/tree.toml:10:") && e.contains("unknown key `extra_var`"), "{e}");
    assert!(e.contains("did you mean `extra_vars`?"), "{e}");
    let e =
        err("", "[[images.box.steps]]\nansible_local = { playbook = \"a.yml\", stage = \"/x\" }\n", &[("a.yml", "")]);
    assert!(e.contains("unknown key `stage`"), "{e}");
}

#[test]
fn bad_tags_are_rejected_at_the_tag() {
    let e = err(
        "",
        "[[images.box.steps]]\nansible = { playbook = \"a.yml\", tags = [\"ok\", \"a,b\"], skip_tags = [\"\"] }\n",
        &[("a.yml", "")],
    );
    assert!(e.contains("T/tree.toml:10:47") && e.contains("`a,b` in tags is not a tag"), "{e}");
    assert!(e.contains("`` in skip_tags is not a tag"), "{e}");
}

#[test]
fn arguments_that_replace_the_connection_are_refused() {
    for arg in ["-i", "--inventory=x", "--private-key", "-uadmin", "--ssh-common-args", "-c"] {
        let e = err(
            "",
            &format!("[[images.box.steps]]\nansible = {{ playbook = \"a.yml\", extra_arguments = [\"{arg}\"] }}\n"),
            &[("a.yml", "")],
        );
        assert!(e.contains("would replace the connection imgbake sets up"), "{arg}: {e}");
    }
    let e = err(
        "",
        "[[images.box.steps]]\nansible = { playbook = \"a.yml\", extra_arguments = [\"-e\", \"pw=x\"] }\n",
        &[("a.yml", "")],
    );
    assert!(e.contains("pass variables with `extra_vars`"), "{e}");
}

#[test]
fn become_user_needs_become() {
    let e =
        err("", "[[images.box.steps]]\nansible = { playbook = \"a.yml\", become_user = \"app\" }\n", &[("a.yml", "")]);
    assert!(e.contains("become_user has no effect without become = true"), "{e}");
}

#[test]
fn windows_machines_are_refused() {
    let e =
        err("os = \"windows\"", "[[images.box.steps]]\nansible_local = { playbook = \"a.yml\" }\n", &[("a.yml", "")]);
    assert!(e.contains("ansible_local cannot run on Windows machines"), "{e}");
    let e = err("os = \"windows\"", "[[images.box.steps]]\nansible = { playbook = \"a.yml\" }\n", &[("a.yml", "")]);
    assert!(e.contains("ansible steps do not support Windows machines yet"), "{e}");
}

#[test]
fn ansible_local_playbooks_must_be_inside_playbook_dir() {
    let e = err(
        "",
        "[[images.box.steps]]\nansible_local = { playbook = \"a.yml\", playbook_dir = \"pb\" }\n",
        &[("a.yml", ""), ("pb/b.yml", "")],
    );
    assert!(e.contains("playbook `a.yml` is not inside playbook_dir `pb`"), "{e}");
    let e = err(
        "",
        "[[images.box.steps]]\nansible_local = { playbook = \"a.yml\", execute_command = \"sudo {{nope}}\" }\n",
        &[("a.yml", "")],
    );
    assert!(e.contains("execute_command"), "{e}");
}

#[test]
fn a_step_has_one_kind() {
    let e = err(
        "",
        "[[images.box.steps]]\nansible = { playbook = \"a.yml\" }\nshell = { inline = [\"true\"] }\n",
        &[("a.yml", "")],
    );
    assert!(e.contains("several kinds") && e.contains("ansible"), "{e}");
    assert!(e.contains("ansible_local"), "the list of kinds names the new ones: {e}");
}
