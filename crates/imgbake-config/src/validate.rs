//! Checks on the typed tree that serde cannot express: references, cycles, files, per-builder rules.
//! Everything here is offline: no network call is ever made while validating.

use std::collections::{BTreeSet, HashMap};

use toml::Spanned;

use crate::Tree;
use crate::diag::Diagnostic;
use crate::load::span_of;
use crate::model::*;
use crate::render::{BUILDERS, PLANNED_BUILDERS};
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::template::check_execute_command;

pub(crate) fn check(tree: &mut Tree, diags: &mut Vec<Diagnostic>) {
    let names: Vec<String> = tree.model.images.keys().cloned().collect();
    // Parents exist.
    for img in tree.model.images.values() {
        if let Some(p) = &img.parent
            && !tree.model.images.contains_key(p.get_ref())
        {
            let d = Diagnostic::at(span_of(p), format!("image `{}` has unknown parent `{}`", img.name, p.get_ref()));
            diags.push(match did_you_mean(p.get_ref(), names.iter().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("images in this tree: {}", names.join(", "))),
            });
        }
    }
    // Cycles.
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in &names {
        let mut path = vec![start.clone()];
        let mut cur = start.clone();
        while let Some(p) = tree.model.images.get(&cur).and_then(|i| i.parent.as_ref()).map(|p| p.get_ref().clone()) {
            if !tree.model.images.contains_key(&p) {
                break;
            }
            if let Some(pos) = path.iter().position(|n| *n == p) {
                let cycle: Vec<String> = path[pos..].to_vec();
                let key: String = {
                    let mut c = cycle.clone();
                    c.sort();
                    c.join(",")
                };
                if reported.insert(key) {
                    let mut shown = cycle.clone();
                    shown.push(p.clone());
                    let first = &tree.model.images[&cycle[0]];
                    let span = first.parent.as_ref().map(span_of).unwrap_or(first.span);
                    diags.push(
                        Diagnostic::at(
                            span,
                            format!("images form a cycle through their parents: {}", shown.join(" → ")),
                        )
                        .help("an image cannot be built from itself; remove one of these `parent` keys"),
                    );
                }
                break;
            }
            path.push(p.clone());
            cur = p;
        }
    }
    // A cycle makes every later check meaningless; an unknown parent does not: keep going so one run
    // reports everything.
    if !reported.is_empty() {
        return;
    }
    // Builders: inherited from the parent when not set.
    let order: Vec<String> = tree.order().into_iter().map(String::from).collect();
    for name in &order {
        let parent_builders = tree.model.images[name]
            .parent
            .as_ref()
            .and_then(|p| tree.model.images.get(p.get_ref()))
            .map(|p| p.builders.clone());
        let img = &mut tree.model.images[name];
        if img.builders.is_empty() {
            match parent_builders {
                Some(b) => img.builders = b,
                None => diags.push(
                    Diagnostic::at(img.span, format!("image `{name}` has no `builder`"))
                        .help("set `builder = \"aws\"` (or \"qemu\") on the image or under [defaults]"),
                ),
            }
        } else if let Some(pb) = parent_builders {
            for b in &img.builders {
                if !pb.iter().any(|x| x.get_ref() == b.get_ref()) {
                    diags.push(Diagnostic::at(span_of(b), format!(
                        "image `{name}` builds with `{}` but its parent `{}` does not, so there is no parent artifact to start from",
                        b.get_ref(),
                        img.parent.as_ref().map(|p| p.get_ref().as_str()).unwrap_or("")
                    )));
                }
            }
        }
    }
    let images: Vec<Image> = tree.model.images.values().cloned().collect();
    for img in &images {
        check_image(tree, img, diags);
    }
    check_tree_id(tree, diags);
}

