//! Every run of a process in these tests ends under a hard timeout: on expiry it is killed and the
//! test fails with what it printed, instead of hanging the suite.

// Each test crate uses part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Long enough for a build on the bed; a command that hangs fails the test after this.
pub const LIMIT: Duration = Duration::from_secs(180);

fn collect(mut r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, t)
}

fn printed(out: &Mutex<Vec<u8>>, err: &Mutex<Vec<u8>>) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.lock().unwrap()),
        String::from_utf8_lossy(&err.lock().unwrap())
    )
}

/// `output()` with a hard timeout.
pub trait Watched {
    fn output_within(&mut self, limit: Duration) -> Output;
    fn watched(&mut self) -> Output {
        self.output_within(LIMIT)
    }
}

impl Watched for std::process::Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        let mut child = self.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (out, t1) = collect(child.stdout.take().unwrap());
        let (err, t2) = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = (t1.join(), t2.join());
                panic!("{self:?} did not exit within {limit:?}; killed it. It printed:\n{}", printed(&out, &err));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = (t1.join(), t2.join());
        let (stdout, stderr) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
        Output { status, stdout, stderr }
    }
}

/// `output().await` with a hard timeout, for tokio commands.
pub async fn watched_async(c: &mut tokio::process::Command) -> Output {
    watched_async_within(c, LIMIT).await
}

pub async fn watched_async_within(c: &mut tokio::process::Command, limit: Duration) -> Output {
    let mut child =
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    let pump = |r: Option<Reader>, buf: Arc<Mutex<Vec<u8>>>| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let Some(mut r) = r else { return };
            let mut chunk = [0u8; 8192];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let t1 = pump(child.stdout.take().map(|s| Box::new(s) as Reader), out.clone());
    let t2 = pump(child.stderr.take().map(|s| Box::new(s) as Reader), err.clone());
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => {
            let _ = (t1.await, t2.await);
            let (stdout, stderr) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
            Output { status: status.unwrap(), stdout, stderr }
        }
        Err(_) => {
            let _ = child.kill().await;
            panic!("{c:?} did not exit within {limit:?}; killed it. It printed:\n{}", printed(&out, &err));
        }
    }
}
