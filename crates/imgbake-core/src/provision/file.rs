//! `file`: copy files and directories to or from the machine, or write inline `content`.
//!
//! - upload (default): `source` is a local file or directory (relative to the tree file naming it);
//!   `destination` is the path it gets on the machine — a destination ending in `/` means "into this
//!   directory" and keeps the source's name. Missing parent directories are created. File modes are
//!   kept.
//! - `content`: written to `destination` with `mode` (octal text, default `"0644"`).
//! - download: `source` is the remote path, `destination` a local path (relative to the tree file;
//!   ending in `/`: into that directory).

use std::path::{Path, PathBuf};

use imgbake_config::{Direction, FileStep, Span};

use super::Ctx;
use super::remote::{remote_join, remote_parent};
use crate::error::{BuildError, ErrorKind};

/// Mode of files written from `content` when `mode` is not set.
pub const DEFAULT_MODE: u32 = 0o644;

fn ends_with_sep(p: &str) -> bool {
    p.ends_with('/') || p.ends_with('\\')
}

/// Where an upload of `local` to `destination` lands.
pub fn upload_target(local: &Path, destination: &str) -> String {
    if ends_with_sep(destination) {
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        remote_join(destination, &name)
    } else {
        destination.to_string()
    }
}

/// Where a download of `remote` to the local `destination` lands.
pub fn download_target(remote: &str, destination: PathBuf, destination_text: &str) -> PathBuf {
    if ends_with_sep(destination_text) {
        let name = remote.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().unwrap_or(remote);
        destination.join(name)
    } else {
        destination
    }
}

/// Parse an octal mode (`"0644"`, `"755"`).
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim(), 8).ok().filter(|m| *m <= 0o7777)
}

pub(crate) async fn run(cx: &Ctx<'_>, f: &FileStep) -> Result<(), BuildError> {
    match f.direction {
        Direction::Upload => upload(cx, f).await,
        Direction::Download => download(cx, f).await,
    }
}

async fn upload(cx: &Ctx<'_>, f: &FileStep) -> Result<(), BuildError> {
    let dest_text = f.destination.get_ref();
    if let Some(content) = &f.content {
        let mode = match &f.mode {
            Some(m) => parse_mode(m.get_ref()).ok_or_else(|| {
                cx.fail(ErrorKind::Config, format!("mode `{}` is not an octal file mode like \"0644\"", m.get_ref()))
                    .at(Span::new(m.span()))
            })?,
            None => DEFAULT_MODE,
        };
        if let Some(parent) = remote_parent(dest_text) {
            cx.make_remote_dir(parent).await?;
        }
        cx.transfer(&format!("writing {dest_text}"), || cx.comm.upload_bytes(content.as_bytes(), dest_text, mode))
            .await?;
        cx.events.info(format!("wrote {} bytes to {dest_text} (mode {mode:04o})", content.len()));
        return Ok(());
    }
    let Some(source) = &f.source else {
        return Err(cx.fail(ErrorKind::Config, "an upload needs `source` (a local file or directory) or `content`"));
    };
    let local = cx.readable_local(source, "")?;
    let dest = upload_target(&local, dest_text);
    if let Some(parent) = remote_parent(&dest) {
        cx.make_remote_dir(parent).await?;
    }
    let bytes = cx
        .transfer(&format!("uploading {} to {dest}", local.display()), || cx.comm.upload(&local, &dest, &cx.events))
        .await?;
    cx.events.info(format!("uploaded {} to {dest} ({bytes} bytes)", local.display()));
    Ok(())
}

async fn download(cx: &Ctx<'_>, f: &FileStep) -> Result<(), BuildError> {
    let Some(source) = &f.source else {
        return Err(cx.fail(ErrorKind::Config, "a download needs `source` (the remote path)"));
    };
    let remote = source.get_ref();
    let local = download_target(remote, cx.tree().path(&f.destination), f.destination.get_ref());
    if let Some(parent) = local.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            cx.fail(ErrorKind::Local, format!("cannot create the local directory {}: {e}", parent.display()))
        })?;
    }
    let bytes = cx
        .transfer(&format!("downloading {remote} to {}", local.display()), || {
            cx.comm.download(remote, &local, &cx.events)
        })
        .await?;
    cx.events.info(format!("downloaded {remote} to {} ({bytes} bytes)", local.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(upload_target(Path::new("files/nginx.conf"), "/etc/nginx/"), "/etc/nginx/nginx.conf");
        assert_eq!(upload_target(Path::new("files/nginx.conf"), "/etc/nginx/site.conf"), "/etc/nginx/site.conf");
        assert_eq!(upload_target(Path::new("conf.d"), "C:\\cfg\\"), "C:\\cfg\\conf.d");
        assert_eq!(download_target("/var/log/x.log", PathBuf::from("out/"), "out/"), PathBuf::from("out/x.log"));
        assert_eq!(download_target("/var/log/", PathBuf::from("out"), "out"), PathBuf::from("out"));
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode("17777"), None);
    }
}
