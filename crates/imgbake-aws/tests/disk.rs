//! Reading a disk before it becomes an AMI (`aws.import`): real disks made here with sfdisk and
//! mkfs.ext4 (e2fsprogs) and converted with qemu-img, inspected the way a build does.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbake_aws::disk::{inspect, to_raw};

const GPT_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const GPT_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Where the root file system starts (sectors) and the disk's size.
const ROOT_START: u64 = 12288;
const DISK_MIB: u64 = 40;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A root file system tree with a kernel's module lists and a real program.
fn root_tree(dir: &Path, kernel: &str, dep: &str, builtin: &str) -> PathBuf {
    let root = dir.join("root");
    let modules = root.join("usr/lib/modules").join(kernel);
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(modules.join("modules.dep"), dep).unwrap();
    std::fs::write(modules.join("modules.builtin"), builtin).unwrap();
    // An older kernel without anything: the newest one is the one checked.
    std::fs::create_dir_all(root.join("usr/lib/modules/5.10.0-9-amd64")).unwrap();
    std::fs::copy("/usr/bin/true", root.join("usr/bin/true")).unwrap();
    root
}

/// A raw disk: `table` is sfdisk's input for the partitions (the last one is the ext4 root at
/// ROOT_START, filled from `root`).
fn make_disk(dir: &Path, label: &str, parts: &[String], root: Option<&Path>) -> PathBuf {
    let disk = dir.join("disk.raw");
    run(Command::new("truncate").arg("-s").arg(format!("{DISK_MIB}M")).arg(&disk));
    if !parts.is_empty() {
        let script = format!("label: {label}\n{}\n", parts.join("\n"));
        let mut child = Command::new("sfdisk")
            .args(["--no-reread", "--no-tell-kernel", "-q"])
            .arg(&disk)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "sfdisk {script}");
    }
    if let Some(root) = root {
        let kib = (DISK_MIB * 1024 * 1024 - ROOT_START * 512 - 34 * 512) / 1024;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(root)
            .arg("-E")
            .arg(format!("offset={}", ROOT_START * 512))
            .arg(&disk)
            .arg(format!("{kib}k")));
    }
    disk
}

fn gpt(with_bios: bool, with_esp: bool) -> Vec<String> {
    let mut p = Vec::new();
    if with_bios {
        p.push(format!("start=2048, size=2048, type={GPT_BIOS_BOOT}"));
    }
    if with_esp {
        p.push(format!("start=4096, size=8192, type={GPT_ESP}"));
    }
    p.push(format!("start={ROOT_START}, size={}, type={GPT_LINUX}", DISK_MIB * 2048 - ROOT_START - 40));
    p
}

const DEP_BOTH: &str = "kernel/drivers/net/ethernet/amazon/ena/ena.ko.xz:\nkernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz\n";
const KERNEL: &str = "6.1.0-57-cloud-amd64";

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

#[tokio::test]
async fn boot_modes_come_from_the_partition_table() {
    for (bios, esp, want) in [(true, true, "uefi-preferred"), (false, true, "uefi"), (true, false, "legacy-bios")] {
        let dir = tempfile::tempdir().unwrap();
        let root = root_tree(dir.path(), KERNEL, DEP_BOTH, "");
        let disk = make_disk(dir.path(), "gpt", &gpt(bios, esp), Some(&root));
        let found = inspect(&disk, true).await.unwrap();
        assert_eq!(found.boot_mode, want, "bios boot {bios}, esp {esp}");
        assert_eq!(found.kernel.as_deref(), Some(KERNEL), "the newest kernel");
        assert!(found.missing_drivers.is_empty(), "{found:?}");
        assert_eq!(found.architecture.as_deref(), Some(host_arch()));
    }
    // MBR: BIOS boot.
    let dir = tempfile::tempdir().unwrap();
    let root = root_tree(dir.path(), KERNEL, DEP_BOTH, "");
    let parts = vec![format!("start={ROOT_START}, type=83")];
    let disk = make_disk(dir.path(), "dos", &parts, Some(&root));
    assert_eq!(inspect(&disk, true).await.unwrap().boot_mode, "legacy-bios");
}

#[tokio::test]
async fn missing_drivers_are_found_and_built_in_ones_count() {
    let dir = tempfile::tempdir().unwrap();
    // ENA absent; NVMe built into the kernel (modules.builtin), not a module.
    let root = root_tree(
        dir.path(),
        KERNEL,
        "kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n",
        "kernel/drivers/nvme/host/nvme.ko\n",
    );
    let disk = make_disk(dir.path(), "gpt", &gpt(true, true), Some(&root));
    let found = inspect(&disk, true).await.unwrap();
    assert_eq!(found.missing_drivers, vec!["ena"]);

    let dir = tempfile::tempdir().unwrap();
    let root = root_tree(dir.path(), KERNEL, "", "");
    let disk = make_disk(dir.path(), "gpt", &gpt(true, true), Some(&root));
    assert_eq!(inspect(&disk, true).await.unwrap().missing_drivers, vec!["ena", "nvme"]);
}

#[tokio::test]
async fn a_disk_without_partitions_or_root_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path(), "gpt", &[], None);
    let e = inspect(&disk, true).await.unwrap_err();
    assert!(e.message.contains("has no partition table"), "{}", e.message);

    // Partitions, but the root is not ext2/3/4: the check cannot run unless it is turned off.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path(), "gpt", &gpt(true, true), None);
    let e = inspect(&disk, true).await.unwrap_err();
    assert!(e.message.contains("set aws.check_drivers = false"), "{}", e.message);
    let found = inspect(&disk, false).await.unwrap();
    assert_eq!((found.boot_mode.as_str(), found.kernel), ("uefi-preferred", None));
}

#[tokio::test]
async fn a_qcow2_chain_is_flattened_into_a_sparse_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_tree(dir.path(), KERNEL, DEP_BOTH, "");
    let raw = make_disk(dir.path(), "gpt", &gpt(true, true), Some(&root));
    let base = dir.path().join("base.qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&base));
    let overlay = dir.path().join("child.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&base).arg(&overlay));
    let flat = dir.path().join("flat.raw");
    let size = to_raw(&overlay, &flat).await.unwrap();
    assert_eq!(size, DISK_MIB << 20);
    assert_eq!(std::fs::read(&flat).unwrap(), std::fs::read(&raw).unwrap(), "the same bytes as the original");
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&flat).unwrap().blocks() * 512;
    assert!(allocated < size / 2, "sparse: {allocated} bytes allocated of {size}");
    assert_eq!(inspect(&flat, true).await.unwrap().kernel.as_deref(), Some(KERNEL));

    let e = to_raw(&dir.path().join("missing.qcow2"), &dir.path().join("x.raw")).await.unwrap_err();
    assert!(e.message.contains("qemu-img could not read the disk"), "{}", e.message);
}
