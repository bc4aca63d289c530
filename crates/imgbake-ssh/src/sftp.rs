//! File transfers over the SFTP subsystem: single files and whole trees, keeping modes, with many
//! requests in flight and large packets (the defaults of SFTP clients are much slower).

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{StreamExt, TryStreamExt};
use imgbake_core::communicator::CommError;
use imgbake_core::event::EventSink;
use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::config::SshConfig;
use crate::progress::Progress;
use crate::session::{Session, describe_ssh_error};

/// Local read / remote write chunk: big enough to keep all write requests of a file in flight.
const CHUNK: usize = 8 << 20;

/// Files of a directory sent at once. A small file costs round trips (open, write, close, mode),
/// not bandwidth: with many in flight on one session the server is never idle waiting for us.
const FILES_IN_FLIGHT: usize = 64;

/// Read buffers of the files in flight together, at most (a few large files must not hold
/// `FILES_IN_FLIGHT` chunks of memory).
const BUFFERED: usize = 64 << 20;

/// An open SFTP session and a flag that turns true when its channel has closed (the SSH session died
/// or the server ended the subsystem): pending requests would otherwise only fail at their timeout.
pub(crate) struct Sftp {
    pub session: SftpSession,
    closed: watch::Receiver<bool>,
    target: String,
    /// OpenSSH's sftp-server: SSH_FXP_SYMLINK's paths go in reversed order.
    openssh: bool,
}

/// Why SFTP could not be opened.
pub(crate) enum OpenError {
    /// The server has no SFTP subsystem: use the exec fallback.
    Unsupported(String),
    /// Anything else.
    Comm(CommError),
}

