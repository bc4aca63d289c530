//! Release channels (issue 16) on moto, through the CLI (and the library where the clock must move):
//! builds that publish point `candidate`; `imgbake promote` is refused by soak and by
//! `require_tests` with one line and exit 1, goes through once the soak is over (an injected clock:
//! no sleeping), records who and when in the SSM parameter's history, rolls back, and `prune` keeps
//! what a channel points at.

#[path = "support/moto_env.rs"]
mod moto_env;
#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;
#[path = "support/watchdog.rs"]
mod watchdog;
use watchdog::Watched;

use std::process::{Command, Output};
use std::sync::Arc;

use imgbake_core::promote::{PromoteError, PromoteOptions, Refusal};
use imgbake_testbed::SshTarget;
use support::{Bed, REGION};

const TREE_ID: &str = "cli-channels-0001";

fn tree(bed: &Bed) -> String {
    format!(
        r#"[settings]
id = "{TREE_ID}"

[channels.stable]
description = "what production launches"
soak = "1h"
require_tests = true

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms", ami_name = "{{{{ image.name }}}}-{{{{ uuid }}}}" }}

[images.web]
source = {{ ami = "{source}" }}
steps = [{{ test = {{ command = "true" }} }}]

[images.plain]
source = {{ ami = "{source}" }}
steps = [{{ shell = {{ inline = ["echo plain"] }} }}]
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    )
}

