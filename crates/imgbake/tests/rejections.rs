//! Every kind of rejection `imgbake validate` promises, each with its exact location: the generic
//! parts of imgbake-config and the builders' own checks (aws, qemu), as the CLI loads trees.

use std::collections::BTreeMap;
use std::path::Path;

use imgbake::aws::settings::of as aws_of;
use imgbake::config::{LoadOptions, Tree};

/// A tree in a temp dir: `files` are (relative path, content).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    dir
}

fn opts() -> LoadOptions {
    LoadOptions { env: BTreeMap::new(), ..imgbake::load_options() }
}

/// Load and return the error text with the temp dir's path replaced by `T`.
fn errors_with(dir: &Path, o: &LoadOptions) -> String {
    let err = Tree::load(&dir.join("tree.toml"), o).expect_err("the tree should be rejected");
    err.to_string().replace(&dir.display().to_string(), "T")
}

fn errors(dir: &Path) -> String {
    errors_with(dir, &opts())
}

const OK_HEAD: &str = r#"[defaults]
builder = "aws"
communicator = { username = "admin" }
aws = { region = "eu-west-1" }
"#;

/// Trees with aws images need a `settings.id`: it goes last, so the lines tests point at stay put.
const ID_TAIL: &str = "\n[settings]\nid = \"config-test-0001\"\n";

fn with_head(rest: &str) -> String {
    format!("{OK_HEAD}{rest}{ID_TAIL}")
}

#[test]
fn a_good_tree_loads() {
    let d = tree(&[("tree.toml", &with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\n")), ("x.sh", "")]);
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap();
    assert_eq!(t.order(), vec!["base"]);
}

#[test]
fn toml_syntax_error() {
    let d = tree(&[("tree.toml", "[images.base]\nbuilder = \"aws\"\nsource = { ami = }\n")]);
    let e = errors(d.path());
    assert!(e.starts_with("T/tree.toml:3:"), "{e}");
    assert!(e.contains("TOML syntax error"), "{e}");
}

#[test]
fn unknown_key_with_suggestion_at_every_level() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            r#"[images.base]
source = { ami = "ami-0abc" }
desciption = "x"
[images.base.aws]
instnce_type = "t3.micro"
[[images.base.steps]]
shel = { inline = ["true"] }
"#,
        ),
    )]);
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:7:1: unknown key `desciption` in images.base (did you mean `description`?)"),
        "{e}"
    );
    assert!(
        e.contains("T/tree.toml:9:1: unknown key `instnce_type` in images.base.aws (did you mean `instance_type`?)"),
        "{e}"
    );
    assert!(e.contains("T/tree.toml:11:1: unknown key `shel` in images.base.steps[1] (did you mean `shell`?)"), "{e}");
    assert!(e.ends_with("3 errors"), "several errors at once: {e}");
}

#[test]
fn unknown_top_level_key() {
    let d = tree(&[("tree.toml", &with_head("[image.base]\nx = 1\n"))]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:5:2: unknown top-level key `image` (did you mean `images`?)"), "{e}");
}

#[test]
fn wrong_type() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\n[[images.base.steps]]\nretries = \"two\"\nshell = { inline = [\"true\"] }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:8:11: wrong type in images.base.steps[1]: found string \"two\", expected u32"),
        "{e}"
    );
}

#[test]
fn missing_required_key() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\n[[images.base.steps]]\nfile = { content = \"hi\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:8:8: missing required key `destination` in images.base.steps[1]"), "{e}");
}

#[test]
fn missing_script_file() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\n[[images.base.steps]]\nshell = { script = \"scripts/patch.sh\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:8:20: script `scripts/patch.sh` does not exist (looked for T/scripts/patch.sh"),
        "{e}"
    );
}

#[test]
fn unknown_parent() {
    let d = tree(&[(
        "tree.toml",
        &with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\n[images.web]\nparent = \"bsae\"\n"),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:8:10: image `web` has unknown parent `bsae` (did you mean `base`?)"), "{e}");
}

#[test]
fn cycle_is_printed() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.a]\nparent = \"c\"\n[images.b]\nparent = \"a\"\n[images.c]\nparent = \"b\"\n[images.ok]\nsource = { ami = \"ami-0abc\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:6:10: images form a cycle through their parents: a → c → b → a"), "{e}");
    assert!(e.ends_with("1 error"), "one cycle reported once: {e}");
}