/// Cloud builders find their resources again by the tree id: without one, two trees of the same
/// name in one account would prune each other's images.
fn check_tree_id(tree: &Tree, diags: &mut Vec<Diagnostic>) {
    match &tree.model.settings.id {
        Some(id) if !valid_tree_id(id.get_ref()) => diags.push(
            Diagnostic::at(span_of(id), format!("settings.id `{}` is not a valid tree id", id.get_ref()))
                .help("8 to 64 characters: letters, digits, `-`, `_` and `.` (e.g. a UUID)"),
        ),
        Some(_) => {}
        None => {
            let Some(first) = tree.model.images.values().find(|i| i.has_builder("aws")) else { return };
            diags.push(
                Diagnostic::at(first.span, format!("this tree builds with aws (image `{}`) but has no `settings.id`", first.name))
                    .help(format!(
                        "add `id = \"{}\"` under [settings] (a new unique id; keep it once set: `plan`, `prune` and `clean` find this tree's AMIs by it)",
                        uuid::Uuid::new_v4()
                    )),
            );
        }
    }
}

fn valid_tree_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn builder_name_diag(b: &Spanned<String>, what: &str) -> Option<Diagnostic> {
    let name = b.get_ref().as_str();
    if BUILDERS.contains(&name) {
        return None;
    }
    if PLANNED_BUILDERS.contains(&name) {
        return Some(Diagnostic::at(
            span_of(b),
            format!("{what}: the `{name}` builder is not available in this version of imgbake (it is on the roadmap)"),
        ));
    }
    let d = Diagnostic::at(span_of(b), format!("{what}: unknown builder `{name}`"));
    Some(match did_you_mean(name, BUILDERS.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help(format!("builders: {}", BUILDERS.join(", "))),
    })
}

fn exists(tree: &Tree, p: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) {
    local_path(tree, p, what, false, diags)
}

/// A local path an image uses: it must render to something, exist, and be a regular file (or a
/// directory where `dir_ok`); a device or a FIFO would hang or feed garbage into the build.
fn local_path(tree: &Tree, p: &Spanned<String>, what: &str, dir_ok: bool, diags: &mut Vec<Diagnostic>) {
    if p.get_ref().trim().is_empty() {
        diags.push(
            Diagnostic::at(span_of(p), format!("{what} is empty")).help("name a file, relative to the tree file"),
        );
        return;
    }
    if !tree.project.check_files {
        return;
    }
    let path = tree.path(p);
    match std::fs::metadata(&path) {
        Err(_) => diags.push(
            Diagnostic::at(span_of(p), format!("{what} `{}` does not exist", p.get_ref()))
                .help(format!("looked for {} (paths are relative to the file that names them)", path.display())),
        ),
        Ok(m) if m.is_file() || (dir_ok && m.is_dir()) => {}
        Ok(m) => {
            let kind = if m.is_dir() { "a directory" } else { "not a regular file" };
            let want = if dir_ok { "a file or a directory" } else { "a file" };
            diags.push(
                Diagnostic::at(span_of(p), format!("{what} `{}` is {kind}", p.get_ref()))
                    .help(format!("{} must be {want}", path.display())),
            );
        }
    }
}

fn template_check(t: &Spanned<String>, diags: &mut Vec<Diagnostic>) {
    if let Err(f) = check_execute_command(t.get_ref()) {
        let d = Diagnostic::at(span_of(t), format!("execute_command: {}", f.message));
        diags.push(d.help("execute_command may use {{command}}, {{vars}}, {{workdir}}, {{encoded}} and {{quote ...}}"));
    }
}

fn one_of(span: Span, what: &str, set: &[(&str, bool)], diags: &mut Vec<Diagnostic>) {
    one_of_at(span, None, what, set, diags)
}

/// Like [`one_of`]; a conflict is reported at `conflict` (the second key given) when known.
fn one_of_at(span: Span, conflict: Option<Span>, what: &str, set: &[(&str, bool)], diags: &mut Vec<Diagnostic>) {
    let present: Vec<&str> = set.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect();
    let all: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
    let span = if present.len() > 1 { conflict.unwrap_or(span) } else { span };
    if present.len() != 1 {
        let msg = if present.is_empty() {
            format!("{what} needs one of {}", all.join(", "))
        } else {
            format!("{what} takes only one of {}, found {}", all.join(", "), present.join(" and "))
        };
        diags.push(Diagnostic::at(span, msg));
    }
}

