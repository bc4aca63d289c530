//! `qemu` → `qemu`, `vsphere-clone` → `vsphere`, `virtualbox-ovf` → `virtualbox`, `null` → `null`.

use toml::Value as T;

use super::{Tx, duration, mib, rest, take};
use crate::model::{Body, Node, Source};
use crate::report::Outcome;
use crate::tree::{Image, Table};

/// Keys of the local builders that have nothing to do in imgbake, and why.
const NOT_NEEDED: &[(&str, &str)] = &[
    ("vm_name", "imgbake names the files and machines after the image and build (`IMAGE-BUILD.*`)"),
    ("headless", "imgbake's build machines are always headless; a failing boot shows the serial console"),
    (
        "shutdown_command",
        "imgbake syncs over SSH, then presses the ACPI power button (vSphere: VMware Tools); no command needed",
    ),
    ("boot_wait", "imgbake waits for SSH and the boot identity, not for a fixed time"),
    ("vnc_bind_address", "no display: the serial console goes to a log"),
    ("vnc_port_min", "no display"),
    ("vnc_port_max", "no display"),
    ("vnc_use_password", "no display"),
    ("display", "no display"),
    ("use_default_display", "no display"),
    ("host_port_min", "each build forwards a free port on 127.0.0.1"),
    ("host_port_max", "each build forwards a free port on 127.0.0.1"),
    ("ssh_host_port_min", "each build forwards a free port on 127.0.0.1"),
    ("ssh_host_port_max", "each build forwards a free port on 127.0.0.1"),
    ("skip_nat_mapping", "each build forwards a free port on 127.0.0.1"),
    ("ssh_skip_nat_mapping", "each build forwards a free port on 127.0.0.1"),
    ("vrdp_bind_address", "no display"),
    ("vrdp_port_min", "no display"),
    ("vrdp_port_max", "no display"),
    ("net_device", "imgbake gives the machine a virtio network device"),
    ("disk_interface", "imgbake attaches the disk as virtio"),
    ("machine_type", "imgbake picks the machine type"),
    ("skip_compaction", "imgbake writes the formats compressed where they allow it"),
    ("disk_compression", "imgbake writes the formats compressed where they allow it"),
    ("disk_discard", "not needed"),
    ("disk_detect_zeroes", "not needed"),
    ("iso_checksum", "imgbake fingerprints the source disk's content; a changed disk rebuilds the image"),
    ("guest_os_type", "the source template or OVF keeps its guest OS type"),
    ("import_opts", "nothing is imported into VirtualBox"),
    ("import_flags", "nothing is imported into VirtualBox"),
    ("keep_registered", "nothing is registered"),
    ("export_opts", "a SHA-256 manifest is always written; product and description fields are not supported"),
    ("target_path", "downloads are cached by SHA-256 (`virtualbox.cache_dir`)"),
    ("virtualbox_version_file", "no VirtualBox version is involved"),
    ("guest_additions_path", "guest additions are not installed (install them with steps)"),
    ("insecure_connection_ca", "use `vsphere.ca_file`"),
    ("convert_to_template", "a template is imgbake's default output"),
    ("floppy_files", "upload files with `file` steps"),
];

pub(crate) fn source(s: &Source, mut body: Body, builder: &str, img: &mut Image, tx: &mut Tx) {
    let mut t = Table::new();
    match builder {
        "qemu" => qemu(s, &mut body, &mut t, img, tx),
        "vsphere" => vsphere(s, &mut body, &mut t, img, tx),
        "virtualbox" => virtualbox(s, &mut body, &mut t, img, tx),
        _ => null(s, &mut body, img, tx),
    }
    common(s, &mut body, builder, &mut t, img, tx);
    for (k, why) in NOT_NEEDED {
        if let Some(n) = take(&mut body, k) {
            if *k == "convert_to_template" && n.bool() == Some(false) {
                tx.unmapped(&n.loc, &format!("{}.{k}", s.kind), "imgbake's vsphere builder always leaves a template (`output = \"clone\"` makes the template from a clone)");
            } else {
                tx.dropped(&n.loc, &format!("{}.{k}", s.kind), *why);
            }
        }
    }
    for k in ["boot_command", "http_directory", "http_content", "cd_files", "floppy_dirs"] {
        if let Some(n) = take(&mut body, k) {
            let empty = n.list().is_some_and(|l| l.is_empty());
            if empty {
                tx.dropped(&n.loc, &format!("{}.{k}", s.kind), "empty");
            } else {
                tx.unmapped(&n.loc, &format!("{}.{k}", s.kind), "imgbake starts from installed systems, not installers: no boot commands or HTTP server; upload files with `file` steps");
            }
        }
    }
    rest(body, &s.kind, tx);
    if builder != "null" {
        img.settings.insert(builder.to_string(), t);
    }
}

