//! The format layer against real tools: qemu-img, qemu-io and tar. No mocks.
//!
//! Each test makes its own small qcow2 (64 MiB, a few known bytes) and a qcow2 overlay on it (a
//! backing chain), writes artifacts from the overlay and checks them. Every external command and
//! every call into the crate runs under a timeout.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use imgbake_virtualbox::format::{
    self, FormatError, Hardware, PackageKind, STREAM_OPTIMIZED_FORMAT, StreamDisk, VagrantSsh,
};

const LIMIT: Duration = Duration::from_secs(120);
const SIZE: u64 = 64 << 20;

/// Run a command to completion under [`LIMIT`]; its exit code (127: not installed), stdout and
/// stderr.
async fn run(program: &str, args: &[&str], cwd: &Path) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(LIMIT, cmd.output()).await {
        Err(_) => panic!("{program} {args:?} timed out"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return (127, String::new(), format!("{program}: {e}"));
        }
        Ok(Err(e)) => panic!("{program} {args:?}: {e}"),
        Ok(Ok(out)) => out,
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(program: &str, args: &[&str], cwd: &Path) -> String {
    let (code, out, err) = run(program, args, cwd).await;
    assert_eq!(code, 0, "{program} {args:?} failed: {err}");
    out
}

/// A call into the crate, bounded.
async fn timed<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// `base.qcow2` (0xab at 1 MiB) and `overlay.qcow2` on it (0xcd at 8 MiB).
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        ok("qemu-img", &["create", "-q", "-f", "qcow2", "base.qcow2", "64M"], d).await;
        write_pattern(d, "base.qcow2", 0xab, 1 << 20).await;
        ok("qemu-img", &["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", "overlay.qcow2"], d).await;
        write_pattern(d, "overlay.qcow2", 0xcd, 8 << 20).await;
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn stream_disk(&self) -> StreamDisk {
        timed(StreamDisk::create(&self.path("overlay.qcow2"), &self.path("disk.vmdk"))).await.expect("converts")
    }
}

/// 64 KiB of `byte` at `offset` in a qcow2: with qemu-io, or (without it) through a raw file
/// rebased under the image.
async fn write_pattern(dir: &Path, image: &str, byte: u8, offset: u64) {
    let cmd = format!("write -P 0x{byte:02x} {offset} 64k");
    if run("qemu-io", &["-f", "qcow2", "-c", &cmd, image], dir).await.0 == 0 {
        return;
    }
    let raw = dir.join("pattern.raw");
    let mut data = vec![0u8; SIZE as usize];
    data[offset as usize..offset as usize + 65536].fill(byte);
    std::fs::write(&raw, data).expect("raw");
    ok("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", "-B", image, "pattern.raw", "tmp.qcow2"], dir).await;
    ok("qemu-img", &["commit", "-q", "tmp.qcow2"], dir).await;
}

async fn identical(dir: &Path, a: &str, b: &str) {
    let out = ok("qemu-img", &["compare", a, b], dir).await;
    assert!(out.contains("identical"), "{a} vs {b}: {out}");
}

fn hardware() -> Hardware {
    Hardware::new("test vm", "Debian_64", 1024, 2)
}

fn tar_list(out: &str) -> Vec<String> {
    out.lines().map(str::to_string).collect()
}

