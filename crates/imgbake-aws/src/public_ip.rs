//! The caller's public IPv4 address (the default SSH source of the temporary security group), from a
//! "what is my IP" service answering the address as plain text (default
//! `http://checkip.amazonaws.com/`).
//!
//! Plain HTTP over a raw socket keeps this free of a second HTTP stack. A forged answer could only
//! open the SSH port to another address; the host key is pinned and login needs the build's key.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default service.
pub const DEFAULT_URL: &str = "http://checkip.amazonaws.com/";

/// Ask `url` (`http://host[:port]/path`) for this machine's public IPv4 address.
pub async fn lookup(url: &str, timeout: Duration) -> Result<Ipv4Addr, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: imgbake\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("asking {url}: {e}"))?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await.map_err(|e| format!("reading {url}: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("{url} did not answer within {timeout:?}"))??;
    parse(&String::from_utf8_lossy(&buf)).map_err(|e| format!("{url}: {e}"))
}

fn parse(answer: &str) -> Result<Ipv4Addr, String> {
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered `{status}`"));
    }
    body.trim().parse().map_err(|_| format!("answered `{}`, not an IPv4 address", body.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asks_a_local_service() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /ip HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n203.0.113.9\n").await.unwrap();
        });
        let ip = lookup(&format!("http://{addr}/ip"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(ip, Ipv4Addr::new(203, 0, 113, 9));
        server.await.unwrap();
        assert!(parse("HTTP/1.1 503 Busy\r\n\r\n").unwrap_err().contains("503"));
        assert!(parse("HTTP/1.1 200 OK\r\n\r\n<html>").unwrap_err().contains("not an IPv4"));
    }
}
