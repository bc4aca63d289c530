//! No connection outlives what imgbake is doing with it: an attempt given up during the handshake,
//! and a session after `disconnect`, leave no TCP connection behind (a leftover one kept a finished
//! build's process alive).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbake_core::communicator::Communicator;
use imgbake_core::wait::Wait;
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::SshTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::*;

/// Accepts connections, sends an SSH banner, then never answers the key exchange (a machine going
/// down under the handshake). Records, per connection, whether the client has closed it.
async fn stalling_server() -> (u16, Arc<Mutex<Vec<bool>>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let seen = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let i = {
                let mut v = seen.lock().unwrap();
                v.push(false);
                v.len() - 1
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2 stalls\r\n").await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                seen.lock().unwrap()[i] = true;
            });
        }
    });
    (port, closed)
}

#[tokio::test]
async fn an_attempt_given_up_during_key_exchange_closes_its_connection() {
    let (port, closed) = stalling_server().await;
    let mut cfg = SshConfig::new("127.0.0.1", port, "root")
        .with_auth(Auth::Password("x".into()))
        .with_host_key(HostKeyPolicy::InsecureAcceptAny);
    cfg.connect_timeout = Duration::from_millis(700);
    cfg.banner_timeout = Duration::from_millis(700);
    let c = SshCommunicator::new(cfg);
    let wait = Wait::new(Duration::from_secs(2)).interval(Duration::from_millis(200), Duration::from_millis(400));
    c.connect(&wait).await.expect_err("the server never finishes the key exchange");
    assert!(!closed.lock().unwrap().is_empty(), "no attempt reached the server");

    // Every connection the attempts opened is closed by the client, promptly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = closed.lock().unwrap().iter().filter(|c| !**c).count();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connection(s) still open after the attempts gave up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn disconnect_closes_the_connection_even_with_sftp_open() {
    let sshd = sshd().await;
    let c = connected(&sshd).await;
    // SFTP keeps a channel (and with it the session) alive in a task of its own.
    let remote = remote_path(&sshd, "lifetime.txt");
    c.upload_bytes(b"x", &remote, 0o600).await.unwrap();
    let before = established_to(sshd.port());
    assert!(before >= 1, "no connection to the server while connected");
    c.disconnect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while established_to(sshd.port()) > 0 {
        assert!(Instant::now() < deadline, "a connection to port {} is still open after disconnect", sshd.port());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This process's established TCP connections to 127.0.0.1:`port`, from /proc/self/net/tcp.
fn established_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let mine = own_socket_inodes();
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2] == format!("0100007F:{port:04X}") && f[3] == "01" && mine.contains(&f[9].to_string())
        })
        .count()
}

fn own_socket_inodes() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    l.to_str().and_then(|s| s.strip_prefix("socket:[")).map(|s| s.trim_end_matches(']').to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}
