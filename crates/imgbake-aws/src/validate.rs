//! The `aws` builder's schema: its settings table, its `source` keys, and the offline checks on
//! them (`imgbake validate`). No network call is made here; the preflight checks what needs one.

use imgbake_config::{BuilderSchema, Check, Diagnostic, Image, Parsed, Raw, Source, Span, Spanned};

use crate::settings::{AwsPublish, AwsSettings, AwsSource};

/// The builder's name in the tree file.
pub const NAME: &str = "aws";

/// Declares `[images.NAME.aws]` and the `ami`, `ami_filter`, `ssm_parameter` source keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsSchema;

impl AwsSchema {
    /// As a schema to register.
    pub fn arc() -> std::sync::Arc<dyn BuilderSchema> {
        std::sync::Arc::new(AwsSchema)
    }
}

/// Settings that change how a build runs, not what it makes (left out of fingerprints).
const OPERATIONAL: &[&str] = &[
    "instance_timeout",
    "image_timeout",
    "poll_interval",
    "learn_waits",
    "channel_parameter",
    "ssh_cidrs",
    "ssh_interface",
    "subnet_id",
    "subnet_filter",
    "vpc_id",
    "security_group_ids",
    "associate_public_ip",
    "profile",
    "assume_role_arn",
    "endpoint",
    "key_pair_name",
    "run_tags",
    "force_deregister",
];

/// The keys of an AMI made from the parent's disk: they stay with that image (its children build on
/// a machine from the AMI).
const IMPORT_KEYS: &[&str] = &["import", "boot_mode", "architecture", "check_drivers"];

/// The ways `import` makes an AMI.
pub const IMPORT_METHODS: &[&str] = &["ebs-direct"];

fn span<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

impl BuilderSchema for AwsSchema {
    fn name(&self) -> &str {
        NAME
    }

    fn source_keys(&self) -> &[&str] {
        &["ami", "ami_filter", "ssm_parameter"]
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<AwsSettings>()
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<AwsSource>()
    }

    fn publish_keys(&self) -> &[&str] {
        &["ssm_parameter"]
    }

    fn parse_publish(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<AwsPublish>()
    }

    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        let Some(src) = source.get_ref().get::<AwsSource>(NAME) else { return };
        check_source(cx, image, span(source), src);
    }

    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        check_settings(cx, image);
    }

    fn check_all(&self, cx: &mut Check<'_>, image: &Image) {
        check_publish(cx, image);
        check_channel_parameter(cx, image);
    }

    fn operational_keys(&self) -> &[&str] {
        OPERATIONAL
    }

    fn local_files<'a>(&self, image: &'a Image) -> Vec<&'a Spanned<String>> {
        image.settings::<AwsSettings>(NAME).and_then(|a| a.user_data_file.as_ref()).into_iter().collect()
    }

    fn imports_disk(&self, image: &Image) -> bool {
        image.settings::<AwsSettings>(NAME).is_some_and(|a| a.import.is_some())
    }

    fn import_hint(&self) -> Option<&str> {
        Some(
            "set `aws = { import = \"ebs-direct\" }` on this image to make its AMI from that disk, without a build machine",
        )
    }

    fn own_keys(&self) -> &[&str] {
        IMPORT_KEYS
    }

    fn needs_tree_id(&self) -> bool {
        // `plan`, `prune` and `clean` find this tree's AMIs by it: two trees of one name in one
        // account would otherwise prune each other's images.
        true
    }

    fn source_label(&self, source: &Source) -> Option<String> {
        let s = source.get::<AwsSource>(NAME)?;
        if let Some(a) = &s.ami {
            return Some(format!("ami {}", a.get_ref()));
        }
        if let Some(f) = &s.ami_filter {
            return Some(format!("ami_filter {}", f.get_ref().name.clone().unwrap_or_else(|| "(tags)".into())));
        }
        s.ssm_parameter.as_ref().map(|p| format!("ssm {}", p.get_ref()))
    }
}

