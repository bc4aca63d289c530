//! Children of the bed die with the test process, even when it is SIGKILLed, and even when the
//! test thread that started them ended long before. Own `main` (harness = false): the test
//! re-executes this binary with `--child` as the "test process" it then kills.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use imgbake_testbed::{Backoff, ChildGuard, descendants, pid_alive, spawn_guarded};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if std::env::args().any(|a| a == "--child") {
        runtime.block_on(child());
        return;
    }
    const TESTS: [&str; 2] = ["children_die_with_killed_test_process", "dropping_guard_kills_whole_tree"];
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The libtest protocol cargo test and nextest speak: `--list` (none of these is `--ignored`), and
    // name filters (`--exact NAME` from nextest, substrings from cargo test).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for t in TESTS {
                println!("{t}: test");
            }
        }
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let selected = |name: &str| {
        filters.is_empty() || filters.iter().any(|f| if exact { f.as_str() == name } else { name.contains(f.as_str()) })
    };
    let mut failed = 0;
    for name in TESTS.into_iter().filter(|n| selected(n)) {
        let result = match name {
            "children_die_with_killed_test_process" => runtime.block_on(children_die_with_killed_test_process()),
            _ => runtime.block_on(dropping_guard_kills_whole_tree()),
        };
        match result {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000").stdin(Stdio::null());
    cmd
}

/// The "test process": one child from a long-lived task, one from a thread that then ends
/// (like a libtest test thread); prints both pids and waits to be killed.
async fn child() {
    let first = spawn_guarded("sleeper 1", sleeper()).await.expect("spawn 1");
    let second = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(spawn_guarded("sleeper 2", sleeper())).expect("spawn 2")
    })
    .join()
    .expect("thread");
    println!("PIDS {} {}", first.pid(), second.pid());
    let _keep: (ChildGuard, ChildGuard) = (first, second);
    tokio::time::sleep(Duration::from_secs(600)).await;
}

async fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let mut backoff = Backoff::new(timeout);
    loop {
        if pids.iter().all(|&p| !pid_alive(p)) {
            return true;
        }
        if !backoff.wait().await {
            return false;
        }
    }
}

async fn children_die_with_killed_test_process() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child").stdout(Stdio::piped());
    let mut helper = cmd.spawn().map_err(|e| format!("spawn helper: {e}"))?;
    let stdout = helper.stdout.take().ok_or("no stdout")?;
    // Reading one line blocks, but only this test's own runtime thread.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let pids: Vec<u32> = line
        .strip_prefix("PIDS ")
        .ok_or_else(|| format!("helper said {line:?}"))?
        .split_whitespace()
        .map(|p| p.parse().map_err(|e| format!("{p}: {e}")))
        .collect::<Result<_, _>>()?;
    if pids.len() != 2 || !pids.iter().all(|&p| pid_alive(p)) {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(format!(
            "children {pids:?} not all alive before the kill: the child of the ended thread \
             must survive it"
        ));
    }
    helper.kill().map_err(|e| e.to_string())?; // SIGKILL: no destructors run
    helper.wait().map_err(|e| e.to_string())?;
    if !wait_gone(&pids, Duration::from_secs(10)).await {
        for &p in &pids {
            // SAFETY: cleanup of our own leftovers.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        return Err(format!("children {pids:?} outlived the SIGKILLed test process"));
    }
    Ok(())
}

async fn dropping_guard_kills_whole_tree() -> Result<(), String> {
    let mut cmd = Command::new("sh");
    // A child in a new session as well, like sshd's session processes.
    cmd.args(["-c", "sleep 1000 & setsid sleep 1000 & wait"]);
    let guard = spawn_guarded("sh with sleepers", cmd).await.map_err(|e| e.to_string())?;
    let root = guard.pid();
    let mut backoff = Backoff::new(Duration::from_secs(10));
    let tree = loop {
        let tree = descendants(root);
        if tree.len() >= 2 {
            break tree;
        }
        if !backoff.wait().await {
            return Err(format!("sh {root} never had 2 children: {tree:?}"));
        }
    };
    drop(guard);
    let mut all = tree.clone();
    all.push(root);
    if !wait_gone(&all, Duration::from_secs(10)).await {
        return Err(format!("processes {all:?} survived dropping their guard"));
    }
    Ok(())
}
