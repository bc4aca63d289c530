//! `amazon-ebs` → `aws`.

use toml::Value as T;

use super::{Os, Tx, rest, take, value};
use crate::model::{Body, Node, Source};
use crate::report::Outcome;
use crate::tree::{Image, Table};

/// Keys that carry over unchanged but for the name: Packer's → `aws.`'s.
const SAME: &[(&str, &str)] = &[
    ("region", "region"),
    ("profile", "profile"),
    ("custom_endpoint_ec2", "endpoint"),
    ("instance_type", "instance_type"),
    ("subnet_id", "subnet_id"),
    ("vpc_id", "vpc_id"),
    ("security_group_ids", "security_group_ids"),
    ("temporary_security_group_source_cidrs", "ssh_cidrs"),
    ("associate_public_ip_address", "associate_public_ip"),
    ("iam_instance_profile", "iam_instance_profile"),
    ("ami_name", "ami_name"),
    ("ami_description", "ami_description"),
    ("snapshot_tags", "snapshot_tags"),
    ("ami_regions", "copy_regions"),
    ("encrypt_boot", "encrypt"),
    ("kms_key_id", "kms_key_id"),
    ("region_kms_key_ids", "region_kms_key_ids"),
    ("force_deregister", "force_deregister"),
    ("ssh_keypair_name", "key_pair_name"),
    ("run_tags", "run_tags"),
];

const NOT_NEEDED: &[(&str, &str)] = &[
    (
        "access_key",
        "imgbake takes credentials from the AWS default chain (environment, profile, instance role), never from the tree",
    ),
    (
        "secret_key",
        "imgbake takes credentials from the AWS default chain (environment, profile, instance role), never from the tree",
    ),
    (
        "token",
        "imgbake takes credentials from the AWS default chain (environment, profile, instance role), never from the tree",
    ),
    (
        "temporary_security_group_source_public_ip",
        "the temporary group admits your public IP by default (`aws.ssh_cidrs` to change it)",
    ),
    ("force_delete_snapshot", "with `force_deregister` the old AMI's snapshots go with it"),
    ("shutdown_behavior", "the build machine always terminates when it powers off: an orphan stops costing money"),
    ("disable_stop_instance", "imgbake stops the machine itself before capture"),
    (
        "aws_polling",
        "imgbake polls with jittered backoff and notices transitions within seconds (`aws.poll_interval`, timeouts)",
    ),
    ("skip_region_validation", "imgbake checks the region against the account's before creating anything"),
    ("skip_credential_validation", "imgbake checks the credentials before creating anything"),
    ("skip_metadata_api_check", "not needed"),
    ("ena_support", "the new AMI keeps the source AMI's ENA support"),
    ("sriov_support", "the new AMI keeps the source AMI's SR-IOV support"),
    ("ebs_optimized", "current instance types are EBS-optimized by default"),
    ("windows_password_timeout", "imgbake logs in to Windows with the build's key: no password to wait for"),
    ("snapshot_users", "imgbake shares the snapshots with the accounts the AMI is shared with"),
    ("snapshot_groups", "imgbake shares the snapshots with the groups the AMI is shared with"),
    ("temporary_security_group_source_cidr", "use `aws.ssh_cidrs`"),
    ("decode_authorization_messages", "imgbake's errors name the call and the resource"),
];

/// An `amazon-ebs` source: its keys into `img` (source, tags) and `img.settings["aws"]`.
pub(crate) fn source(s: &Source, mut body: Body, os: &Os, img: &mut Image, tx: &mut Tx) {
    let mut a = Table::new();
    let name = img.name.clone();
    plain_keys(s, &mut body, &mut a, img, tx);
    subnet_filter(s, &mut body, &mut a, &name, tx);
    source_ami(s, &mut body, img, tx);
    share(s, &mut body, &mut a, img, tx);
    block_devices(s, &mut body, &mut a, img, tx);
    user_data(s, &mut body, os, &mut a, img, tx);
    access_and_lifecycle(s, &mut body, &mut a, &name, tx);
    rest(body, &s.kind, tx);
    img.settings.insert("aws".into(), a);
}