fn valid_region(r: &str) -> bool {
    // e.g. eu-west-1, us-gov-west-1, ap-southeast-4, cn-north-1
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// An SSM parameter path: `/a/b`, letters, digits and `/ _ . -`, no empty segment, at most 2048 chars.
fn valid_ssm_name(v: &str) -> bool {
    v.starts_with('/')
        && v.len() <= 2048
        && !v.ends_with('/')
        && !v.contains("//")
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
}

/// An `owners` entry EC2 accepts: a 12-digit account id or one of its aliases.
fn valid_owner(o: &str) -> bool {
    (o.len() == 12 && o.chars().all(|c| c.is_ascii_digit()))
        || ["self", "amazon", "aws-marketplace", "aws-backup-vault"].contains(&o)
}

fn valid_cidr(c: &str) -> bool {
    let Some((ip, prefix)) = c.split_once('/') else { return false };
    match (ip.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(p)) => p <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(p)) => p <= 128,
        _ => false,
    }
}

fn check_image(tree: &Tree, img: &Image, diags: &mut Vec<Diagnostic>) {
    let name = &img.name;
    for b in &img.builders {
        if let Some(d) = builder_name_diag(b, &format!("image `{name}`")) {
            diags.push(d);
        }
    }
    let aws = img.has_builder("aws");
    let qemu = img.has_builder("qemu");

    // Source or parent.
    match (&img.parent, &img.source) {
        (Some(p), Some(s)) => diags.push(
            Diagnostic::at(span_of(s), format!("image `{name}` has both a `parent` and a `source`"))
                .related(span_of(p), "parent set here")
                .help("an image with a parent starts from the parent's artifact; remove `source`"),
        ),
        (None, None) => diags.push(
            Diagnostic::at(img.span, format!("image `{name}` has neither `parent` nor `source`"))
                .help("set `parent = \"<image>\"` to chain it, or a `source` (e.g. `source = { ami = \"ami-...\" }`)"),
        ),
        (None, Some(s)) => check_source(tree, img, s, aws, qemu, diags),
        (Some(_), None) => {}
    }

    // Communicator.
    let c = &img.communicator;
    if let Some(k) = &c.kind
        && k.get_ref() != "ssh"
    {
        diags.push(
            Diagnostic::at(span_of(k), format!("unknown communicator type `{}`", k.get_ref()))
                .help("only `ssh` is supported (Windows too, through OpenSSH Server)"),
        );
    }
    if let Some(h) = &c.host_key
        && !["pinned", "known_hosts", "insecure"].contains(&h.get_ref().as_str())
    {
        let d = Diagnostic::at(span_of(h), format!("unknown host_key policy `{}`", h.get_ref()));
        diags.push(d.help("one of: pinned, known_hosts, insecure"));
    }
    if let Some(f) = &c.private_key_file {
        exists(tree, f, "private_key_file", diags);
    }
    if let Some(f) = &c.known_hosts_file {
        exists(tree, f, "known_hosts_file", diags);
    }
    if c.username.is_none() {
        diags.push(
            Diagnostic::at(img.span, format!("image `{name}` has no `communicator.username`"))
                .help("set it on the image or under [defaults.communicator], e.g. username = \"admin\""),
        );
    }
    if let Some(b) = &c.bastion {
        if let Some(h) = &b.host_key {
            if !["pinned", "known_hosts", "insecure"].contains(&h.get_ref().as_str()) {
                diags.push(
                    Diagnostic::at(span_of(h), format!("unknown bastion host_key policy `{}`", h.get_ref()))
                        .help("one of: pinned, known_hosts, insecure"),
                );
            } else if h.get_ref() == "pinned" && b.host_public_key.is_none() {
                diags.push(Diagnostic::at(span_of(h), "bastion host_key = \"pinned\" needs `host_public_key`"));
            }
        }
        if let Some(f) = &b.private_key_file {
            exists(tree, f, "bastion private_key_file", diags);
        }
    }
    let os = c.os.unwrap_or_default();

    // Steps.
    for (i, step) in img.steps.iter().enumerate() {
        let where_ = format!("images.{name}.steps[{}]", i + 1);
        for b in step.only.iter().chain(&step.except) {
            if let Some(d) = builder_name_diag(b, &where_) {
                diags.push(d);
            } else if !img.has_builder(b.get_ref()) {
                diags.push(Diagnostic::at(
                    span_of(b),
                    format!("{where_} names builder `{}`, which image `{name}` does not build with", b.get_ref()),
                ));
            }
        }
        check_step(tree, &where_, step, os, diags);
    }

    // Artifact settings.
    if let Some(m) = &img.max_age
        && m.get_ref().get().is_zero()
    {
        diags.push(
            Diagnostic::at(span_of(m), "max_age must be longer than 0s (0s would rebuild on every run)")
                .help("leave max_age out to rebuild only when something changed"),
        );
    }
    if let Some(k) = &img.keep
        && *k.get_ref() == 0
    {
        diags.push(Diagnostic::at(span_of(k), "keep must be at least 1 (the newest artifact is always kept)"));
    }
    if let Some(p) = img.publish.as_ref().and_then(|p| p.ssm_parameter.as_ref()) {
        let v = p.get_ref();
        if !aws {
            diags.push(Diagnostic::at(
                span_of(p),
                format!("publish.ssm_parameter needs the aws builder; image `{name}` does not build with it"),
            ));
        } else if !valid_ssm_name(v) {
            diags.push(
                Diagnostic::at(span_of(p), format!("invalid SSM parameter name `{v}`"))
                    .help("use a path like /images/web/latest (letters, digits, / _ . -)"),
            );
        }
    }
    if aws {
        check_aws(tree, img, diags);
    }
    if qemu {
        check_qemu(img, diags);
    }
}

