//! File transfers over SFTP and over the exec fallback: trees, modes, content, progress, errors.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use imgbake_core::communicator::{CommError, Communicator};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_testbed::SshdOptions;

use crate::support::*;

/// A tree with modes that matter: executable, private, read-only directory, nested, a larger file.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    std::fs::create_dir_all(root.join("conf/private")).unwrap();
    std::fs::create_dir_all(root.join("ro")).unwrap();
    w("run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w("conf/app.toml", b"x = 1\n", 0o644);
    w("conf/private/key", b"secret", 0o600);
    w("ro/readme", b"read only dir", 0o444);
    w("empty", b"", 0o640);
    // 3 MiB + 1 byte of varied content: several SFTP packets, an odd tail.
    let big: Vec<u8> = (0..(3 << 20) + 1).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    w("conf/big.bin", &big, 0o644);
    std::fs::set_permissions(root.join("conf/private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
}

/// Relative path → (mode, content) for everything under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walk(root) {
        let meta = std::fs::metadata(&e).unwrap();
        let rel = e.strip_prefix(root).unwrap().display().to_string();
        let data = if meta.is_file() { std::fs::read(&e).unwrap() } else { b"<dir>".to_vec() };
        out.insert(rel, (meta.permissions().mode() & 0o7777, data));
    }
    out
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&out[i]).unwrap().map(|e| e.unwrap().path()).collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