#[test]
fn undefined_variable_points_into_the_string() {
    let d = tree(&[(
        "tree.toml",
        "[variables]\nregion = \"eu-west-1\"\n[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\" }\naws = { region = \"x-{{ var.regon }}\" }\n[images.base]\nsource = { ami = \"ami-0abc\" }\n",
    )]);
    let e = errors(d.path());
    // `{{` starts at column 21 of line 6: the error points at the expression, not the key.
    assert!(e.contains("T/tree.toml:6:21: undefined variable `var.regon` (did you mean `var.region`?)"), "{e}");
}

#[test]
fn undefined_helper_and_unset_env() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\ndescription = \"{{ shout 1 }}\"\ntags = { owner = \"{{ env \\\"TEAM_OWNER\\\" }}\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:7:16: unknown helper `shout`"), "{e}");
    assert!(e.contains("T/tree.toml:8:19: environment variable `TEAM_OWNER` is not set"), "{e}");
    let mut o = opts();
    o.env.insert("TEAM_OWNER".into(), "platform".into());
    let e = errors_with(d.path(), &o);
    assert!(!e.contains("TEAM_OWNER"), "{e}");
}

#[test]
fn unknown_builders() {
    let d = tree(&[(
        "tree.toml",
        "[defaults]\ncommunicator = { username = \"u\" }\n[images.a]\nbuilder = \"amazon\"\nsource = { ami = \"ami-0abc\" }\n",
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:4:11: image `a`: unknown builder `amazon`"), "{e}");
}

#[test]
fn virtualbox_sources_formats_drivers_and_publishing_are_checked_offline() {
    let head = "[settings]\nname = \"boxes\"\n[stores.boxes]\ntype = \"http\"\nurl = \"http://127.0.0.1:1/b\"\n[defaults]\nbuilder = \"virtualbox\"\ncommunicator = { username = \"u\" }\n";
    let cases = [
        (
            "[images.a]\nsource = { box = \"https://example.com/base.box\" }\n",
            "source.box is a URL: give its sha256 too",
        ),
        ("[images.a]\nsource = { box = \"missing.box\" }\n", "source.box `missing.box` does not exist"),
        (
            "[images.a]\nsource = { ovf = \"https://example.com/x.ovf\", sha256 = \"00\" }\n",
            "source.ovf must be a local path",
        ),
        ("[images.a]\nsource = { store = \"boxes\" }\n", "source.store needs `image`"),
        (
            "[images.a]\nsource = { store = \"boxs\", image = \"base\" }\n",
            "names unknown store `boxs` (did you mean `boxes`?)",
        ),
        (
            "[images.a]\nsource = { store = \"boxes\", image = \"b\" }\nvirtualbox = { formats = [\"ovaa\"] }\n",
            "unknown format `ovaa` in virtualbox.formats (did you mean `ova`?)",
        ),
        (
            "[images.a]\nsource = { store = \"boxes\", image = \"b\" }\nvirtualbox = { driver = \"vboxmanage\" }\n",
            "virtualbox.driver = \"vboxmanage\" is not available yet",
        ),
        (
            "[images.a]\nsource = { store = \"boxes\", image = \"b\" }\nvirtualbox = { formats = [\"ova\"] }\npublish = { vagrant = { catalog = \"c.json\", name = \"team/a\" } }\n",
            "publish.vagrant of image `a`: it writes no Vagrant box",
        ),
        (
            "[images.a]\nsource = { store = \"boxes\", image = \"b\" }\nvirtualbox = { formats = [\"libvirt\"] }\n[images.b]\nparent = \"a\"\n",
            "image `b` starts from `a`, which writes no OVA or VirtualBox box",
        ),
        (
            "[images.a]\nsource = { store = \"boxes\", image = \"b\" }\npublish = { ssm_parameter = \"/x\" }\n",
            "publish.ssm_parameter has no effect on image `a`: it builds with virtualbox",
        ),
        (
            "[images.a]\nbuilder = \"aws\"\nsource = { ami = \"ami-0abc\" }\naws = { region = \"eu-west-1\" }\npublish = { store = \"boxes\" }\n",
            "publish.store has no effect on image `a`: it builds with aws",
        ),
    ];
    for (body, want) in cases {
        let d = tree(&[("tree.toml", &format!("{head}{body}"))]);
        let e = errors(d.path());
        assert!(e.contains(want), "{body}\n{e}");
    }
}

#[test]
fn step_kinds_none_or_several() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\n[[images.base.steps]]\nname = \"nothing\"\n[[images.base.steps]]\nshell = { inline = [\"a\"] }\nreboot = {}\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:7:1: images.base.steps[1] has no step kind (use exactly one of: shell, file"),
        "{e}"
    );
    assert!(e.contains("T/tree.toml:9:1: images.base.steps[2] has several kinds (shell, reboot)"), "{e}");
}

