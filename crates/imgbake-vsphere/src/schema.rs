//! The `vsphere` builder's schema: its settings table, its `source` keys, and the offline checks on
//! them (`imgbake validate`). No network call is made here: whether the template, the cluster or the
//! datastore exist is for the build to find out.

use imgbake_config::{BuilderSchema, Check, Diagnostic, Image, Parsed, Raw, Source, Span, Spanned, did_you_mean};

use crate::settings::{self, CPUS_OUT_OF_RANGE, MAX_CPUS, VsphereSettings, VsphereSource};

/// The builder's name in the tree file.
pub const NAME: &str = "vsphere";

/// What `output` takes.
pub const OUTPUTS: [&str; 2] = ["template", "clone"];

/// The most disks `disks` may add: a VM has 4 SCSI controllers of 15 disks, and the first disk is
/// one of those 60.
pub const MAX_EXTRA_DISKS: usize = 59;

/// vSphere's limit on a VM or template name, in characters.
pub const MAX_NAME: usize = 80;

/// Memory is given to a VM in multiples of 4MiB.
const MEMORY_STEP: u64 = 4 << 20;
/// The most memory a VM can have (hardware version 17 and later).
const MAX_MEMORY: u64 = 24 << 40;
/// The smallest disk vSphere makes.
const MIN_DISK: u64 = 1 << 20;

/// Settings that change how a build runs or where, not what it makes (left out of fingerprints).
const OPERATIONAL: &[&str] = &[
    "url",
    "username",
    "password_env",
    "insecure",
    "ca_file",
    "datacenter",
    "cluster",
    "host",
    "resource_pool",
    "folder",
    "datastore",
    "network",
    "ip_timeout",
    "shutdown_timeout",
    "task_timeout",
    "template_name",
    "output",
];

/// Declares `[images.NAME.vsphere]` and the `template`, `snapshot` source keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct VsphereSchema;

impl VsphereSchema {
    /// As a schema to register.
    pub fn arc() -> std::sync::Arc<dyn BuilderSchema> {
        std::sync::Arc::new(VsphereSchema)
    }
}

fn span<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

impl BuilderSchema for VsphereSchema {
    fn name(&self) -> &str {
        NAME
    }

    fn source_keys(&self) -> &[&str] {
        &["template", "snapshot"]
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<VsphereSettings>().map_err(explain_parse_error)
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<VsphereSource>()
    }

    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        let src = settings::source_of(source.get_ref()).cloned().unwrap_or_default();
        match &src.template {
            Some(t) => inventory_path(cx, "source.template", t),
            None => cx.push(
                Diagnostic::at(span(source), format!("source of image `{}` (vsphere) needs `template`", image.name))
                    .help("the template or VM to clone: source = { template = \"/DC1/vm/templates/debian-12\" } (or its name)"),
            ),
        }
        if let Some(s) = &src.snapshot {
            let linked = settings::of(image).and_then(|v| v.linked_clone).unwrap_or(false);
            if s.get_ref().trim().is_empty() {
                cx.push(
                    Diagnostic::at(span(s), "source.snapshot is empty")
                        .help("name a snapshot of the source, or leave snapshot out (a linked clone then uses the current snapshot)"),
                );
            } else if !linked {
                cx.push(
                    Diagnostic::at(span(s), format!("image `{}`: source.snapshot needs vsphere.linked_clone = true", image.name))
                        .help("a full clone copies the source's current state; set linked_clone = true to clone from this snapshot, or remove snapshot"),
                );
            }
        }
    }

    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        // No table at all is fine: the endpoint and the user may all come from the environment.
        let Some(s) = settings::of(image) else { return };
        check_connection(cx, s);
        check_placement(cx, s);
        check_hardware(cx, s);
        check_output(cx, s);
    }

    fn operational_keys(&self) -> &[&str] {
        OPERATIONAL
    }

    // `ca_file` is checked to exist (in `check`) but not declared in `local_files`: those are hashed
    // into the fingerprint, and which CA is trusted does not change what a build makes (it is an
    // operational key), so renewing the bundle must not rebuild every template.

    fn needs_tree_id(&self) -> bool {
        // `plan`, `prune` and `clean` find this tree's templates by the tree id in their extraConfig:
        // two trees of one name in one vCenter would otherwise prune each other's templates.
        true
    }

    fn source_label(&self, source: &Source) -> Option<String> {
        let t = settings::source_of(source)?.template.as_ref()?;
        Some(format!("template {}", t.get_ref()))
    }
}

/// Better words for the parse errors this builder's users are likely to meet.
fn explain_parse_error(mut d: Diagnostic) -> Diagnostic {
    if d.message.starts_with("unknown key `password` in ") {
        d.conceal = true;
        d.message = d.message.replacen("unknown key `password`", "no `password` key", 1)
            + ": a password never goes in the tree file";
        d.help = Some(
            "put the password in the environment variable VSPHERE_PASSWORD (or GOVC_PASSWORD), or name \
             another variable with password_env = \"NAME\"; the user goes in `username`"
                .into(),
        );
    } else if d.message.starts_with("cpus ") && d.message.contains(&format!(" {CPUS_OUT_OF_RANGE} (in ")) {
        d.help =
            Some(format!("vSphere gives a VM 1 to {MAX_CPUS} virtual CPUs; or leave cpus out to keep the source's"));
    }
    d
}