fn imgbake(bed: &Bed, by: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    // RUST_LOG: the SDK warns that the test's AWS config files (/nonexistent) are missing.
    c.args(args).current_dir(bed.dir.path()).env("IMGBAKE_PROMOTER", by).env("RUST_LOG", "error");
    moto_env::on_moto(&mut c);
    c
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn parameter(bed: &Bed, name: &str) -> Option<String> {
    let ssm = aws_sdk_ssm::Client::new(&bed.moto.sdk_config(REGION).await);
    ssm.get_parameter().name(name).send().await.ok()?.parameter()?.value().map(str::to_string)
}

/// The complete AMIs of `image` in moto.
async fn amis_of(bed: &Bed, image: &str) -> Vec<String> {
    let ec2 = bed.ec2(REGION).await;
    let out = ec2.describe_images().owners("self").send().await.unwrap();
    out.images()
        .iter()
        .filter(|i| {
            let t = support::image_tags(i);
            t.get("imgbake:image").map(String::as_str) == Some(image)
                && t.get("imgbake:complete").map(String::as_str) == Some("true")
        })
        .filter_map(|i| i.image_id().map(str::to_string))
        .collect()
}

fn build(bed: &Bed, only: &str) {
    let o = imgbake(bed, "ci-build", &["build", "tree.toml", "--only", only, "--force"]).watched();
    assert!(o.status.success(), "{}", text(&o));
}

/// `promote` through the library with the clock at `now + ahead` (the soak passes without waiting).
async fn promote_later(bed: &Bed, image: &str, ahead: chrono::Duration) -> Result<String, PromoteError> {
    let tree = imgbake_config::Tree::load(&bed.dir.path().join("tree.toml"), &imgbake::load_options()).unwrap();
    let mut registry = imgbake_core::registry::Registry::new();
    registry.register(Arc::new(bed.builder()));
    let opts = PromoteOptions { to: "stable".into(), now: Some(chrono::Utc::now() + ahead), ..Default::default() };
    let events = imgbake_core::event::EventSink::discard();
    let done = imgbake_core::promote::promote(&tree, &registry, image, &opts, &events).await?;
    assert_eq!(done.len(), 1);
    Ok(done[0].artifact.id.clone())
}

fn one_line(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).trim().to_string();
    assert_eq!(s.lines().count(), 1, "a refusal is one line: {s}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_feed_candidate_and_promotions_obey_soak_and_tests_keep_history_roll_back_and_survive_prune() {
    let bed = Bed::start().await;
    std::fs::write(bed.dir.path().join("tree.toml"), tree(&bed)).unwrap();

    // A build that publishes points candidate at the new AMI, labelled with its tests' result.
    build(&bed, "web");
    build(&bed, "plain");
    let web1 = amis_of(&bed, "web").await.pop().unwrap();
    let plain1 = amis_of(&bed, "plain").await.pop().unwrap();
    assert_eq!(parameter(&bed, "/images/web/candidate").await.as_deref(), Some(web1.as_str()));
    assert_eq!(parameter(&bed, "/images/plain/candidate").await.as_deref(), Some(plain1.as_str()));
    assert_eq!(parameter(&bed, "/images/web/stable").await, None);

    // Too fresh for stable: refused in one line, exit 1, nothing written.
    let o = imgbake(&bed, "alice@laptop", &["promote", "tree.toml", "web", "--to", "stable"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = one_line(&o.stderr);
    assert!(line.starts_with(&format!("refused: web: {web1} has been in `candidate` for ")), "{line}");
    assert!(line.contains("`stable` needs 1h of soak (promotable at "), "{line}");
    assert_eq!(parameter(&bed, "/images/web/stable").await, None);

    // plain ran no test step: stable requires passing tests, soaked or not.
    let refused = promote_later(&bed, "plain", chrono::Duration::hours(2)).await.unwrap_err();
    assert!(matches!(&refused, PromoteError::Refused(Refusal::TestsNotPassed { tests: None, .. })), "{refused}");
    let o = imgbake(&bed, "alice@laptop", &["promote", "tree.toml", "plain", "--to", "stable"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(one_line(&o.stderr).contains("carries no test result"), "{}", text(&o));
    // Tests that failed are refused too (the label a build with failing tests would carry).
    let ec2 = bed.ec2(REGION).await;
    let failed = aws_sdk_ec2::types::Tag::builder().key("imgbake:tests").value("failed: 1 passed 1 failed 0 skipped");
    ec2.create_tags().resources(&plain1).tags(failed.build()).send().await.unwrap();
    let refused = promote_later(&bed, "plain", chrono::Duration::hours(2)).await.unwrap_err();
    assert!(refused.to_string().contains("has test result `failed: 1 passed 1 failed 0 skipped`"), "{refused}");

    // Once soaked (the clock two hours on), web goes to stable.
    let early = promote_later(&bed, "web", chrono::Duration::minutes(59)).await.unwrap_err().to_string();
    assert!(early.starts_with(&format!("refused: web: {web1} has been in `candidate` for 59m")), "{early}");
    assert_eq!(promote_later(&bed, "web", chrono::Duration::hours(2)).await.unwrap(), web1);
    assert_eq!(parameter(&bed, "/images/web/stable").await.as_deref(), Some(web1.as_str()));

    // A second build, soaked and promoted: stable's history has both promotions.
    build(&bed, "web");
    let web2 = amis_of(&bed, "web").await.into_iter().find(|a| *a != web1).unwrap();
    assert_eq!(parameter(&bed, "/images/web/candidate").await.as_deref(), Some(web2.as_str()));
    assert_eq!(promote_later(&bed, "web", chrono::Duration::hours(2)).await.unwrap(), web2);
    let o = imgbake(&bed, "x", &["channels", "tree.toml", "web", "--json"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stable = v["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "stable").unwrap().clone();
    let history = stable["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{stable}");
    assert_eq!(history[0]["artifact"], web2.as_str());
    assert_eq!(history[1]["artifact"], web1.as_str());
    for h in history {
        assert_eq!(h["record"]["action"], "promote", "{h}");
        assert_eq!(h["record"]["from"], "candidate", "{h}");
        assert!(h["record"]["by"].as_str().unwrap().contains('@'), "who: {h}");
        assert!(h["at"].as_str().unwrap().starts_with("20"), "when: {h}");
    }
    let candidate = v["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "candidate").unwrap().clone();
    assert_eq!(candidate["history"][0]["record"]["action"], "build", "{candidate}");
    let o = imgbake(&bed, "x", &["channels", "tree.toml"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("stable     {web2}")), "{}", text(&o));

    // `--from` must be the channel `stable` declares; a dry run writes nothing.
    let o = imgbake(&bed, "x", &["promote", "tree.toml", "web", "--to", "stable", "--from", "stable"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("`stable` is promoted from `candidate`, not `stable`: use --from candidate"),
        "{}",
        text(&o)
    );
    let o = imgbake(&bed, "x", &["promote", "tree.toml", "web", "--to", "stable", "--rollback", "--dry-run"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("would roll `stable` back to {web1}")),
        "{}",
        text(&o)
    );
    assert_eq!(parameter(&bed, "/images/web/stable").await.as_deref(), Some(web2.as_str()));
    println!("{}", String::from_utf8_lossy(&imgbake(&bed, "x", &["channels", "tree.toml"]).watched().stdout));

    // Rollback returns stable to web1, recorded with who did it.
    let o = imgbake(&bed, "bob@oncall", &["promote", "tree.toml", "web", "--to", "stable", "--rollback"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("roll `stable` back to {web1}")), "{}", text(&o));
    assert_eq!(parameter(&bed, "/images/web/stable").await.as_deref(), Some(web1.as_str()));
    let o = imgbake(&bed, "x", &["channels", "tree.toml", "web", "--json"]).watched();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stable = v["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "stable").unwrap().clone();
    assert_eq!(stable["history"][0]["record"]["action"], "rollback", "{stable}");
    assert_eq!(stable["history"][0]["record"]["by"], "bob@oncall", "{stable}");
    assert_eq!(stable["history"][0]["record"]["reverts"], web2.as_str(), "{stable}");
    // Nothing earlier is left to roll back to (web2 was rolled back from).
    let o = imgbake(&bed, "bob@oncall", &["promote", "tree.toml", "web", "--to", "stable", "--rollback"]).watched();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(one_line(&o.stderr).contains("no earlier artifact to roll back to"), "{}", text(&o));

    // Two more builds; prune keeping one per image deletes only web2: web4 is the newest (and
    // candidate), web3 is what candidate rolls back to, web1 is stable.
    build(&bed, "web");
    build(&bed, "web");
    let o = imgbake(&bed, "x", &["prune", "tree.toml", "--keep", "1"]).watched();
    assert!(o.status.success(), "{}", text(&o));
    let left = amis_of(&bed, "web").await;
    assert_eq!(left.len(), 3, "{left:?}\n{}", text(&o));
    assert!(left.contains(&web1), "stable's AMI was pruned: {}", text(&o));
    assert!(!left.contains(&web2), "web2 should be pruned: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{web1} (channel `stable` points at it)")),
        "{}",
        text(&o)
    );
}
