//! Just enough HTTP/1.1 to reset moto and see that it answers (no client stack needed).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{BedError, Result};

/// Sends a body-less request with `Connection: close` and returns the status code and body.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(BedError::Http { method, url, detail: e.to_string() });
        }
        Err(_) => {
            return Err(BedError::Http { method, url, detail: format!("no complete response within {timeout:?}") });
        }
    };
    let text = String::from_utf8_lossy(&response);
    let status =
        text.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok()).ok_or_else(|| BedError::Http {
            method,
            url: url.clone(),
            detail: format!("not an HTTP response: {:?}", text.chars().take(80).collect::<String>()),
        })?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}