async fn round_trip(sftp: bool) {
    let sshd = sshd_with(SshdOptions { sftp, ..Default::default() }).await;
    let (events, conn_log) = EventSink::memory();
    let c = imgbake_ssh::SshCommunicator::new(config_for(&sshd)).with_events(events);
    c.connect(&quick()).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    make_tree(&src);
    let expected = snapshot(&src);
    let total: u64 = expected.values().filter(|(_, d)| d != b"<dir>").map(|(_, d)| d.len() as u64).sum();

    // Upload: the server side is this machine, inside sshd's private dir.
    let remote = remote_path(&sshd, "dst");
    let (sink, log) = EventSink::memory();
    let sent = c.upload(&src, &remote, &sink).await.unwrap();
    assert_eq!(sent, total);
    assert_eq!(snapshot(Path::new(&remote)), expected, "uploaded tree differs (sftp: {sftp})");
    let last = log.events().into_iter().rev().find_map(|e| match e.kind {
        EventKind::Transfer { done, total, .. } => Some((done, total)),
        _ => None,
    });
    assert_eq!(last, Some((total, Some(total))));

    // Uploading again over the existing tree works (directories exist, files are replaced).
    c.upload(&src, &remote, &EventSink::discard()).await.unwrap();

    // Download it back elsewhere.
    let back = local.path().join("back");
    let got = c.download(&remote, &back, &EventSink::discard()).await.unwrap();
    assert_eq!(got, total);
    assert_eq!(snapshot(&back), expected, "downloaded tree differs (sftp: {sftp})");

    // Single files, and bytes with an exact mode (umask does not apply).
    let one = local.path().join("one");
    c.download(&format!("{remote}/run.sh"), &one, &EventSink::discard()).await.unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(std::fs::metadata(&one).unwrap().permissions().mode() & 0o7777, 0o755);
    let target = remote_path(&sshd, "bytes.txt");
    c.upload_bytes(b"payload", &target, 0o604).await.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"payload");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o604);

    // Errors name the path.
    let err =
        c.download(&remote_path(&sshd, "missing"), &local.path().join("x"), &EventSink::discard()).await.unwrap_err();
    assert!(matches!(&err, CommError::RemoteFile { path, .. } if path.ends_with("missing")), "{err}");
    let err = c.upload(&local.path().join("nope"), &remote, &EventSink::discard()).await.unwrap_err();
    assert!(matches!(&err, CommError::LocalFile { path, .. } if path.ends_with("nope")), "{err}");

    let fell_back =
        conn_log.events().iter().any(|e| matches!(&e.kind, EventKind::Info { message } if message.contains("no SFTP")));
    assert_eq!(fell_back, !sftp, "{:#?}", conn_log.events());
    c.disconnect().await;
    // Let the read-only directories go with the temp dirs.
    for root in [Path::new(&remote), back.as_path(), src.as_path()] {
        for p in walk(root) {
            if p.is_dir() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn sftp_round_trip_keeps_modes_and_content() {
    round_trip(true).await;
}

#[tokio::test]
async fn exec_fallback_without_sftp_keeps_modes_and_content() {
    round_trip(false).await;
}

/// A tree of many small files in nested directories, with links (relative, absolute, dangling):
/// every file arrives with its content and mode, every link as a link to the same target, also when
/// the tree is uploaded again over itself.
async fn many_files_and_links(sftp: bool, archive: bool) {
    let sshd = sshd_with(SshdOptions { sftp, ..Default::default() }).await;
    let mut cfg = config_for(&sshd);
    cfg.archive_uploads = archive;
    let (events, conn_log) = EventSink::memory();
    let c = imgbake_ssh::SshCommunicator::new(cfg).with_events(events);
    c.connect(&quick()).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    for i in 0..300u32 {
        let dir = src.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i}"));
        std::fs::write(&path, vec![(i % 251) as u8; (i as usize * 37) % 5000]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(if i % 5 == 0 { 0o750 } else { 0o640 }))
            .unwrap();
    }
    // Counted before the links exist (a walk would count files twice through `rel-link`).
    let total: u64 = walk(&src)
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).unwrap().is_file())
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    std::os::unix::fs::symlink("d1/e1", src.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("d2/abs-link")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("d3/e0/dangling")).unwrap();
    let remote = remote_path(&sshd, "many");
    for round in 0..2 {
        let (sink, log) = EventSink::memory();
        let sent = c.upload(&src, &remote, &sink).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(sent, total);
        let last = log.events().into_iter().rev().find_map(|e| match e.kind {
            EventKind::Transfer { done, total, .. } => Some((done, total)),
            _ => None,
        });
        assert_eq!(last, Some((total, Some(total))), "progress ends at the files' total (archive {archive})");
    }
    // Without SFTP and without the archive, the exec fallback carried it; with the archive, no SFTP
    // session was needed at all.
    let fell_back =
        conn_log.events().iter().any(|e| matches!(&e.kind, EventKind::Info { message } if message.contains("no SFTP")));
    assert_eq!(fell_back, !sftp && !archive, "{:#?}", conn_log.events());
    for e in walk(&src) {
        let rel = e.strip_prefix(&src).unwrap();
        let there = Path::new(&remote).join(rel);
        let meta = std::fs::symlink_metadata(&e).unwrap();
        if meta.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(&there).unwrap(), std::fs::read_link(&e).unwrap(), "{rel:?} (sftp {sftp})");
        } else if meta.is_file() {
            assert_eq!(std::fs::read(&there).unwrap(), std::fs::read(&e).unwrap(), "{rel:?}");
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&there), mode(&e), "{rel:?} (sftp {sftp})");
        }
    }
    c.disconnect().await;
}

#[tokio::test]
async fn sftp_uploads_many_files_and_keeps_links() {
    many_files_and_links(true, false).await;
}

#[tokio::test]
async fn exec_fallback_uploads_many_files_and_keeps_links() {
    many_files_and_links(false, false).await;
}

#[tokio::test]
async fn archive_uploads_many_files_and_keeps_links() {
    many_files_and_links(true, true).await;
}

#[tokio::test]
async fn archive_uploads_need_no_sftp() {
    many_files_and_links(false, true).await;
}

/// A directory the machine controls, made hostile: links out of the tree and in a loop, setuid and
/// world-writable modes, odd (but legal) names.
fn make_hostile_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let w = |p: &str, mode: u32| {
        std::fs::write(root.join(p), p.as_bytes()).unwrap();
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("setuid", 0o4755);
    w("sub/world-writable", 0o1777);
    w("-dash name", 0o644);
    std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("sub/hostname-link")).unwrap();
    std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
}

