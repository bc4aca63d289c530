//! The live view, as a person sees it: a real `imgbake build` on the bed (moto behind the moto
//! proxy, the bed's sshd as the machine) under a pseudo-terminal, with `TERM` set and `NO_COLOR`
//! unset, so imgbake picks the live view. Everything it draws is read (under a hard timeout) and,
//! with terminal escapes stripped, must show each image's progress line while it builds, one status
//! line per image as it ends, and the final table.

#[allow(dead_code)]
#[path = "../../imgbake-aws/tests/aws/support.rs"]
mod support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgbake_testbed::SshTarget;
use nix::pty::{Winsize, openpty};
use support::{Bed, REGION};

/// A build of two small images on the bed takes seconds; a hang fails the test after this.
const LIMIT: Duration = Duration::from_secs(180);

/// What a terminal shows, without colours, cursor moves and line clears (CSI and OSC sequences).
fn strip_ansi(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for p in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&p) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for p in chars.by_ref() {
                        if p == '\u{7}' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// Runs `cmd` with a new pseudo-terminal as stdin, stdout and stderr; returns its exit code and
/// everything it wrote. Killed (and the test failed) after [`LIMIT`].
fn run_in_pty(mut cmd: Command) -> (Option<i32>, String) {
    let pty = openpty(Some(&Winsize { ws_row: 40, ws_col: 140, ws_xpixel: 0, ws_ypixel: 0 }), None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    cmd.stdin(slave(&pty.slave)).stdout(slave(&pty.slave)).stderr(slave(&pty.slave));
    let mut child = cmd.spawn().unwrap();
    // Only the child holds the terminal now (the command keeps its copies until dropped): reads
    // end (EIO) once it exits.
    drop(cmd);
    drop(pty.slave);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let buf = seen.clone();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "imgbake did not exit within {LIMIT:?}; killed it. It drew:\n{}",
                String::from_utf8_lossy(&seen.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let raw = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    (status.code(), raw)
}

#[test]
fn a_build_in_a_terminal_shows_live_progress_per_image_then_the_final_table() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bed = rt.block_on(Bed::start());
    let tree = format!(
        r#"[settings]
id = "cli-live-view-0001"
parallel = 1

[defaults]
builder = "aws"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, timeout = "30s" }}
aws = {{ region = "{REGION}", endpoint = "{endpoint}", ssh_cidrs = ["127.0.0.1/32"], poll_interval = "300ms" }}

[images.base]
source = {{ ami = "{source}" }}
[[images.base.steps]]
name = "takes a moment"
shell = {{ inline = ["sleep 1", "echo base step done"] }}

[images.app]
parent = "base"
[[images.app.steps]]
name = "deploy fails"
shell = {{ inline = ["sleep 1", "echo cannot deploy >&2", "exit 3"] }}
"#,
        source = bed.source,
        port = bed.sshd.port(),
        endpoint = bed.proxy.endpoint(),
    );
    std::fs::write(bed.dir.path().join("tree.toml"), tree).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    cmd.args(["build", "tree.toml"])
        .current_dir(bed.dir.path())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CI")
        .env("AWS_ACCESS_KEY_ID", imgbake_testbed::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", imgbake_testbed::SECRET_ACCESS_KEY)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let (code, raw) = run_in_pty(cmd);
    let shown = strip_ansi(&raw);
    assert_eq!(code, Some(1), "app's step fails the run:\n{shown}");
    assert!(raw.contains("\u{1b}["), "a terminal gets escape sequences (colours, redraws):\n{shown}");

    // Live mode, not plain lines: no `[image] ...` prefixes, spinner frames instead.
    assert!(!shown.contains("[base] "), "the plain renderer was chosen:\n{shown}");
    assert!(shown.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)), "spinner frames:\n{shown}");

    // Each image's status line when it ends, in build order.
    let status_line = |mark: &str, image: &str| {
        shown.find(&format!("{mark} {image} ")).unwrap_or_else(|| panic!("{image}'s status line:\n{shown}"))
    };
    let base_done = status_line("✓", "base");
    let app_done = status_line("✗", "app");
    assert!(base_done < app_done, "base ends before its child");
    let line = |at: usize| shown[at..].lines().next().unwrap_or_default().to_string();
    assert!(line(base_done).contains("built in"), "{}", line(base_done));
    assert!(line(app_done).contains("failed after"), "{}", line(app_done));

    // While running, each image's live line shows where it is: its step, before its status line.
    let before_base = &shown[..base_done];
    for phase in ["launch", "connect", "provision", "capture"] {
        assert!(
            before_base.lines().any(|l| l.contains("base") && l.contains(phase)),
            "base's line shows its {phase} phase:\n{before_base}"
        );
    }
    assert!(
        before_base.lines().any(|l| l.contains("base") && l.contains("takes a moment")),
        "base's progress line with its running step:\n{before_base}"
    );
    let before_app = &shown[base_done..app_done];
    assert!(
        before_app.lines().any(|l| l.contains("app") && (l.contains("deploy fails") || l.contains("cannot deploy"))),
        "app's progress line:\n{before_app}"
    );

    // The final table: the build, a row per image with its status, the totals.
    let table = &shown[shown.find("\nbuild b").unwrap_or_else(|| panic!("the final table:\n{shown}"))..];
    let row = |image: &str| {
        table
            .lines()
            .find(|l| l.contains(&format!("{image} (aws)")))
            .unwrap_or_else(|| panic!("{image}'s row:\n{table}"))
    };
    assert!(row("base").trim_start().starts_with("built") && row("base").contains("ami-"), "{}", row("base"));
    assert!(row("app").trim_start().starts_with("failed"), "{}", row("app"));
    assert!(table.contains("1 built, 0 reused, 1 failed, 0 skipped"), "{table}");
}
