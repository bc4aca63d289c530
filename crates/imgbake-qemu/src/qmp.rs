//! A minimal QMP (QEMU Machine Protocol) client: one connection per command, which is all a build
//! needs (reset, power button, quit) and keeps no connection state to go stale across reboots.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::QemuError;

/// Run one QMP command and return its `return` value. Asynchronous events on the way are skipped.
pub async fn execute(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, QemuError> {
    let err = |detail: String| QemuError::Qmp { command: command.to_owned(), socket: socket.to_path_buf(), detail };
    let exchange = async {
        let stream = UnixStream::connect(socket).await.map_err(|e| err(format!("connect: {e}")))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = next_message(&mut lines).await.map_err(&err)?;
        if greeting.get("QMP").is_none() {
            return Err(err(format!("unexpected greeting {greeting}")));
        }
        send(&mut write, &json!({ "execute": "qmp_capabilities" })).await.map_err(&err)?;
        reply(&mut lines).await.map_err(&err)?;
        let mut message = json!({ "execute": command });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        send(&mut write, &message).await.map_err(&err)?;
        reply(&mut lines).await.map_err(&err)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| err(format!("no answer within {timeout:?}")))?
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

async fn next_message(lines: &mut Lines) -> Result<Value, String> {
    let line = lines
        .next_line()
        .await
        .map_err(|e| format!("read: {e}"))?
        .ok_or_else(|| "QEMU closed the QMP connection".to_owned())?;
    serde_json::from_str(&line).map_err(|e| format!("bad JSON {line:?}: {e}"))
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, message: &Value) -> Result<(), String> {
    let mut text = message.to_string();
    text.push('\n');
    write.write_all(text.as_bytes()).await.map_err(|e| format!("write: {e}"))
}

async fn reply(lines: &mut Lines) -> Result<Value, String> {
    loop {
        let message = next_message(lines).await?;
        if let Some(value) = message.get("return") {
            return Ok(value.clone());
        }
        if let Some(error) = message.get("error") {
            return Err(format!("QEMU refused: {error}"));
        }
    }
}