fn to(img: &Image, builder: &str, k: &str) -> String {
    format!("images.{}.{builder}.{k}", img.name)
}

/// Keys several local builders share: sizes, CPUs, output directory, timeouts.
fn common(s: &Source, body: &mut Body, builder: &str, t: &mut Table, img: &Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    for (k, to_key) in [("memory", "memory"), ("RAM", "memory"), ("disk_size", "disk_size")] {
        if let Some(n) = take(body, k) {
            match mib(&n) {
                Ok(v) => {
                    t.insert(to_key.into(), v);
                    tx.mapped(&n.loc, &key(k), &to(img, builder, to_key));
                }
                Err(why) => tx.unmapped(&n.loc, &key(k), why),
            }
        }
    }
    for k in ["cpus", "CPUs"] {
        if let Some(n) = take(body, k) {
            let cpus = n.scalar().and_then(|c| match c.parse::<i64>() {
                Ok(c) => Some(T::Integer(c)),
                // `{{ var.cpus }}` alone takes the variable's value with its type.
                Err(_) if c.starts_with("{{ var.") && c.ends_with(" }}") => Some(T::String(c)),
                Err(_) => None,
            });
            match cpus {
                Some(c) => {
                    t.insert("cpus".into(), c);
                    tx.mapped(&n.loc, &key(k), &to(img, builder, "cpus"));
                }
                None => tx.unmapped(&n.loc, &key(k), "a number of CPUs"),
            }
        }
    }
    if let Some(n) = take(body, "output_directory") {
        if builder == "vsphere" {
            tx.unmapped(
                &n.loc,
                &key("output_directory"),
                "the vSphere builder leaves a template in vCenter; exporting OVF is not supported yet",
            );
        } else if let Some(p) = n.scalar() {
            t.insert("output_dir".into(), T::String(tx.path(&p)));
            tx.mapped(&n.loc, &key("output_directory"), &to(img, builder, "output_dir"));
        }
    }
    for (k, to_key) in [("shutdown_timeout", "shutdown_timeout"), ("ip_wait_timeout", "ip_timeout")] {
        if let Some(n) = take(body, k) {
            match duration(&n) {
                Ok(v) => {
                    t.insert(to_key.into(), v);
                    tx.mapped(&n.loc, &key(k), &to(img, builder, to_key));
                }
                Err(why) => tx.unmapped(&n.loc, &key(k), why),
            }
        }
    }
}