fn check_source(tree: &Tree, img: &Image, s: &Spanned<Source>, aws: bool, qemu: bool, diags: &mut Vec<Diagnostic>) {
    let src = s.get_ref();
    let span = span_of(s);
    let name = &img.name;
    let aws_keys = [
        ("ami", src.ami.is_some()),
        ("ami_filter", src.ami_filter.is_some()),
        ("ssm_parameter", src.ssm_parameter.is_some()),
    ];
    let qemu_keys = [
        ("disk", src.disk.is_some()),
        ("kernel", src.kernel.is_some()),
        ("initrd", src.initrd.is_some()),
        ("append", src.append.is_some()),
    ];
    if aws {
        one_of(span, &format!("source of image `{name}` (aws)"), &aws_keys, diags);
        if let Some(a) = &src.ami {
            let v = a.get_ref();
            if !(v.starts_with("ami-") && v.len() > 4 && v[4..].chars().all(|c| c.is_ascii_hexdigit())) {
                diags.push(
                    Diagnostic::at(span_of(a), format!("`{v}` is not an AMI id"))
                        .help("AMI ids look like ami-0123456789abcdef0"),
                );
            }
        }
        if let Some(f) = &src.ami_filter {
            let fv = f.get_ref();
            for o in fv.owners.iter().filter(|o| !valid_owner(o)) {
                diags.push(
                    Diagnostic::at(span_of(f), format!("ami_filter owner `{o}` is not an account id or alias"))
                        .help("owners are 12-digit account ids, or self, amazon, aws-marketplace, aws-backup-vault"),
                );
            }
            if fv.owners.is_empty() {
                diags.push(Diagnostic::at(span_of(f), "ami_filter needs `owners`").help("without owners any account's AMI could match; e.g. owners = [\"136693071363\"] for Debian, [\"amazon\"] or [\"self\"]"));
            }
            if fv.name.is_none() && fv.tags.is_empty() && fv.filters.is_empty() {
                diags.push(Diagnostic::at(span_of(f), "ami_filter needs `name`, `tags` or `filters`"));
            }
        }
        if let Some(p) = &src.ssm_parameter
            && !valid_ssm_name(p.get_ref())
        {
            diags.push(
                Diagnostic::at(span_of(p), format!("invalid SSM parameter name `{}`", p.get_ref()))
                    .help("use a path like /aws/service/debian/release/12/latest/amd64 (letters, digits, / _ . -)"),
            );
        }
    } else if let Some((k, _)) = aws_keys.iter().find(|(_, p)| *p) {
        diags.push(Diagnostic::at(
            span,
            format!("source.{k} is for the aws builder, but image `{name}` does not build with it"),
        ));
    }
    if qemu {
        match &src.disk {
            Some(d) => exists(tree, d, "source disk", diags),
            None => diags.push(
                Diagnostic::at(span, format!("source of image `{name}` (qemu) needs `disk`"))
                    .help("source = { disk = \"path/to/base.qcow2\" }"),
            ),
        }
        if let Some(k) = &src.kernel {
            exists(tree, k, "kernel", diags);
        }
        if let Some(i) = &src.initrd {
            exists(tree, i, "initrd", diags);
            if src.kernel.is_none() {
                diags.push(Diagnostic::at(span_of(i), "`initrd` needs `kernel`"));
            }
        }
    } else if let Some((k, _)) = qemu_keys.iter().find(|(_, p)| *p) {
        diags.push(Diagnostic::at(
            span,
            format!("source.{k} is for the qemu builder, but image `{name}` does not build with it"),
        ));
    }
}

