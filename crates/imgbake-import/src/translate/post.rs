//! Post-processors → publish settings and formats, or a note.

use toml::Value as T;

use super::Tx;
use crate::model::Plugin;
use crate::report::Outcome;
use crate::tree::Image;

pub(crate) fn sequence(seq: &[Plugin], img: &mut Image, tx: &mut Tx) {
    for p in seq {
        post(p, img, tx);
    }
}

fn post(p: &Plugin, img: &mut Image, tx: &mut Tx) {
    let key = format!("post-processor {}", p.kind);
    let applies = (p.only.is_empty() || img.packer_names.iter().any(|n| p.only.contains(n)))
        && !img.packer_names.iter().all(|n| p.except.contains(n));
    if !applies {
        return tx.dropped(&p.loc, &key, format!("`only`/`except` leave it out of image `{}`", img.name));
    }
    let dropped_keys = |tx: &mut Tx, why: &str| {
        for (k, n) in &p.body.entries {
            tx.dropped(&n.loc, &format!("{key}.{k}"), why.to_string());
        }
    };
    let known = matches!(p.kind.as_str(), "manifest" | "checksum" | "vagrant");
    if !known || (p.kind == "vagrant" && !img.builders.iter().any(|b| b == "virtualbox")) {
        for (k, n) in &p.body.entries {
            tx.dropped(&n.loc, &format!("{key}.{k}"), "its post-processor is not carried over");
        }
    }
    match p.kind.as_str() {
        "manifest" => {
            tx.dropped(&p.loc, &key, "imgbake writes a manifest on every build: artifact ids per region, fingerprints, steps and test results (`settings.manifest`)");
            dropped_keys(tx, "the manifest's place is `settings.manifest`");
        }
        "checksum" => {
            tx.dropped(&p.loc, &key, "imgbake records the SHA-256 of every file it writes (the artifact's sidecar and the manifest)");
            dropped_keys(tx, "SHA-256 is always recorded");
        }
        "vagrant" => vagrant(p, img, tx),
        "vagrant-cloud" | "vagrant-registry" => tx.unmapped(
            &p.loc,
            &key,
            "imgbake publishes Vagrant boxes to a catalog you host (`publish.vagrant` with a store or a file; docs/vagrant.md); Vagrant Cloud / HCP is not supported",
        ),
        "shell-local" => tx.unmapped(
            &p.loc,
            &key,
            "it ran after capture with the artifact: publishing is built in (`publish.ssm_parameter`, `publish.store`); for anything else read the manifest in CI after `imgbake build`",
        ),
        "hcp_packer_registry" => tx.unmapped(&p.loc, &key, "imgbake's record of builds is its manifest and `publish`; HCP Packer is not supported"),
        "compress" | "artifice" | "amazon-import" => {
            tx.unmapped(&p.loc, &key, "no counterpart: the virtualbox builder writes compressed OVAs and boxes itself; AMIs are made by the `aws` builder")
        }
        other => tx.unmapped(&p.loc, &key, format!("imgbake has no `{other}` post-processor")),
    }
}

fn vagrant(p: &Plugin, img: &mut Image, tx: &mut Tx) {
    let key = "post-processor vagrant".to_string();
    if !img.builders.iter().any(|b| b == "virtualbox") {
        return tx.unmapped(
            &p.loc,
            &key,
            "imgbake writes Vagrant boxes with the `virtualbox` builder (`formats = [\"box\"]` for VirtualBox, `[\"libvirt\"]` for libvirt, from a disk too: `source.disk`)",
        );
    }
    let provider = p.body.get("provider_override").and_then(|n| n.scalar()).unwrap_or_else(|| "virtualbox".into());
    let format = if provider == "libvirt" { "libvirt" } else { "box" };
    let settings = img.settings.entry("virtualbox".into()).or_default();
    let formats = settings.entry("formats".to_string()).or_insert_with(|| T::Array(Vec::new()));
    if let T::Array(a) = formats
        && !a.contains(&T::String(format.into()))
    {
        a.push(T::String(format.into()));
    }
    tx.mapped(&p.loc, &key, &format!("images.{}.virtualbox.formats", img.name));
    for (k, n) in &p.body.entries {
        let why = match k.as_str() {
            "output" => "the box is `output_dir`/`IMAGE-BUILD.box` (`.libvirt.box`)",
            "compression_level" => {
                "the VirtualBox box is a plain tar of an already compressed VMDK; the libvirt box is compressed"
            }
            "keep_input_artifact" => "there is no input artifact; add \"ova\" to `formats` to keep an OVA too",
            "provider_override" => "the format picks the provider",
            "vagrantfile_template" | "include" | "vagrantfile_template_generated" => {
                tx.unmapped(
                    &n.loc,
                    &format!("{key}.{k}"),
                    "the box's Vagrantfile sets the SSH user only; put other settings in your users' Vagrantfile",
                );
                continue;
            }
            _ => "not needed",
        };
        tx.report(Outcome::Dropped, &n.loc, &format!("{key}.{k}"), None, why);
    }
}