#[test]
fn bad_durations_and_sizes() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\nmax_age = \"7 fortnights\"\n[[images.base.aws.block_devices]]\ndevice_name = \"/dev/xvda\"\nvolume_size = \"lots\"\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:7:11: invalid duration `7 fortnights`"), "{e}");
    assert!(e.contains("T/tree.toml:10:15: invalid size `lots`"), "{e}");
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\n[[images.base.aws.block_devices]]\ndevice_name = \"/dev/xvda\"\nvolume_size = \"1.5GiB\"\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:9:15: volume_size 1.5 GiB is not a whole number of GiB"), "{e}");
}

#[test]
fn variables_undeclared_missing_and_typed() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[variables]\nsecret = { sensitive = true }\nsize = 8\n[images.base]\nsource = { ami = \"ami-0abc\" }\n",
        ),
    )]);
    let mut o = opts();
    o.vars = vec![("sise".into(), "9".into())];
    let e = errors_with(d.path(), &o);
    assert!(e.contains("variable `sise` is not declared in [variables] (did you mean `size`?)"), "{e}");
    assert!(e.contains("T/tree.toml:6:1: variable `secret` has no value (pass --var secret=..."), "{e}");
    let mut o = opts();
    o.vars = vec![("size".into(), "nine".into()), ("secret".into(), "s".into())];
    let e = errors_with(d.path(), &o);
    assert!(e.contains("T/tree.toml:7:1: --var size: `nine` is not a valid integer"), "{e}");
}

#[test]
fn variable_precedence_and_whole_value_substitution() {
    let d = tree(&[
        (
            "tree.toml",
            "[variables]\nregion = \"eu-west-1\"\ncopies = [\"us-east-1\"]\ntoken = { sensitive = true, default = \"s3cr3t\" }\n[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\" }\naws = { region = \"{{ var.region }}\", copy_regions = \"{{ var.copies }}\" }\n[images.base]\nsource = { ami = \"ami-0abc\" }\n[settings]\nid = \"config-test-0001\"\n",
        ),
        ("prod.toml", "region = \"us-east-2\"\ncopies = [\"eu-central-1\", \"ap-south-1\"]\n"),
    ]);
    let mut o = opts();
    o.env.insert("IMGBAKE_VAR_region".into(), "eu-north-1".into());
    let t = Tree::load(&d.path().join("tree.toml"), &o).unwrap();
    let aws = aws_of(t.image("base").unwrap()).cloned().unwrap();
    assert_eq!(aws.region.unwrap().get_ref(), "eu-north-1", "env beats default");
    assert_eq!(aws.copy_regions.len(), 1);
    o.var_files = vec![d.path().join("prod.toml")];
    let t = Tree::load(&d.path().join("tree.toml"), &o).unwrap();
    let aws = aws_of(t.image("base").unwrap()).cloned().unwrap();
    assert_eq!(aws.region.unwrap().get_ref(), "us-east-2", "var file beats env");
    let copies: Vec<String> = aws.copy_regions.iter().map(|c| c.get_ref().clone()).collect();
    assert_eq!(copies, vec!["eu-central-1", "ap-south-1"], "a list variable stays a list");
    o.vars = vec![("region".into(), "sa-east-1".into())];
    let t = Tree::load(&d.path().join("tree.toml"), &o).unwrap();
    assert_eq!(
        aws_of(t.image("base").unwrap()).unwrap().region.as_ref().unwrap().get_ref(),
        "sa-east-1",
        "--var beats all"
    );
    assert_eq!(t.secrets(), vec!["s3cr3t"]);
}

