//! Tar archives: writing OVAs and boxes (to `OUT.partial`, renamed into place when complete),
//! extracting them safely, and indexing plain tars so their members can be hashed and inspected
//! in place. All of it is blocking I/O: the async entry points run it under `spawn_blocking`.
//!
//! We write ustar headers (sizes over 8 GiB in the base-256 encoding GNU tar, bsdtar and
//! VirtualBox's own exporter use). We read ustar, GNU and pax archives, plain or gzip-compressed
//! (told by the magic bytes, never by the name), and refuse entries that would land outside the
//! directory: `..`, absolute paths, symlinks, hard links and devices.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::error::FormatError;
use super::vmdk::{partial_path, remove_quietly};

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Tar,
    GzipTar,
    Xml,
}

/// Tell a tar, a gzip stream and an XML document apart by their first bytes.
pub(crate) fn sniff(path: &Path) -> Result<Sniffed, FormatError> {
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .map_err(|e| FormatError::io("opening", path, e))?
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| FormatError::io("reading", path, e))?;
    let not = |what: &str| {
        FormatError::package(
            path,
            format!(
                "{} is {what}; imgbake reads .ova and .box files that are tar or tar.gz, and .ovf descriptors",
                path.display()
            ),
        )
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Sniffed::GzipTar);
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Sniffed::Tar);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Err(not("a zip archive"));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(not("xz-compressed"));
    }
    if head.starts_with(b"BZh") {
        return Err(not("bzip2-compressed"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(not("zstd-compressed"));
    }
    let text = head.strip_prefix(&[0xef, 0xbb, 0xbf][..]).unwrap_or(&head);
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
        return Ok(Sniffed::Xml);
    }
    if head.is_empty() {
        return Err(not("empty"));
    }
    Err(not("neither a tar archive, a gzip-compressed tar nor an OVF descriptor"))
}

/// One member of an archive to write.
pub(crate) enum Member {
    /// A file on disk, which must still be `size` bytes long.
    File { name: String, path: PathBuf, size: u64, mode: u32 },
    /// Bytes in memory.
    Bytes { name: String, data: Vec<u8>, mode: u32 },
}

impl Member {
    pub(crate) fn bytes(name: &str, data: impl Into<Vec<u8>>) -> Member {
        Member::Bytes { name: name.to_string(), data: data.into(), mode: 0o644 }
    }

    pub(crate) fn file(name: &str, path: &Path, size: u64) -> Member {
        Member::File { name: name.to_string(), path: path.to_path_buf(), size, mode: 0o644 }
    }

    fn name(&self) -> &str {
        match self {
            Member::File { name, .. } | Member::Bytes { name, .. } => name,
        }
    }
}

/// A reader that yields exactly `left` bytes of a file, failing if the file is shorter.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Write `members` in order into a tar at `out` (gzip-compressed when `gzip`), through
/// `out.partial`, synced and renamed into place only when complete. Blocking.
pub(crate) fn write_tar(out: &Path, members: &[Member], gzip: bool) -> Result<(), FormatError> {
    for m in members {
        let name = m.name();
        if name.is_empty() || name.len() > 100 || name.contains('/') || !name.is_ascii() {
            return Err(FormatError::Invalid(format!(
                "`{name}` cannot be an archive member: plain ASCII names of at most 100 bytes, no directories"
            )));
        }
    }
    let partial = partial_path(out);
    let result = write_tar_to(&partial, members, gzip);
    match result {
        Ok(()) => std::fs::rename(&partial, out).map_err(|e| {
            remove_quietly(&partial);
            FormatError::io("renaming into place", out, e)
        }),
        Err(e) => {
            remove_quietly(&partial);
            Err(e)
        }
    }
}