fn qemu(s: &Source, body: &mut Body, t: &mut Table, img: &mut Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    let disk_image_key = take(body, "disk_image");
    let disk_image = disk_image_key.as_ref().and_then(|n| n.bool()).unwrap_or(false);
    if let Some(n) = &disk_image_key {
        tx.dropped(&n.loc, &key("disk_image"), "imgbake's qemu source is always an installed disk (`source.disk`)");
    }
    let use_backing = take(body, "use_backing_file");
    for k in ["iso_url", "iso_urls"] {
        let Some(n) = take(body, k) else { continue };
        let url = n.strings().and_then(|u| u.into_iter().next()).unwrap_or_default();
        let rendered = tx.render(&url);
        if !disk_image {
            tx.unmapped(&n.loc, &key(k), "an installer ISO: imgbake starts from an installed disk (`source.disk`; scripts/make-base-image.sh makes one)");
        } else if rendered.contains("://") && !rendered.starts_with("file://") {
            tx.unmapped(&n.loc, &key(k), "imgbake's qemu source is a local disk: download it once (checking its checksum) and give the path as `source.disk`");
        } else {
            img.source.insert("disk".into(), T::String(tx.path(url.trim_start_matches("file://"))));
            tx.mapped(&n.loc, &key(k), &format!("images.{}.source.disk", img.name));
        }
    }
    if let Some(n) = take(body, "format") {
        match n.scalar().as_deref() {
            Some(f @ ("qcow2" | "raw")) => {
                let f = if f == "qcow2" && use_backing.as_ref().and_then(|n| n.bool()) == Some(true) {
                    "overlay"
                } else {
                    f
                };
                t.insert("format".into(), T::String(f.into()));
                tx.mapped(&n.loc, &key("format"), &to(img, "qemu", "format"));
            }
            _ => tx.unmapped(&n.loc, &key("format"), "imgbake writes `overlay`, `qcow2`, `raw`, `vmdk` or `vdi`"),
        }
    }
    if let Some(n) = use_backing {
        tx.dropped(
            &n.loc,
            &key("use_backing_file"),
            "`format = \"overlay\"` (a qcow2 backed by the parent) is how imgbake writes a backed disk",
        );
    }
    if let Some(n) = take(body, "accelerator") {
        match n.scalar().as_deref() {
            Some(a @ ("kvm" | "tcg")) => {
                t.insert("accelerator".into(), T::String(a.into()));
                tx.mapped(&n.loc, &key("accelerator"), &to(img, "qemu", "accelerator"));
            }
            Some("none") => {
                t.insert("accelerator".into(), T::String("auto".into()));
                tx.report(
                    Outcome::Changed,
                    &n.loc,
                    &key("accelerator"),
                    Some(to(img, "qemu", "accelerator")),
                    "`auto`: KVM when it works, else TCG",
                );
            }
            _ => tx.unmapped(&n.loc, &key("accelerator"), "imgbake runs QEMU with `kvm` or `tcg` (`auto` picks)"),
        }
    }
    if let Some(n) = take(body, "qemu_binary") {
        tx.put(t, &n, &key("qemu_binary"), "binary", &to(img, "qemu", "binary"));
    }
    if let Some(n) = take(body, "qemuargs") {
        let flat: Option<Vec<T>> =
            n.list().map(|l| l.iter().flat_map(|a| a.strings().unwrap_or_default()).map(T::String).collect());
        match flat {
            Some(args) => {
                t.insert("qemu_args".into(), T::Array(args));
                tx.report(
                    Outcome::Changed,
                    &n.loc,
                    &key("qemuargs"),
                    Some(to(img, "qemu", "qemu_args")),
                    "added to imgbake's own arguments, which set memory, CPUs, disk and network",
                );
            }
            None => tx.unmapped(&n.loc, &key("qemuargs"), "a list of argument lists"),
        }
    }
}

