//! Vagrant boxes: for the `virtualbox` provider (a plain tar: the VMDK is already compressed) and
//! for `libvirt` (a tar.gz with a compressed qcow2).
//!
//! The box's Vagrantfile holds the defaults of every machine made from it. What we write:
//! - always `config.ssh.username`: the user the build connected as;
//! - `config.ssh.password` only when given (it is then readable by anyone who has the box);
//! - with a private key: the key goes into the box as `vagrant_private_key` (mode 0600) and
//!   `config.ssh.private_key_path` points at it relative to the Vagrantfile, the way boxes that
//!   ship their own key do; Vagrant only swaps out its well-known insecure key, so a shipped key
//!   stays in use unless the user's Vagrantfile says otherwise;
//! - `config.ssh.insert_key` only when the caller sets it (Vagrant's default is `true`: replace
//!   the insecure key with a fresh one on first boot);
//! - for libvirt, the memory and CPUs (a qcow2 does not carry them, unlike an OVF) and the `kvm`
//!   driver.

use std::path::{Path, PathBuf};

use super::archive::{Member, write_tar};
use super::error::{FormatError, join_error};
use super::ova::ovf_members;
use super::ovf::Hardware;
use super::vmdk::{StreamDisk, info, remove_quietly, to_compressed_qcow2};

/// How Vagrant connects to machines made from a box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VagrantSsh {
    /// `config.ssh.username`.
    pub username: String,
    /// `config.ssh.password`, if the box is to carry one.
    pub password: Option<String>,
    /// A private key to ship in the box (as `vagrant_private_key`) and use.
    pub private_key: Option<PathBuf>,
    /// `config.ssh.insert_key`, if set.
    pub insert_key: Option<bool>,
}

impl VagrantSsh {
    /// Connect as `username` with Vagrant's defaults otherwise (its insecure key, replaced on first
    /// boot).
    pub fn new(username: impl Into<String>) -> VagrantSsh {
        VagrantSsh { username: username.into(), password: None, private_key: None, insert_key: None }
    }
}

/// The name of a shipped private key inside a box.
pub const BOX_PRIVATE_KEY: &str = "vagrant_private_key";