/// Data offset and size of `member` in a plain tar.
fn member_span(archive: &Path, member: &str) -> (u64, u64) {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open"));
    for e in tar.entries_with_seek().expect("entries") {
        let e = e.expect("entry");
        if e.path().expect("path").to_str() == Some(member) {
            return (e.raw_file_position(), e.size());
        }
    }
    panic!("{member} not in {}", archive.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn ova_from_an_overlay_verifies_and_reopens() {
    let fx = Fixture::new().await;
    let disk = fx.stream_disk().await;
    assert_eq!(disk.capacity, SIZE);
    assert_eq!(disk.populated_size, 2 * 65536, "the two written clusters, through the backing chain");

    let info = ok("qemu-img", &["info", "--output=json", "disk.vmdk"], fx.dir()).await;
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized");
    identical(fx.dir(), "overlay.qcow2", "disk.vmdk").await;

    let ova = fx.path("test.ova");
    timed(format::write_ova(&ova, &hardware(), std::slice::from_ref(&disk))).await.expect("writes");
    assert!(!fx.path("test.ova.partial").exists());

    let order = tar_list(&ok("tar", &["tf", "test.ova"], fx.dir()).await);
    assert_eq!(order, ["test_vm.ovf", "test_vm.mf", "test_vm-disk001.vmdk"]);
    let verbose = ok("tar", &["tvf", "test.ova"], fx.dir()).await;
    assert!(verbose.lines().all(|l| l.starts_with("-rw-r--r--")), "{verbose}");

    let verified = timed(format::verify_ova(&ova)).await.expect("verifies");
    assert_eq!(verified.manifest_lines, 2);
    assert_eq!(verified.disks[0].info.virtual_size, SIZE);
    assert_eq!(verified.disks[0].info.create_type.as_deref(), Some("streamOptimized"));

    let into = fx.path("opened");
    let opened = timed(format::open(&ova, &into)).await.expect("opens");
    assert_eq!(opened.kind, PackageKind::Ova);
    assert!(opened.manifest.is_some());
    assert_eq!(opened.provider, None);
    assert_eq!(opened.ovf.name, "test vm");
    assert_eq!(opened.ovf.os_type.as_deref(), Some("Debian_64"));
    assert_eq!((opened.ovf.memory_mib, opened.ovf.cpus), (Some(1024), Some(2)));
    let (info, path) = &opened.disks[0];
    assert_eq!(info.capacity, SIZE, "the OVF capacity is the virtual size");
    assert_eq!(info.format.as_deref(), Some(STREAM_OPTIMIZED_FORMAT));
    assert_eq!(path, &into.join("test_vm-disk001.vmdk"));
    identical(fx.dir(), "overlay.qcow2", "opened/test_vm-disk001.vmdk").await;

    // The extracted manifest checks out with coreutils too (after reshaping the ovftool form).
    let mf = std::fs::read_to_string(into.join("test_vm.mf")).expect("mf");
    for line in mf.lines() {
        let (file, digest) = line.strip_prefix("SHA256(").and_then(|l| l.split_once(")= ")).expect("line");
        let out = ok("sha256sum", &[file], &into).await;
        assert_eq!(out.split_whitespace().next(), Some(digest), "{file}");
    }

    // The OVF: sizes and references match the files.
    let ovf = std::fs::read_to_string(into.join("test_vm.ovf")).expect("ovf");
    let vmdk_len = std::fs::metadata(path).expect("vmdk").len();
    assert!(ovf.contains(&format!("ovf:href=\"test_vm-disk001.vmdk\" ovf:size=\"{vmdk_len}\"")), "{ovf}");
    assert!(ovf.contains(&format!("ovf:capacity=\"{SIZE}\" ovf:capacityAllocationUnits=\"byte\"")), "{ovf}");
    assert!(ovf.contains("<vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>"));
    assert!(ovf.contains("<rasd:ResourceSubType>E1000</rasd:ResourceSubType>"));
    if run("xmllint", &["--version"], fx.dir()).await.0 == 0 {
        ok("xmllint", &["--noout", "opened/test_vm.ovf"], fx.dir()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_the_ova_disk_fails_the_manifest() {
    let fx = Fixture::new().await;
    let disk = fx.stream_disk().await;
    let ova = fx.path("x.ova");
    timed(format::write_ova(&ova, &hardware(), &[disk])).await.expect("writes");
    let (offset, size) = member_span(&ova, "test_vm-disk001.vmdk");
    let mut bytes = std::fs::read(&ova).expect("read");
    bytes[(offset + size / 2) as usize] ^= 0xff;
    std::fs::write(&ova, bytes).expect("write");

    let err = timed(format::open(&ova, &fx.path("opened"))).await.expect_err("mismatch");
    match &err {
        FormatError::ManifestMismatch { file, expected, actual, .. } => {
            assert_eq!(file, "test_vm-disk001.vmdk");
            assert_ne!(expected, actual);
            let msg = err.to_string();
            assert!(msg.contains(expected.as_str()) && msg.contains(actual.as_str()), "{msg}");
        }
        other => panic!("expected a manifest mismatch, got {other}"),
    }
    // Nothing half-opened is left behind.
    assert!(!fx.path("opened/test_vm-disk001.vmdk").exists());
    let err = timed(format::verify_ova(&ova)).await.expect_err("verify fails too");
    assert!(matches!(err, FormatError::ManifestMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn virtualbox_box_verifies_and_reopens_plain_and_gzipped() {
    let fx = Fixture::new().await;
    let disk = fx.stream_disk().await;
    let out = fx.path("vb.box");
    let mut ssh = VagrantSsh::new("builder");
    ssh.insert_key = Some(true);
    timed(format::write_virtualbox_box(&out, &hardware(), &[disk], &ssh)).await.expect("writes");

    let list = tar_list(&ok("tar", &["tf", "vb.box"], fx.dir()).await);
    assert_eq!(list, ["metadata.json", "Vagrantfile", "box.ovf", "box.mf", "box-disk001.vmdk"]);
    let verified = timed(format::verify_box(&out)).await.expect("verifies");
    assert_eq!(verified.provider.as_deref(), Some("virtualbox"));
    assert_eq!(verified.manifest_lines, 2);

    std::fs::create_dir(fx.path("x")).expect("mkdir");
    ok("tar", &["xf", "../vb.box"], &fx.path("x")).await;
    identical(fx.dir(), "overlay.qcow2", "x/box-disk001.vmdk").await;
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.path("x/metadata.json")).expect("meta")).expect("json");
    assert_eq!(meta, serde_json::json!({"provider": "virtualbox"}));
    let vf = std::fs::read_to_string(fx.path("x/Vagrantfile")).expect("Vagrantfile");
    assert!(vf.contains("config.ssh.username = 'builder'") && vf.contains("config.ssh.insert_key = true"), "{vf}");
    if run("ruby", &["--version"], fx.dir()).await.0 == 0 {
        ok("ruby", &["-c", "x/Vagrantfile"], fx.dir()).await;
    }

    let opened = timed(format::open(&out, &fx.path("o1"))).await.expect("opens");
    assert_eq!(opened.kind, PackageKind::VagrantBox);
    assert_eq!(opened.provider.as_deref(), Some("virtualbox"));
    assert!(opened.vagrantfile.is_some() && opened.manifest.is_some());
    assert_eq!(opened.disks[0].0.capacity, SIZE);
    identical(fx.dir(), "overlay.qcow2", "o1/box-disk001.vmdk").await;

    // The same box gzipped, under a name that says nothing: told by its magic bytes.
    ok("sh", &["-c", "gzip -c vb.box > renamed.bin"], fx.dir()).await;
    let opened = timed(format::open(&fx.path("renamed.bin"), &fx.path("o2"))).await.expect("opens the tar.gz");
    assert_eq!(opened.kind, PackageKind::VagrantBox);
    identical(fx.dir(), "overlay.qcow2", "o2/box-disk001.vmdk").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn libvirt_box_is_a_standalone_qcow2_and_is_refused_as_a_source() {
    let fx = Fixture::new().await;
    let out = fx.path("lv.box");
    let mut ssh = VagrantSsh::new("builder");
    std::fs::write(fx.path("id_test"), "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n").expect("key");
    ssh.private_key = Some(fx.path("id_test"));
    timed(format::write_libvirt_box(&out, &fx.path("overlay.qcow2"), &hardware(), &ssh, fx.dir()))
        .await
        .expect("writes");
    let leftovers: Vec<_> = std::fs::read_dir(fx.dir())
        .expect("ls")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("box.img") || n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let verified = timed(format::verify_box(&out)).await.expect("verifies");
    assert_eq!(verified.provider.as_deref(), Some("libvirt"));

    std::fs::create_dir(fx.path("x")).expect("mkdir");
    let list = tar_list(&ok("tar", &["xzvf", "../lv.box"], &fx.path("x")).await);
    assert_eq!(list, ["metadata.json", "Vagrantfile", "vagrant_private_key", "box.img"]);
    let verbose = ok("tar", &["tzvf", "../lv.box"], &fx.path("x")).await;
    assert!(verbose.lines().any(|l| l.starts_with("-rw------- ") && l.ends_with(" vagrant_private_key")), "{verbose}");
    let info = ok("qemu-img", &["info", "--output=json", "x/box.img"], fx.dir()).await;
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["format"], "qcow2");
    assert!(info.get("backing-filename").is_none(), "{info}");
    assert_eq!(info["virtual-size"], SIZE);
    ok("qemu-img", &["check", "x/box.img"], fx.dir()).await;
    identical(fx.dir(), "overlay.qcow2", "x/box.img").await;
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.path("x/metadata.json")).expect("meta")).expect("json");
    assert_eq!(meta, serde_json::json!({"provider": "libvirt", "format": "qcow2", "virtual_size": 1}));
    let vf = std::fs::read_to_string(fx.path("x/Vagrantfile")).expect("Vagrantfile");
    assert!(vf.contains("libvirt.driver = \"kvm\"") && vf.contains("config.ssh.username = 'builder'"), "{vf}");
    assert!(vf.contains("config.ssh.private_key_path = File.expand_path('vagrant_private_key', __dir__)"), "{vf}");
    if run("ruby", &["--version"], fx.dir()).await.0 == 0 {
        ok("ruby", &["-c", "x/Vagrantfile"], fx.dir()).await;
    }

    let err = timed(format::open(&out, &fx.path("o"))).await.expect_err("libvirt box");
    assert_eq!(
        err.to_string(),
        format!(
            "box {} is for provider `libvirt`; the virtualbox builder reads `virtualbox` boxes (.box with box.ovf), .ova and .ovf",
            out.display()
        )
    );
    assert!(!fx.path("o/box.img").exists(), "stopped at metadata.json, before the disk");
}

/// A tar header for `name` written byte by byte (the tar crate refuses to write such names).
fn raw_entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn raw_tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_entries_are_refused_and_nothing_escapes() {
    let fx = Fixture::new().await;
    let cases = [
        ("dotdot", raw_entry("../evil", tar::EntryType::Regular, "", b"pwned")),
        ("nested", raw_entry("a/../../evil", tar::EntryType::Regular, "", b"pwned")),
        ("absolute", raw_entry("/tmp/imgbake-evil-abs", tar::EntryType::Regular, "", b"pwned")),
        ("symlink", raw_entry("evil-link", tar::EntryType::Symlink, "/etc/passwd", b"")),
        ("hardlink", raw_entry("evil-hard", tar::EntryType::Link, "/etc/passwd", b"")),
    ];
    for (label, entry) in cases {
        let first = raw_entry("x.ovf", tar::EntryType::Regular, "", b"<Envelope/>");
        let archive = fx.path(&format!("{label}.ova"));
        std::fs::write(&archive, raw_tar(&[first, entry])).expect("write");
        let into = fx.path(&format!("{label}/into"));
        let err = timed(format::open(&archive, &into)).await.expect_err(label);
        assert!(matches!(err, FormatError::UnsafeEntry { .. }), "{label}: {err}");
        assert!(err.to_string().contains("refusing entry"), "{err}");
        assert!(!fx.path(&format!("{label}/evil")).exists(), "{label} escaped");
        assert!(!fx.path("evil").exists());
        assert!(!Path::new("/tmp/imgbake-evil-abs").exists());
        assert!(!into.join("x.ovf").exists(), "{label}: the files written before are removed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_missing_its_disk_names_the_file() {
    let fx = Fixture::new().await;
    let disk = fx.stream_disk().await;
    let ovf = format::write_ovf(
        &hardware(),
        &[format::OvfDisk {
            file_name: "box-disk1.vmdk".into(),
            file_size: disk.file_size,
            capacity: disk.capacity,
            populated_size: None,
        }],
    )
    .expect("ovf");
    let archive = fx.path("broken.box");
    std::fs::write(
        &archive,
        raw_tar(&[
            raw_entry("metadata.json", tar::EntryType::Regular, "", br#"{"provider":"virtualbox"}"#),
            raw_entry("./box.ovf", tar::EntryType::Regular, "", ovf.as_bytes()),
        ]),
    )
    .expect("write");
    let err = timed(format::open(&archive, &fx.path("o"))).await.expect_err("missing disk");
    assert_eq!(
        err.to_string(),
        format!("box.ovf references box-disk1.vmdk, which is not in the box {}", archive.display())
    );

    // A box with no provider we read, and a zip, each in one line.
    std::fs::write(fx.path("zip.box"), b"PK\x03\x04rest of a zip").expect("write");
    let err = timed(format::open(&fx.path("zip.box"), &fx.path("z"))).await.expect_err("zip");
    assert!(err.to_string().contains("is a zip archive"), "{err}");
}

/// A VMware-style descriptor (default namespace elements, `byte * 2^N` units, `vmw:osType`) with a
/// disk beside it and an old-style SHA1 manifest.
#[tokio::test(flavor = "multi_thread")]
async fn vmware_style_ovf_with_sha1_manifest() {
    let fx = Fixture::new().await;
    fx.stream_disk().await;
    let d = fx.dir().join("vmw");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::rename(fx.path("disk.vmdk"), d.join("appliance-disk1.vmdk")).expect("mv");
    let size = std::fs::metadata(d.join("appliance-disk1.vmdk")).expect("stat").len();
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="appliance-disk1.vmdk" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{STREAM_OPTIMIZED_FORMAT}" ovf:populatedSize="131072"/>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk2"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="appliance &amp; co">
    <Info>A virtual machine</Info>
    <Name>appliance</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>4 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>
        <rasd:ElementName>2GB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    );
    let ovf_path = d.join("appliance.ovf");
    std::fs::write(&ovf_path, &ovf).expect("write");

    let parsed = format::parse_ovf(&ovf, &ovf_path).expect("parses");
    assert_eq!(parsed.name, "appliance & co");
    assert_eq!(parsed.disks[0].capacity, SIZE);
    assert_eq!(parsed.disks[1].capacity, 16 << 30);
    assert_eq!(parsed.disks[1].file, None);
    assert_eq!((parsed.memory_mib, parsed.cpus), (Some(2048), Some(4)));
    assert_eq!(parsed.vmware_os_type.as_deref(), Some("debian10_64Guest"));
    assert_eq!(parsed.system_type.as_deref(), Some("vmx-13"));
    assert_eq!(parsed.hardware().os_type, "Debian_64", "from the CIM id");
    assert_eq!(parsed.networks, ["VM Network"]);

    // The old SHA1 manifest form, VirtualBox's spacing.
    let sha1 = |f: &str| {
        let d = d.clone();
        let f = f.to_string();
        async move { ok("sha1sum", &[&f], &d).await.split_whitespace().next().expect("digest").to_string() }
    };
    let mf = format!(
        "SHA1 (appliance.ovf) = {}\nSHA1 (appliance-disk1.vmdk) = {}\n",
        sha1("appliance.ovf").await,
        sha1("appliance-disk1.vmdk").await
    );
    std::fs::write(d.join("appliance.mf"), &mf).expect("mf");
    let opened = timed(format::open(&ovf_path, &fx.path("unused"))).await.expect("opens");
    assert_eq!(opened.kind, PackageKind::Ovf);
    assert_eq!(opened.manifest.as_deref(), Some(d.join("appliance.mf").as_path()));
    assert_eq!(opened.disks.len(), 1, "the empty disk has no file");
    assert_eq!(opened.disks[0].1, d.join("appliance-disk1.vmdk"));
    assert!(!fx.path("unused").exists(), "a plain OVF is used in place");

    let first = mf.lines().next().and_then(|l| l.rsplit(' ').next()).expect("digest").to_string();
    let flipped = format!("{}{}", if first.starts_with('0') { "1" } else { "0" }, &first[1..]);
    let bad = mf.replacen(&first, &flipped, 1);
    std::fs::write(d.join("appliance.mf"), bad).expect("mf");
    let err = timed(format::open(&ovf_path, &fx.path("unused"))).await.expect_err("sha1 mismatch");
    assert!(
        matches!(&err, FormatError::ManifestMismatch { algorithm, file, .. } if algorithm == "SHA1" && file == "appliance.ovf"),
        "{err}"
    );
}
