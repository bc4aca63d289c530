//! A private nginx (Debian's, with the WebDAV module) on a free loopback port, serving a temp
//! directory that accepts `PUT`, `DELETE` and `MKCOL`: the bed's stand-in for an
//! Artifactory-style HTTP artifact store and for a Vagrant box catalog.
//!
//! nginx ignores `X-Checksum-*` headers (it stores whatever it receives), so clients must
//! verify checksums themselves; tests can corrupt a stored file through [`Nginx::root`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{BedError, Result, read_log_tail};
use crate::poll::Backoff;
use crate::port::free_port;
use crate::process::{ChildGuard, spawn_guarded};

const NGINX: &str = "/usr/sbin/nginx";
const MIME_TYPES: &str = "/etc/nginx/mime.types";
const BIND_ATTEMPTS: usize = 5;
/// Answered by nginx itself (no file, no auth): proves that *our* nginx holds the port.
const READY_PATH: &str = "/__imgbake_bed_ready";
const READY_BODY: &str = "imgbake-nginx-bed";

/// How to start nginx.
#[derive(Debug, Clone)]
pub struct NginxOptions {
    /// Require HTTP basic auth with this user and password for every request. Default none.
    pub basic_auth: Option<(String, String)>,
    /// Largest accepted request body in bytes (`client_max_body_size`); `0` means no limit.
    /// Default `0` (nginx's own default of 1 MiB would refuse artifacts with 413).
    pub max_body_size: u64,
    /// Worker processes. Default 2.
    pub workers: usize,
    /// Extra lines inside the `server { }` block (e.g. `"limit_rate 1m;"`).
    pub extra_server_config: Vec<String>,
    /// How long nginx may take to answer HTTP.
    pub start_timeout: Duration,
}

impl Default for NginxOptions {
    fn default() -> Self {
        NginxOptions {
            basic_auth: None,
            max_body_size: 0,
            workers: 2,
            extra_server_config: Vec::new(),
            start_timeout: Duration::from_secs(15),
        }
    }
}

/// A running private nginx serving [`Nginx::root`] read-write over WebDAV; killed on drop
/// (its temp dir, stored files included, is removed).
#[derive(Debug)]
pub struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    options: NginxOptions,
    child: Option<ChildGuard>,
}

impl Nginx {
    /// Starts nginx with [`NginxOptions::default`].
    pub async fn start_default() -> Result<Nginx> {
        Nginx::start(NginxOptions::default()).await
    }

