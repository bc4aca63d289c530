//! Child processes that cannot outlive their test.
//!
//! Every server is spawned with `PR_SET_PDEATHSIG=SIGKILL` in its own process group, and
//! [`ChildGuard`] kills its whole process tree on drop. Linux sends the death signal when the
//! *thread* that forked the child exits, not the process, and each libtest test runs on its own
//! short-lived thread: so all children are forked by one spawner thread that lives as long as
//! the process. A server shared by several tests therefore survives the test that started it,
//! and still dies with the test process, even on SIGKILL.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{BedError, Result};
use crate::poll::Backoff;

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

fn spawner() -> Result<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    let cell = SPAWNER.get_or_init(|| Mutex::new(None));
    let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = slot.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("imgbake-testbed-spawner".into())
        .spawn(move || {
            // Lives until the process exits: children die with the process, not with a test.
            for mut request in rx {
                let _ = request.reply.send(request.command.spawn());
            }
        })
        .map_err(|e| BedError::io("starting the child-spawner thread", e))?;
    *slot = Some(tx.clone());
    Ok(tx)
}

/// Spawns `command` so that it dies with this process and can be killed as a tree.
///
/// `what` names the process in errors ("moto server on port 41234"). The command runs in a new
/// process group with `PR_SET_PDEATHSIG=SIGKILL`. Set its stdio before calling.
pub async fn spawn_guarded(what: impl Into<String>, mut command: Command) -> Result<ChildGuard> {
    let what = what.into();
    let parent = std::process::id() as libc::pid_t;
    command.process_group(0);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let program = format!("{:?}", command.get_program());
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(SpawnRequest { command, reply })
        .map_err(|_| BedError::Invalid("the child-spawner thread is gone".into()))?;
    let child = answer
        .await
        .map_err(|_| BedError::Invalid("the child-spawner thread dropped a request".into()))?
        .map_err(|e| BedError::io(format!("starting {what} ({program})"), e))?;
    Ok(ChildGuard { what, pid: child.id() as libc::pid_t, child: Some(child) })
}

/// A running child process; dropping it SIGKILLs the child and all its descendants.
#[derive(Debug)]
pub struct ChildGuard {
    what: String,
    pid: libc::pid_t,
    child: Option<Child>,
}

impl ChildGuard {
    /// Process id of the child (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// What this child is, as given to [`spawn_guarded`].
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The exit status if the child has ended (reaped here), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            None => Ok(None),
            Some(child) => {
                child.try_wait().map_err(|e| BedError::io(format!("checking whether {} is alive", self.what), e))
            }
        }
    }

    /// Waits (polling, without blocking the runtime) until the child exits, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if !backoff.wait().await {
                return Err(BedError::Timeout {
                    what: format!("{} to exit", self.what),
                    after: timeout,
                    log: String::new(),
                });
            }
        }
    }

    /// SIGKILLs the child, its descendants and its process group; returns once they are gone
    /// (waits at most 2 s for descendants) and the child is reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(self.pid, true);
            // SIGKILL was sent, so this returns as soon as the kernel has torn the process down.
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parent pid of every process, from `/proc/<pid>/stat`.
fn parent_map() -> HashMap<libc::pid_t, libc::pid_t> {
    let mut parents = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return parents;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens, so split after the last ')'.
        let ppid =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        if let Some(ppid) = ppid {
            parents.insert(pid, ppid);
        }
    }
    parents
}

/// All descendants of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let root = root as libc::pid_t;
    let parents = parent_map();
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    for (pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if let Some(kids) = children.get(&pid) {
            for &kid in kids {
                out.push(kid as u32);
                todo.push(kid);
            }
        }
    }
    out
}

/// SIGKILLs every descendant of `root` (and `root` plus its process group if `include_root`).
///
/// Killing a parent first would re-parent its children to init and lose track of them, and a
/// live process may fork meanwhile: so the tree is frozen with SIGSTOP until it stops
/// changing, then killed.
pub(crate) fn kill_tree(root: libc::pid_t, include_root: bool) {
    let mut frozen: HashSet<libc::pid_t> = HashSet::new();
    if include_root {
        // SAFETY: plain syscall on a pid we own.
        unsafe { libc::kill(root, libc::SIGSTOP) };
        frozen.insert(root);
    }
    for _ in 0..20 {
        let tree: Vec<libc::pid_t> = descendants(root as u32).into_iter().map(|p| p as libc::pid_t).collect();
        let fresh: Vec<libc::pid_t> = tree.into_iter().filter(|p| !frozen.contains(p)).collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            frozen.insert(pid);
        }
    }
    for &pid in &frozen {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if include_root {
        // Anything that left the tree (double-forked) but stayed in the group.
        // SAFETY: plain syscall.
        unsafe { libc::killpg(root, libc::SIGKILL) };
    }
    // SIGKILL is delivered asynchronously: wait until the processes are really gone, so that
    // "stopped" means their sockets are closed when this returns (milliseconds; bounded).
    wait_exited(&frozen, Duration::from_secs(2));
}

/// Blocks until every pid has exited (zombies count) or `timeout` passed, without polling:
/// a pidfd becomes readable when its process exits (Linux >= 5.3, also for non-children).
fn wait_exited(pids: &HashSet<libc::pid_t>, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for &pid in pids {
        // SAFETY: plain syscall; the fd is closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        if fd < 0 {
            continue; // already gone (ESRCH) or pidfd unsupported: nothing to wait for
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as libc::c_int);
            libc::close(fd);
        }
    }
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
