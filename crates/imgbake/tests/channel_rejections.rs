//! Every rejection of release channels (`[channels.NAME]`, `aws.channel_parameter`) that `imgbake
//! validate` promises, each with its exact location, as the CLI loads trees (docs/channels.md).

use std::collections::BTreeMap;
use std::path::Path;

use imgbake::config::{LoadOptions, Tree};

fn tree(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tree.toml"), text).unwrap();
    dir
}

fn opts() -> LoadOptions {
    LoadOptions { env: BTreeMap::new(), ..imgbake::load_options() }
}

fn errors(dir: &Path) -> String {
    let err = Tree::load(&dir.join("tree.toml"), &opts()).expect_err("the tree should be rejected");
    err.to_string().replace(&dir.display().to_string(), "T")
}

/// Lines 1–5; the aws settings follow on 6–7, channels from line 8.
const HEAD: &str = r#"[settings]
id = "channels-test-0001"
[images.web]
builder = "aws"
source = { ami = "ami-0abc" }
"#;

const AWS: &str = "aws = { region = \"eu-west-1\" }\ncommunicator = { username = \"admin\" }\n";

#[test]
fn channels_load_with_an_implicit_candidate_and_their_policies() {
    let d = tree(&format!(
        "{HEAD}{AWS}[channels.stable]\nsoak = \"24h\"\nrequire_tests = true\ndescription = \"what customers run\"\n"
    ));
    let t = Tree::load(&d.path().join("tree.toml"), &opts()).unwrap();
    let names: Vec<&str> = t.channels().keys().map(String::as_str).collect();
    assert_eq!(names, ["stable", "candidate"]);
    let stable = t.channel("stable").unwrap();
    assert_eq!(stable.source(), Some("candidate"));
    assert_eq!(stable.soak.as_ref().unwrap().get_ref().get(), std::time::Duration::from_secs(24 * 3600));
    assert!(stable.require_tests);
    assert!(
        Tree::load(&tree(&format!("{HEAD}{AWS}")).path().join("tree.toml"), &opts()).unwrap().channels().is_empty()
    );
}

#[test]
fn an_unknown_key_in_a_channel_is_refused_with_a_suggestion() {
    let d = tree(&format!("{HEAD}{AWS}[channels.stable]\nsoak_time = \"24h\"\n"));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:9:1: unknown key `soak_time` in channels.stable"), "{e}");
    assert!(e.contains("did you mean `soak`?"), "{e}");
}

#[test]
fn a_bad_soak_duration_is_refused_at_its_value() {
    let d = tree(&format!("{HEAD}{AWS}[channels.stable]\nsoak = \"a day\"\n"));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:9:8:"), "{e}");
    assert!(e.contains("channels.stable"), "{e}");
}

#[test]
fn a_from_naming_an_unknown_channel_is_refused() {
    let d = tree(&format!("{HEAD}{AWS}[channels.stable]\nfrom = \"beta\"\n"));
    let e = errors(d.path());
    assert!(
        e.contains("T/tree.toml:9:8: channels.stable.from names `beta`, which is not a channel of the tree"),
        "{e}"
    );
}

#[test]
fn a_channel_promoted_from_itself_is_refused() {
    let d = tree(&format!("{HEAD}{AWS}[channels.beta]\nfrom = \"beta\"\n"));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:9:8: channel `beta` cannot be promoted from itself"), "{e}");
}

#[test]
fn candidate_takes_no_promotion_rules() {
    let d = tree(&format!("{HEAD}{AWS}[channels.candidate]\nsoak = \"1h\"\n"));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:9:8: channels.candidate cannot have `soak`"), "{e}");
}

#[test]
fn a_bad_channel_name_is_refused() {
    let d = tree(&format!("{HEAD}{AWS}[channels.Stable]\n"));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:8:11: channel name `Stable` must be lowercase"), "{e}");
}

#[test]
fn a_channel_parameter_without_the_channel_is_refused() {
    let d = tree(&format!(
        "{HEAD}aws = {{ region = \"eu-west-1\", channel_parameter = \"/images/{{image}}/current\" }}\ncommunicator = {{ username = \"admin\" }}\n[channels.stable]\n"
    ));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:6:"), "{e}");
    assert!(e.contains("does not contain `{channel}`"), "{e}");
}

#[test]
fn a_channel_parameter_making_an_invalid_ssm_name_is_refused() {
    let d = tree(&format!(
        "{HEAD}aws = {{ region = \"eu-west-1\", channel_parameter = \"images {{image}}/{{channel}}\" }}\ncommunicator = {{ username = \"admin\" }}\n[channels.stable]\n"
    ));
    let e = errors(d.path());
    assert!(e.contains("T/tree.toml:6:"), "{e}");
    assert!(e.contains("makes the invalid SSM parameter name `images web/candidate`"), "{e}");
}

#[test]
fn a_published_parameter_that_is_also_a_channel_is_refused() {
    let d = tree(&format!("{HEAD}{AWS}publish = {{ ssm_parameter = \"/images/web/stable\" }}\n[channels.stable]\n"));
    let e = errors(d.path());
    assert!(
        e.contains(
            "T/tree.toml:8:29: publish.ssm_parameter `/images/web/stable` is also the parameter of a release channel"
        ),
        "{e}"
    );
}
