//! Readiness by polling with backoff under an overall deadline (never a fixed sleep).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{BedError, Result};

/// Exponential backoff between polls (20 ms doubling up to 500 ms) that ends at a deadline.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    max: Duration,
    deadline: Instant,
}

impl Backoff {
    /// A backoff that gives up `timeout` from now.
    pub fn new(timeout: Duration) -> Self {
        Backoff {
            delay: Duration::from_millis(20),
            max: Duration::from_millis(500),
            deadline: Instant::now() + timeout,
        }
    }

    /// Caps the delay between polls (default 500 ms).
    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps until the next poll; `false` once the deadline has passed (then no sleep).
    pub async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        let sleep = self.delay.min(self.deadline - now);
        tokio::time::sleep(sleep).await;
        self.delay = (self.delay * 2).min(self.max);
        true
    }
}

/// Waits until a TCP connect to `addr` succeeds.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let mut backoff = Backoff::new(timeout);
    loop {
        let attempt = backoff.remaining().min(Duration::from_secs(2));
        if let Ok(Ok(_)) = tokio::time::timeout(attempt, TcpStream::connect(addr)).await {
            return Ok(());
        }
        if !backoff.wait().await {
            return Err(BedError::Timeout {
                what: format!("TCP connect to {addr}"),
                after: timeout,
                log: String::new(),
            });
        }
    }
}

/// One attempt: connect to `addr` and read the SSH identification line ("SSH-2.0-...").
///
/// Fails if the connect or the banner takes longer than `timeout`: QEMU accepts connections to
/// its forwarded port even while the guest is down or frozen, so only the banner proves an SSH
/// server is there.
pub async fn read_ssh_banner(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        let mut reader = tokio::io::BufReader::new(stream);
        // RFC 4253 allows other lines before the identification line.
        for _ in 0..16 {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before the SSH banner",
                ));
            }
            if line.starts_with("SSH-") {
                return Ok(line.trim_end().to_owned());
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no SSH banner in the first 16 lines"))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(banner)) => Ok(banner),
        Ok(Err(e)) => Err(BedError::io(format!("reading the SSH banner of {addr}"), e)),
        Err(_) => Err(BedError::Timeout { what: format!("SSH banner of {addr}"), after: timeout, log: String::new() }),
    }
}

/// Polls [`read_ssh_banner`] (2 s per attempt) until one succeeds or `timeout` passes.
pub async fn wait_ssh_banner(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let mut backoff = Backoff::new(timeout).with_max_delay(Duration::from_millis(250));
    loop {
        let attempt = backoff.remaining().min(Duration::from_secs(2));
        if !attempt.is_zero()
            && let Ok(banner) = read_ssh_banner(addr, attempt).await
        {
            return Ok(banner);
        }
        if !backoff.wait().await {
            return Err(BedError::Timeout {
                what: format!("SSH banner of {addr}"),
                after: timeout,
                log: String::new(),
            });
        }
    }
}