/// Keys that carry over as they are (renamed), and the tag tables.
fn plain_keys(s: &Source, body: &mut Body, a: &mut Table, img: &mut Image, tx: &mut Tx) {
    let name = img.name.clone();
    let to = |k: &str| format!("images.{name}.aws.{k}");
    let key = |k: &str| format!("{}.{k}", s.kind);
    for (k, to_key) in SAME {
        if let Some(n) = take(body, k) {
            tx.put(a, &n, &key(k), to_key, &to(to_key));
        }
    }
    if let Some(n) = take(body, "security_group_id") {
        match value(&n) {
            Ok(v) => {
                a.insert("security_group_ids".into(), T::Array(vec![v]));
                tx.mapped(&n.loc, &key("security_group_id"), &to("security_group_ids"));
            }
            Err(why) => tx.unmapped(&n.loc, &key("security_group_id"), why),
        }
    }
    if let Some(n) = take(body, "run_volume_tags") {
        match value(&n) {
            Ok(T::Table(t)) => {
                if let T::Table(r) = a.entry("run_tags".to_string()).or_insert_with(|| T::Table(Default::default())) {
                    r.extend(t);
                }
                tx.report(
                    Outcome::Changed,
                    &n.loc,
                    &key("run_volume_tags"),
                    Some(to("run_tags")),
                    "imgbake tags the build machine and its volumes alike",
                );
            }
            Ok(_) => tx.unmapped(&n.loc, &key("run_volume_tags"), "a table of strings"),
            Err(why) => tx.unmapped(&n.loc, &key("run_volume_tags"), why),
        }
    }
    if let Some(n) = take(body, "tags") {
        match value(&n) {
            Ok(T::Table(t)) => {
                img.tags.extend(t);
                tx.report(
                    Outcome::Mapped,
                    &n.loc,
                    &key("tags"),
                    Some(format!("images.{}.tags", img.name)),
                    "tags on the AMI and its snapshots",
                );
            }
            _ => tx.unmapped(&n.loc, &key("tags"), "a table of strings"),
        }
    }
    if let Some(n) = take(body, "ssh_interface") {
        match n.scalar().as_deref() {
            Some("session_manager") => tx.unmapped(&n.loc, &key("ssh_interface"), "imgbake connects over SSH directly (or a `communicator.bastion`); Session Manager is not supported yet"),
            _ => {
                tx.put(a, &n, &key("ssh_interface"), "ssh_interface", &to("ssh_interface"));
            }
        }
    }
}

/// Role, IMDS, deprecation, and what EC2 keys imgbake does not need or have.
fn access_and_lifecycle(s: &Source, body: &mut Body, a: &mut Table, name: &str, tx: &mut Tx) {
    let to = |k: &str| format!("images.{name}.aws.{k}");
    let key = |k: &str| format!("{}.{k}", s.kind);
    if let Some(n) = take(body, "assume_role") {
        match n
            .map()
            .and_then(|m| m.iter().find(|(k, _)| k == "role_arn"))
            .and_then(|(_, v)| v.str().map(str::to_string))
        {
            Some(arn) => {
                a.insert("assume_role_arn".into(), T::String(arn));
                tx.mapped(&n.loc, &key("assume_role.role_arn"), &to("assume_role_arn"));
            }
            None => tx.unmapped(&n.loc, &key("assume_role"), "only `role_arn` carries over (`aws.assume_role_arn`)"),
        }
    }
    for k in ["metadata_options", "imds_support"] {
        if let Some(n) = take(body, k) {
            let text = format!("{:?}", n.value);
            let v2 = text.contains("required") || text.contains("v2.0");
            a.insert("imds_v2".into(), T::Boolean(v2));
            tx.report(
                Outcome::Changed,
                &n.loc,
                &key(k),
                Some(to("imds_v2")),
                "imgbake requires IMDSv2 on the build machine and the AMI by default; only the token requirement carries over",
            );
        }
    }
    if let Some(n) = take(body, "deprecate_at") {
        tx.unmapped(
            &n.loc,
            &key("deprecate_at"),
            "imgbake deprecates relative to each build: `aws.deprecate_after = \"90d\"`",
        );
    }
    for (k, why) in NOT_NEEDED {
        if let Some(n) = take(body, k) {
            tx.dropped(&n.loc, &key(k), *why);
        }
    }
    for k in ["spot_price", "spot_instance_types", "spot_price_auto_product", "spot_tags"] {
        if let Some(n) = take(body, k) {
            tx.unmapped(&n.loc, &key(k), "imgbake launches on-demand build machines; spot is not supported yet (remove it: the build runs on demand)");
        }
    }
}

