//! File transfers for servers without an SFTP subsystem (minimal images, dropbear without
//! sftp-server): plain exec channels with `cat`, `mkdir`, `chmod` and `stat`, nothing else (no `tar`,
//! no `scp`). POSIX shells only.

use std::path::Path;

use bytes::Bytes;
use imgbake_config::Os;
use imgbake_core::command::{compose, quote};
use imgbake_core::communicator::{CommError, ExecRequest, ExecStatus};
use imgbake_core::event::EventSink;
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::progress::Progress;
use crate::session::{Session, describe_ssh_error};
use crate::tree::{check_remote_rel, create_local_file, join_remote, local_tree, make_local_dir, set_local_mode};

const CHUNK: usize = 1 << 20;

/// Exec-based transfers on one session.
pub(crate) struct Fallback<'a> {
    pub session: &'a Session,
    pub target: String,
    pub os: Os,
}

fn q(s: &str) -> String {
    quote(Os::Linux, s)
}

impl Fallback<'_> {
    fn check_os(&self) -> Result<(), CommError> {
        match self.os {
            Os::Linux => Ok(()),
            Os::Windows => Err(CommError::Protocol {
                target: self.target.clone(),
                reason:
                    "the server has no SFTP subsystem, and the exec fallback for file transfers needs a POSIX shell; \
                         enable the sftp subsystem of the Windows OpenSSH server"
                        .into(),
            }),
        }
    }

    fn lost(&self, e: russh::Error) -> CommError {
        CommError::Disconnected { target: self.target.clone(), reason: describe_ssh_error(&e) }
    }

    /// Run `script` (a shell command line, wrapped by `compose`), feeding it `input`; returns stdout or
    /// a `RemoteFile` error for `path` with the script's stderr.
    pub(crate) async fn run(
        &self,
        script: &str,
        path: &str,
        input: Option<(&mut (dyn tokio::io::AsyncRead + Unpin + Send), &mut Progress<'_>)>,
        mut output: Option<(&mut (dyn tokio::io::AsyncWrite + Unpin + Send), &Path, &mut Progress<'_>)>,
    ) -> Result<Vec<u8>, CommError> {
        let command = compose(self.os, &ExecRequest::new(script))?;
        let channel = crate::exec::start(self.session, &command, &self.target).await?;
        let (mut rd, wr) = channel.split();
        // Send and receive at the same time: a server blocked on full output buffers would otherwise
        // stop reading our input.
        let send = async {
            if let Some((src, progress)) = input {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n =
                        src.read(&mut buf).await.map_err(|e| CommError::LocalFile { path: path.into(), source: e })?;
                    if n == 0 {
                        break;
                    }
                    wr.data_bytes(Bytes::copy_from_slice(&buf[..n])).await.map_err(|e| self.lost(e))?;
                    progress.add(n as u64);
                }
            }
            wr.eof().await.map_err(|e| self.lost(e))
        };
        let receive = async {
            let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
            loop {
                match rd.wait().await {
                    Some(ChannelMsg::Data { data }) => match output.as_mut() {
                        Some((dst, local, progress)) => {
                            dst.write_all(&data)
                                .await
                                .map_err(|source| CommError::LocalFile { path: local.to_path_buf(), source })?;
                            progress.add(data.len() as u64);
                        }
                        None => stdout.extend_from_slice(&data),
                    },
                    Some(ChannelMsg::ExtendedData { data, .. }) => stderr.extend_from_slice(&data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        status = Some(ExecStatus::Exited(exit_status as i32))
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(ExecStatus::Signaled(crate::exec::signal_text(&signal_name)))
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            Ok::<_, CommError>((stdout, stderr, status))
        };
        let (sent, received) = tokio::join!(send, receive);
        let (stdout, stderr, status) = received?;
        match status {
            Some(ExecStatus::Exited(0)) => {
                sent?;
                Ok(stdout)
            }
            None => Err(CommError::Disconnected {
                target: self.target.clone(),
                reason: format!("lost while transferring {path}"),
            }),
            Some(s) => Err(CommError::RemoteFile {
                path: path.to_string(),
                reason: format!("{s}: {}", String::from_utf8_lossy(&stderr).trim()),
            }),
        }
    }

    /// Upload a file or a directory tree.
    pub(crate) async fn upload(&self, local: &Path, remote: &str, events: &EventSink) -> Result<u64, CommError> {
        self.check_os()?;
        let plan = local_tree(local)?;
        let mut progress = Progress::new(events, remote, plan.total_bytes());
        if !plan.dirs.is_empty() {
            // All directories in one round trip, writable for us while they are filled.
            let mut script = String::from("set -e");
            for d in &plan.dirs {
                let p = q(&join_remote(remote, &d.rel));
                script.push_str(&format!("; mkdir -p {p}; chmod {:o} {p}", d.mode | 0o700));
            }
            self.run(&script, remote, None, None).await?;
        }
        for f in &plan.files {
            let path = join_remote(remote, &f.rel);
            let mut src = tokio::fs::File::open(&f.local)
                .await
                .map_err(|source| CommError::LocalFile { path: f.local.clone(), source })?;
            // Create it private first, so the content is never readable with a wider mode than asked.
            let script = format!("umask 077; cat > {p} && chmod {:o} {p}", f.mode, p = q(&path));
            self.run(&script, &path, Some((&mut src, &mut progress)), None).await?;
        }
        if !plan.links.is_empty() {
            let script: Vec<String> = plan
                .links
                .iter()
                .map(|l| format!("ln -sfn {} {}", q(&l.target), q(&join_remote(remote, &l.rel))))
                .collect();
            self.run(&script.join(" && "), remote, None, None).await?;
        }
        let exact: Vec<String> = plan
            .dirs
            .iter()
            .rev()
            .filter(|d| d.mode & 0o700 != 0o700)
            .map(|d| format!("chmod {:o} {}", d.mode, q(&join_remote(remote, &d.rel))))
            .collect();
        if !exact.is_empty() {
            self.run(&exact.join(" && "), remote, None, None).await?;
        }
        progress.finish();
        Ok(progress.done())
    }

    /// Write `data` to `remote` with `mode`.
    pub(crate) async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), CommError> {
        self.check_os()?;
        let events = EventSink::discard();
        let mut progress = Progress::new(&events, remote, Some(data.len() as u64));
        let mut src: &[u8] = data;
        let script = format!("umask 077; cat > {p} && chmod {mode:o} {p}", p = q(remote));
        self.run(&script, remote, Some((&mut src, &mut progress)), None).await.map(|_| ())
    }

    /// Download a file or a directory tree (links inside the tree are skipped, names are checked).
    pub(crate) async fn download(&self, remote: &str, local: &Path, events: &EventSink) -> Result<u64, CommError> {
        self.check_os()?;
        // One line per entry: kind (d/f), octal mode, then the path relative to `remote`.
        let list = format!(
            "p={}; if [ -d \"$p\" ]; then cd -- \"$p\" && find . | while IFS= read -r f; do \
             if [ -L \"$f\" ]; then continue; elif [ -d \"$f\" ]; then t=d; elif [ -f \"$f\" ]; then t=f; else continue; fi; \
             printf '%s %s %s\\n' \"$t\" \"$(stat -L -c %a -- \"$f\")\" \"$f\"; done; \
             elif [ -f \"$p\" ]; then printf 'f %s .\\n' \"$(stat -L -c %a -- \"$p\")\"; \
             else echo \"no such file or directory\" >&2; exit 2; fi",
            q(remote)
        );
        let listing = self.run(&list, remote, None, None).await?;
        let listing = String::from_utf8_lossy(&listing);
        let mut progress = Progress::new(events, remote, None);
        let mut dirs = Vec::new();
        for line in listing.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(mode), Some(rel)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let mode = u32::from_str_radix(mode, 8).unwrap_or(0o644);
            let rel = rel.strip_prefix("./").unwrap_or(if rel == "." { "" } else { rel });
            check_remote_rel(remote, rel)?;
            let target = if rel.is_empty() { local.to_path_buf() } else { local.join(rel) };
            let path = join_remote(remote, rel);
            match kind {
                "d" => {
                    make_local_dir(&target)?;
                    dirs.push((target, mode));
                }
                _ => {
                    let mut dst = create_local_file(&target).await?;
                    self.run(&format!("cat -- {}", q(&path)), &path, None, Some((&mut dst, &target, &mut progress)))
                        .await?;
                    dst.flush().await.map_err(|source| CommError::LocalFile { path: target.clone(), source })?;
                    set_local_mode(&target, mode)?;
                }
            }
        }
        for (dir, mode) in dirs.iter().rev() {
            set_local_mode(dir, *mode)?;
        }
        progress.finish();
        Ok(progress.done())
    }
}