fn check_aws(tree: &Tree, img: &Image, diags: &mut Vec<Diagnostic>) {
    let name = &img.name;
    let Some(a) = &img.aws else {
        diags.push(
            Diagnostic::at(img.span, format!("image `{name}` builds with aws but has no aws settings"))
                .help("set at least `region` under [defaults.aws] or [images.NAME.aws]"),
        );
        return;
    };
    match &a.region {
        None => diags.push(
            Diagnostic::at(img.span, format!("image `{name}` has no `aws.region`"))
                .help("set region under [defaults.aws] or [images.NAME.aws]"),
        ),
        Some(r) if !valid_region(r.get_ref()) => diags.push(
            Diagnostic::at(span_of(r), format!("`{}` is not an AWS region name", r.get_ref()))
                .help("regions look like eu-west-1 or us-east-2"),
        ),
        Some(_) => {}
    }
    for r in &a.copy_regions {
        if !valid_region(r.get_ref()) {
            diags
                .push(Diagnostic::at(span_of(r), format!("copy_regions: `{}` is not an AWS region name", r.get_ref())));
        }
    }
    if let Some(i) = &a.ssh_interface
        && !["public_ip", "private_ip", "public_dns", "private_dns"].contains(&i.get_ref().as_str())
    {
        diags.push(
            Diagnostic::at(span_of(i), format!("unknown ssh_interface `{}`", i.get_ref()))
                .help("one of: public_ip, private_ip, public_dns, private_dns"),
        );
    }
    if let (Some(id), Some(_)) = (&a.subnet_id, &a.subnet_filter) {
        diags.push(Diagnostic::at(span_of(id), "set either subnet_id or subnet_filter, not both"));
    }
    for c in &a.ssh_cidrs {
        if !valid_cidr(c.get_ref()) {
            diags.push(
                Diagnostic::at(span_of(c), format!("`{}` is not a CIDR", c.get_ref()))
                    .help("e.g. 203.0.113.7/32 or 10.0.0.0/8"),
            );
        }
    }
    if a.user_data.is_some() && a.user_data_file.is_some() {
        diags.push(Diagnostic::at(
            img.span,
            format!("image `{name}`: set either aws.user_data or aws.user_data_file, not both"),
        ));
    }
    if let Some(f) = &a.user_data_file {
        exists(tree, f, "user_data_file", diags);
    }
    if let Some(k) = &a.key_pair_name
        && img.communicator.private_key_file.is_none()
    {
        diags.push(Diagnostic::at(
            span_of(k),
            "aws.key_pair_name needs communicator.private_key_file (the matching private key)",
        ));
    }
    if let Some(n) = a.ami_name.as_ref().filter(|_| !tree.masked) {
        let v = n.get_ref();
        if v.len() < 3 || v.len() > 128 || !v.chars().all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)) {
            diags.push(
                Diagnostic::at(span_of(n), format!("AMI name `{v}` is not valid")).help(
                    "3 to 128 characters: letters, digits and ( ) [ ] space . / - ' @ _ ({{clean_name ...}} helps)",
                ),
            );
        }
    }
    for bd in &a.block_devices {
        if let Some(s) = &bd.volume_size
            && s.get_ref().whole_gib().is_none_or(|g| g == 0)
        {
            diags.push(Diagnostic::at(span_of(s), format!("volume_size {} is not a whole number of GiB", s.get_ref())));
        }
    }
    if let Some(p) = &a.poll_interval
        && p.get_ref().get() < std::time::Duration::from_millis(200)
    {
        diags.push(Diagnostic::at(span_of(p), "poll_interval must be at least 200ms (EC2 throttles faster polling)"));
    }
    if let Some(u) = &a.windows_openssh_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        diags.push(Diagnostic::at(img.span, format!("aws.windows_openssh_url `{u}` is not an http(s) URL")));
    }
    if let Some(d) = &a.deprecate_after
        && d.get_ref().get().is_zero()
    {
        diags.push(Diagnostic::at(span_of(d), "deprecate_after must be longer than 0s"));
    }
    if a.encrypt == Some(true)
        && let Some(share) = &a.share
        && !(share.accounts.is_empty() && share.organizations.is_empty() && share.organizational_units.is_empty())
    {
        // EC2 refuses to share snapshots encrypted with the account's default EBS key.
        let mut missing: Vec<String> = Vec::new();
        if a.kms_key_id.is_none() {
            missing.push(format!(
                "aws.kms_key_id (for {})",
                a.region.as_ref().map(|r| r.get_ref().as_str()).unwrap_or("the build region")
            ));
        }
        for r in &a.copy_regions {
            if !a.region_kms_key_ids.contains_key(r.get_ref()) {
                missing.push(format!("aws.region_kms_key_ids.{} (a copy region)", r.get_ref()));
            }
        }
        if !missing.is_empty() {
            diags.push(
                Diagnostic::at(img.span, format!(
                    "image `{name}`: encrypt = true and share with other accounts needs a customer-managed KMS key: set {}",
                    missing.join(" and ")
                ))
                .help("EC2 cannot share snapshots encrypted with the default aws/ebs key; grant the accounts use of your key in KMS"),
            );
        }
    }
    if let Some(d) = &a.deprecate_after
        && d.get_ref().get() > AwsSettings::MAX_DEPRECATE_AFTER
    {
        diags.push(
            Diagnostic::at(span_of(d), format!("deprecate_after `{}` is too far ahead", d.get_ref()))
                .help("EC2 deprecates an AMI at most 10 years (3650d) after it is made"),
        );
    }
}