/// `url`, `username`, `password_env`, `insecure`, `ca_file`.
fn check_connection(cx: &mut Check<'_>, s: &VsphereSettings) {
    if let Some(u) = &s.url
        && let Err((message, help)) = check_url(u.get_ref())
    {
        // The line may hold `user:password@`: no snippet of it.
        cx.push(Diagnostic::at(span(u), message).help(help).concealed());
    }
    if let Some(u) = &s.username
        && u.get_ref().trim().is_empty()
    {
        cx.push(
            Diagnostic::at(span(u), "vsphere.username is empty")
                .help("the user to log in as, e.g. builder@vsphere.local; or leave it out and set VSPHERE_USER"),
        );
    }
    if let Some(p) = &s.password_env
        && !valid_env_name(p.get_ref())
    {
        // Not echoed: someone may have put the password itself there.
        cx.push(Diagnostic::at(span(p), "vsphere.password_env is not an environment variable name").help(
            "password_env names the variable that holds the password (e.g. VSPHERE_PASSWORD), not the password: \
                 letters, digits and `_`, not starting with a digit",
        ).concealed());
    }
    if let Some(f) = &s.ca_file {
        if s.insecure == Some(true) {
            cx.push(
                Diagnostic::at(span(f), "vsphere takes only one of insecure = true, ca_file, found insecure = true and ca_file")
                    .help("insecure = true accepts any certificate, so ca_file would not be used: keep ca_file to trust that CA and remove insecure, or remove ca_file"),
            );
        }
        cx.file(f, "vsphere.ca_file");
    }
}

/// Why `url` is not a host, host:port or https URL, as (message, help). The value is not echoed when
/// it holds credentials.
fn check_url(url: &str) -> Result<(), (String, String)> {
    const FORMS: &str =
        "write the vCenter or ESXi host: vc.example.com, vc.example.com:8443 or https://vc.example.com/sdk";
    let v = url.trim();
    if v.is_empty() {
        return Err(("vsphere.url is empty".into(), format!("{FORMS}; or leave url out and set VSPHERE_URL")));
    }
    let (scheme, rest) = match v.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, v),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        return Err(if userinfo.contains(':') {
            (
                "vsphere.url holds a password".into(),
                "the password must come from the environment: remove `user:password@` from the URL, set username, \
                 and put the password in VSPHERE_PASSWORD (or the variable password_env names)"
                    .into(),
            )
        } else {
            (
                "vsphere.url holds a user name".into(),
                "remove `user@` from the URL and set the user with username (or VSPHERE_USER)".into(),
            )
        });
    }
    match scheme.as_deref() {
        None | Some("https") => {}
        Some("http") => {
            return Err((
                format!("vsphere.url `{url}` is plain http"),
                "vSphere needs https: write https://… or only the host name; for a lab use `insecure = true` only if \
                 the certificate is self-signed"
                    .into(),
            ));
        }
        Some(_) => return Err((format!("vsphere.url `{url}` is not an https URL"), FORMS.into())),
    }
    if !valid_authority(authority) {
        return Err((format!("vsphere.url `{url}` is not a host name, host:port or https URL"), FORMS.into()));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn valid_authority(a: &str) -> bool {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => ("v6", p.strip_prefix(':').unwrap_or("-")),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, p),
            None => (a, "443"),
        }
    };
    let host_ok = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An inventory path or name: not empty, no empty element.
fn inventory_path(cx: &mut Check<'_>, what: &str, p: &Spanned<String>) {
    let v = p.get_ref();
    if v.trim().is_empty() {
        cx.push(
            Diagnostic::at(span(p), format!("{what} is empty"))
                .help(format!("name it (a name, or an inventory path like /DC1/host/Cluster1), or leave {what} out")),
        );
    } else if v.contains("//") {
        cx.push(
            Diagnostic::at(span(p), format!("{what} `{v}` has an empty path element (`//`)"))
                .help("inventory paths look like /DC1/vm/templates/debian-12; a `/` inside a name is written %2f"),
        );
    }
}

/// Where the build VM goes: `datacenter`, `cluster`, `host`, `resource_pool`, `folder`,
/// `datastore`, `network`. Any combination is fine offline; the build resolves them.
fn check_placement(cx: &mut Check<'_>, s: &VsphereSettings) {
    let places = [
        ("vsphere.datacenter", &s.datacenter),
        ("vsphere.cluster", &s.cluster),
        ("vsphere.host", &s.host),
        ("vsphere.resource_pool", &s.resource_pool),
        ("vsphere.folder", &s.folder),
        ("vsphere.datastore", &s.datastore),
        ("vsphere.network", &s.network),
    ];
    for (what, p) in places {
        if let Some(p) = p {
            inventory_path(cx, what, p);
        }
    }
}