fn write_tar_to(partial: &Path, members: &[Member], gzip: bool) -> Result<(), FormatError> {
    let io = |e| FormatError::io("writing", partial, e);
    let file = File::create(partial).map_err(io)?;
    let buffered = BufWriter::with_capacity(1 << 20, file);
    let file = if gzip {
        // The payloads (compressed qcow2) barely shrink further: the fastest level is enough.
        let mut builder = tar::Builder::new(GzEncoder::new(buffered, Compression::fast()));
        append_all(&mut builder, members, partial)?;
        builder.into_inner().map_err(io)?.finish().map_err(io)?
    } else {
        let mut builder = tar::Builder::new(buffered);
        append_all(&mut builder, members, partial)?;
        builder.into_inner().map_err(io)?
    };
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

fn append_all<W: Write>(builder: &mut tar::Builder<W>, members: &[Member], out: &Path) -> Result<(), FormatError> {
    let mtime = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for m in members {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        match m {
            Member::Bytes { name, data, mode } => {
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, name, data.as_slice())
                    .map_err(|e| FormatError::io(format!("writing {name} into"), out, e))?;
            }
            Member::File { name, path, size, mode } => {
                let file = File::open(path).map_err(|e| FormatError::io("opening", path, e))?;
                let now = file.metadata().map_err(|e| FormatError::io("reading", path, e))?.len();
                if now != *size {
                    return Err(FormatError::Invalid(format!(
                        "{} is {now} bytes, but was {size} when it was described (and hashed): it changed",
                        path.display()
                    )));
                }
                header.set_mode(*mode);
                header.set_size(*size);
                let reader = Exact { inner: BufReader::with_capacity(1 << 20, file), left: *size };
                builder
                    .append_data(&mut header, name, reader)
                    .map_err(|e| FormatError::io(format!("writing {name} from {} into", path.display()), out, e))?;
            }
        }
    }
    builder.finish().map_err(|e| FormatError::io("finishing", out, e))
}

/// A member's name made safe: its normal components joined by `/` (`./x` is `x`), or why not.
pub(crate) fn safe_name(raw: &Path) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => {
                parts.push(p.to_str().ok_or_else(|| "the name is not UTF-8".to_string())?.to_string())
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("it climbs out of the directory with `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path".into()),
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("/")) })
}

/// A file extracted from an archive.
#[derive(Clone, Debug)]
pub(crate) struct Extracted {
    /// Its name in the archive (normalized).
    pub(crate) name: String,
    /// Where it was written.
    pub(crate) path: PathBuf,
    /// Its size.
    pub(crate) size: u64,
    /// SHA-256, lowercase hex (computed while extracting).
    pub(crate) sha256: String,
}

fn unsafe_entry(archive: &Path, entry: &str, reason: impl Into<String>) -> FormatError {
    FormatError::UnsafeEntry { archive: archive.to_path_buf(), entry: entry.to_string(), reason: reason.into() }
}

/// Extract the tar (or tar.gz) `archive` into `into` (created if missing). Regular files and
/// directories only; anything else is refused, as are names with `..` or absolute ones, and a name
/// that already exists. `after` sees each file as soon as it is written (and may stop the
/// extraction with an error). On an error the files written so far are removed. Blocking.
pub(crate) fn extract(
    archive: &Path,
    into: &Path,
    gzip: bool,
    mut after: impl FnMut(&Extracted) -> Result<(), FormatError>,
) -> Result<Vec<Extracted>, FormatError> {
    std::fs::create_dir_all(into).map_err(|e| FormatError::io("creating", into, e))?;
    let mut done: Vec<Extracted> = Vec::new();
    let result = extract_inner(archive, into, gzip, &mut done, &mut after);
    match result {
        Ok(()) => Ok(done),
        Err(e) => {
            for x in &done {
                remove_quietly(&x.path);
            }
            Err(e)
        }
    }
}

fn extract_inner(
    archive: &Path,
    into: &Path,
    gzip: bool,
    done: &mut Vec<Extracted>,
    after: &mut impl FnMut(&Extracted) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let file = File::open(archive).map_err(|e| FormatError::io("opening", archive, e))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(BufReader::with_capacity(1 << 20, file)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut tar = tar::Archive::new(reader);
    let read_err = |e: std::io::Error| FormatError::io("reading the archive", archive, e);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let shown = raw.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let name = match safe_name(&raw) {
            Ok(Some(n)) => n,
            Ok(None) if kind.is_dir() => continue,
            Ok(None) => return Err(unsafe_entry(archive, &shown, "it has an empty name")),
            Err(why) => return Err(unsafe_entry(archive, &shown, why)),
        };
        let dest = into.join(&name);
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().ok().flatten().map(|t| t.display().to_string()).unwrap_or_default();
            return Err(unsafe_entry(
                archive,
                &shown,
                format!("it is a link (to `{target}`); boxes and OVAs hold plain files"),
            ));
        }
        if kind.is_dir() {
            make_dirs(into, &name, true).map_err(|e| FormatError::io("creating", &dest, e))?;
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(unsafe_entry(archive, &shown, format!("it is a {kind:?} entry, not a file")));
        }
        make_dirs(into, &name, false).map_err(|e| FormatError::io("creating the directory of", &dest, e))?;
        // create_new: never follow or overwrite something already there (a twice-listed name).
        let out = OpenOptions::new().write(true).create_new(true).open(&dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                unsafe_entry(
                    archive,
                    &shown,
                    format!(
                        "{} already exists: extract into a fresh directory (or the archive lists the name twice)",
                        dest.display()
                    ),
                )
            } else {
                FormatError::io("creating", &dest, e)
            }
        })?;
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    remove_quietly(&dest);
                    return Err(FormatError::io(format!("reading {name} from"), archive, e));
                }
            };
            hasher.update(&buf[..n]);
            if let Err(e) = out.write_all(&buf[..n]) {
                remove_quietly(&dest);
                return Err(FormatError::io("writing", &dest, e));
            }
            size += n as u64;
        }
        if let Err(e) = out.flush() {
            remove_quietly(&dest);
            return Err(FormatError::io("writing", &dest, e));
        }
        let x = Extracted { name, path: dest, size, sha256: hex::encode(hasher.finalize()) };
        done.push(x);
        if let Some(last) = done.last() {
            after(last)?;
        }
    }
    Ok(())
}

