//! Authentication, host key policies, connection retries and jump hosts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgbake_core::communicator::{CommError, Communicator};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::wait::{self, Poll, Wait};
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::{
    ChildGuard, KeyKind, SshTarget, SshdOptions, free_port, generate_key, read_ssh_banner, spawn_guarded,
};
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test]
async fn ed25519_rsa_and_in_memory_keys_log_in() {
    let sshd = sshd().await;
    for kind in [KeyKind::Ed25519, KeyKind::Rsa] {
        let mut cfg = config_for(&sshd);
        cfg.auth = vec![Auth::key_file(&sshd.client_key(kind).private_key)];
        let c = SshCommunicator::new(cfg);
        c.connect(&quick()).await.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(run(&c, "whoami").await.stdout_text(), "root");
        c.disconnect().await;
    }
    let (key, public) = imgbake_ssh::generate_ed25519("imgbake-test").unwrap();
    sshd.authorize_key(&public).unwrap();
    let mut cfg = config_for(&sshd);
    cfg.auth = vec![Auth::Key(key)];
    let c = SshCommunicator::new(cfg);
    c.connect(&quick()).await.unwrap();
    assert!(run(&c, "true").await.status.success());
    c.disconnect().await;
    // The server saw publickey logins, one per key.
    assert!(sshd.log().matches("Accepted publickey for root").count() >= 3, "{}", sshd.log());
}

#[tokio::test]
async fn wrong_key_is_a_final_clear_error() {
    let sshd = sshd().await;
    let dir = tempfile::tempdir().unwrap();
    let stranger = generate_key(dir.path(), "stranger", KeyKind::Ed25519).await.unwrap();
    let mut cfg = config_for(&sshd);
    cfg.auth = vec![Auth::key_file(&stranger.private_key)];
    let t0 = Instant::now();
    let err = SshCommunicator::new(cfg).connect(&Wait::new(Duration::from_secs(60))).await.unwrap_err();
    // Final: no retrying until the timeout.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let msg = err.to_string();
    assert!(matches!(err, CommError::Auth { ref user, .. } if user == "root"), "{msg}");
    assert!(msg.contains(&stranger.private_key.display().to_string()), "{msg}");
    assert!(msg.contains("ssh-ed25519 SHA256:"), "{msg}");
    assert!(msg.contains("publickey"), "{msg}");

    // A key file that does not exist says which file.
    let mut cfg = config_for(&sshd);
    cfg.auth = vec![Auth::key_file(dir.path().join("missing"))];
    let err = SshCommunicator::new(cfg).connect(&quick()).await.unwrap_err();
    assert!(matches!(err, CommError::LocalFile { ref path, .. } if path.ends_with("missing")), "{err}");
    // No method at all.
    let mut cfg = config_for(&sshd);
    cfg.auth.clear();
    let err = SshCommunicator::new(cfg).connect(&quick()).await.unwrap_err();
    assert!(err.to_string().contains("no authentication method"), "{err}");
}

