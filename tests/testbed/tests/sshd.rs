//! The bed's private sshd: real logins with pinned host keys, SFTP on demand, and outages
//! (stop / start_again / kill_sessions) that behave like a machine going down.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use imgbake_testbed::{KeyKind, SshTarget, Sshd, SshdOptions, descendants, pid_alive, ssh_output};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The same server seen with another client key or known_hosts file.
struct Variant<'a> {
    sshd: &'a Sshd,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl SshTarget for Variant<'_> {
    fn host(&self) -> &str {
        self.sshd.host()
    }
    fn port(&self) -> u16 {
        self.sshd.port()
    }
    fn user(&self) -> &str {
        self.sshd.user()
    }
    fn client_key_path(&self) -> &Path {
        &self.key
    }
    fn host_public_key(&self) -> &str {
        self.sshd.host_public_key()
    }
    fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn runs_commands_with_output_and_exit_code() {
    let started = std::time::Instant::now();
    let sshd = Sshd::start().await.expect("start sshd");
    eprintln!("timing: Sshd::start (3 keys + sshd): {:.2?}", started.elapsed());
    let out = ssh_output(&sshd, "echo hello; echo oops >&2; whoami; echo $HOME; exit 3").await.expect("ssh");
    let expected = format!("hello\nroot\n{}\n", sshd.home_dir().display());
    assert_eq!(text(&out.stdout), expected, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(3));

    let rsa = Variant {
        sshd: &sshd,
        key: sshd.rsa_client_key_path().to_path_buf(),
        known_hosts: sshd.known_hosts_path().to_path_buf(),
    };
    assert_eq!(sshd.client_key(KeyKind::Rsa).kind, KeyKind::Rsa);
    let out = ssh_output(&rsa, "echo via-rsa").await.expect("ssh rsa");
    assert_eq!(text(&out.stdout), "via-rsa\n", "stderr: {}", text(&out.stderr));
    assert!(sshd.log().contains("Accepted publickey for root"), "{}", sshd.log());
    assert!(sshd.host_public_key().starts_with("ssh-ed25519 "));
}

#[tokio::test]
async fn host_key_is_pinned_and_unknown_keys_are_refused() {
    let sshd = Sshd::start().await.expect("start sshd");
    let dir = tempfile::tempdir().expect("tempdir");
    let other = imgbake_testbed::generate_key(dir.path(), "other", KeyKind::Ed25519).await.expect("keygen");

    // known_hosts pinning some other host key: the client must refuse the server.
    let wrong_pin = dir.path().join("known_hosts");
    std::fs::write(&wrong_pin, imgbake_testbed::known_hosts_line("127.0.0.1", sshd.port(), &other.public_key) + "\n")
        .expect("write known_hosts");
    let mismatched = Variant { sshd: &sshd, key: sshd.client_key_path().to_path_buf(), known_hosts: wrong_pin };
    let out = ssh_output(&mismatched, "true").await.expect("ssh");
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"), "{}", text(&out.stderr));

    // A client key the server does not know.
    let stranger =
        Variant { sshd: &sshd, key: other.private_key.clone(), known_hosts: sshd.known_hosts_path().to_path_buf() };
    let out = ssh_output(&stranger, "true").await.expect("ssh");
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));

    // ... until it is authorized.
    sshd.authorize_key(&other.public_key).expect("authorize");
    let out = ssh_output(&stranger, "echo in").await.expect("ssh");
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
}

async fn sftp_put(sshd: &Sshd, local: &Path, remote: &Path) -> std::process::Output {
    let batch = format!("put {} {}\n", local.display(), remote.display());
    let mut child = tokio::process::Command::new("sftp")
        .arg("-F")
        .arg("/dev/null")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()))
        .arg("-o")
        .arg(format!("IdentityFile={}", sshd.client_key_path().display()))
        .args(["-o", "IdentitiesOnly=yes", "-b", "-", "-P"])
        .arg(sshd.port().to_string())
        .arg("root@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sftp");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(batch.as_bytes()).await.expect("write batch");
    drop(stdin);
    child.wait_with_output().await.expect("sftp")
}

#[tokio::test]
async fn sftp_is_offered_only_when_asked() {
    let local_dir = tempfile::tempdir().expect("tempdir");
    let local = local_dir.path().join("payload");
    std::fs::write(&local, b"sftp payload").expect("write");

    let with = Sshd::start().await.expect("start sshd");
    let remote = with.dir().join("uploaded");
    let out = sftp_put(&with, &local, &remote).await;
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(std::fs::read(&remote).expect("uploaded file"), b"sftp payload");

    let without =
        Sshd::start_with(SshdOptions { sftp: false, ..SshdOptions::default() }).await.expect("start sshd without sftp");
    let remote = without.dir().join("uploaded");
    let out = sftp_put(&without, &local, &remote).await;
    assert!(!out.status.success(), "sftp worked without the subsystem");
    assert!(!remote.exists());
}

/// Starts `echo started; sleep 600` over SSH and returns once the remote side runs.
async fn long_session(target: &impl SshTarget) -> tokio::process::Child {
    let mut child = target
        .ssh_command("echo started; exec sleep 600")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("session start timed out")
        .expect("read");
    assert_eq!(line, "started\n");
    child
}

#[tokio::test]
async fn stop_is_a_machine_going_down_and_start_again_comes_back() {
    let mut sshd = Sshd::start().await.expect("start sshd");
    let port = sshd.port();
    let listener = sshd.pid().expect("pid");
    let mut session = long_session(&sshd).await;
    let session_processes = descendants(listener);
    assert!(!session_processes.is_empty());

    sshd.stop();
    assert!(!sshd.is_running());
    // The open session ends (its server side died), without waiting for keepalives.
    let status = tokio::time::timeout(Duration::from_secs(10), session.wait())
        .await
        .expect("session survived stop()")
        .expect("wait");
    assert!(!status.success());
    for pid in session_processes.iter().chain([&listener]) {
        assert!(!pid_alive(*pid), "process {pid} survived stop()");
    }
    let refused = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
    assert_eq!(refused.expect_err("connect after stop").kind(), std::io::ErrorKind::ConnectionRefused);

    sshd.start_again().await.expect("start again");
    assert_eq!(sshd.port(), port);
    // Same host key: the pinned known_hosts still matches.
    let out = ssh_output(&sshd, "echo back").await.expect("ssh");
    assert_eq!(text(&out.stdout), "back\n", "{}", text(&out.stderr));
    assert!(sshd.start_again().await.is_err(), "start_again while running");
}

#[tokio::test]
async fn kill_sessions_keeps_the_listener() {
    let sshd = Sshd::start().await.expect("start sshd");
    let mut session = long_session(&sshd).await;
    assert!(sshd.kill_sessions() > 0);
    let status = tokio::time::timeout(Duration::from_secs(10), session.wait())
        .await
        .expect("session survived kill_sessions()")
        .expect("wait");
    assert!(!status.success());
    let out = ssh_output(&sshd, "echo still-here").await.expect("ssh");
    assert_eq!(text(&out.stdout), "still-here\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn drop_leaves_nothing_behind() {
    let sshd = Sshd::start().await.expect("start sshd");
    let _session = long_session(&sshd).await;
    let listener = sshd.pid().expect("pid");
    let mut all = descendants(listener);
    all.push(listener);
    let dir = sshd.dir().to_path_buf();
    drop(sshd);
    for pid in all {
        assert!(!pid_alive(pid), "process {pid} survived drop");
    }
    assert!(!dir.exists(), "{} survived drop", dir.display());
}