/// A Ruby single-quoted string literal.
fn ruby(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The Vagrantfile of a box for `provider` (`virtualbox` or `libvirt`).
pub fn vagrantfile(provider: &str, hw: &Hardware, ssh: &VagrantSsh) -> String {
    let mut v = String::from(
        "# Written by imgbake: defaults for machines made from this box.\nVagrant.configure(\"2\") do |config|\n",
    );
    v.push_str(&format!("  config.ssh.username = {}\n", ruby(&ssh.username)));
    if let Some(p) = &ssh.password {
        v.push_str(&format!("  config.ssh.password = {}\n", ruby(p)));
    }
    if ssh.private_key.is_some() {
        v.push_str(&format!("  config.ssh.private_key_path = File.expand_path({}, __dir__)\n", ruby(BOX_PRIVATE_KEY)));
    }
    if let Some(insert) = ssh.insert_key {
        v.push_str(&format!("  config.ssh.insert_key = {insert}\n"));
    }
    if provider == "libvirt" {
        v.push_str("  config.vm.provider :libvirt do |libvirt|\n");
        v.push_str("    libvirt.driver = \"kvm\"\n");
        v.push_str(&format!("    libvirt.memory = {}\n", hw.memory_mib));
        v.push_str(&format!("    libvirt.cpus = {}\n", hw.cpus));
        v.push_str("  end\n");
    }
    v.push_str("end\n");
    v
}

fn key_member(ssh: &VagrantSsh) -> Result<Option<Member>, FormatError> {
    let Some(key) = &ssh.private_key else { return Ok(None) };
    let size = std::fs::metadata(key).map_err(|e| FormatError::io("reading the private key", key, e))?.len();
    Ok(Some(Member::File { name: BOX_PRIVATE_KEY.into(), path: key.clone(), size, mode: 0o600 }))
}

/// Write a Vagrant box for the `virtualbox` provider at `out`: `metadata.json`
/// (`{"provider":"virtualbox"}`), `Vagrantfile`, `box.ovf`, `box.mf` (SHA-256; VirtualBox checks it
/// on import), `box-disk001.vmdk`... and the private key when one is shipped. A plain tar through
/// `out.partial`, renamed into place when complete.
pub async fn write_virtualbox_box(
    out: &Path,
    hw: &Hardware,
    disks: &[StreamDisk],
    ssh: &VagrantSsh,
) -> Result<(), FormatError> {
    let names: Vec<String> = (1..=disks.len()).map(|i| format!("box-disk{i:03}.vmdk")).collect();
    let mut members = vec![
        Member::bytes("metadata.json", "{\"provider\":\"virtualbox\"}\n"),
        Member::bytes("Vagrantfile", vagrantfile("virtualbox", hw, ssh)),
    ];
    members.extend(key_member(ssh)?);
    members.extend(ovf_members(hw, "box", disks, &names)?);
    let out = out.to_path_buf();
    tokio::task::spawn_blocking(move || write_tar(&out, &members, false))
        .await
        .map_err(|e| join_error("writing the box", e))?
}

/// `metadata.json` of a libvirt box: the virtual size in GiB, rounded up.
pub fn libvirt_metadata(virtual_size: u64) -> String {
    let gib = virtual_size.div_ceil(1 << 30);
    format!("{{\"provider\":\"libvirt\",\"format\":\"qcow2\",\"virtual_size\":{gib}}}\n")
}

/// Write a Vagrant box for the `libvirt` provider at `out` from `src` (any image qemu-img reads;
/// a backing chain is flattened): `metadata.json`, `Vagrantfile`, `box.img` (compressed qcow2)
/// and the private key when shipped, as a tar.gz. The qcow2 is made in `scratch_dir` and removed
/// afterwards; the archive goes through `out.partial`.
pub async fn write_libvirt_box(
    out: &Path,
    src: &Path,
    hw: &Hardware,
    ssh: &VagrantSsh,
    scratch_dir: &Path,
) -> Result<(), FormatError> {
    let img = scratch_dir.join(format!(".{}.box.img", super::ova::package_stem(&hw.name)));
    to_compressed_qcow2(src, &img).await?;
    let result = async {
        let made = info(&img).await?;
        let size = std::fs::metadata(&img).map_err(|e| FormatError::io("reading", &img, e))?.len();
        let mut members = vec![
            Member::bytes("metadata.json", libvirt_metadata(made.virtual_size)),
            Member::bytes("Vagrantfile", vagrantfile("libvirt", hw, ssh)),
        ];
        members.extend(key_member(ssh)?);
        members.push(Member::file("box.img", &img, size));
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || write_tar(&out, &members, true))
            .await
            .map_err(|e| join_error("writing the libvirt box", e))?
    }
    .await;
    remove_quietly(&img);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vagrantfile_quotes_and_options() {
        let hw = Hardware::new("x", "Debian_64", 2048, 2);
        let mut ssh = VagrantSsh::new("o'neil");
        assert!(vagrantfile("virtualbox", &hw, &ssh).contains("config.ssh.username = 'o\\'neil'\n"));
        assert!(!vagrantfile("virtualbox", &hw, &ssh).contains("insert_key"));
        ssh.insert_key = Some(false);
        ssh.private_key = Some("/k".into());
        let v = vagrantfile("libvirt", &hw, &ssh);
        assert!(v.contains("config.ssh.insert_key = false\n"), "{v}");
        assert!(v.contains("File.expand_path('vagrant_private_key', __dir__)"), "{v}");
        assert!(v.contains("libvirt.driver = \"kvm\"") && v.contains("libvirt.memory = 2048"), "{v}");
    }

    #[test]
    fn libvirt_size_rounds_up() {
        assert!(libvirt_metadata(1 << 30).contains("\"virtual_size\":1}"));
        assert!(libvirt_metadata((1 << 30) + 1).contains("\"virtual_size\":2}"));
        assert!(libvirt_metadata(64 << 20).contains("\"virtual_size\":1}"));
    }
}