impl Sftp {
    /// Open the SFTP subsystem on `session`.
    pub(crate) async fn open(session: &Session, cfg: &SshConfig) -> Result<Sftp, OpenError> {
        let target = cfg.target();
        let lost = |e: russh::Error| {
            OpenError::Comm(CommError::Disconnected { target: target.clone(), reason: describe_ssh_error(&e) })
        };
        let mut channel = session.handle.channel_open_session().await.map_err(lost)?;
        channel.request_subsystem(true, "sftp").await.map_err(lost)?;
        // Wait for the answer ourselves: a refusal would otherwise look like a hung SFTP init.
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    return Err(OpenError::Unsupported("the server refused the sftp subsystem".into()));
                }
                Some(ChannelMsg::Close | ChannelMsg::Eof) | None => {
                    return Err(OpenError::Unsupported(
                        "the channel closed when the sftp subsystem was asked for".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        let (tx, closed) = watch::channel(false);
        let stream = EofWatch { inner: channel.into_stream(), tx };
        let sftp_cfg = russh_sftp::client::Config {
            max_packet_len: cfg.sftp_packet_len,
            max_write_packet_len: cfg.sftp_packet_len,
            max_concurrent_reads: cfg.sftp_requests_in_flight.max(1),
            max_concurrent_writes: cfg.sftp_requests_in_flight.max(1),
            request_timeout_secs: 60,
        };
        let mut closed_rx = closed.clone();
        let session_is_openssh = session.shared.is_openssh();
        tokio::select! {
            s = SftpSession::new_with_config(stream, sftp_cfg) => match s {
                Ok(session) => Ok(Sftp { session, closed, target, openssh: session_is_openssh }),
                Err(e) => Err(OpenError::Unsupported(format!("SFTP init failed: {e}"))),
            },
            // Some servers accept the request, then fail to start their sftp-server program (dropbear
            // without one): the channel closes at once.
            _ = closed_rx.wait_for(|c| *c) => Err(OpenError::Unsupported(
                "the sftp subsystem ended at once (no sftp-server program on the server?)".into(),
            )),
        }
    }

    /// `true` once the channel under this session has closed.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Run a transfer, failing promptly with `Disconnected` if the channel closes under it.
    async fn guarded<T>(&self, fut: impl Future<Output = Result<T, CommError>>) -> Result<T, CommError> {
        let mut closed = self.closed.clone();
        tokio::select! {
            r = fut => r,
            _ = closed.wait_for(|c| *c) => Err(CommError::Disconnected {
                target: self.target.clone(),
                reason: "the SFTP channel closed during a transfer".into(),
            }),
        }
    }

    fn remote_err(&self, path: &str, e: SftpError) -> CommError {
        if self.is_closed() {
            return CommError::Disconnected {
                target: self.target.clone(),
                reason: format!("during SFTP on {path}: {e}"),
            };
        }
        let reason = match &e {
            SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => "no such file or directory".to_string(),
            SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => "permission denied".to_string(),
            other => other.to_string(),
        };
        CommError::RemoteFile { path: path.to_string(), reason }
    }

    /// Upload a file or a directory tree. Returns the bytes sent.
    ///
    /// Directories are made level by level, files sent many at once, links made last; every
    /// request of a level is in flight together, so a tree of many small files takes a few
    /// round trips per level instead of a few per file.
    pub(crate) async fn upload(&self, local: &Path, remote: &str, events: &EventSink) -> Result<u64, CommError> {
        let plan = crate::tree::local_tree(local)?;
        let progress = std::sync::Mutex::new(Progress::new(events, remote, plan.total_bytes()));
        self.guarded(async {
            // Directories stay writable for us while they are filled; exact modes are set last.
            for level in levels(&plan.dirs) {
                let made = level.iter().map(|d| self.mkdir_rel(remote, &d.rel, d.mode | 0o700));
                futures::future::try_join_all(made).await?;
            }
            let memory = tokio::sync::Semaphore::new(BUFFERED);
            let files: Vec<_> =
                plan.files.iter().map(|f| Box::pin(self.upload_entry(remote, f, &memory, &progress))).collect();
            futures::stream::iter(files).buffer_unordered(FILES_IN_FLIGHT).try_collect::<Vec<()>>().await?;
            let links: Vec<_> = plan.links.iter().map(|l| Box::pin(self.link(remote, l))).collect();
            futures::future::try_join_all(links).await?;
            for dir in plan.dirs.iter().rev().filter(|d| d.mode & 0o700 != 0o700) {
                let path = crate::tree::join_remote(remote, &dir.rel);
                let attrs = FileAttributes { permissions: Some(dir.mode), ..Default::default() };
                self.session.set_metadata(path.as_str(), attrs).await.map_err(|e| self.remote_err(&path, e))?;
            }
            Ok(())
        })
        .await?;
        let mut progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
        progress.finish();
        Ok(progress.done())
    }

    /// One file of a tree, holding its share of the read buffers while it is sent.
    async fn upload_entry(
        &self,
        remote: &str,
        file: &crate::tree::FileEntry,
        memory: &tokio::sync::Semaphore,
        progress: &std::sync::Mutex<Progress<'_>>,
    ) -> Result<(), CommError> {
        let path = crate::tree::join_remote(remote, &file.rel);
        let buffer = CHUNK.min(usize::try_from(file.len).unwrap_or(CHUNK)).max(1);
        let _held = memory.acquire_many(buffer as u32).await.map_err(|_| self.closed_err())?;
        self.upload_file(&file.local, &path, file.mode, buffer, progress).await
    }

    /// One symbolic link of a tree, made again where it was (replacing one an earlier upload made).
    /// OpenSSH's sftp-server (Linux, and Windows' OpenSSH) takes SSH_FXP_SYMLINK's two paths in the
    /// reverse of the draft standard's order; other servers get the standard order.
    async fn link(&self, remote: &str, l: &crate::tree::LinkEntry) -> Result<(), CommError> {
        let path = crate::tree::join_remote(remote, &l.rel);
        let target = l.target.as_str();
        let _ = self.session.remove_file(path.as_str()).await;
        let made = if self.openssh {
            self.session.symlink(target, path.as_str()).await
        } else {
            self.session.symlink(path.as_str(), target).await
        };
        made.map_err(|e| self.remote_err(&path, e))
    }

    fn closed_err(&self) -> CommError {
        CommError::Disconnected { target: self.target.clone(), reason: "the SFTP transfer was stopped".into() }
    }

    async fn mkdir_rel(&self, remote: &str, rel: &str, mode: u32) -> Result<(), CommError> {
        self.mkdir(&crate::tree::join_remote(remote, rel), mode).await
    }

    async fn mkdir(&self, path: &str, mode: u32) -> Result<(), CommError> {
        let attrs = FileAttributes { permissions: Some(mode), ..Default::default() };
        match self.session.create_dir(path).await {
            Ok(()) => {}
            // An existing directory is fine (uploading into it again); anything else is reported by setstat.
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Failure => {}
            Err(e) => return Err(self.remote_err(path, e)),
        }
        self.session.set_metadata(path, attrs).await.map_err(|e| self.remote_err(path, e))
    }

    async fn upload_file(
        &self,
        local: &Path,
        remote: &str,
        mode: u32,
        buffer: usize,
        progress: &std::sync::Mutex<Progress<'_>>,
    ) -> Result<(), CommError> {
        let local_err = |source| CommError::LocalFile { path: local.to_path_buf(), source };
        let mut src = tokio::fs::File::open(local).await.map_err(local_err)?;
        let mut dst = self.create(remote, mode).await?;
        let mut buf = vec![0u8; buffer];
        loop {
            let n = src.read(&mut buf).await.map_err(local_err)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).await.map_err(|e| self.remote_err(remote, e.into()))?;
            if let Ok(mut p) = progress.lock() {
                p.add(n as u64);
            }
        }
        self.finish(dst, remote, mode).await
    }

    /// Create (or truncate) `remote` for writing, with `mode`.
    async fn create(&self, remote: &str, mode: u32) -> Result<russh_sftp::client::fs::File, CommError> {
        let attrs = FileAttributes { permissions: Some(mode), ..Default::default() };
        self.session
            .open_with_flags_and_attributes(remote, OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE, attrs)
            .await
            .map_err(|e| self.remote_err(remote, e))
    }

    /// Close a file written with [`Sftp::create`] and give it exactly `mode`.
    async fn finish(&self, mut dst: russh_sftp::client::fs::File, remote: &str, mode: u32) -> Result<(), CommError> {
        // Waits for every write to be acknowledged, then closes the handle.
        dst.shutdown().await.map_err(|e| self.remote_err(remote, e.into()))?;
        // The create mode went through the server's umask: set it exactly.
        let attrs = FileAttributes { permissions: Some(mode), ..Default::default() };
        self.session.set_metadata(remote, attrs).await.map_err(|e| self.remote_err(remote, e))
    }

    /// Write `data` to `remote` with `mode`.
    pub(crate) async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), CommError> {
        self.guarded(async {
            let mut dst = self.create(remote, mode).await?;
            dst.write_all(data).await.map_err(|e| self.remote_err(remote, e.into()))?;
            self.finish(dst, remote, mode).await
        })
        .await
    }