/// `memory`, `disk_size`, `disks` (`cpus` is checked while parsing).
fn check_hardware(cx: &mut Check<'_>, s: &VsphereSettings) {
    if let Some(m) = &s.memory {
        let b = m.get_ref().bytes();
        if b < MEMORY_STEP {
            cx.push(
                Diagnostic::at(span(m), format!("vsphere.memory {} is too small", m.get_ref()))
                    .help("a VM has at least 4MiB of memory, in multiples of 4MiB (e.g. 2GiB)"),
            );
        } else if b > MAX_MEMORY {
            cx.push(
                Diagnostic::at(span(m), format!("vsphere.memory {} is too large", m.get_ref()))
                    .help("a VM has at most 24TiB of memory"),
            );
        } else if !b.is_multiple_of(MEMORY_STEP) {
            let down = b / MEMORY_STEP * 4;
            cx.push(
                Diagnostic::at(span(m), format!("vsphere.memory {} is not a multiple of 4MiB", m.get_ref()))
                    .help(format!("vSphere gives memory in multiples of 4MiB: write {down}MiB or {}MiB", down + 4)),
            );
        }
    }
    if let Some(d) = &s.disk_size
        && d.get_ref().bytes() < MIN_DISK
    {
        cx.push(
            Diagnostic::at(span(d), format!("vsphere.disk_size {} is too small", d.get_ref()))
                .help("a disk is at least 1MiB; disk_size grows the first disk (e.g. 20GiB), or leave it out to keep the source's"),
        );
    }
    if let Some(d) = &s.disk_size
        && s.linked_clone == Some(true)
    {
        cx.push(
            Diagnostic::at(span(d), "vsphere.disk_size cannot grow a linked clone's disk")
                .help("a linked clone's disk is a delta on the source's snapshot, which vSphere does not extend: grow the source template, or use a full clone (linked_clone = false)"),
        );
    }
    for (i, disk) in s.disks.iter().enumerate() {
        if disk.size.get_ref().bytes() < MIN_DISK {
            cx.push(
                Diagnostic::at(
                    span(&disk.size),
                    format!("vsphere.disks[{}].size {} is too small", i + 1, disk.size.get_ref()),
                )
                .help("a disk is at least 1MiB (e.g. size = \"10GiB\")"),
            );
        }
    }
    if let Some(extra) = s.disks.get(MAX_EXTRA_DISKS) {
        cx.push(
            Diagnostic::at(span(&extra.size), format!("vsphere.disks has {} disks, more than {MAX_EXTRA_DISKS}", s.disks.len()))
                .help("a VM takes at most 60 SCSI disks (4 controllers of 15) and the first disk is one of them: use fewer, larger disks"),
        );
    }
}

/// `output`, `template_name`.
fn check_output(cx: &mut Check<'_>, s: &VsphereSettings) {
    if let Some(o) = &s.output
        && !OUTPUTS.contains(&o.get_ref().as_str())
    {
        let d = Diagnostic::at(span(o), format!("unknown vsphere.output `{}`", o.get_ref()));
        cx.push(match did_you_mean(o.get_ref(), OUTPUTS) {
            Some(m) => d.help(format!("did you mean `{m}`?")),
            None => d.help("one of: template (the build VM becomes the template), clone (it is cloned to a template)"),
        });
    }
    // Rendered names are checked with real or placeholder build values, not the fingerprint's markers.
    if let Some(n) = s.template_name.as_ref().filter(|_| !cx.masked())
        && let Err((message, help)) = check_template_name(n.get_ref())
    {
        cx.push(Diagnostic::at(span(n), message).help(help));
    }
}

/// A rendered template name: not empty, at most [`MAX_NAME`] characters with a real build id, none
/// of `/ \ %`.
fn check_template_name(v: &str) -> Result<(), (String, String)> {
    if v.trim().is_empty() {
        return Err((
            "vsphere.template_name is empty".into(),
            "name the template, e.g. \"{{ image.name }}-{{ timestamp }}\", or leave template_name out for the default"
                .into(),
        ));
    }
    if let Some(c) = v.chars().find(|c| "/\\%".contains(*c)) {
        return Err((
            format!("template name `{v}` contains `{c}`"),
            "vSphere names cannot hold / \\ or % (they are escaped in inventory paths): use - or _ instead".into(),
        ));
    }
    // Validation renders `{{ build.id }}` with a placeholder shorter than a real build id: count the
    // real length, so a name that fits now fits in a build too.
    let placeholder = imgbake_config::Stamp::placeholder().build_id;
    let real = imgbake_core::schedule::new_build_id().chars().count();
    let grow = v.matches(placeholder.as_str()).count() * real.saturating_sub(placeholder.chars().count());
    let len = v.chars().count() + grow;
    if len > MAX_NAME {
        let with_id = if grow > 0 { " with a build id" } else { "" };
        return Err((
            format!("template name `{v}` is {len} characters long{with_id}, more than {MAX_NAME}"),
            format!("vSphere names are at most {MAX_NAME} characters: shorten template_name"),
        ));
    }
    Ok(())
}