#[test]
fn includes_keep_their_own_locations_and_paths() {
    let d = tree(&[
        (
            "tree.toml",
            &format!("include = [\"apps/*.toml\"]\n{}", with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\n")),
        ),
        ("apps/web.toml", "[images.web]\nparent = \"base\"\n[[images.web.steps]]\nshell = { script = \"web.sh\" }\n"),
        ("apps/web.sh", "echo web\n"),
        (
            "apps/api.toml",
            "[images.api]\nparent = \"base\"\n[[images.api.steps]]\nshell = { script = \"missing.sh\" }\n",
        ),
    ]);
    let e = errors(d.path());
    // web.sh resolves next to apps/web.toml; missing.sh is reported in apps/api.toml.
    assert!(
        e.contains("T/apps/api.toml:4:20: script `missing.sh` does not exist (looked for T/apps/missing.sh"),
        "{e}"
    );
    assert!(e.ends_with("1 error"), "{e}");
    std::fs::write(d.path().join("apps/missing.sh"), "").unwrap();
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap();
    assert_eq!(t.order(), vec!["base", "api", "web"]);
    let web = t.image("web").unwrap();
    assert_eq!(t.local_files(web), vec![d.path().join("apps/web.sh")]);
}

#[test]
fn include_matching_nothing_and_defaults_outside_root() {
    let d = tree(&[
        ("tree.toml", &format!("include = [\"aps/*.toml\", \"other.toml\"]\n{OK_HEAD}")),
        ("other.toml", "[defaults]\nbuilder = \"qemu\"\n"),
    ]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:1:12: include `aps/*.toml` matches no file"), "{e}");
    std::fs::create_dir(d.path().join("aps")).unwrap();
    std::fs::write(d.path().join("aps/x.toml"), "").unwrap();
    let e = errors(d.path());
    assert!(e.contains("T/other.toml:1:2: `defaults` is only allowed in the root tree file"), "{e}");
}

#[test]
fn errors_in_defaults_point_at_the_defaults() {
    let d = tree(&[(
        "tree.toml",
        "[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\", host_key = \"trust-me\" }\naws = { region = \"eu-west-1\" }\n[images.base]\nsource = { ami = \"ami-0abc\" }\n",
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:3:49: unknown host_key policy `trust-me`"), "{e}");
}

#[test]
fn source_rules() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.a]\n[images.b]\nsource = { ami = \"ami-0abc\", ami_filter = { name = \"x-*\" } }\n[images.c]\nparent = \"b\"\nsource = { ami = \"nope\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:5:9: image `a` has neither `parent` nor `source`"), "{e}");
    assert!(
        e.contains(
            "source of image `b` (aws) takes only one of ami, ami_filter, ssm_parameter, found ami and ami_filter"
        ),
        "{e}"
    );
    assert!(e.contains("ami_filter needs `owners`"), "{e}");
    assert!(e.contains("T/tree.toml:10:10: image `c` has both a `parent` and a `source`"), "{e}");
}

#[test]
fn rendered_values_are_checked() {
    let d = tree(&[(
        "tree.toml",
        &with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\naws = { ami_name = \"base:{{ timestamp }}\" }\n"),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:7:20: AMI name `base:"), "{e}");
}

#[test]
fn children_inherit_machine_settings_from_their_parent() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.win]\nsource = { ami = \"ami-0abc\" }\ncommunicator = { username = \"Administrator\", os = \"windows\" }\naws = { instance_type = \"t3.large\", region = \"us-east-2\" }\n[images.iis]\nparent = \"win\"\naws = { instance_type = \"t3.xlarge\" }\n[[images.iis.steps]]\npowershell = { inline = [\"Install-WindowsFeature Web-Server\"] }\n[images.linux]\nsource = { ami = \"ami-0abc\" }\n",
        ),
    )]);
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap();
    let iis = t.image("iis").unwrap();
    assert_eq!(iis.communicator.os, Some(imgbake::config::Os::Windows), "communicator comes from the parent");
    assert_eq!(iis.communicator.username.as_ref().unwrap().get_ref(), "Administrator");
    let aws = aws_of(iis).unwrap();
    assert_eq!(aws.region.as_ref().unwrap().get_ref(), "us-east-2", "region comes from the parent, not [defaults]");
    assert_eq!(aws.instance_type.as_ref().unwrap().get_ref(), "t3.xlarge", "its own value wins");
    let linux = t.image("linux").unwrap();
    assert_eq!(aws_of(linux).unwrap().region.as_ref().unwrap().get_ref(), "eu-west-1");
    assert!(linux.communicator.os.is_none());
}

// ── Every rejection has a location ─────────────────────────────────────────────────────────────────

/// Load a tree given as bytes (for files that are not UTF-8).
fn errors_of_bytes(bytes: &[u8]) -> String {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tree.toml"), bytes).unwrap();
    errors(d.path())
}

#[test]
fn invalid_utf8_is_reported_at_the_line_of_the_first_bad_byte() {
    let mut text = format!("{OK_HEAD}[images.base]\nsource = {{ ami = \"ami-0abc\" }}\n").into_bytes();
    text.extend_from_slice(b"description = \"caf\xe9\"\n");
    text.extend_from_slice(ID_TAIL.as_bytes());
    let e = errors_of_bytes(&text);
    assert!(e.contains("T/tree.toml:7:19: tree file is not valid UTF-8 (first bad byte here)"), "{e}");
    assert!(e.ends_with("1 error"), "{e}");
}

#[test]
fn nesting_past_the_limit_is_reported_where_it_goes_too_deep() {
    let text = format!("[images.base]\nsource = {{ ami = \"ami-0abc\" }}\nx = {}\n", "[".repeat(100));
    let e = errors_of_bytes(with_head(&text).as_bytes());
    assert!(e.contains("T/tree.toml:7:69: arrays and inline tables nest deeper than 64 levels"), "{e}");
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_million_nested_brackets_are_refused_fast_and_small() {
    let text = format!("x = {}", "[{".repeat(1_000_000));
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let e = errors_of_bytes(text.as_bytes());
    let took = started.elapsed();
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(e.contains("T/tree.toml:1:"), "{e}");
    assert!(e.contains("nest deeper than 64 levels"), "{e}");
    // Measured: a few ms and no visible growth beyond the 2 MB file itself (the parser used to recurse).
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    assert!(grew_mib < 100, "peak RSS grew by {grew_mib} MiB");
}

#[test]
fn settings_errors_point_at_the_setting() {
    let d = tree(&[(
        "tree.toml",
        &format!(
            "[settings]\nparallel = 0\nid = \"config-test-0001\"\n{OK_HEAD}[images.base]\nsource = {{ ami = \"ami-0abc\" }}\n"
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:2:12: settings.parallel must be at least 1"), "{e}");
    let d = tree(&[(
        "tree.toml",
        &format!(
            "[settings]\nparallel = \"four\"\nid = \"config-test-0001\"\n{OK_HEAD}[images.base]\nsource = {{ ami = \"ami-0abc\" }}\n"
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:2:12: wrong type in [settings]"), "{e}");
}

#[test]
fn errors_point_at_the_offending_key_not_its_table() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            r#"[images.base]
source = { ami = "ami-0abc" }
tags = { team = "x", "imgbake:tree" = "y" }
[images.base.steps]
shell = { inline = ["true"] }
[images.web]
parent = "base"
[[images.web.steps]]
shell = { inline = ["true"],
          script = "web.sh" }
"#,
        ),
    )]);
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:7:22: tag `imgbake:tree` on image `base`: the `imgbake:` prefix is reserved"),
        "{e}"
    );
    assert!(e.contains("T/tree.toml:8:14: `steps` of image `base` must be a list ([[images.base.steps]])"), "{e}");
    assert!(
        e.contains("T/tree.toml:14:20: images.web.steps[1] (shell) takes only one of inline, script, scripts"),
        "{e}"
    );
}

// ── Every bad tree is rejected ─────────────────────────────────────────────────────────────────────

#[test]
fn an_empty_file_or_a_tree_without_images_is_rejected() {
    let d = tree(&[("tree.toml", "")]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:1:1: the tree has no images"), "{e}");
    let d = tree(&[("tree.toml", OK_HEAD)]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:1:1: the tree has no images"), "{e}");
}

#[test]
fn an_include_of_itself_or_a_cycle_is_rejected() {
    let d = tree(&[(
        "tree.toml",
        &format!("include = [\"tree.toml\"]\n{}", with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\n")),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:1:12: include cycle: tree.toml → tree.toml"), "{e}");
    let d = tree(&[
        (
            "tree.toml",
            &format!("include = [\"a.toml\"]\n{}", with_head("[images.base]\nsource = { ami = \"ami-0abc\" }\n")),
        ),
        ("a.toml", "include = [\"b.toml\"]\n"),
        ("b.toml", "include = [\"a.toml\"]\n"),
    ]);
    let e = errors(d.path());
    assert!(e.contains("T/b.toml:1:12: include cycle: a.toml → b.toml → a.toml"), "{e}");
    assert!(e.ends_with("1 error"), "{e}");
}

#[test]
fn a_local_path_that_is_a_directory_a_device_or_empty_is_rejected() {
    let d = tree(&[
        (
            "tree.toml",
            &format!(
                "[variables]\nnothing = \"\"\n{}",
                with_head(
                    r#"[images.base]
source = { ami = "ami-0abc" }
[[images.base.steps]]
shell = { script = "scripts" }
[[images.base.steps]]
shell = { script = "/dev/null" }
[[images.base.steps]]
shell = { script = "{{ var.nothing }}" }
[[images.base.steps]]
file = { source = "scripts", destination = "/opt/scripts" }
"#
                )
            ),
        ),
        ("scripts/a.sh", "true\n"),
    ]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:10:20: script `scripts` is a directory"), "{e}");
    assert!(e.contains("T/tree.toml:12:20: script `/dev/null` is not a regular file"), "{e}");
    assert!(e.contains("T/tree.toml:14:20: script is empty"), "{e}");
    assert!(!e.contains("file source"), "a directory is a fine upload source: {e}");
    assert!(e.ends_with("3 errors"), "{e}");
}

#[test]
fn zero_max_age_bad_ssm_names_bad_owners_huge_sizes_and_bad_wrappers_are_rejected() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            r#"[images.base]
source = { ami_filter = { name = "debian-*", owners = ["13669307136"] } }
max_age = "0s"
publish = { ssm_parameter = "/images//base" }
communicator = { execute_command = "sudo {{ comand }}" }
[images.web]
source = { ssm_parameter = "/aws/service/debian latest" }
[images.big]
source = { ami = "ami-0abc" }
aws = { block_devices = [{ device_name = "/dev/xvda", volume_size = "99999999999999999999EiB" }] }
"#,
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:6:25: ami_filter owner `13669307136` is not an account id or alias"), "{e}");
    assert!(e.contains("T/tree.toml:7:11: max_age must be longer than 0s"), "{e}");
    assert!(e.contains("T/tree.toml:8:29: invalid SSM parameter name `/images//base`"), "{e}");
    assert!(e.contains("T/tree.toml:9:36: communicator.execute_command:"), "{e}");
    assert!(e.contains("T/tree.toml:11:28: invalid SSM parameter name `/aws/service/debian latest`"), "{e}");
    assert!(e.contains("T/tree.toml:14:69: size `99999999999999999999EiB` is too large"), "{e}");
}

// ── Reported once, briefly, and never a secret ─────────────────────────────────────────────────────

#[test]
fn a_mistake_in_defaults_is_reported_once_not_once_per_image() {
    let d = tree(&[(
        "tree.toml",
        &format!(
            "[defaults]\nbuilder = \"aws\"\ncommunicator = {{ username = \"admin\", host_key = \"trust-me\" }}\naws = {{ region = \"eu-west-1\", ssh_interface = \"carrier-pigeon\" }}\n[images.a]\nsource = {{ ami = \"ami-0abc\" }}\n[images.b]\nparent = \"a\"\n[images.c]\nparent = \"b\"\n{ID_TAIL}"
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:3:49: unknown host_key policy `trust-me`"), "{e}");
    assert!(e.contains("T/tree.toml:4:47: unknown ssh_interface `carrier-pigeon`"), "{e}");
    assert!(e.ends_with("2 errors"), "{e}");
}

#[test]
fn a_huge_bad_value_is_not_echoed_back_whole() {
    let huge = "x".repeat(2 << 20);
    let d = tree(&[(
        "tree.toml",
        &format!(
            "[defaults]\nbuilder = \"aws\"\ncommunicator = {{ username = \"admin\" }}\naws = {{ region = \"{huge}\" }}\n[images.a]\nsource = {{ ami = \"ami-0abc\" }}\n"
        ),
    )]);
    let err = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap_err();
    let plain = err.to_string();
    assert!(plain.contains("tree.toml:4:18: `xxxxxxxx"), "{plain}");
    assert!(plain.contains("…` is not an AWS region name"), "{plain}");
    assert!(plain.len() < 1000, "{} bytes", plain.len());
    let rendered = err.render(false);
    assert!(rendered.len() < 1000, "the snippet of a 2 MB line is left out: {} bytes", rendered.len());
}

#[test]
fn sensitive_values_never_appear_in_errors() {
    let text = r#"[variables]
token = { sensitive = true }
count = { sensitive = true, default = 3 }
pin = { sensitive = true, default = "pin-in-the-file-4242" }
[defaults]
builder = "aws"
communicator = { username = "admin" }
aws = { region = "{{ var.token }}" }
[images.base]
source = { ami = "{{ var.pin }}" }
tags = { "imgbake:{{ var.token }}" = "x" }
"#;
    let d = tree(&[("tree.toml", text)]);
    let o = LoadOptions { vars: vec![("token".into(), "hunter2-token-value".into())], ..opts() };
    let err = Tree::load(&d.path().join("tree.toml"), &o).unwrap_err();
    for out in [err.to_string(), err.render(false)] {
        assert!(!out.contains("hunter2-token-value"), "{out}");
        assert!(!out.contains("pin-in-the-file-4242"), "{out}");
        assert!(out.contains("T/tree.toml:8:".replace('T', &d.path().display().to_string()).as_str()), "{out}");
        assert!(out.contains("`<sensitive>` is not an AWS region name"), "{out}");
    }
    // A refused value of a sensitive variable is not echoed either.
    let o = LoadOptions { vars: vec![("count".into(), "hunter2-not-a-number".into())], ..opts() };
    let err = Tree::load(&d.path().join("tree.toml"), &o).unwrap_err();
    for out in [err.to_string(), err.render(false)] {
        assert!(!out.contains("hunter2-not-a-number"), "{out}");
        assert!(out.contains("--var count:"), "{out}");
    }
}

#[test]
fn ami_names_with_build_values_pass_both_validate_and_the_plan_render() {
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\naws = { ami_name = \"{{ image.name }}-{{ isotime \\\"%Y%m%d-%H%M%S\\\" }}-{{ timestamp }}-{{ uuid }}\" }\n",
        ),
    )]);
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap_or_else(|e| panic!("{e}"));
    // `plan` renders with markers (`{isotime}`) for fingerprints: that render must not refuse the name.
    t.rerender(&imgbake::config::Stamp::masked()).unwrap_or_else(|e| panic!("{e}"));
    // A name the build would really produce wrong is still refused, by validate.
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.base]\nsource = { ami = \"ami-0abc\" }\naws = { ami_name = \"base-{{ isotime \\\"%H:%M\\\" }}\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:7:20: AMI name `base-"), "{e}");
}

#[test]
fn every_shipped_example_tree_validates_and_renders_for_plan() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
    let disk = tempfile::NamedTempFile::new().unwrap();
    let mut checked = 0;
    for e in std::fs::read_dir(&images).unwrap().flatten() {
        let path = e.path().join("tree.toml");
        if !path.is_file() {
            continue;
        }
        // The local example starts from a disk made by scripts/make-base-image.sh: any file stands in.
        let o = LoadOptions { vars: vec![("base_disk".into(), disk.path().display().to_string())], ..opts() };
        let o = if std::fs::read_to_string(&path).unwrap().contains("var.base_disk") { o } else { opts() };
        let t = Tree::load(&path, &o).unwrap_or_else(|d| panic!("{} does not validate:\n{d}", path.display()));
        t.rerender(&imgbake::config::Stamp::masked())
            .unwrap_or_else(|d| panic!("{} validates but plan's render refuses it:\n{d}", path.display()));
        checked += 1;
    }
    assert!(checked >= 2, "the aws and local examples: {checked}");
}

/// A qemu image and an AMI made from its disk (`aws.import`), for the import checks.
fn import_tree(extra: &str) -> String {
    format!(
        r#"[settings]
id = "config-test-0001"

[images.base]
builder = "qemu"
communicator = {{ username = "root" }}
source = {{ disk = "base.qcow2" }}

[images.base-ami]
parent = "base"
builder = "aws"
aws = {{ region = "eu-west-1", import = "ebs-direct" }}
{extra}"#
    )
}

#[test]
fn an_ami_imported_from_a_qemu_disk_loads_and_its_children_build_on_machines() {
    let text = import_tree(
        r#"
[images.app]
parent = "base-ami"
[[images.app.steps]]
shell = { inline = ["true"] }
"#,
    );
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap();
    let ami = t.image("base-ami").unwrap();
    assert!(ami.imports_disk("aws"));
    assert_eq!(ami.parent_builder("aws"), "qemu");
    let app = t.image("app").unwrap();
    assert_eq!(app.builders.iter().map(|b| b.get_ref().as_str()).collect::<Vec<_>>(), ["aws"]);
    assert!(!app.imports_disk("aws"), "import stays with the image that sets it");
    assert_eq!(aws_of(app).unwrap().import, None);
    assert_eq!(app.parent_builder("aws"), "aws");
}

#[test]
fn import_rejections() {
    // Steps on an image that has no machine.
    let d = tree(&[
        ("tree.toml", &import_tree("[[images.base-ami.steps]]\nshell = { inline = [\"true\"] }\n")),
        ("base.qcow2", ""),
    ]);
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:13:1: image `base-ami` is made with `aws` from its parent's `qemu` disk, without a machine, so it cannot run steps"), "{e}");

    // An unknown method, boot mode and architecture.
    let text = import_tree("")
        .replace("import = \"ebs-direct\" }", "import = \"vmie\", boot_mode = \"bios\", architecture = \"i386\" }");
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let e = errors(d.path());
    assert!(e.contains("unknown aws.import `vmie`"), "{e}");
    assert!(e.contains("unknown aws.boot_mode `bios`"), "{e}");
    assert!(e.contains("unknown aws.architecture `i386`"), "{e}");

    // Import without a parent; boot_mode without import.
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.a]\nsource = { ami = \"ami-0abc\" }\naws = { import = \"ebs-direct\" }\n[images.b]\nsource = { ami = \"ami-0abc\" }\naws = { boot_mode = \"uefi\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("image `a` imports a disk with aws.import, but has no `parent`"), "{e}");
    assert!(e.contains("aws.boot_mode of image `b` only applies to an AMI made with `import`"), "{e}");

    // A parent that makes no disk file; and a plain aws child of a qemu image is told about import.
    let d = tree(&[(
        "tree.toml",
        &with_head(
            "[images.a]\nsource = { ami = \"ami-0abc\" }\n[images.b]\nparent = \"a\"\naws = { import = \"ebs-direct\" }\n",
        ),
    )]);
    let e = errors(d.path());
    assert!(e.contains("image `b` imports its parent's disk with `aws`, but its parent `a` builds with `aws` and none of them makes disk files"), "{e}");
    assert!(e.contains("builders that make disk files: `qemu`"), "{e}");
    let text = import_tree("").replace(", import = \"ebs-direct\"", "");
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let e = errors(d.path());
    assert!(e.contains("image `base-ami` builds with `aws` but its parent `base` does not"), "{e}");
    assert!(e.contains("`base` builds a disk with `qemu`: set `aws = { import = \"ebs-direct\" }`"), "{e}");
}

#[test]
fn import_review_rejections() {
    // arm64 boots with UEFI only.
    let text = import_tree("").replace(
        "import = \"ebs-direct\" }",
        "import = \"ebs-direct\", architecture = \"arm64\", boot_mode = \"legacy-bios\" }",
    );
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let e = errors(d.path());
    assert!(e.contains("aws.boot_mode `legacy-bios` cannot boot an arm64 AMI"), "{e}");

    // imgbake's own tag namespace is not the user's, in aws tag tables either.
    let text = import_tree("").replace(
        "import = \"ebs-direct\" }",
        "import = \"ebs-direct\", ami_tags = { \"imgbake:tests\" = \"passed: 9 passed 0 failed 0 skipped\" } }",
    );
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let e = errors(d.path());
    assert!(
        e.contains("aws.ami_tags of image `base-ami` sets `imgbake:tests`: the `imgbake:` prefix is reserved"),
        "{e}"
    );

    // An import on an image that inherits its parent's builders (qemu) would be ignored.
    let text = import_tree("").replace("builder = \"aws\"\naws =", "aws =");
    let d = tree(&[("tree.toml", &text), ("base.qcow2", "")]);
    let e = errors(d.path());
    assert!(e.contains("image `base-ami` sets `aws.import` but builds with `qemu`, not `aws`"), "{e}");
}
