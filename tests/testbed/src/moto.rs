//! A private moto server (AWS API) on a free loopback port.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{BedError, Result, read_log_tail};
use crate::paths::venv_dir;
use crate::poll::Backoff;
use crate::port::free_port;
use crate::process::{ChildGuard, spawn_guarded};

/// How to start moto.
#[derive(Debug, Clone)]
pub struct MotoOptions {
    /// Load moto's ~1300 built-in AMIs (`MOTO_EC2_LOAD_DEFAULT_AMIS`). Default `false`: the
    /// first EC2 call is then fast and tests register their own source images.
    pub load_default_amis: bool,
    /// Extra environment for moto_server (e.g. `MOTO_ENABLE_AMI_VALIDATION=true`).
    pub env: Vec<(String, String)>,
    /// How long moto may take to answer HTTP.
    pub start_timeout: Duration,
}

impl Default for MotoOptions {
    fn default() -> Self {
        MotoOptions { load_default_amis: false, env: Vec::new(), start_timeout: Duration::from_secs(30) }
    }
}

/// A running `moto_server`; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: ChildGuard,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const BIND_ATTEMPTS: usize = 5;

impl Moto {
    /// Starts moto with [`MotoOptions::default`].
    pub async fn start() -> Result<Moto> {
        Moto::start_with(MotoOptions::default()).await
    }

    /// Starts moto on a free port and waits until it answers HTTP.
    pub async fn start_with(options: MotoOptions) -> Result<Moto> {
        let server = venv_dir().join("bin").join("moto_server");
        if !server.is_file() {
            return Err(BedError::NotInstalled { what: "moto server".into(), path: server });
        }
        let dir = tempfile::Builder::new()
            .prefix("imgbake-moto-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for moto", e))?;
        let log = dir.path().join("moto.log");
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port()?;
            match start_once(&server, port, &log, &options).await {
                Ok(child) => {
                    return Ok(Moto { child, port, log, _dir: dir });
                }
                Err(StartError::PortTaken(e)) => last_error = Some(e),
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| BedError::Invalid("moto: no start attempt".into())))
    }

    /// Port moto listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for AWS SDKs.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Process id of moto_server.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything moto printed so far (request log and tracebacks).
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Wipes all state in moto (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let (status, body) = crate::http::request(addr, "POST", "/moto-api/reset", Duration::from_secs(30)).await?;
        if status != 200 {
            return Err(BedError::Http {
                method: "POST",
                url: format!("{}/moto-api/reset", self.endpoint()),
                detail: format!("status {status}: {}", crate::error::tail(&body, 500)),
            });
        }
        Ok(())
    }
}

enum StartError {
    PortTaken(BedError),
    Fatal(BedError),
}

async fn start_once(server: &Path, port: u16, log: &Path, options: &MotoOptions) -> Result<ChildGuard, StartError> {
    let fatal = StartError::Fatal;
    let out = std::fs::File::create(log).map_err(|e| fatal(BedError::io(format!("creating {}", log.display()), e)))?;
    let err = out.try_clone().map_err(|e| fatal(BedError::io(format!("opening {}", log.display()), e)))?;
    let mut cmd = Command::new(server);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_EC2_LOAD_DEFAULT_AMIS", if options.load_default_amis { "true" } else { "false" })
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let what = format!("moto server on 127.0.0.1:{port}");
    let mut child = spawn_guarded(&what, cmd).await.map_err(fatal)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut backoff = Backoff::new(options.start_timeout);
    loop {
        if let Some(status) = child.try_status().map_err(fatal)? {
            let text = read_log_tail(log, 4000);
            let e = BedError::ExitedEarly { what, status: status.to_string(), log: text.clone() };
            return Err(if text.contains("Address already in use") {
                StartError::PortTaken(e)
            } else {
                StartError::Fatal(e)
            });
        }
        let probe = backoff.remaining().min(Duration::from_secs(2));
        // moto's state dump is JSON; another program that grabbed the port would not answer so.
        if let Ok((200, body)) = crate::http::request(addr, "GET", "/moto-api/data.json", probe).await
            && body.trim_start().starts_with('{')
            && child.try_status().map_err(fatal)?.is_none()
        {
            return Ok(child);
        }
        if !backoff.wait().await {
            return Err(fatal(BedError::Timeout { what, after: options.start_timeout, log: read_log_tail(log, 4000) }));
        }
    }
}