    /// Writes the config and starts nginx on a free port; returns once it answers HTTP.
    pub async fn start(options: NginxOptions) -> Result<Nginx> {
        if !Path::new(NGINX).is_file() {
            return Err(BedError::NotInstalled { what: "nginx (Debian `nginx`)".into(), path: NGINX.into() });
        }
        if let Some((user, _)) = &options.basic_auth
            && (user.contains(':') || user.contains('\n'))
        {
            return Err(BedError::Invalid(format!(
                "nginx basic auth: user name {user:?} may not hold ':' or newlines"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("imgbake-nginx-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for nginx", e))?;
        // Body temp files live next to the served root (same filesystem), so nginx's rename of
        // a finished PUT into place is atomic: a half-received body never shows under its name.
        for sub in ["root", "tmp", "logs"] {
            std::fs::create_dir(dir.path().join(sub))
                .map_err(|e| BedError::io(format!("creating nginx's {sub} dir"), e))?;
        }
        if let Some((user, password)) = &options.basic_auth {
            // nginx reads the `{PLAIN}` scheme natively: no openssl run, no hashing here.
            write_file(&dir.path().join("htpasswd"), &format!("{user}:{{PLAIN}}{password}\n"))?;
        }
        let mut nginx = Nginx { dir, port: 0, options, child: None };
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            nginx.port = free_port()?;
            nginx.write_config()?;
            match nginx.launch().await {
                Ok(()) => return Ok(nginx),
                // Someone took the port between free_port() and nginx's bind: try another.
                Err(e) if nginx.error_log().contains("Address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| BedError::Invalid("nginx: no start attempt".into())))
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path();
        // As root, workers would otherwise run as `nobody` and fail to write the root (PUT → 500).
        // SAFETY: plain syscall.
        let user = if unsafe { libc::geteuid() } == 0 { "user root;\n" } else { "" };
        let types = if Path::new(MIME_TYPES).is_file() {
            format!("include {MIME_TYPES};")
        } else {
            // Vagrant wants its catalog as JSON; everything else is a byte stream.
            "types { application/json json; text/plain txt; text/html html; }".to_owned()
        };
        let auth = if self.options.basic_auth.is_some() {
            format!("auth_basic \"imgbake bed\";\n        auth_basic_user_file {};", d.join("htpasswd").display())
        } else {
            String::new()
        };
        let extra = self.options.extra_server_config.join("\n        ");
        let config = format!(
            "{user}worker_processes {workers};\n\
             pid {pid};\n\
             error_log {error_log} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   {types}\n\
             \x20   default_type application/octet-stream;\n\
             \x20   log_format bed '$remote_addr \"$request\" $status $body_bytes_sent range=\"$http_range\" user=\"$remote_user\"';\n\
             \x20   access_log {access_log} bed;\n\
             \x20   client_body_temp_path {tmp}/body;\n\
             \x20   proxy_temp_path {tmp}/proxy;\n\
             \x20   fastcgi_temp_path {tmp}/fastcgi;\n\
             \x20   uwsgi_temp_path {tmp}/uwsgi;\n\
             \x20   scgi_temp_path {tmp}/scgi;\n\
             \x20   sendfile on;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       server_name localhost;\n\
             \x20       root {root};\n\
             \x20       client_max_body_size {max_body};\n\
             \x20       dav_methods PUT DELETE MKCOL;\n\
             \x20       create_full_put_path on;\n\
             \x20       dav_access user:rw group:r all:r;\n\
             \x20       {auth}\n\
             \x20       {extra}\n\
             \x20       location = {READY_PATH} {{ auth_basic off; default_type text/plain; return 200 \"{READY_BODY}\"; }}\n\
             \x20   }}\n\
             }}\n",
            workers = self.options.workers.max(1),
            pid = d.join("nginx.pid").display(),
            error_log = d.join("logs/error.log").display(),
            access_log = d.join("logs/access.log").display(),
            tmp = d.join("tmp").display(),
            port = self.port,
            root = d.join("root").display(),
            max_body = self.options.max_body_size,
        );
        write_file(&d.join("nginx.conf"), &config)
    }

    async fn launch(&mut self) -> Result<()> {
        let d = self.dir.path();
        let error_log = d.join("logs/error.log");
        // Judge each attempt by its own log.
        write_file(&error_log, "")?;
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            // -e: the compiled-in /var/log/nginx/error.log is used before the config is read.
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let what = format!("nginx on 127.0.0.1:{}", self.port);
        let mut child = spawn_guarded(&what, cmd).await?;
        let addr = self.addr();
        let mut backoff = Backoff::new(self.options.start_timeout);
        loop {
            if let Some(status) = child.try_status()? {
                return Err(BedError::ExitedEarly {
                    what,
                    status: status.to_string(),
                    log: read_log_tail(&error_log, 4000),
                });
            }
            let probe = backoff.remaining().min(Duration::from_secs(2));
            if let Ok((200, body)) = crate::http::request(addr, "GET", READY_PATH, probe).await
                && body == READY_BODY
                && child.try_status()?.is_none()
            {
                self.child = Some(child);
                return Ok(());
            }
            if !backoff.wait().await {
                return Err(BedError::Timeout {
                    what,
                    after: self.options.start_timeout,
                    log: read_log_tail(&error_log, 4000),
                });
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The served directory: `PUT /a/b` stores `root()/a/b`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The basic-auth user and password, if any.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.options.basic_auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Access log lines so far, one per finished request:
    /// `ADDR "METHOD /path HTTP/1.1" STATUS BODY_BYTES range="Range header" user="USER"`.
    /// Readiness probes of the bed itself are left out.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read(self.dir.path().join("logs/access.log"))
            .map(|b| {
                String::from_utf8_lossy(&b).lines().filter(|l| !l.contains(READY_PATH)).map(str::to_owned).collect()
            })
            .unwrap_or_default()
    }

    /// nginx's error log so far (level info).
    pub fn error_log(&self) -> String {
        std::fs::read(self.dir.path().join("logs/error.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether nginx is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_status(), Ok(None)),
            None => false,
        }
    }

    /// Kills nginx (master and workers) at once; connections are refused until
    /// [`Nginx::start_again`]. Stored files stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts nginx again after [`Nginx::stop`], on the same port with the same files.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(BedError::Invalid(format!("nginx on 127.0.0.1:{} is already running", self.port)));
        }
        self.launch().await
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BedError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 exchange with `Connection: close`; returns the whole response text.
    async fn exchange(nginx: &Nginx, head: &str, body: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(nginx.addr()).await.expect("connect to nginx");
        let request = format!("{head}Host: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        stream.write_all(request.as_bytes()).await.expect("send head");
        stream.write_all(body).await.expect("send body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read response");
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn start_or_skip(options: NginxOptions) -> Option<Nginx> {
        match Nginx::start(options).await {
            Ok(n) => Some(n),
            Err(BedError::NotInstalled { .. }) => {
                eprintln!("nginx is not installed: skipped");
                None
            }
            Err(e) => panic!("starting nginx: {e}"),
        }
    }

    #[tokio::test]
    async fn put_get_head_delete_and_mime_types() {
        let test = async {
            let Some(nginx) = start_or_skip(NginxOptions::default()).await else { return };
            let put = exchange(&nginx, "PUT /a/b/box.json HTTP/1.1\r\n", b"{\"x\":1}").await;
            assert!(put.starts_with("HTTP/1.1 201"), "{put}");
            assert_eq!(std::fs::read(nginx.root().join("a/b/box.json")).expect("stored file"), b"{\"x\":1}");
            let get = exchange(&nginx, "GET /a/b/box.json HTTP/1.1\r\n", b"").await;
            assert!(get.starts_with("HTTP/1.1 200"), "{get}");
            assert!(get.contains("Content-Type: application/json"), "{get}");
            assert!(get.ends_with("{\"x\":1}"), "{get}");
            let range = exchange(&nginx, "GET /a/b/box.json HTTP/1.1\r\nRange: bytes=2-\r\n", b"").await;
            assert!(range.starts_with("HTTP/1.1 206"), "{range}");
            let delete = exchange(&nginx, "DELETE /a/b/box.json HTTP/1.1\r\n", b"").await;
            assert!(delete.starts_with("HTTP/1.1 204"), "{delete}");
            let missing = exchange(&nginx, "HEAD /a/b/box.json HTTP/1.1\r\n", b"").await;
            assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
            // nginx writes a request's line when it finalizes the request, which may come after the
            // client has its answer (and out of order across workers): wait for all five.
            let mut log = nginx.access_log();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while log.len() < 5 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                log = nginx.access_log();
            }
            assert_eq!(log.len(), 5, "{log:?}");
            assert!(log.iter().any(|l| l.contains("\"PUT /a/b/box.json HTTP/1.1\" 201")), "{log:?}");
            assert!(log.iter().any(|l| l.contains("206") && l.contains("range=\"bytes=2-\"")), "{log:?}");
        };
        tokio::time::timeout(Duration::from_secs(60), test).await.expect("test timed out");
    }

    #[tokio::test]
    async fn basic_auth_and_big_bodies() {
        let test = async {
            let options = NginxOptions { basic_auth: Some(("ci".into(), "s3cret".into())), ..Default::default() };
            let Some(mut nginx) = start_or_skip(options).await else { return };
            let anonymous = exchange(&nginx, "PUT /f HTTP/1.1\r\n", b"x").await;
            assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
            // base64("ci:s3cret")
            let big = vec![7u8; 3 << 20];
            let authed = exchange(&nginx, "PUT /f HTTP/1.1\r\nAuthorization: Basic Y2k6czNjcmV0\r\n", &big).await;
            assert!(authed.starts_with("HTTP/1.1 201"), "{authed}");
            assert_eq!(std::fs::metadata(nginx.root().join("f")).expect("stored").len(), big.len() as u64);
            nginx.stop();
            assert!(tokio::net::TcpStream::connect(nginx.addr()).await.is_err());
            nginx.start_again().await.expect("restart");
            let get = exchange(&nginx, "HEAD /f HTTP/1.1\r\nAuthorization: Basic Y2k6czNjcmV0\r\n", b"").await;
            assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        };
        tokio::time::timeout(Duration::from_secs(60), test).await.expect("test timed out");
    }
}
