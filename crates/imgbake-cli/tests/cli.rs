//! The `imgbake` command as users run it: exit codes, messages, output formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/watchdog.rs"]
mod watchdog;
use watchdog::Watched;

fn imgbake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.env("NO_COLOR", "1").env_remove("RUST_LOG");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn write_tree(content: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tree.toml"), content).unwrap();
    d
}

#[test]
fn validate_accepts_the_example_tree() {
    let o = imgbake().arg("validate").arg(repo().join("images/aws/tree.toml")).watched();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("valid — 6 images (aws: 6)"), "{out}");
}

#[test]
fn validate_rejects_with_locations_and_exit_code_1() {
    let d = write_tree(
        "[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\" }\naws = { region = \"eu-west-1\" }\n[images.base]\nsource = { ami = \"ami-0abc\" }\n[images.web]\nparent = \"bsae\"\n[[images.web.steps]]\nshell = { script = \"nope.sh\" }\n[settings]\nid = \"cli-test-0001\"\n",
    );
    let o = imgbake().arg("validate").arg(d.path().join("tree.toml")).watched();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("image `web` has unknown parent `bsae`"), "{err}");
    assert!(err.contains("tree.toml:8:10"), "the snippet header names file:line:col: {err}");
    assert!(err.contains("help: did you mean `base`?"), "{err}");
    assert!(err.contains("script `nope.sh` does not exist"), "{err}");
    assert!(err.contains("2 errors in"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let o = imgbake().arg("validate").watched();
    assert_eq!(o.status.code(), Some(2));
    let o = imgbake().args(["build", "x.toml", "--on-error", "explode"]).watched();
    assert_eq!(o.status.code(), Some(2));
    let o = imgbake().args(["valdate", "x.toml"]).watched();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("validate"), "clap suggests the right command");
}

#[test]
fn a_missing_tree_file_is_a_clear_error() {
    let o = imgbake().args(["validate", "/nonexistent/tree.toml"]).watched();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("cannot read tree file /nonexistent/tree.toml"), "{err}");
}

#[test]
fn vars_from_the_command_line_and_files() {
    let d = write_tree(
        "[variables]\nregion = {}\n[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\" }\naws = { region = \"{{ var.region }}\" }\n[images.base]\nsource = { ami = \"ami-0abc\" }\n[settings]\nid = \"cli-test-0002\"\n",
    );
    let tree = d.path().join("tree.toml");
    let o = imgbake().arg("validate").arg(&tree).watched();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("variable `region` has no value"));
    let o = imgbake().arg("validate").arg(&tree).args(["--var", "region=us-east-1"]).watched();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    std::fs::write(d.path().join("prod.toml"), "region = \"not a region\"\n").unwrap();
    let o = imgbake().arg("validate").arg(&tree).arg("--var-file").arg(d.path().join("prod.toml")).watched();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("`not a region` is not an AWS region name"), "{err}");
    let o = imgbake().arg("validate").arg(&tree).env("IMGBAKE_VAR_region", "ap-south-1").watched();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = imgbake().arg("validate").arg(&tree).args(["--var", "novalue"]).watched();
    assert_eq!(o.status.code(), Some(2), "NAME=VALUE is checked by the parser");
}

#[test]
fn graph_as_dot_and_mermaid() {
    let tree = repo().join("images/aws/tree.toml");
    let o = imgbake().arg("graph").arg(&tree).watched();
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.starts_with("digraph imgbake {"), "{out}");
    assert!(out.contains("\"java-runtime\" -> \"orders-api\";"), "{out}");
    assert!(out.contains("\"java-runtime\" -> \"billing-worker\";"), "{out}");
    assert!(out.contains("\"windows-base\" -> \"iis-web\";"), "{out}");
    let o = imgbake().arg("graph").arg(&tree).args(["--format", "mermaid"]).watched();
    let (out, _) = text(&o);
    assert!(out.starts_with("flowchart LR"), "{out}");
    assert!(out.contains("img_debian_base --> img_java_runtime"), "{out}");
}