fn source_ami(s: &Source, body: &mut Body, img: &mut Image, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    let to = format!("images.{}.source", img.name);
    if let Some(n) = take(body, "source_ami_filter") {
        match ami_filter(&n) {
            Ok(f) => {
                img.source.insert("ami_filter".into(), T::Table(f.into_iter().collect()));
                tx.mapped(&n.loc, &key("source_ami_filter"), &format!("{to}.ami_filter"));
            }
            Err(why) => tx.unmapped(&n.loc, &key("source_ami_filter"), why),
        }
    }
    let Some(n) = take(body, "source_ami") else { return };
    let text = n.str().unwrap_or_default().to_string();
    // `data.amazon-ami.NAME.id` / `data.amazon-parameterstore.NAME.value`.
    if let Some(reference) = text.strip_prefix("{{ data.").and_then(|t| t.strip_suffix(" }}")) {
        let parts: Vec<&str> = reference.split('.').collect();
        let data = tx.data.iter().find(|d| parts.len() >= 2 && d.kind == parts[0] && d.name == parts[1]).cloned();
        match data {
            Some(d) if d.kind == "amazon-ami" => {
                let node = Node { value: crate::model::Value::Map(d.body.entries.clone()), loc: d.loc.clone() };
                match ami_filter(&node) {
                    Ok(f) => {
                        img.source.insert("ami_filter".into(), T::Table(f.into_iter().collect()));
                        tx.mapped(&d.loc, &format!("data.amazon-ami.{}", d.name), &format!("{to}.ami_filter"));
                        tx.mapped(&n.loc, &key("source_ami"), &format!("{to}.ami_filter"));
                    }
                    Err(why) => tx.unmapped(&d.loc, &format!("data.amazon-ami.{}", d.name), why),
                }
            }
            Some(d) if d.kind == "amazon-parameterstore" => match d.body.get("name").and_then(|n| n.str()) {
                Some(name) => {
                    img.source.insert("ssm_parameter".into(), T::String(name.to_string()));
                    tx.mapped(&n.loc, &key("source_ami"), &format!("{to}.ssm_parameter"));
                }
                None => tx.unmapped(
                    &d.loc,
                    &format!("data.{}.{}", d.kind, d.name),
                    "an SSM parameter data source needs `name`",
                ),
            },
            _ => tx.unmapped(
                &n.loc,
                &key("source_ami"),
                format!("`{text}`: imgbake reads the source AMI from `ami`, `ami_filter` or `ssm_parameter` only"),
            ),
        }
        return;
    }
    if img.source.contains_key("ami_filter") {
        tx.dropped(&n.loc, &key("source_ami"), "`source_ami_filter` is used (imgbake takes one of them)");
        return;
    }
    tx.put(&mut img.source, &n, &key("source_ami"), "ami", &format!("{to}.ami"));
}