fn vsphere(s: &Source, body: &mut Body, t: &mut Table, img: &mut Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    for (k, to_key) in [
        ("vcenter_server", "url"),
        ("username", "username"),
        ("insecure_connection", "insecure"),
        ("datacenter", "datacenter"),
        ("cluster", "cluster"),
        ("host", "host"),
        ("resource_pool", "resource_pool"),
        ("datastore", "datastore"),
        ("folder", "folder"),
        ("network", "network"),
        ("notes", "notes"),
        ("linked_clone", "linked_clone"),
        ("vm_name", "template_name"),
    ] {
        if let Some(n) = take(body, k) {
            tx.put(t, &n, &key(k), to_key, &to(img, "vsphere", to_key));
        }
    }
    if let Some(n) = take(body, "password") {
        t.insert("password_env".into(), T::String("VSPHERE_PASSWORD".into()));
        tx.report(
            Outcome::Changed,
            &n.loc,
            &key("password"),
            Some(to(img, "vsphere", "password_env")),
            "imgbake reads the vCenter password only from the environment, never from the tree: export VSPHERE_PASSWORD in CI",
        );
    }
    if let Some(n) = take(body, "template") {
        tx.put(&mut img.source, &n, &key("template"), "template", &format!("images.{}.source.template", img.name));
    }
    if let Some(n) = take(body, "storage") {
        let items: Vec<&Node> = n.list().map(|l| l.iter().collect()).unwrap_or_else(|| vec![&n]);
        let mut disks = Vec::new();
        for d in items {
            let m = d.map().unwrap_or_default();
            let size = m.iter().find(|(k, _)| k == "disk_size").map(|(_, v)| mib(v));
            let thin = m.iter().find(|(k, _)| k == "disk_thin_provisioned").and_then(|(_, v)| v.bool());
            match size {
                Some(Ok(size)) => {
                    let mut disk = toml::Table::new();
                    disk.insert("size".into(), size);
                    if let Some(thin) = thin {
                        disk.insert("thin".into(), T::Boolean(thin));
                    }
                    disks.push(T::Table(disk));
                }
                _ => tx.unmapped(
                    &d.loc,
                    &key("storage"),
                    "imgbake's extra disks take a size (`disks = [{ size = \"10GiB\", thin = true }]`)",
                ),
            }
        }
        if !disks.is_empty() {
            t.insert("disks".into(), T::Array(disks));
            tx.mapped(&n.loc, &key("storage"), &to(img, "vsphere", "disks"));
        }
    }
    for (k, why) in [
        ("configuration_parameters", "imgbake writes its own extraConfig keys; other ones are not supported yet"),
        ("content_library_destination", "publishing to a content library is not supported yet"),
        ("export", "exporting OVF is not supported yet"),
        ("customize", "guest customization: imgbake passes cloud-init through guestinfo; do the rest in steps"),
    ] {
        if let Some(n) = take(body, k) {
            tx.unmapped(&n.loc, &key(k), why);
        }
    }
}

fn virtualbox(s: &Source, body: &mut Body, t: &mut Table, img: &mut Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    if let Some(n) = take(body, "source_path") {
        let p = n.scalar().unwrap_or_default();
        let rendered = tx.render(&p);
        let kind = match rendered.rsplit('.').next().unwrap_or_default() {
            "ova" => Some("ova"),
            "ovf" => Some("ovf"),
            "box" => Some("box"),
            _ => None,
        };
        match kind {
            Some(kind) if rendered.contains("://") && kind == "ovf" => {
                tx.unmapped(&n.loc, &key("source_path"), "an OVF by URL: download it with its disks and give the path")
            }
            Some(kind) => {
                let v = if rendered.contains("://") { p.clone() } else { tx.path(&p) };
                img.source.insert(kind.into(), T::String(v));
                tx.mapped(&n.loc, &key("source_path"), &format!("images.{}.source.{kind}", img.name));
            }
            None => tx.unmapped(&n.loc, &key("source_path"), "an `.ova`, `.ovf` or `.box`"),
        }
    }
    let checksum_type_key = take(body, "checksum_type");
    let checksum_type = checksum_type_key.as_ref().and_then(|n| n.scalar());
    if let Some(n) = &checksum_type_key {
        tx.dropped(&n.loc, &key("checksum_type"), "imgbake checks SHA-256 (`source.sha256`)");
    }
    if let Some(n) = take(body, "checksum") {
        let c = n.scalar().unwrap_or_default();
        let sha = c
            .strip_prefix("sha256:")
            .map(str::to_string)
            .or_else(|| (checksum_type.as_deref() == Some("sha256")).then(|| c.clone()));
        match sha {
            Some(h) if h.len() == 64 => {
                img.source.insert("sha256".into(), T::String(h));
                tx.mapped(&n.loc, &key("checksum"), &format!("images.{}.source.sha256", img.name));
            }
            _ if c == "none" => {
                tx.dropped(&n.loc, &key("checksum"), "without a checksum; imgbake requires `source.sha256` for a URL")
            }
            _ => tx.unmapped(&n.loc, &key("checksum"), "imgbake checks SHA-256 only: give `sha256:` and 64 hex digits"),
        }
    }
    if let Some(n) = take(body, "format") {
        match n.scalar().as_deref() {
            Some("ova") => {
                t.insert("formats".into(), T::Array(vec![T::String("ova".into())]));
                tx.mapped(&n.loc, &key("format"), &to(img, "virtualbox", "formats"));
            }
            _ => tx.unmapped(&n.loc, &key("format"), "imgbake writes `ova`, `box` or `libvirt` (an OVF directory is not supported: an OVA is a tar of the same files)"),
        }
    }
    if let Some(n) = take(body, "guest_additions_mode") {
        if n.scalar().as_deref() == Some("disable") {
            tx.dropped(&n.loc, &key("guest_additions_mode"), "imgbake does not install guest additions");
        } else {
            tx.unmapped(
                &n.loc,
                &key("guest_additions_mode"),
                "imgbake does not install guest additions: install them with `file` + `shell` steps",
            );
        }
    }
    vboxmanage(s, body, t, img, tx);
    if let Some(n) = take(body, "hard_drive_interface") {
        tx.put(t, &n, &key("hard_drive_interface"), "disk_controller", &to(img, "virtualbox", "disk_controller"));
    }
}