    /// Download a file or a directory tree. `remote` itself may be a link; links inside the tree are skipped.
    pub(crate) async fn download(&self, remote: &str, local: &Path, events: &EventSink) -> Result<u64, CommError> {
        let meta = self.session.metadata(remote).await.map_err(|e| self.remote_err(remote, e))?;
        let mut progress = Progress::new(events, remote, None);
        self.guarded(async {
            if meta.is_dir() {
                self.download_dir(remote, local, &mut progress, 0).await
            } else {
                self.download_file(remote, local, meta.permissions.unwrap_or(0o644), &mut progress).await
            }
        })
        .await?;
        progress.finish();
        Ok(progress.done())
    }

    async fn download_dir(
        &self,
        remote: &str,
        local: &Path,
        progress: &mut Progress<'_>,
        depth: usize,
    ) -> Result<(), CommError> {
        if depth > crate::tree::MAX_DEPTH {
            return Err(CommError::RemoteFile {
                path: remote.into(),
                reason: format!("more than {} directory levels (a symbolic link loop?)", crate::tree::MAX_DEPTH),
            });
        }
        let meta = self.session.metadata(remote).await.map_err(|e| self.remote_err(remote, e))?;
        crate::tree::make_local_dir(local)?;
        let entries = self.session.read_dir(remote).await.map_err(|e| self.remote_err(remote, e))?;
        for entry in entries {
            let name = entry.file_name();
            crate::tree::check_remote_name(remote, &name)?;
            let path = crate::tree::join_remote(remote, &name);
            let target = local.join(&name);
            let meta = entry.metadata();
            // Links inside the tree are not followed: the machine decides where they point (out of the
            // tree, to a loop).
            if meta.is_symlink() {
                continue;
            }
            if meta.is_dir() {
                Box::pin(self.download_dir(&path, &target, progress, depth + 1)).await?;
            } else if meta.is_regular() {
                self.download_file(&path, &target, meta.permissions.unwrap_or(0o644), progress).await?;
            }
        }
        crate::tree::set_local_mode(local, meta.permissions.unwrap_or(0o755))
    }

    async fn download_file(
        &self,
        remote: &str,
        local: &Path,
        mode: u32,
        progress: &mut Progress<'_>,
    ) -> Result<(), CommError> {
        let local_err = |source| CommError::LocalFile { path: local.to_path_buf(), source };
        let mut src = self.session.open(remote).await.map_err(|e| self.remote_err(remote, e))?;
        let mut dst = crate::tree::create_local_file(local).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = src.read(&mut buf).await.map_err(|e| self.remote_err(remote, e.into()))?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).await.map_err(local_err)?;
            progress.add(n as u64);
        }
        dst.flush().await.map_err(local_err)?;
        let _ = src.shutdown().await;
        crate::tree::set_local_mode(local, mode)
    }
}

/// A stream that reports (once) when reading reached its end.
struct EofWatch<S> {
    inner: S,
    tx: watch::Sender<bool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for EofWatch<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.tx.send_replace(true);
            }
            Poll::Ready(Err(_)) => {
                self.tx.send_replace(true);
            }
            _ => {}
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EofWatch<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Drop for EofWatch<S> {
    fn drop(&mut self) {
        self.tx.send_replace(true);
    }
}

/// Directories grouped by depth, parents' level first (each level can be made at once).
fn levels(dirs: &[crate::tree::DirEntry]) -> Vec<Vec<&crate::tree::DirEntry>> {
    let depth = |d: &crate::tree::DirEntry| if d.rel.is_empty() { 0 } else { d.rel.matches('/').count() + 1 };
    let mut out: Vec<Vec<&crate::tree::DirEntry>> = Vec::new();
    for d in dirs {
        let n = depth(d);
        if out.len() <= n {
            out.resize_with(n + 1, Vec::new);
        }
        out[n].push(d);
    }
    out
}
