//! The null builder against the bed's sshd (a real OpenSSH server on loopback): the steps run on the
//! existing machine, nothing is created or journaled, and bad null trees fail with locations.

use std::sync::Arc;

use imgbake_config::{LoadOptions, Schemas, Tree};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::schedule::{RunOptions, run};
use imgbake_null::{NullBuilder, NullSchema};
use imgbake_testbed::{SshTarget, Sshd};

fn opts() -> LoadOptions {
    LoadOptions { schemas: Schemas::new().with(NullSchema::arc()), env: Default::default(), ..LoadOptions::default() }
}

fn load(dir: &std::path::Path, text: &str) -> Result<Tree, String> {
    std::fs::write(dir.join("tree.toml"), text).unwrap();
    Tree::load(&dir.join("tree.toml"), &opts()).map_err(|d| d.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_on_the_existing_machine_and_nothing_is_created() {
    let sshd = Sshd::start().await.expect("sshd (run tests/bed/install.sh)");
    let dir = tempfile::tempdir().unwrap();
    let marker = sshd.home_dir().join("null-was-here");
    let text = format!(
        r#"[settings]
name = "null-test"

[images.box]
builder = "null"
source = {{ host = "127.0.0.1", host_key = "{host_key}" }}
communicator = {{ username = "root", port = {port}, private_key_file = "{key}", timeout = "20s" }}
[[images.box.steps]]
shell = {{ inline = ["echo provisioned by $(id -un) > {marker}"] }}
"#,
        host_key = sshd.host_public_key(),
        port = sshd.port(),
        key = sshd.client_key_path().display(),
        marker = marker.display(),
    );
    let tree = load(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    let mut registry = Registry::new();
    registry.register(Arc::new(NullBuilder));

    for round in 1..=2 {
        let _ = std::fs::remove_file(&marker);
        let (events, log) = EventSink::memory();
        let p =
            plan(&tree, &registry, &PlanOptions::default(), &events).await.unwrap_or_else(|e| panic!("{}", e.chain()));
        // Nothing is captured, so nothing is found again: every run provisions anew.
        let d = p.get("box", "null").expect("a decision for box");
        assert_eq!(d.action, Action::Build, "round {round}: {:?}", d.reasons);
        let s = run(&tree, &p, &registry, RunOptions::default(), &events).await.unwrap();
        assert!(s.ok(), "round {round}: {s:#?}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "provisioned by root\n", "round {round}");
        let artifact = s.results[0].artifact.clone().unwrap();
        assert_eq!((artifact.builder.as_str(), artifact.locations["host"].as_str()), ("null", "127.0.0.1"));
        // Core drove the phases; the builder created nothing.
        let created = log.events().iter().filter(|e| matches!(e.kind, EventKind::ResourceCreated { .. })).count();
        assert_eq!(created, 0, "round {round}");
        let phases: Vec<String> = log
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Phase { phase } => Some(phase.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            phases,
            ["prepare", "launch", "connect", "provision", "sanitize", "shutdown", "capture", "distribute"],
            "round {round}"
        );
    }
    let journals = std::fs::read_dir(dir.path().join(".imgbake/journal")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(journals, 0);
}

#[test]
fn bad_null_trees_fail_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[images.a]\nbuilder = \"null\"\nsource = { hots = \"h\" }\ncommunicator = { username = \"u\" }\n",
            "tree.toml:3:12",
            "did you mean `host`",
        ),
        (
            "[images.a]\nbuilder = \"null\"\nsource = { host = \"192.0.2.1\" }\ncommunicator = { username = \"u\" }\n",
            "tree.toml:3:19",
            "nothing to pin the machine's host key to",
        ),
        (
            "[images.a]\nbuilder = \"null\"\nsource = { host = \"192.0.2.1\" }\ncommunicator = { username = \"u\", host_key = \"known_hosts\" }\n[images.b]\nparent = \"a\"\n",
            "tree.toml:6:10",
            "image `b` cannot start from `a`: the null builder makes no image",
        ),
        (
            "[images.a]\nbuilder = \"null\"\nsource = { host = \"192.0.2.1\" }\ncommunicator = { username = \"u\", host_key = \"known_hosts\" }\nnull = { region = \"x\" }\n",
            "tree.toml:5:10",
            "unknown key `region` in images.a.null",
        ),
        (
            "[images.a]\nbuilder = \"nul\"\nsource = { host = \"192.0.2.1\" }\ncommunicator = { username = \"u\" }\n",
            "tree.toml:2:11",
            "did you mean `null`",
        ),
    ];
    for (text, at, says) in cases {
        let e = load(dir.path(), text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(e.contains(at), "{text}\n{e}");
        assert!(e.contains(says), "{text}\n{e}");
    }
}