/// `subnet_filter { filters = { "tag:K" = "V" } }` → `aws.subnet_filter = { K = "V" }` (tags only).
fn subnet_filter(s: &Source, body: &mut Body, a: &mut Table, image: &str, tx: &mut Tx) {
    let key = |k: &str| format!("{}.{k}", s.kind);
    if let Some(n) = take(body, "vpc_filter") {
        tx.unmapped(
            &n.loc,
            &key("vpc_filter"),
            "imgbake takes the VPC from the subnet: use `aws.subnet_id` or `aws.subnet_filter` (tags)",
        );
    }
    let Some(n) = take(body, "subnet_filter") else { return };
    let mut tags = toml::Table::new();
    let mut other = Vec::new();
    for (k, v) in n.map().unwrap_or_default() {
        match k.as_str() {
            "filters" | "filter" => {
                for (fk, fv) in v.map().unwrap_or_default() {
                    match (fk.strip_prefix("tag:"), value(fv)) {
                        (Some(tag), Ok(T::String(v))) => {
                            tags.insert(tag.to_string(), T::String(v));
                        }
                        _ => other.push(format!("`{fk}`")),
                    }
                }
            }
            "most_free" | "random" => {}
            _ => other.push(format!("`{k}`")),
        }
    }
    if !other.is_empty() || tags.is_empty() {
        let why = format!(
            "imgbake finds subnets by tags only (`aws.subnet_filter = {{ purpose = \"builds\" }}`); not carried over: {}",
            other.join(", ")
        );
        return tx.unmapped(&n.loc, &key("subnet_filter"), why);
    }
    a.insert("subnet_filter".into(), T::Table(tags));
    tx.mapped(&n.loc, &key("subnet_filter"), &format!("images.{image}.aws.subnet_filter"));
}

/// Packer's `{ filters, owners, most_recent }` as imgbake's `ami_filter`.
fn ami_filter(n: &Node) -> Result<Table, String> {
    let m = n.map().ok_or("a filter block")?;
    let mut f = Table::new();
    let mut rest = toml::Table::new();
    for (k, v) in m {
        match k.as_str() {
            "filters" | "filter" => {
                for (fk, fv) in v.map().ok_or("`filters` is a map of filter names to values")? {
                    let val = value(fv)?;
                    match (fk.as_str(), val) {
                        ("name", T::String(s)) => {
                            f.insert("name".into(), T::String(s));
                        }
                        ("architecture", T::String(s)) => {
                            f.insert("architecture".into(), T::String(s));
                        }
                        (fk, T::String(s)) => {
                            rest.insert(fk.to_string(), T::Array(vec![T::String(s)]));
                        }
                        (fk, T::Array(a)) => {
                            rest.insert(fk.to_string(), T::Array(a));
                        }
                        (fk, _) => return Err(format!("the filter `{fk}` is neither a string nor a list")),
                    }
                }
            }
            "owners" => {
                f.insert("owners".into(), value(v)?);
            }
            "most_recent" => {
                f.insert("most_recent".into(), value(v)?);
            }
            "include_deprecated" | "region" => {}
            other => {
                return Err(format!(
                    "`{other}` has no counterpart in imgbake's `ami_filter` (name, owners, tags, architecture, filters, most_recent)"
                ));
            }
        }
    }
    if !rest.is_empty() {
        f.insert("filters".into(), T::Table(rest));
    }
    if !f.contains_key("owners") {
        return Err("imgbake needs `owners` in an AMI filter (anyone can publish an AMI with any name)".into());
    }
    Ok(f)
}

fn share(s: &Source, body: &mut Body, a: &mut Table, img: &Image, tx: &mut Tx) {
    let mut share = toml::Table::new();
    for (k, to_key) in [
        ("ami_users", "accounts"),
        ("ami_groups", "groups"),
        ("ami_org_arns", "organizations"),
        ("ami_ou_arns", "organizational_units"),
    ] {
        if let Some(n) = take(body, k) {
            match value(&n) {
                Ok(v) => {
                    share.insert(to_key.into(), v);
                    tx.mapped(&n.loc, &format!("{}.{k}", s.kind), &format!("images.{}.aws.share.{to_key}", img.name));
                }
                Err(why) => tx.unmapped(&n.loc, &format!("{}.{k}", s.kind), why),
            }
        }
    }
    if !share.is_empty() {
        a.insert("share".into(), T::Table(share));
    }
}

