//! Debian's Chromium, headless, for tests that check a page in a real browser.
//!
//! Every run has its own profile directory (nothing of a user's Chromium is read or written), no
//! sandbox (tests run as root), no GPU, and a hard timeout after which its whole process group —
//! Chromium forks a zygote, renderers and a GPU process — is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{BedError, Result, tail};
use crate::process::spawn_guarded;

/// Where Debian installs Chromium's launcher.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The Chromium binary: `/usr/bin/chromium`, else the first `chromium` on `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    if Path::new(CHROMIUM).is_file() {
        return Some(CHROMIUM.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|p| p.is_file())
}

/// A headless Chromium with its own profile, removed on drop.
#[derive(Debug)]
pub struct Chromium {
    binary: PathBuf,
    dir: tempfile::TempDir,
    timeout: Duration,
}

impl Chromium {
    /// Finds Chromium; every run is killed (with all its processes) after 60 s.
    pub fn new() -> Result<Chromium> {
        let binary = chromium_binary().ok_or_else(|| BedError::NotInstalled {
            what: "chromium (Debian `chromium`; scripts/install-packages.sh bed installs it)".into(),
            path: CHROMIUM.into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("imgbake-chromium-")
            .tempdir()
            .map_err(|e| BedError::io("creating a temp dir for chromium", e))?;
        Ok(Chromium { binary, dir, timeout: Duration::from_secs(60) })
    }

    /// The same, with another hard timeout per run.
    pub fn with_timeout(mut self, timeout: Duration) -> Chromium {
        self.timeout = timeout;
        self
    }

    /// `Chromium 156.0.8078.114 built on Debian ...`.
    pub async fn version(&self) -> Result<String> {
        Ok(self.run(&["--version"]).await?.trim().to_string())
    }

    /// Loads the local file `page` headless and returns its DOM once loaded (after the `load`
    /// event, so scripts of the page have run). Pages may read other local files
    /// (`--allow-file-access-from-files`): a test page can frame a report and inspect its layout.
    pub async fn dump_dom(&self, page: &Path) -> Result<String> {
        let page = std::path::absolute(page).map_err(|e| BedError::io(format!("resolving {}", page.display()), e))?;
        let url = format!("file://{}", page.display());
        let profile = format!("--user-data-dir={}", self.dir.path().join("profile").display());
        self.run(&[
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--allow-file-access-from-files",
            "--window-size=1280,1000",
            &profile,
            "--dump-dom",
            &url,
        ])
        .await
    }

    /// Runs Chromium with `args`; its stdout, or an error with its output when it fails or
    /// outlives the timeout (then its process group is killed first).
    async fn run(&self, args: &[&str]) -> Result<String> {
        let out_path = self.dir.path().join("stdout");
        let err_path = self.dir.path().join("stderr");
        let open =
            |p: &Path| std::fs::File::create(p).map_err(|e| BedError::io(format!("creating {}", p.display()), e));
        let mut cmd = Command::new(&self.binary);
        // No D-Bus session here: Chromium logs errors about it but works.
        cmd.args(args).stdin(Stdio::null()).stdout(open(&out_path)?).stderr(open(&err_path)?);
        let what = format!("chromium {}", args.last().copied().unwrap_or_default());
        let mut child = spawn_guarded(what.clone(), cmd).await?;
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        match child.wait_exit(self.timeout).await {
            Ok(status) if status.success() => Ok(read(&out_path)),
            Ok(status) => Err(BedError::Command {
                command: what,
                status: status.to_string(),
                stderr: tail(&read(&err_path), 3000),
            }),
            Err(BedError::Timeout { .. }) => {
                child.kill();
                Err(BedError::Timeout {
                    what: format!("`{what}` to finish (killed with its process group)"),
                    after: self.timeout,
                    log: tail(&read(&err_path), 3000),
                })
            }
            Err(e) => Err(e),
        }
    }
}