fn check_qemu(img: &Image, diags: &mut Vec<Diagnostic>) {
    let Some(q) = &img.qemu else { return };
    if let Some(a) = &q.accelerator
        && !["auto", "kvm", "tcg"].contains(&a.get_ref().as_str())
    {
        diags.push(
            Diagnostic::at(span_of(a), format!("unknown accelerator `{}`", a.get_ref())).help("one of: auto, kvm, tcg"),
        );
    }
    if let Some(f) = &q.format
        && !["overlay", "qcow2", "raw", "vmdk", "vdi"].contains(&f.get_ref().as_str())
    {
        let d = Diagnostic::at(span_of(f), format!("unknown output format `{}`", f.get_ref()));
        diags.push(match did_you_mean(f.get_ref(), ["overlay", "qcow2", "raw", "vmdk", "vdi"]) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("one of: overlay, qcow2, raw, vmdk, vdi"),
        });
    }
    if let Some(m) = &q.memory
        && m.get_ref().bytes() < 64 << 20
    {
        diags.push(Diagnostic::at(span_of(m), format!("memory {} is too small (at least 64MiB)", m.get_ref())));
    }
}

fn check_step(tree: &Tree, w: &str, step: &Step, os: crate::Os, diags: &mut Vec<Diagnostic>) {
    let span = step.span;
    match &step.kind {
        StepKind::Shell(s) => {
            one_of_at(
                span,
                s.scripts.first().or(s.script.as_ref()).map(span_of),
                &format!("{w} (shell)"),
                &[("inline", !s.inline.is_empty()), ("script", s.script.is_some()), ("scripts", !s.scripts.is_empty())],
                diags,
            );
            for f in s.script.iter().chain(&s.scripts) {
                exists(tree, f, "script", diags);
            }
            if let Some(t) = &s.execute_command {
                template_check(t, diags);
            }
            if s.valid_exit_codes.as_ref().is_some_and(Vec::is_empty) {
                diags.push(Diagnostic::at(span, format!("{w}: valid_exit_codes cannot be empty")));
            }
        }
        StepKind::Powershell(p) => {
            if os != crate::Os::Windows {
                diags.push(Diagnostic::at(span, format!("{w}: powershell steps need communicator.os = \"windows\"")));
            }
            one_of_at(
                span,
                p.scripts.first().or(p.script.as_ref()).map(span_of),
                &format!("{w} (powershell)"),
                &[("inline", !p.inline.is_empty()), ("script", p.script.is_some()), ("scripts", !p.scripts.is_empty())],
                diags,
            );
            for f in p.script.iter().chain(&p.scripts) {
                exists(tree, f, "script", diags);
            }
            if let Some(t) = &p.execute_command {
                template_check(t, diags);
            }
        }
        StepKind::WindowsUpdate(_) => {
            if os != crate::Os::Windows {
                diags.push(Diagnostic::at(span, format!("{w}: windows_update needs communicator.os = \"windows\"")));
            }
        }
        StepKind::File(f) => {
            match f.direction {
                Direction::Upload => {
                    one_of(
                        span,
                        &format!("{w} (file upload)"),
                        &[("source", f.source.is_some()), ("content", f.content.is_some())],
                        diags,
                    );
                    if let Some(s) = &f.source {
                        local_path(tree, s, "file source", true, diags);
                    }
                }
                Direction::Download => {
                    if f.source.is_none() {
                        diags.push(Diagnostic::at(span, format!("{w}: a download needs `source` (the remote path)")));
                    }
                    if f.content.is_some() {
                        diags.push(Diagnostic::at(span, format!("{w}: `content` only works with uploads")));
                    }
                }
            }
            if let Some(m) = &f.mode
                && u32::from_str_radix(m.get_ref(), 8).map_or(true, |v| v > 0o7777)
            {
                diags.push(
                    Diagnostic::at(span_of(m), format!("mode `{}` is not an octal file mode", m.get_ref()))
                        .help("e.g. \"0644\" or \"0755\""),
                );
            }
        }
        StepKind::Test(t) => {
            if let Some(s) = &t.source {
                local_path(tree, s, "test source", true, diags);
            }
            if t.command.get_ref().trim().is_empty() {
                diags.push(Diagnostic::at(span_of(&t.command), format!("{w}: the test command is empty")));
            }
            if let Some(e) = &t.execute_command {
                template_check(e, diags);
            }
        }
        StepKind::Local(l) => {
            if l.command.get_ref().trim().is_empty() {
                diags.push(Diagnostic::at(span_of(&l.command), format!("{w}: the local command is empty")));
            }
        }
        StepKind::Reboot(_) | StepKind::Breakpoint(_) => {}
    }
}

/// Parents first; among independent images, file order.
pub(crate) fn topo_order(images: &indexmap::IndexMap<String, Image>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut state: HashMap<&str, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a str,
        images: &'a indexmap::IndexMap<String, Image>,
        state: &mut HashMap<&'a str, u8>,
        out: &mut Vec<&'a str>,
    ) {
        if state.get(n).copied().unwrap_or(0) != 0 {
            return;
        }
        state.insert(n, 1);
        if let Some(p) = images.get(n).and_then(|i| i.parent.as_ref())
            && let Some((k, _)) = images.get_key_value(p.get_ref())
        {
            visit(k, images, state, out);
        }
        state.insert(n, 2);
        out.push(n);
    }
    for k in images.keys() {
        visit(k, images, &mut state, &mut out);
    }
    out
}