fn block_devices(s: &Source, body: &mut Body, a: &mut Table, img: &Image, tx: &mut Tx) {
    if let Some(n) = take(body, "ami_block_device_mappings") {
        tx.unmapped(
            &n.loc,
            &format!("{}.ami_block_device_mappings", s.kind),
            "imgbake captures the build machine's volumes as they are: size them with `aws.block_devices`",
        );
    }
    let Some(n) = take(body, "launch_block_device_mappings") else { return };
    let items: Vec<&Node> = match n.list() {
        Some(l) => l.iter().collect(),
        None => vec![&n],
    };
    let mut out = Vec::new();
    for item in items {
        let mut d = toml::Table::new();
        for (k, v) in item.map().unwrap_or_default() {
            let key = format!("{}.launch_block_device_mappings.{k}", s.kind);
            match k.as_str() {
                "volume_size" => match v.scalar().and_then(|s| s.parse::<u64>().ok()) {
                    Some(gib) => {
                        d.insert("volume_size".into(), T::String(format!("{gib}GiB")));
                    }
                    None => tx.unmapped(&v.loc, &key, "a whole number of GiB"),
                },
                "device_name" | "volume_type" | "iops" | "throughput" | "encrypted" | "kms_key_id" | "delete_on_termination" => match value(v) {
                    Ok(val) => {
                        d.insert(k.clone(), val);
                    }
                    Err(why) => tx.unmapped(&v.loc, &key, why),
                },
                _ => tx.unmapped(&v.loc, &key, "imgbake's block devices take device_name, volume_size, volume_type, iops, throughput, encrypted, kms_key_id, delete_on_termination"),
            }
        }
        out.push(T::Table(d));
    }
    a.insert("block_devices".into(), T::Array(out));
    tx.mapped(
        &n.loc,
        &format!("{}.launch_block_device_mappings", s.kind),
        &format!("images.{}.aws.block_devices", img.name),
    );
}

/// User data: Packer templates for Windows carry a script that sets up WinRM or OpenSSH; imgbake's
/// own user data does that (with the build's pinned host key), so such a script is dropped.
fn user_data(s: &Source, body: &mut Body, os: &Os, a: &mut Table, img: &Image, tx: &mut Tx) {
    let to = |k: &str| format!("images.{}.aws.{k}", img.name);
    let sets_up_access = |text: &str| {
        let t = text.to_ascii_lowercase();
        ["winrm", "openssh", "sshd", "enable-psremoting"].iter().any(|w| t.contains(w))
    };
    let replaced = "imgbake's own user data installs and starts OpenSSH Server with the build's pinned host key (Windows) or installs that key (Linux); this script set up remote access, which that replaces. If it does more, move the rest into steps";
    if let Some(n) = take(body, "user_data_file") {
        let Some(p) = n.scalar() else { return tx.unmapped(&n.loc, &format!("{}.user_data_file", s.kind), "a path") };
        let file = tx.template_dir.join(&p);
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if os.windows && sets_up_access(&text) {
            tx.report(Outcome::Changed, &n.loc, &format!("{}.user_data_file", s.kind), None, replaced);
        } else {
            a.insert("user_data_file".into(), T::String(tx.path(&p)));
            tx.report(
                Outcome::Changed,
                &n.loc,
                &format!("{}.user_data_file", s.kind),
                Some(to("user_data_file")),
                "runs after imgbake's own user data (host-key setup)",
            );
        }
    }
    if let Some(n) = take(body, "user_data") {
        let text = n.str().unwrap_or_default().to_string();
        if os.windows && sets_up_access(&text) {
            tx.report(Outcome::Changed, &n.loc, &format!("{}.user_data", s.kind), None, replaced);
        } else {
            tx.put(a, &n, &format!("{}.user_data", s.kind), "user_data", &to("user_data"));
        }
    }
}
