//! Fingerprints of a fixed tree, as literal strings: a change to how settings are declared or
//! parsed must not change what existing artifacts are compared against (that would rebuild them all).

use imgbake::config::{Stamp, Tree};
use imgbake::core::fingerprint::Inputs;

const TREE: &str = r#"
[settings]
id = "fingerprint-test-0001"

[defaults]
communicator = { username = "admin", timeout = "3m" }

[images.base]
builder = "aws"
source = { ami_filter = { name = "debian-12-*", owners = ["136693071363"], most_recent = true } }
tags = { team = "platform" }
[images.base.aws]
region = "eu-west-1"
instance_type = "t3.small"
copy_regions = ["us-east-1"]
ami_name = "base-{{ timestamp }}"
share = { accounts = ["123456789012"] }
instance_timeout = "20m"
[[images.base.aws.block_devices]]
device_name = "/dev/xvda"
volume_size = "20GiB"
[[images.base.steps]]
shell = { script = "patch.sh" }

[images.web]
parent = "base"
[[images.web.steps]]
name = "motd"
shell = { inline = ["echo hi > /etc/motd"] }

[images.vm]
builder = "qemu"
source = { disk = "base.qcow2", kernel = "vmlinuz", append = "console=ttyS0" }
qemu = { memory = "1GiB", format = "qcow2", disk_size = "10GiB" }
[[images.vm.steps]]
file = { source = "patch.sh", destination = "/tmp/p.sh" }

[images.both]
builder = ["aws", "qemu"]
source = { ami = "ami-0123456789abcdef0", disk = "base.qcow2" }
aws = { region = "eu-west-1" }
"#;

fn fingerprints() -> Vec<String> {
    let d = tempfile::tempdir().unwrap();
    for (f, c) in [("tree.toml", TREE), ("patch.sh", "apt-get -y upgrade\n"), ("base.qcow2", "disk"), ("vmlinuz", "k")]
    {
        std::fs::write(d.path().join(f), c).unwrap();
    }
    let opts = imgbake::config::LoadOptions { env: Default::default(), ..imgbake::load_options() };
    let tree = Tree::load(&d.path().join("tree.toml"), &opts).unwrap_or_else(|e| panic!("{e}"));
    let masked = tree.rerender(&Stamp::masked()).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for (image, builder) in [("base", "aws"), ("web", "aws"), ("vm", "qemu"), ("both", "aws"), ("both", "qemu")] {
        let i = Inputs::compute(&masked, masked.image(image).unwrap(), builder, "origin-1").unwrap();
        out.push(format!("{image}/{builder} {}", i.fingerprint()));
    }
    out
}

#[test]
fn fingerprints_of_a_fixed_tree_do_not_change() {
    // Recorded before builder settings moved out of imgbake-config: they must stay exactly these.
    let want = [
        "base/aws fp1:7a3b016f52a9b748862b:8784.e5e0.eae7.c7a1:f906f54c:fe0b4995",
        "web/aws fp1:096d9bb041f42a0f06b0:a23b.e5e0.eae7.851a:f906f54c:",
        "vm/qemu fp1:49af4982ea52740d6e20:bd0c.e5e0.4a97.9c7f:f906f54c:fe0b4995",
        "both/aws fp1:e4613a2a46226aaaafe4:71bf.e5e0.3717:f906f54c:",
        "both/qemu fp1:fadf572050b6975f79e4:71bf.e5e0.7423:f906f54c:",
    ];
    assert_eq!(fingerprints(), want);
}