/// A cloud machine's first boot: sshd answers before cloud-init has installed the login key. With an
/// auth grace, rejections are retried until the key appears; after the grace they are final.
#[tokio::test]
async fn a_key_installed_late_is_waited_for_within_the_auth_grace() {
    let sshd = sshd().await;
    let (key, public) = imgbake_ssh::generate_ed25519("late-key").unwrap();
    let mut cfg = config_for(&sshd);
    cfg.auth = vec![Auth::Key(key.clone())];
    cfg.auth_grace = Duration::from_secs(60);
    let (sink, log) = EventSink::memory();
    let c = SshCommunicator::new(cfg.clone()).with_events(sink);
    let connecting = tokio::spawn(async move {
        c.connect(&Wait::new(Duration::from_secs(60)).interval(Duration::from_millis(100), Duration::from_millis(500)))
            .await
            .map(|()| c)
    });
    // Install the key only after the server has rejected it at least once (like cloud-init would).
    wait::until(&Wait::new(Duration::from_secs(30)), "a rejected login", || {
        let seen = sshd.log().contains("Failed publickey for root")
            || sshd.log().contains("Connection closed by authenticating user root");
        async move { if seen { Poll::Ready(()) } else { Poll::<(), ()>::Pending("no rejection yet".into()) } }
    })
    .await
    .unwrap();
    sshd.authorize_key(&public).unwrap();
    let c = connecting.await.unwrap().expect("logs in once the key is there");
    assert!(run(&c, "true").await.status.success());
    c.disconnect().await;
    drop(log);

    // A key that never arrives: final once the grace is over, with the usual message.
    let (stranger, _) = imgbake_ssh::generate_ed25519("never-installed").unwrap();
    cfg.auth = vec![Auth::Key(stranger)];
    cfg.auth_grace = Duration::from_secs(2);
    let t0 = Instant::now();
    let err = SshCommunicator::new(cfg).connect(&Wait::new(Duration::from_secs(60))).await.unwrap_err();
    assert!(matches!(err, CommError::Auth { .. }), "{err}");
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn host_key_mismatch_is_rejected_with_both_fingerprints() {
    let sshd = sshd().await;
    let dir = tempfile::tempdir().unwrap();
    let other = generate_key(dir.path(), "other_host", KeyKind::Ed25519).await.unwrap();
    let mut cfg = config_for(&sshd);
    cfg.host_key = HostKeyPolicy::Pinned(vec![other.public_key.clone()]);
    let t0 = Instant::now();
    let err = SshCommunicator::new(cfg).connect(&Wait::new(Duration::from_secs(60))).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let expected = imgbake_ssh::describe_key(&imgbake_ssh::parse_public_key(&other.public_key).unwrap());
    let presented = imgbake_ssh::describe_key(&imgbake_ssh::parse_public_key(sshd.host_public_key()).unwrap());
    match &err {
        CommError::HostKeyMismatch { expected: e, presented: p, .. } => {
            assert!(e.contains(&expected), "{err}");
            assert_eq!(p, &presented);
        }
        other => panic!("expected a host key mismatch, got {other}"),
    }
    // Nothing was run: the server never saw a login.
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[tokio::test]
async fn known_hosts_and_the_default_policy() {
    let sshd = sshd().await;
    // The bed's known_hosts file pins the key for [127.0.0.1]:port.
    let mut cfg = config_for(&sshd);
    cfg.host_key = HostKeyPolicy::KnownHosts(sshd.known_hosts_path().to_path_buf());
    let c = SshCommunicator::new(cfg);
    c.connect(&quick()).await.unwrap();
    c.disconnect().await;

    // An empty known_hosts: unknown host, final.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut cfg = config_for(&sshd);
    cfg.host_key = HostKeyPolicy::KnownHosts(empty);
    let err = SshCommunicator::new(cfg).connect(&quick()).await.unwrap_err();
    assert!(matches!(err, CommError::UnknownHostKey { .. }), "{err}");

    // The default is known_hosts, never "accept anything": this random port is not in ~/.ssh/known_hosts.
    assert!(matches!(SshConfig::default().host_key, HostKeyPolicy::KnownHosts(_)));
    let mut cfg = config_for(&sshd);
    cfg.host_key = HostKeyPolicy::default();
    let err = SshCommunicator::new(cfg).connect(&quick()).await.unwrap_err();
    assert!(matches!(err, CommError::UnknownHostKey { .. } | CommError::HostKeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn insecure_policy_connects_and_warns() {
    let sshd = sshd().await;
    let (events, log) = EventSink::memory();
    let mut cfg = config_for(&sshd);
    cfg.host_key = HostKeyPolicy::InsecureAcceptAny;
    let c = SshCommunicator::new(cfg).with_events(events);
    c.connect(&quick()).await.unwrap();
    c.disconnect().await;
    let presented = imgbake_ssh::describe_key(&imgbake_ssh::parse_public_key(sshd.host_public_key()).unwrap());
    let warned = log.events().iter().any(|e| {
        matches!(&e.kind, EventKind::Warning { message } if message.contains("WITHOUT verification") && message.contains(&presented))
    });
    assert!(warned, "{:#?}", log.events());
}

#[tokio::test]
async fn retries_while_not_up_then_connects() {
    let mut sshd = sshd().await;
    let port = sshd.port();
    sshd.stop();
    // Like a hypervisor port forward for a guest that is down: TCP is accepted, no banner follows.
    let silent = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let c = SshCommunicator::new(config_for(&sshd));
    let wait = Wait::new(Duration::from_secs(60)).interval(Duration::from_millis(100), Duration::from_millis(300));
    let connecting = c.connect(&wait);
    let machine = async {
        // Hold two attempts open at once: the second started while the first still waited for a banner.
        let (a, _) = silent.accept().await.unwrap();
        let (b, _) = silent.accept().await.unwrap();
        drop((a, b, silent));
        // Now "connection refused" for a moment, then the server is back.
        sshd.start_again().await.unwrap();
    };
    let t0 = Instant::now();
    let (r, ()) = tokio::join!(connecting, machine);
    r.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(run(&c, "echo back").await.stdout_text(), "back");
    c.disconnect().await;

    // Nobody listening at all: a timeout error with the last failure.
    sshd.stop();
    let err = SshCommunicator::new(config_for(&sshd)).connect(&Wait::new(Duration::from_secs(2))).await.unwrap_err();
    match err {
        CommError::ConnectTimeout { waited, last_error, .. } => {
            assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(6), "{waited:?}");
            assert!(last_error.contains("refused"), "{last_error}");
        }
        other => panic!("expected a connect timeout, got {other}"),
    }
}

#[tokio::test]
async fn jump_host() {
    let bastion = sshd().await;
    let target = sshd().await;
    let mut cfg = config_for(&target);
    cfg.bastion = Some(Box::new(config_for(&bastion)));
    let c = SshCommunicator::new(cfg.clone());
    c.connect(&quick()).await.unwrap();
    assert_eq!(run(&c, "echo through").await.stdout_text(), "through");
    c.disconnect().await;
    // Both servers saw a login: the bastion from us, the target through the tunnel.
    assert!(bastion.log().contains("Accepted publickey"));
    assert!(target.log().contains("Accepted publickey"));

    // A bastion with the wrong host key: the error names the bastion's key problem.
    let mut bad = cfg.clone();
    let mut b = config_for(&bastion);
    b.host_key = HostKeyPolicy::Pinned(vec![target.host_public_key().to_string()]);
    bad.bastion = Some(Box::new(b));
    let err = SshCommunicator::new(bad).connect(&quick()).await.unwrap_err();
    assert!(
        matches!(&err, CommError::HostKeyMismatch { target: t, .. } if t.contains(&bastion.port().to_string())),
        "{err}"
    );
}

/// An sshd of our own that accepts a password for root. sshd checks passwords against
/// /etc/shadow, so it runs in a private mount namespace with a shadow file of ours bound over it
/// (the machine's own file is never touched).
struct PasswordSshd {
    _dir: tempfile::TempDir,
    _child: ChildGuard,
    port: u16,
    host_key: String,
}

impl PasswordSshd {
    async fn start(password: &str) -> PasswordSshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host = generate_key(d, "host", KeyKind::Ed25519).await.unwrap();
        let client = generate_key(d, "id", KeyKind::Ed25519).await.unwrap();
        let hash = sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default()).unwrap();
        let shadow: String = std::fs::read_to_string("/etc/shadow")
            .unwrap()
            .lines()
            .map(|l| match l.split_once(':') {
                Some(("root", rest)) => format!("root:{hash}:{}", rest.split_once(':').map(|x| x.1).unwrap_or("")),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(d.join("shadow"), shadow + "\n").unwrap();
        let port = free_port().unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\nStrictModes no\n\
                 AuthorizedKeysFile {}\nPermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n{NO_DOTFILES}\n",
                host.private_key.display(),
                d.join("pid").display(),
                d.join("authorized_keys").display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("authorized_keys"), format!("{}\n", client.public_key)).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/shadow && exec /usr/sbin/sshd -D -f {} -E {}",
                d.join("shadow").display(),
                d.join("sshd_config").display(),
                d.join("log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_guarded("password sshd", cmd).await.unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up: Result<(), wait::WaitError<String>> =
            wait::until(&Wait::new(Duration::from_secs(20)), "password sshd", || async move {
                match read_ssh_banner(addr, Duration::from_secs(1)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(e.to_string()),
                }
            })
            .await;
        up.unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(d.join("log")).unwrap_or_default()));
        PasswordSshd { port, host_key: host.public_key, _child: child, _dir: dir }
    }

    fn config(&self, auth: Vec<Auth>) -> SshConfig {
        let mut cfg = SshConfig::new("127.0.0.1", self.port, "root")
            .with_host_key(HostKeyPolicy::Pinned(vec![self.host_key.clone()]));
        cfg.auth = auth;
        cfg
    }
}

#[tokio::test]
async fn password_authentication() {
    let server = PasswordSshd::start("correct horse").await;
    let c = SshCommunicator::new(server.config(vec![Auth::Password("correct horse".into())]));
    c.connect(&quick()).await.unwrap();
    assert_eq!(run(&c, "whoami").await.stdout_text(), "root");
    c.disconnect().await;

    let err =
        SshCommunicator::new(server.config(vec![Auth::Password("wrong".into())])).connect(&quick()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CommError::Auth { .. }), "{msg}");
    assert!(
        msg.contains("password") && !msg.contains("wrong"),
        "the message names the method, never the secret: {msg}"
    );

    // Methods are tried in order: a rejected key, then the password.
    let dir = tempfile::tempdir().unwrap();
    let stranger = generate_key(dir.path(), "stranger", KeyKind::Ed25519).await.unwrap();
    let c = SshCommunicator::new(
        server.config(vec![Auth::key_file(&stranger.private_key), Auth::Password("correct horse".into())]),
    );
    c.connect(&quick()).await.unwrap();
    c.disconnect().await;
}

#[tokio::test]
async fn sshd_options_are_respected_by_retry() {
    // A server that refuses the session channel: a protocol error, not a hang.
    let sshd = sshd_with(SshdOptions { extra_config: vec!["MaxSessions 0".into()], ..Default::default() }).await;
    let c = connected(&sshd).await;
    let err = c.exec(&imgbake_core::communicator::ExecRequest::new("true"), &EventSink::discard()).await.unwrap_err();
    assert!(matches!(err, CommError::Protocol { .. }), "{err}");
    c.disconnect().await;
}
