//! Driving a real `imgbake build --json` process by its events.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Start `build` (an `imgbake build … --json` command) and read its events until `reached` holds
/// for one; returns the child and the build id. Stdout keeps being drained afterwards, so the
/// process never blocks on a full pipe. Fails when the build ends first (`what` names the awaited
/// event) or no such event comes within 2 minutes.
pub async fn spawn_until(
    build: &mut Command,
    what: &str,
    reached: impl Fn(&serde_json::Value) -> bool,
) -> (Child, String) {
    let mut child = build.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut build_id = String::new();
    let reading = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if e["event"] == "build_started" {
                build_id = e["build_id"].as_str().unwrap_or_default().to_string();
            }
            if reached(&e) {
                return true;
            }
        }
        false
    };
    let found =
        tokio::time::timeout(Duration::from_secs(120), reading).await.expect("the build reached no event in 2 min");
    assert!(found, "the build ended before {what}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, build_id)
}
