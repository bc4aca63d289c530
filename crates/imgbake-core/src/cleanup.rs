//! Nothing leaks: every resource a build creates is pushed on an undo stack the moment it exists, and
//! the stack is journaled to disk (one JSON line per change, fsynced) so that `imgbake clean` can finish
//! the job after the process was killed.
//!
//! ```
//! use imgbake_core::cleanup::{Journal, Resource};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let journal = Journal::create(dir.path(), "b-1", "web").unwrap();
//! let sg = Resource::new("aws", "security_group", "sg-1").region("eu-west-1");
//! let i = Resource::new("aws", "instance", "i-1").region("eu-west-1");
//! journal.push(sg.clone()).unwrap();
//! journal.push(i.clone()).unwrap();
//! journal.done(&i).unwrap(); // deleted normally
//!
//! // After a crash, the journal on disk still knows the security group is pending:
//! let pending = Journal::open_all(dir.path()).unwrap();
//! assert_eq!(pending.len(), 1);
//! assert_eq!(pending[0].pending(), vec![sg]);
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One thing a build created that must go away (or be kept, once it is the result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The builder that knows how to remove it.
    pub builder: String,
    /// Its kind within the builder (`instance`, `key_pair`, `security_group`, `image`, `snapshot`,
    /// `process`, `file`...).
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its region or location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Anything else the builder needs to remove it (endpoint, profile, path...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Resource {
    /// A resource of `builder`.
    pub fn new(builder: &str, kind: &str, id: impl Into<String>) -> Self {
        Resource { builder: builder.into(), kind: kind.into(), id: id.into(), region: None, extra: BTreeMap::new() }
    }

    /// With a region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// With an extra detail.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// `kind id (region)`, for messages.
    pub fn describe(&self) -> String {
        match &self.region {
            Some(r) => format!("{} {} ({}, {r})", self.builder, self.kind, self.id),
            None => format!("{} {} {}", self.builder, self.kind, self.id),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    Start { build_id: String, image: String, pid: u32 },
    Push { resource: Resource },
    Done { resource: Resource },
}

/// The undo stack of one build (one image), mirrored to a journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    build_id: String,
    image: String,
    pid: Option<u32>,
    file: Mutex<Option<File>>,
    stack: Mutex<Vec<Resource>>,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cleanup journal {}: {e}", path.display()))
}

impl Journal {
    /// The directory journals live in under a state directory.
    pub fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("journal")
    }

    /// Start a journal for `image` of build `build_id` under `state_dir`.
    pub fn create(state_dir: &Path, build_id: &str, image: &str) -> std::io::Result<Journal> {
        let dir = Self::dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let path = dir.join(format!("{build_id}.{image}.ndjson"));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
        let j = Journal {
            path,
            build_id: build_id.into(),
            image: image.into(),
            pid: Some(std::process::id()),
            file: Mutex::new(Some(file)),
            stack: Mutex::new(Vec::new()),
        };
        j.write(&Entry::Start { build_id: build_id.into(), image: image.into(), pid: std::process::id() })?;
        Ok(j)
    }

    fn write(&self, e: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut guard = self.file.lock().map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        if guard.is_none() {
            *guard =
                Some(OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| io_err(&self.path, e))?);
        }
        let f = guard.as_mut().ok_or_else(|| std::io::Error::other("journal closed"))?;
        f.write_all(&line).map_err(|e| io_err(&self.path, e))?;
        // The journal is only useful if it survives a kill -9 right after the API call returned.
        f.sync_data().map_err(|e| io_err(&self.path, e))
    }

    /// The build id.
    pub fn build_id(&self) -> &str {
        &self.build_id
    }

    /// The image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Is the imgbake process that wrote this journal still running (another process's build)?
    pub fn process_alive(&self) -> bool {
        match self.pid {
            Some(p) if p != std::process::id() => std::path::Path::new(&format!("/proc/{p}")).exists(),
            _ => false,
        }
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record a new resource (call this the moment it exists).
    pub fn push(&self, r: Resource) -> std::io::Result<()> {
        self.write(&Entry::Push { resource: r.clone() })?;
        if let Ok(mut s) = self.stack.lock() {
            s.push(r);
        }
        Ok(())
    }

    /// A resource is gone, or is kept for good (it became the artifact): forget it.
    pub fn done(&self, r: &Resource) -> std::io::Result<()> {
        if let Ok(mut s) = self.stack.lock() {
            s.retain(|x| x != r);
        }
        self.write(&Entry::Done { resource: r.clone() })
    }

    /// Resources still to remove, newest last.
    pub fn pending(&self) -> Vec<Resource> {
        self.stack.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Delete the journal file when nothing is pending any more.
    pub fn finish(&self) -> std::io::Result<bool> {
        if !self.pending().is_empty() {
            return Ok(false);
        }
        if let Ok(mut f) = self.file.lock() {
            f.take();
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }

    /// Read one journal file back.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let f = File::open(path).map_err(|e| io_err(path, e))?;
        let mut build_id = String::new();
        let mut image = String::new();
        let mut pid = None;
        let mut stack: Vec<Resource> = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| io_err(path, e))?;
            // A torn last line (killed mid-write) is skipped: the tag sweep covers that resource.
            let Ok(entry) = serde_json::from_str::<Entry>(&line) else { continue };
            match entry {
                Entry::Start { build_id: b, image: i, pid: p } => {
                    build_id = b;
                    image = i;
                    pid = Some(p);
                }
                Entry::Push { resource } => stack.push(resource),
                Entry::Done { resource } => stack.retain(|x| *x != resource),
            }
        }
        Ok(Journal { path: path.to_path_buf(), build_id, image, pid, file: Mutex::new(None), stack: Mutex::new(stack) })
    }

    /// Every journal under `state_dir` that still has pending resources or belongs to a running
    /// imgbake (finished journals of dead processes are deleted on the way).
    pub fn open_all(state_dir: &Path) -> std::io::Result<Vec<Journal>> {
        let dir = Self::dir(state_dir);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        paths.sort();
        for p in paths {
            let j = Journal::open(&p)?;
            if j.pending().is_empty() && !j.process_alive() {
                // Nothing left: an old finished journal.
                let _ = std::fs::remove_file(&p);
            } else {
                out.push(j);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_ignored_and_finish_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), "b-2", "base").unwrap();
        let r = Resource::new("cloud", "key_pair", "imgbake-b-2").region("region-1");
        j.push(r.clone()).unwrap();
        std::fs::OpenOptions::new().append(true).open(j.path()).unwrap().write_all(b"{\"op\":\"push\",\"reso").unwrap();
        let back = Journal::open(j.path()).unwrap();
        assert_eq!(back.pending(), vec![r.clone()]);
        assert_eq!(back.build_id(), "b-2");
        assert!(!j.finish().unwrap(), "not finished while something is pending");
        j.done(&r).unwrap();
        assert!(j.finish().unwrap());
        assert!(!j.path().exists());
        assert!(Journal::open_all(dir.path()).unwrap().is_empty());
    }
}