/// `graph` draws the shape of a tree whose scripts and disks are not written yet; `validate` of the
/// same tree names each missing file.
#[test]
fn graph_of_a_tree_whose_files_do_not_exist_yet() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree.toml");
    std::fs::write(
        &tree,
        r#"[settings]
name = "draft"

[defaults]
communicator = { username = "root" }

[images.base]
builder = "qemu"
source = { disk = "base.qcow2" }
steps = [{ shell = { script = "scripts/not-written-yet.sh" } }]

[images.app]
parent = "base"
steps = [{ file = { source = "files/app.conf", destination = "/etc/app.conf" } }]
"#,
    )
    .unwrap();
    let o = imgbake().arg("graph").arg(&tree).watched();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("\"base\" -> \"app\";"), "{out}");
    let o = imgbake().arg("validate").arg(&tree).watched();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    for missing in ["base.qcow2", "scripts/not-written-yet.sh", "files/app.conf"] {
        assert!(err.contains(&format!("`{missing}` does not exist")), "{err}");
    }
}

/// `validate` must never touch the network: run it under strace and look for any IP connect().
#[test]
fn validate_makes_no_network_call() {
    let strace = Path::new("/usr/bin/strace");
    assert!(strace.exists(), "strace is missing: run tests/bed/install.sh");
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("trace");
    let o = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_imgbake"))
        .arg("validate")
        .arg(repo().join("images/aws/tree.toml"))
        // Make any AWS client that might be built try hard to reach somewhere.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .watched();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let trace = std::fs::read_to_string(&log).unwrap();
    let net: Vec<&str> = trace.lines().filter(|l| l.contains("AF_INET") || l.contains("AF_INET6")).collect();
    assert!(net.is_empty(), "validate made network calls:\n{}", net.join("\n"));
    // The check itself works: the same tracing sees a real connect.
    let probe = d.path().join("probe");
    Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=connect", "-o"])
        .arg(&probe)
        .args(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9 || true"])
        .watched();
    let p = std::fs::read_to_string(&probe).unwrap_or_default();
    assert!(p.contains("AF_INET"), "strace did not see a connect; the test would prove nothing: {p}");
}

#[test]
fn import_packer_writes_a_tree_that_validates_and_says_what_it_could_not_map() {
    let d = tempfile::tempdir().unwrap();
    let team = repo().join("crates/imgbake-import/tests/corpus/01-team-windows-json/win2012r2-template.json");
    let out = d.path().join("tree.toml");
    // Everything in the team's template carries over: written, exit 0.
    let o = imgbake().args(["import", "packer"]).arg(&team).arg("-o").arg(&out).watched();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0 unmapped"), "{err}");
    let o = imgbake().arg("validate").arg(&out).args(["--var", "vm_name=test-ami"]).watched();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // Run where the template is, with relative paths, as teams run Packer: the scripts are found.
    let rel = d.path().join("rel.toml");
    let o = imgbake()
        .current_dir(team.parent().unwrap())
        .args(["import", "packer", "win2012r2-template.json", "-o"])
        .arg(&rel)
        .watched();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = imgbake().arg("validate").arg(&rel).args(["--var", "vm_name=test-ami"]).watched();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // An existing file is not overwritten without --force.
    let o = imgbake().args(["import", "packer"]).arg(&team).arg("-o").arg(&out).watched();
    assert_eq!(o.status.code(), Some(2));

    // Spot instances have no equivalent: --check names them and exits 1; nothing is written.
    let spot = d.path().join("spot.json");
    std::fs::write(
        &spot,
        r#"{"builders": [{"type": "amazon-ebs", "region": "eu-west-1", "source_ami": "ami-0123456789abcdef0",
            "ssh_username": "admin", "ami_name": "spot-{{timestamp}}",
            "spot_price": "auto"}]}"#,
    )
    .unwrap();
    let o = imgbake().args(["import", "packer", "--check"]).arg(&spot).watched();
    assert_eq!(o.status.code(), Some(1));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("spot.json:3:27  UNMAPPED  amazon-ebs.spot_price"), "{report}");
    let other = d.path().join("other.toml");
    let o = imgbake().args(["import", "packer"]).arg(&spot).arg("-o").arg(&other).watched();
    assert_eq!(o.status.code(), Some(1));
    assert!(!other.exists());
    let o = imgbake().args(["import", "packer", "--allow-unmapped"]).arg(&spot).arg("-o").arg(&other).watched();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&other).unwrap().contains("[images.spot]"));
    // A template that is not JSON is a usage problem with its place.
    std::fs::write(d.path().join("bad.json"), "{\n  \"builders\": [\n").unwrap();
    let o = imgbake().args(["import", "packer", "--check"]).arg(d.path().join("bad.json")).watched();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.json:2:15: Unterminated array"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