/// An AWS region name, e.g. eu-west-1, us-gov-west-1, ap-southeast-4, cn-north-1.
fn valid_region(r: &str) -> bool {
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

fn check_source(cx: &mut Check<'_>, image: &Image, at: Span, src: &AwsSource) {
    let name = &image.name;
    cx.one_of(
        at,
        &format!("source of image `{name}` (aws)"),
        &[
            ("ami", src.ami.is_some()),
            ("ami_filter", src.ami_filter.is_some()),
            ("ssm_parameter", src.ssm_parameter.is_some()),
        ],
    );
    if let Some(a) = &src.ami {
        let v = a.get_ref();
        if !(v.starts_with("ami-") && v.len() > 4 && v[4..].chars().all(|c| c.is_ascii_hexdigit())) {
            cx.push(
                Diagnostic::at(span(a), format!("`{v}` is not an AMI id"))
                    .help("AMI ids look like ami-0123456789abcdef0"),
            );
        }
    }
    if let Some(f) = &src.ami_filter {
        let fv = f.get_ref();
        for o in fv.owners.iter().filter(|o| !valid_owner(o)) {
            cx.push(
                Diagnostic::at(span(f), format!("ami_filter owner `{o}` is not an account id or alias"))
                    .help("owners are 12-digit account ids, or self, amazon, aws-marketplace, aws-backup-vault"),
            );
        }
        if fv.owners.is_empty() {
            cx.push(Diagnostic::at(span(f), "ami_filter needs `owners`").help("without owners any account's AMI could match; e.g. owners = [\"136693071363\"] for Debian, [\"amazon\"] or [\"self\"]"));
        }
        if fv.name.is_none() && fv.tags.is_empty() && fv.filters.is_empty() {
            cx.push(Diagnostic::at(span(f), "ami_filter needs `name`, `tags` or `filters`"));
        }
    }
    if let Some(p) = &src.ssm_parameter
        && !valid_ssm_name(p.get_ref())
    {
        cx.push(
            Diagnostic::at(span(p), format!("invalid SSM parameter name `{}`", p.get_ref()))
                .help("use a path like /aws/service/debian/release/12/latest/amd64 (letters, digits, / _ . -)"),
        );
    }
}

/// `publish.ssm_parameter` must be a valid SSM name (config refuses it on images not built with aws).
fn check_publish(cx: &mut Check<'_>, image: &Image) {
    let Some(p) = ssm_parameter(image) else { return };
    let v = p.get_ref();
    if !valid_ssm_name(v) {
        cx.push(
            Diagnostic::at(span(p), format!("invalid SSM parameter name `{v}`"))
                .help("use a path like /images/web/latest (letters, digits, / _ . -)"),
        );
    }
}

/// `aws.channel_parameter` must name one valid SSM parameter per channel, apart from
/// `publish.ssm_parameter`.
fn check_channel_parameter(cx: &mut Check<'_>, image: &Image) {
    if let Some(pp) = ssm_parameter(image)
        && image.has_builder(NAME)
    {
        let names: Vec<String> =
            cx.tree().channels().keys().map(|c| crate::channel::parameter_name(image, c)).collect();
        if names.contains(pp.get_ref()) {
            cx.push(
                Diagnostic::at(span(pp), format!("publish.ssm_parameter `{}` is also the parameter of a release channel", pp.get_ref()))
                    .help("give the newest-AMI parameter and the channels (aws.channel_parameter, default /images/{image}/{channel}) different names"),
            );
        }
    }
    let Some(p) = image.settings::<AwsSettings>(NAME).and_then(|a| a.channel_parameter.as_ref()) else { return };
    let v = p.get_ref();
    if !v.contains("{channel}") {
        cx.push(
            Diagnostic::at(span(p), format!("aws.channel_parameter `{v}` does not contain `{{channel}}`: every channel would share one parameter"))
                .help("use a template like /images/{image}/{channel}"),
        );
        return;
    }
    let sample = crate::channel::parameter_name(image, "candidate");
    if !valid_ssm_name(&sample) {
        cx.push(
            Diagnostic::at(
                span(p),
                format!("aws.channel_parameter `{v}` makes the invalid SSM parameter name `{sample}`"),
            )
            .help("use a path like /images/{image}/{channel} (letters, digits, / _ . -)"),
        );
    }
}

/// The image's `publish.ssm_parameter`.
pub fn ssm_parameter(image: &Image) -> Option<&Spanned<String>> {
    image.publish.as_ref()?.get::<AwsPublish>(NAME)?.ssm_parameter.as_ref()
}

/// `import` and the keys only it reads.
fn check_import(cx: &mut Check<'_>, img: &Image, a: &AwsSettings) {
    let name = &img.name;
    let Some(i) = &a.import else {
        for (key, set) in
            [("boot_mode", a.boot_mode.as_ref().map(span)), ("architecture", a.architecture.as_ref().map(span))]
        {
            if let Some(at) = set {
                cx.push(
                    Diagnostic::at(
                        at,
                        format!("aws.{key} of image `{name}` only applies to an AMI made with `import`"),
                    )
                    .help("an AMI made on a build machine takes it from the source AMI; remove it"),
                );
            }
        }
        return;
    };
    if !IMPORT_METHODS.contains(&i.get_ref().as_str()) {
        cx.push(
            Diagnostic::at(span(i), format!("unknown aws.import `{}`", i.get_ref()))
                .help(format!("one of: {}", IMPORT_METHODS.join(", "))),
        );
    }
    if img.parent.is_none() {
        cx.push(
            Diagnostic::at(span(i), format!("image `{name}` imports a disk with aws.import, but has no `parent`"))
                .help("set `parent` to an image of this tree that makes a disk file (e.g. a qemu image)"),
        );
    }
    if let Some(b) = &a.boot_mode
        && !["legacy-bios", "uefi", "uefi-preferred"].contains(&b.get_ref().as_str())
    {
        cx.push(
            Diagnostic::at(span(b), format!("unknown aws.boot_mode `{}`", b.get_ref()))
                .help("one of: legacy-bios, uefi, uefi-preferred (default: read from the disk)"),
        );
    }
    if let Some(arch) = &a.architecture
        && !["x86_64", "arm64"].contains(&arch.get_ref().as_str())
    {
        cx.push(
            Diagnostic::at(span(arch), format!("unknown aws.architecture `{}`", arch.get_ref()))
                .help("one of: x86_64, arm64 (default: read from the disk's kernel)"),
        );
    }
    // Graviton instances boot UEFI only.
    let arm = a.architecture.as_ref().is_some_and(|x| x.get_ref() == "arm64");
    if let Some(b) = a.boot_mode.as_ref().filter(|b| arm && b.get_ref() != "uefi") {
        cx.push(
            Diagnostic::at(span(b), format!("aws.boot_mode `{}` cannot boot an arm64 AMI", b.get_ref()))
                .help("arm64 instances boot with UEFI only: set boot_mode = \"uefi\""),
        );
    }
    if img.communicator.os == Some(imgbake_config::Os::Windows) {
        cx.push(
            Diagnostic::at(span(i), format!("image `{name}` is Windows: aws.import makes Linux AMIs only"))
                .help("Windows AMIs need AWS's licensing: build them on a machine from a Windows source AMI"),
        );
    }
}

fn check_settings(cx: &mut Check<'_>, img: &Image) {
    let name = &img.name;
    let Some(a) = img.settings::<AwsSettings>(NAME) else {
        cx.push(
            Diagnostic::at(img.span, format!("image `{name}` builds with aws but has no aws settings"))
                .help("set at least `region` under [defaults.aws] or [images.NAME.aws]"),
        );
        return;
    };
    check_import(cx, img, a);
    for (key, tags) in [("ami_tags", &a.ami_tags), ("snapshot_tags", &a.snapshot_tags)] {
        if let Some(k) = tags.keys().find(|k| k.starts_with("imgbake:")) {
            cx.push(
                Diagnostic::at(img.span, format!("aws.{key} of image `{name}` sets `{k}`: the `imgbake:` prefix is reserved for imgbake's own tags"))
                    .help("imgbake sets these itself (fingerprint, tests, completion...); rename the tag"),
            );
        }
    }
    match &a.region {
        None => cx.push(
            Diagnostic::at(img.span, format!("image `{name}` has no `aws.region`"))
                .help("set region under [defaults.aws] or [images.NAME.aws]"),
        ),
        Some(r) if !valid_region(r.get_ref()) => cx.push(
            Diagnostic::at(span(r), format!("`{}` is not an AWS region name", r.get_ref()))
                .help("regions look like eu-west-1 or us-east-2"),
        ),
        Some(_) => {}
    }
    for r in &a.copy_regions {
        if !valid_region(r.get_ref()) {
            cx.push(Diagnostic::at(span(r), format!("copy_regions: `{}` is not an AWS region name", r.get_ref())));
        }
    }
    if let Some(i) = &a.ssh_interface
        && !["public_ip", "private_ip", "public_dns", "private_dns"].contains(&i.get_ref().as_str())
    {
        cx.push(
            Diagnostic::at(span(i), format!("unknown ssh_interface `{}`", i.get_ref()))
                .help("one of: public_ip, private_ip, public_dns, private_dns"),
        );
    }
    if let (Some(id), Some(_)) = (&a.subnet_id, &a.subnet_filter) {
        cx.push(Diagnostic::at(span(id), "set either subnet_id or subnet_filter, not both"));
    }
    for c in &a.ssh_cidrs {
        if !valid_cidr(c.get_ref()) {
            cx.push(
                Diagnostic::at(span(c), format!("`{}` is not a CIDR", c.get_ref()))
                    .help("e.g. 203.0.113.7/32 or 10.0.0.0/8"),
            );
        }
    }
    if a.user_data.is_some() && a.user_data_file.is_some() {
        cx.push(Diagnostic::at(
            img.span,
            format!("image `{name}`: set either aws.user_data or aws.user_data_file, not both"),
        ));
    }
    if let Some(f) = &a.user_data_file {
        cx.file(f, "user_data_file");
    }
    if let Some(k) = &a.key_pair_name
        && img.communicator.private_key_file.is_none()
    {
        cx.push(Diagnostic::at(
            span(k),
            "aws.key_pair_name needs communicator.private_key_file (the matching private key)",
        ));
    }
    if let Some(n) = a.ami_name.as_ref().filter(|_| !cx.masked()) {
        let v = n.get_ref();
        if v.len() < 3 || v.len() > 128 || !v.chars().all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)) {
            cx.push(
                Diagnostic::at(span(n), format!("AMI name `{v}` is not valid")).help(
                    "3 to 128 characters: letters, digits and ( ) [ ] space . / - ' @ _ ({{clean_name ...}} helps)",
                ),
            );
        }
    }
    for bd in &a.block_devices {
        if let Some(s) = &bd.volume_size
            && s.get_ref().whole_gib().is_none_or(|g| g == 0)
        {
            cx.push(Diagnostic::at(span(s), format!("volume_size {} is not a whole number of GiB", s.get_ref())));
        }
    }
    if let Some(p) = &a.poll_interval
        && p.get_ref().get() < std::time::Duration::from_millis(200)
    {
        cx.push(Diagnostic::at(span(p), "poll_interval must be at least 200ms (EC2 throttles faster polling)"));
    }
    if let Some(u) = &a.windows_openssh_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        cx.push(Diagnostic::at(img.span, format!("aws.windows_openssh_url `{u}` is not an http(s) URL")));
    }
    if let Some(d) = &a.deprecate_after
        && d.get_ref().get().is_zero()
    {
        cx.push(Diagnostic::at(span(d), "deprecate_after must be longer than 0s"));
    }
    check_encrypted_share(cx, img, a);
    if let Some(d) = &a.deprecate_after
        && d.get_ref().get() > AwsSettings::MAX_DEPRECATE_AFTER
    {
        cx.push(
            Diagnostic::at(span(d), format!("deprecate_after `{}` is too far ahead", d.get_ref()))
                .help("EC2 deprecates an AMI at most 10 years (3650d) after it is made"),
        );
    }
}

/// EC2 refuses to share snapshots encrypted with the account's default EBS key.
fn check_encrypted_share(cx: &mut Check<'_>, img: &Image, a: &AwsSettings) {
    let Some(share) = a.share.as_ref().filter(|_| a.encrypt == Some(true)) else { return };
    if share.accounts.is_empty() && share.organizations.is_empty() && share.organizational_units.is_empty() {
        return;
    }
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
        cx.push(
            Diagnostic::at(img.span, format!(
                "image `{}`: encrypt = true and share with other accounts needs a customer-managed KMS key: set {}",
                img.name,
                missing.join(" and ")
            ))
            .help("EC2 cannot share snapshots encrypted with the default aws/ebs key; grant the accounts use of your key in KMS"),
        );
    }
}