async fn hostile_download(sftp: bool) {
    let sshd = sshd_with(SshdOptions { sftp, ..Default::default() }).await;
    let c = connected(&sshd).await;
    let local = tempfile::tempdir().unwrap();
    let remote = remote_path(&sshd, "hostile");
    make_hostile_tree(Path::new(&remote));

    // Links in the tree are neither followed nor made; setuid, setgid and sticky bits are dropped.
    let back = local.path().join("back");
    c.download(&remote, &back, &EventSink::discard()).await.unwrap_or_else(|e| panic!("sftp {sftp}: {e}"));
    let got: BTreeMap<String, u32> = snapshot(&back).into_iter().map(|(k, (m, _))| (k, m)).collect();
    let want: BTreeMap<String, u32> =
        [("", 0o755), ("-dash name", 0o644), ("setuid", 0o755), ("sub", 0o755), ("sub/world-writable", 0o777)]
            .into_iter()
            .map(|(k, m)| (if k.is_empty() { String::new() } else { k.to_string() }, m))
            .collect();
    let got: BTreeMap<String, u32> = got
        .into_iter()
        .map(|(k, m)| {
            (k.strip_prefix(&back.display().to_string()).unwrap_or(&k).trim_start_matches('/').to_string(), m)
        })
        .collect();
    assert_eq!(got, want, "sftp {sftp}");

    // A symbolic link already at a target is not written through (file or directory).
    let victim = local.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let outside = local.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let planted = local.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, planted.join("setuid")).unwrap();
    let e = c.download(&remote, &planted, &EventSink::discard()).await.unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "sftp {sftp}: {e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    std::fs::remove_file(planted.join("setuid")).unwrap();
    std::os::unix::fs::symlink(&outside, planted.join("sub")).unwrap();
    let e = c.download(&remote, &planted, &EventSink::discard()).await.unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "sftp {sftp}: {e}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing was written through the link");
    // The single-file form too.
    let e = c.download(&format!("{remote}/setuid"), &planted.join("setuid"), &EventSink::discard()).await;
    assert!(e.is_ok(), "a plain file target is fine: {e:?}");
    std::os::unix::fs::symlink(&victim, local.path().join("one-link")).unwrap();
    let e = c.download(&format!("{remote}/setuid"), &local.path().join("one-link"), &EventSink::discard()).await;
    assert!(e.unwrap_err().to_string().contains("symbolic link"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");

    // Names that would leave the destination: a backslash (a separator on Windows) is refused; a
    // newline that forges a `d 777 ..` entry in the fallback's listing (which would chmod the parent of
    // the destination) is refused there, and is a plain odd name over SFTP.
    let backslash = remote_path(&sshd, "bad-backslash");
    std::fs::create_dir(&backslash).unwrap();
    std::fs::write(Path::new(&backslash).join("back\\slash"), b"x").unwrap();
    let e = c.download(&backslash, &local.path().join("bs"), &EventSink::discard()).await.unwrap_err();
    assert!(e.to_string().contains("refusing") && e.to_string().contains("separator"), "sftp {sftp}: {e}");
    let forged = remote_path(&sshd, "bad-newline");
    std::fs::create_dir(&forged).unwrap();
    std::fs::write(Path::new(&forged).join("x"), b"x").unwrap();
    std::fs::write(Path::new(&forged).join("x\nd 777 .."), b"x").unwrap();
    let parent = local.path().join("deep");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o750)).unwrap();
    let got = c.download(&forged, &parent.join("nl"), &EventSink::discard()).await;
    match (&got, sftp) {
        (Ok(_), true) => assert!(parent.join("nl/x\nd 777 ..").is_file()),
        // The fallback reads `find`'s listing line by line: the name splits into `./x` and a path that
        // does not exist, which is skipped (or refused, were it to reach the name check).
        (Ok(_), false) => assert!(parent.join("nl/x").is_file()),
        (Err(e), false) => assert!(e.to_string().contains("refusing"), "{e}"),
        _ => panic!("sftp {sftp}: {got:?}"),
    }
    assert_eq!(std::fs::metadata(&parent).unwrap().permissions().mode() & 0o7777, 0o750, "sftp {sftp}");
    c.disconnect().await;
}

#[tokio::test]
async fn sftp_downloads_refuse_hostile_names_links_and_special_modes() {
    hostile_download(true).await;
}

#[tokio::test]
async fn exec_fallback_downloads_refuse_hostile_names_links_and_special_modes() {
    hostile_download(false).await;
}
