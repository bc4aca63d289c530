//! A private vcsim (govmomi's vCenter simulator, our `tests/bed/vcsim/main.go`) on loopback,
//! serving the vSphere SOAP API over TLS with a certificate made per server.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::error::{BedError, Result, read_log_tail};
use crate::paths::cache_dir;
use crate::process::{ChildGuard, spawn_guarded};

/// How to start vcsim.
#[derive(Debug, Clone)]
pub struct VcsimOptions {
    /// The only user name `Login` accepts. Default `user`.
    pub username: String,
    /// Its password. Default `pass`.
    pub password: String,
    /// VMs powered off and marked as templates before vcsim serves (names such as
    /// `DC0_H0_VM1`), for "template → VM → template" chains. Default none.
    pub templates: Vec<String>,
    /// How long certificate generation and vcsim's start may take together.
    pub start_timeout: Duration,
    /// Play cloud-init for a bed sshd: on each power-on, write the host key of the VM's
    /// `guestinfo.userdata` to the first file and append its login key to the second.
    pub cloud_init: Option<(PathBuf, PathBuf)>,
}

impl Default for VcsimOptions {
    fn default() -> Self {
        VcsimOptions {
            username: "user".into(),
            password: "pass".into(),
            templates: Vec::new(),
            start_timeout: Duration::from_secs(30),
            cloud_init: None,
        }
    }
}

/// A running vcsim (vCenter 6.5 API, govmomi 0.24's default VPX inventory: see
/// `tests/bed/README.md`); killed on drop, its datastore directories with it.
#[derive(Debug)]
pub struct Vcsim {
    child: ChildGuard,
    port: u16,
    username: String,
    password: String,
    dir: tempfile::TempDir,
}

/// The vcsim binary that `tests/bed/install.sh` builds.
pub fn vcsim_binary() -> PathBuf {
    cache_dir().join("vcsim").join("vcsim")
}

impl Vcsim {
    /// Starts vcsim with [`VcsimOptions::default`].
    pub async fn start() -> Result<Vcsim> {
        Vcsim::start_with(VcsimOptions::default()).await
    }

    /// Makes a certificate for 127.0.0.1, starts vcsim on a port the kernel picks and returns
    /// once vcsim announced it (it prints `LISTEN <url>` when it already serves).
    pub async fn start_with(options: VcsimOptions) -> Result<Vcsim> {
        let binary = vcsim_binary();
        if !binary.is_file() {
            return Err(BedError::NotInstalled {
                what: "vcsim (built from tests/bed/vcsim/main.go)".into(),
                path: binary,
            });
        }
        let deadline = tokio::time::Instant::now() + options.start_timeout;
        let dir = tempfile::Builder::new()
            .prefix("imgbake-vcsim-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for vcsim", e))?;
        let d = dir.path();
        tokio::time::timeout_at(deadline, make_certificate(d)).await.map_err(|_| BedError::Timeout {
            what: "openssl making vcsim's certificate".into(),
            after: options.start_timeout,
            log: String::new(),
        })??;
        // vcsim puts its datastore directories under TMPDIR: here they go with the temp dir,
        // also when vcsim is SIGKILLed.
        let tmp = d.join("tmp");
        std::fs::create_dir(&tmp).map_err(|e| BedError::io(format!("creating {}", tmp.display()), e))?;
        let requests = d.join("requests.log");
        std::fs::File::create(&requests).map_err(|e| BedError::io(format!("creating {}", requests.display()), e))?;
        let log = d.join("vcsim.log");
        let stderr = std::fs::File::create(&log).map_err(|e| BedError::io(format!("creating {}", log.display()), e))?;
        let (reader, writer) = std::io::pipe().map_err(|e| BedError::io("creating a pipe for vcsim's stdout", e))?;

