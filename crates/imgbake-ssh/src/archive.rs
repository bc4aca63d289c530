//! Directory uploads as one streamed tar archive, unpacked by the machine's own `tar`.
//!
//! A tree of many small files over SFTP costs the server a few requests per file (open, write,
//! close, mode), and OpenSSH's sftp-server answers them one at a time: the server, not the network,
//! sets the pace. A tar stream on an exec channel costs one channel and is bound by encryption
//! only. It is used on Linux machines whose `tar` is GNU tar or bsdtar (both unpack with `-p`
//! exact modes and `-o` the login user as owner); anything else uploads over SFTP.

use std::path::Path;

use imgbake_core::command::quote;
use imgbake_core::communicator::CommError;
use imgbake_core::event::EventSink;
use tokio::io::AsyncRead;

use crate::fallback::Fallback;
use crate::progress::Progress;
use crate::tree::{LocalTree, local_tree};

/// Below this many entries a directory goes over SFTP: the archive's two extra commands cost more
/// than they save.
pub(crate) const MIN_ENTRIES: usize = 32;

/// How the archive is handed over: the blocking tar writer and the channel meet in this pipe.
const PIPE: usize = 4 << 20;

impl Fallback<'_> {
    /// Upload the directory `local` to `remote` as a tar stream. `Ok(None)` when the machine has no
    /// tar imgbake trusts (the caller then uses SFTP); `Ok(Some(bytes))` once it is unpacked.
    pub(crate) async fn upload_archive(
        &self,
        local: &Path,
        remote: &str,
        events: &EventSink,
    ) -> Result<Option<u64>, CommError> {
        let plan = local_tree(local)?;
        if plan.files.len() + plan.dirs.len() + plan.links.len() < MIN_ENTRIES || plan.dirs.is_empty() {
            return Ok(None);
        }
        let version = match self.run("tar --version 2>/dev/null | head -n 1", remote, None, None).await {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(_) => return Ok(None),
        };
        if !(version.contains("GNU tar") || version.contains("bsdtar")) {
            return Ok(None);
        }
        let total = plan.total_bytes().unwrap_or(0);
        let mut progress = Progress::new(events, remote, Some(total));
        let (reader, writer) = tokio::io::duplex(PIPE);
        let writer = tokio_util::io::SyncIoBridge::new(writer);
        let local_root = local.to_path_buf();
        let build = tokio::task::spawn_blocking(move || {
            write_archive(&plan, writer).map_err(|e| CommError::LocalFile { path: local_root, source: e })
        });
        let dest = quote(imgbake_config::Os::Linux, remote);
        let script = format!("mkdir -p {dest} && tar -x -p -o -f - -C {dest}");
        // The archive's own bytes (headers, padding) are not the files': progress counts up to the
        // files' total while the stream runs, and ends exactly there.
        let mut counted = Counted { inner: reader, progress: &mut progress, left: total };
        let discard = EventSink::discard();
        let mut quiet = Progress::new(&discard, remote, None);
        let unpacked = self.run(&script, remote, Some((&mut counted, &mut quiet)), None).await;
        let left = counted.left;
        let built = build
            .await
            .map_err(|e| CommError::LocalFile { path: local.to_path_buf(), source: std::io::Error::other(e) })?;
        unpacked?;
        built?;
        progress.add(left);
        progress.finish();
        Ok(Some(total))
    }
}

/// The archive of `plan`: directories, files with their modes and times, links as links.
fn write_archive(plan: &LocalTree, out: impl std::io::Write) -> std::io::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for d in &plan.dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(d.mode);
        h.set_size(0);
        h.set_mtime(now);
        tar.append_data(&mut h, name(&d.rel), std::io::empty())?;
    }
    for f in &plan.files {
        let mut file = std::fs::File::open(&f.local)?;
        let meta = file.metadata()?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        h.set_mode(f.mode);
        h.set_size(meta.len());
        tar.append_data(&mut h, name(&f.rel), &mut file)?;
    }
    for l in &plan.links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, name(&l.rel), &l.target)?;
    }
    tar.into_inner()?.flush()
}

/// The root of the tree is `.`, so the machine's directory takes the local directory's mode.
fn name(rel: &str) -> String {
    if rel.is_empty() { ".".into() } else { format!("./{rel}") }
}

/// The archive on its way, counted into the caller's progress (at most the files' total).
struct Counted<'p, 'e, R> {
    inner: R,
    progress: &'p mut Progress<'e>,
    left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, '_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = ((buf.filled().len() - before) as u64).min(self.left);
        self.left -= n;
        self.progress.add(n);
        r
    }
}