/// `vboxmanage`, `vboxmanage_post`: only `modifyvm --memory N --cpus N` has a meaning here.
fn vboxmanage(s: &Source, body: &mut Body, t: &mut Table, img: &Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    for k in ["vboxmanage", "vboxmanage_post"] {
        let Some(n) = take(body, k) else { continue };
        for cmd in n.list().unwrap_or_default() {
            let args = cmd.strings().unwrap_or_default();
            let mut i = 0;
            let mut understood = !args.is_empty() && args[0] == "modifyvm";
            while understood && i < args.len() {
                match args[i].as_str() {
                    "--memory" if i + 1 < args.len() => {
                        t.insert("memory".into(), T::String(format!("{}MiB", args[i + 1])));
                        i += 2;
                    }
                    "--cpus" if i + 1 < args.len() => {
                        let c = &args[i + 1];
                        match c.parse() {
                            Ok(n) => t.insert("cpus".into(), T::Integer(n)),
                            Err(_) if c.starts_with("{{ var.") && c.ends_with(" }}") => {
                                t.insert("cpus".into(), T::String(c.clone()))
                            }
                            Err(_) => {
                                understood = false;
                                continue;
                            }
                        };
                        i += 2;
                    }
                    a if i < 2 && (a == "modifyvm" || a.contains("{{")) => i += 1,
                    _ => understood = false,
                }
            }
            if understood {
                tx.report(
                    Outcome::Changed,
                    &cmd.loc,
                    &key(k),
                    Some(to(img, "virtualbox", "memory/cpus")),
                    "`modifyvm --memory/--cpus` become the OVF's memory and CPUs",
                );
            } else {
                tx.unmapped(&cmd.loc, &key(k), "imgbake does not run VBoxManage: only `modifyvm --memory N --cpus N` carry over (as `memory`, `cpus`)");
            }
        }
    }
}

fn null(s: &Source, body: &mut Body, img: &mut Image, tx: &mut Tx) {
    if let Some(n) = take(body, "ssh_host") {
        tx.put(
            &mut img.source,
            &n,
            &format!("{}.ssh_host", s.kind),
            "host",
            &format!("images.{}.source.host", img.name),
        );
        img.communicator.insert("host_key".into(), T::String("known_hosts".into()));
        tx.report(
            Outcome::Changed,
            &n.loc,
            &format!("{}.ssh_host", s.kind),
            Some(format!("images.{}.communicator.host_key", img.name)),
            "Packer accepts any host key; imgbake checks it against known_hosts (or set `source.host_key` to the machine's public host key)",
        );
    }
}