        let mut cmd = Command::new(&binary);
        cmd.args(["-listen", "127.0.0.1:0", "-username", &options.username, "-password", &options.password])
            .arg("-cert")
            .arg(d.join("cert.pem"))
            .arg("-key")
            .arg(d.join("key.pem"))
            .arg("-requests")
            .arg(&requests)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr);
        if !options.templates.is_empty() {
            cmd.arg("-template").arg(options.templates.join(","));
        }
        if let Some((host_key, authorized_keys)) = &options.cloud_init {
            cmd.arg("-cloud-init-host-key").arg(host_key).arg("-cloud-init-authorized-keys").arg(authorized_keys);
        }
        let what = "vcsim on 127.0.0.1".to_owned();
        let mut child = spawn_guarded(&what, cmd).await?;
        let line = match tokio::time::timeout_at(deadline, read_first_line(reader.into())).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(BedError::io("reading vcsim's stdout", e)),
            Err(_) => {
                return Err(BedError::Timeout { what, after: options.start_timeout, log: read_log_tail(&log, 4000) });
            }
        };
        let port = line
            .trim()
            .strip_prefix("LISTEN https://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix("/sdk"))
            .and_then(|port| port.parse::<u16>().ok());
        let Some(port) = port else {
            // EOF (empty line) means vcsim ended: say how, with its log.
            let status = child.wait_exit(Duration::from_secs(2)).await.map(|s| s.to_string());
            return Err(BedError::ExitedEarly {
                what,
                status: status.unwrap_or_else(|_| format!("printed {line:?} instead of LISTEN <url>")),
                log: read_log_tail(&log, 4000),
            });
        };
        Ok(Vcsim { child, port, username: options.username, password: options.password, dir })
    }

    /// `https://127.0.0.1:PORT/sdk`, the SOAP endpoint.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/sdk", self.port)
    }

    /// Port vcsim listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name `Login` accepts (no other).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Its password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// PEM file of vcsim's self-signed certificate (CN and IP SAN 127.0.0.1, DNS SAN localhost,
    /// not a CA): trusting it alone makes the secure path work without `insecure`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Process id of vcsim.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The SOAP method of every request so far, in arrival order (`RetrieveServiceContent`,
    /// `Login`, `CloneVM_Task`, ...). A request is logged before it is answered.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Forgets the requests logged so far (to count the calls of one phase).
    pub fn clear_requests(&self) -> Result<()> {
        let path = self.dir.path().join("requests.log");
        // vcsim appends (O_APPEND): after truncation its next line lands at offset 0.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .map_err(|e| BedError::io(format!("truncating {}", path.display()), e))
    }

    /// What vcsim printed on stderr (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("vcsim.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// The first line on a pipe ("" at EOF), read without blocking the runtime.
async fn read_first_line(fd: OwnedFd) -> std::io::Result<String> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut line = String::new();
    tokio::io::BufReader::new(pipe).read_line(&mut line).await?;
    Ok(line)
}

/// A self-signed ECDSA P-256 certificate for 127.0.0.1 in `dir/cert.pem` + `dir/key.pem`.
///
/// Not a CA (`CA:FALSE`): rustls/webpki refuse a CA certificate as the server's own
/// (`CaUsedAsEndEntity`), while OpenSSL, Go and webpki all accept a self-signed leaf that is
/// itself the trusted certificate. The config is ours, not the system's openssl.cnf.
async fn make_certificate(dir: &Path) -> Result<()> {
    let config = dir.join("openssl.cnf");
    let text = "[req]\n\
                distinguished_name = dn\n\
                x509_extensions = ext\n\
                prompt = no\n\
                [dn]\n\
                CN = 127.0.0.1\n\
                [ext]\n\
                basicConstraints = critical, CA:FALSE\n\
                keyUsage = critical, digitalSignature\n\
                extendedKeyUsage = serverAuth\n\
                subjectAltName = IP:127.0.0.1, DNS:localhost\n\
                subjectKeyIdentifier = hash\n";
    std::fs::write(&config, text).map_err(|e| BedError::io(format!("writing {}", config.display()), e))?;
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BedError::NotInstalled { what: "openssl (Debian openssl)".into(), path: "openssl".into() }
        } else {
            BedError::io("running openssl", e)
        }
    })?;
    if !out.status.success() {
        return Err(BedError::Command {
            command: format!("openssl req -x509 -config {}", config.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