/// Create the directories of `name` under `root` (all of them when `whole`, else its parents),
/// refusing to pass through a symlink already there.
fn make_dirs(root: &Path, name: &str, whole: bool) -> std::io::Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let upto = if whole { parts.len() } else { parts.len().saturating_sub(1) };
    let mut at = root.to_path_buf();
    for p in &parts[..upto] {
        at.push(p);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", at.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A member of a plain tar, located for reading in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) name: String,
    /// Where its data starts in the tar.
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The members of a plain (uncompressed) tar in order, with where their data is; the same refusals
/// as [`extract`]. Reads only the headers. Blocking.
pub(crate) fn index(archive: &Path) -> Result<Vec<Located>, FormatError> {
    let file = File::open(archive).map_err(|e| FormatError::io("opening", archive, e))?;
    let mut tar = tar::Archive::new(file);
    let read_err = |e: std::io::Error| FormatError::io("reading the archive", archive, e);
    let mut out: Vec<Located> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for entry in tar.entries_with_seek().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let shown = raw.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let name = match safe_name(&raw) {
            Ok(Some(n)) => n,
            Ok(None) if kind.is_dir() => continue,
            Ok(None) => return Err(unsafe_entry(archive, &shown, "it has an empty name")),
            Err(why) => return Err(unsafe_entry(archive, &shown, why)),
        };
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(unsafe_entry(archive, &shown, "it is a link; boxes and OVAs hold plain files"));
        }
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(unsafe_entry(archive, &shown, format!("it is a {kind:?} entry, not a file")));
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(unsafe_entry(archive, &shown, "it is listed twice"));
        }
        out.push(Located { name, offset: entry.raw_file_position(), size: entry.size() });
    }
    Ok(out)
}

/// The bytes of a located member, at most `limit` of them (an OVF or a manifest, not a disk).
pub(crate) fn read_located(archive: &Path, m: &Located, limit: u64) -> Result<Vec<u8>, FormatError> {
    if m.size > limit {
        return Err(FormatError::package(
            archive,
            format!("{} in {} is {} bytes, more than the {limit} expected of it", m.name, archive.display(), m.size),
        ));
    }
    let mut file = File::open(archive).map_err(|e| FormatError::io("opening", archive, e))?;
    file.seek(SeekFrom::Start(m.offset)).map_err(|e| FormatError::io("reading", archive, e))?;
    let mut buf = Vec::with_capacity(m.size as usize);
    file.take(m.size).read_to_end(&mut buf).map_err(|e| FormatError::io("reading", archive, e))?;
    if buf.len() as u64 != m.size {
        return Err(FormatError::package(archive, format!("{} is cut short in {}", m.name, archive.display())));
    }
    Ok(buf)
}

/// A reader over a located member's data.
pub(crate) fn open_located(archive: &Path, m: &Located) -> Result<std::io::Take<BufReader<File>>, FormatError> {
    let mut file = File::open(archive).map_err(|e| FormatError::io("opening", archive, e))?;
    file.seek(SeekFrom::Start(m.offset)).map_err(|e| FormatError::io("reading", archive, e))?;
    Ok(BufReader::with_capacity(1 << 20, file).take(m.size))
}
