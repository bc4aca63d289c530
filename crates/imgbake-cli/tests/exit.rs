//! `imgbake build` ends when its work does: after a real reboot chain on the QEMU guest (the local
//! base image), the process prints its summary and exits promptly after its last event, with no TCP
//! connection to the machine left open. (A leftover SSH session used to keep it running after
//! "built", holding a connection to the guest.) The base image runs systemd: the step after the
//! reboot must wait for systemd to call the boot finished, here 20 s after sshd is up.

#[path = "support/watchdog.rs"]
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn base_image() -> PathBuf {
    let out = Command::new(repo().join("scripts/make-base-image.sh")).arg("--check").output().unwrap();
    assert!(out.status.success(), "the QEMU base image is not built: run tests/bed/install.sh first");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Established TCP connections held by process `pid` (from its /proc view).
fn tcp_connections_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    l.to_str().and_then(|s| s.strip_prefix("socket:[")).map(|s| s.trim_end_matches(']').to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 && f[3] == "01" && inodes.iter().any(|i| i == f[9]) {
                out.push(format!("{} -> {}", f[1], f[2]));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_with_a_reboot_chain_exits_promptly_after_its_last_event_with_no_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let tree = format!(
        r#"[settings]
name = "exit"

[images.base]
builder = "qemu"
source = {{ disk = "{base}" }}
communicator = {{ username = "root" }}
qemu = {{ output_dir = "output", memory = "512MiB", boot_timeout = "5m", shutdown_timeout = "1m" }}

# A boot that is still finishing for 20 s after sshd is up: only systemd's own word
# (`is-system-running --wait`) says when it is done; the 10 s settle window alone would not.
[[images.base.steps]]
[images.base.steps.shell]
inline = ["""
cat >/etc/systemd/system/imgbake-slow-boot.service <<'UNIT'
[Unit]
Description=A boot that takes 20 s to finish
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sleep 20; touch /run/imgbake-slow-boot-done'
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable imgbake-slow-boot.service
echo before"""]

[[images.base.steps]]
reboot = {{ settle = "10s" }}

[[images.base.steps]]
shell = {{ inline = ["test -e /run/imgbake-slow-boot-done", "echo \"after: $(systemctl is-system-running)\""] }}
"#,
        base = base_image().display()
    );
    std::fs::write(dir.path().join("tree.toml"), tree).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_imgbake"))
        .args(["build", "tree.toml", "--json"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let err_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });

    let mut printed = Vec::new();
    let mut finished_at = None;
    let mut open_after_finish = Vec::new();
    let reading = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if e["event"] == "build_finished" {
                finished_at = Some(Instant::now());
                // The machine is gone by now (captured and shut down): nothing may still talk to it.
                open_after_finish = tcp_connections_of(pid);
            }
            printed.push(line);
        }
    };
    // A whole QEMU build with a reboot and a 10 s settle window under TCG: minutes on a busy
    // 2-core machine, so a longer watchdog than the CLI tests' default.
    let build_limit = Duration::from_secs(720);
    if tokio::time::timeout(build_limit, reading).await.is_err() {
        let _ = child.kill().await;
        panic!("the build did not finish within {build_limit:?}:\n{}", printed.join("\n"));
    }
    let finished_at = finished_at.unwrap_or_else(|| panic!("no build_finished event:\n{}", printed.join("\n")));
    let status = match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let open = tcp_connections_of(pid);
            let _ = child.kill().await;
            panic!(
                "imgbake did not exit within 15 s of its last event (TCP connections open: {open:?}):\n{}\n{}",
                printed.join("\n"),
                err_text.await.unwrap_or_default()
            );
        }
    };
    let stderr = err_text.await.unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{}\n{stderr}", printed.join("\n"));
    assert!(
        finished_at.elapsed() < Duration::from_secs(15),
        "exited {:?} after its last build event",
        finished_at.elapsed()
    );
    assert!(open_after_finish.is_empty(), "TCP connections open after the build finished: {open_after_finish:?}");
    let last = printed.last().cloned().unwrap_or_default();
    assert!(last.contains("\"summary\""), "the summary is the last line: {last}");
    assert!(printed.iter().any(|l| l.contains("\"rebooted\"")), "the guest really rebooted:\n{}", printed.join("\n"));
    // The step after the reboot started once systemd called the boot finished (its file test passed).
    assert!(
        printed.iter().any(|l| l.contains("after: running") || l.contains("after: degraded")),
        "the step after the reboot ran on a finished boot:\n{}",
        printed.join("\n")
    );
}
