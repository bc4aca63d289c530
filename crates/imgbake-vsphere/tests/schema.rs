//! The `vsphere` builder's part of the tree file, as `imgbake validate` sees it: every rejection at
//! its value's file:line:col with a help line, a good tree read back through `settings::of` and
//! `source_of`, and which keys change an image's fingerprint. No network: nothing here connects.

use std::path::Path;

use imgbake_config::{BuilderSchema, LoadOptions, Schemas, Stamp, Tree};
use imgbake_core::fingerprint::Inputs;
use imgbake_vsphere::settings::{self, ExtraDisk, VsphereSettings};
use imgbake_vsphere::{NAME, VsphereSchema};

fn opts() -> LoadOptions {
    LoadOptions { schemas: Schemas::new().with(VsphereSchema::arc()), env: Default::default(), ..Default::default() }
}

/// A tree in a temp dir: `files` are (relative path, content).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        std::fs::write(dir.path().join(p), c).unwrap();
    }
    dir
}

fn load(dir: &Path) -> Tree {
    Tree::load(&dir.join("tree.toml"), &opts()).unwrap_or_else(|e| panic!("{e}"))
}

/// The error text of a rejected tree, with the temp dir's path replaced by `T`.
fn errors_in(files: &[(&str, &str)]) -> String {
    let d = tree(files);
    let err = Tree::load(&d.path().join("tree.toml"), &opts()).expect_err("the tree should be rejected");
    err.to_string().replace(&d.path().display().to_string(), "T")
}

/// Lines 1-10 of every rejected tree: a good root image, then its `[images.base.vsphere]` table,
/// so what a test adds starts at line 11.
const HEAD: &str = r#"[settings]
id = "vsphere-test-0001"

[defaults]
builder = "vsphere"
communicator = { username = "debian" }

[images.base]
source = { template = "/DC0/vm/templates/debian-12" }
[images.base.vsphere]
"#;

/// The errors of HEAD + `rest`.
fn errors(rest: &str) -> String {
    errors_in(&[("tree.toml", &format!("{HEAD}{rest}"))])
}

/// `e` is exactly one error, `line`.
#[track_caller]
fn only(e: &str, line: &str) {
    assert_eq!(e, format!("{line}\n1 error"), "\n{e}");
}

// ---- source ----

#[test]
fn a_root_image_needs_a_template() {
    let e = errors_in(&[("tree.toml", &HEAD.replace(r#"{ template = "/DC0/vm/templates/debian-12" }"#, "{}"))]);
    only(
        &e,
        "T/tree.toml:9:10: source of image `base` (vsphere) needs `template` (the template or VM to clone: source = { template = \"/DC1/vm/templates/debian-12\" } (or its name))",
    );
}

#[test]
fn a_snapshot_needs_linked_clone() {
    let text = HEAD.replace("debian-12\" }", "debian-12\", snapshot = \"clean\" }");
    let e = errors_in(&[("tree.toml", &text)]);
    only(
        &e,
        "T/tree.toml:9:65: image `base`: source.snapshot needs vsphere.linked_clone = true (a full clone copies the source's current state; set linked_clone = true to clone from this snapshot, or remove snapshot)",
    );
    // With it, the same source is fine.
    let d = tree(&[("tree.toml", &format!("{text}linked_clone = true\n"))]);
    load(d.path());
}

#[test]
fn a_linked_clone_cannot_grow_its_disk() {
    only(
        &errors("linked_clone = true\ndisk_size = \"40GiB\"\n"),
        "T/tree.toml:12:13: vsphere.disk_size cannot grow a linked clone's disk (a linked clone's disk is a delta on the source's snapshot, which vSphere does not extend: grow the source template, or use a full clone (linked_clone = false))",
    );
}

#[test]
fn a_template_path_has_no_empty_element() {
    let e = errors_in(&[("tree.toml", &HEAD.replace("/DC0/vm/templates", "/DC0/vm//templates"))]);
    only(
        &e,
        "T/tree.toml:9:23: source.template `/DC0/vm//templates/debian-12` has an empty path element (`//`) (inventory paths look like /DC1/vm/templates/debian-12; a `/` inside a name is written %2f)",
    );
}

// ---- connection ----

#[test]
fn a_plain_http_url_is_refused() {
    only(
        &errors("url = \"http://vc.example.com/sdk\"\n"),
        "T/tree.toml:11:7: vsphere.url `http://vc.example.com/sdk` is plain http (vSphere needs https: write https://… or only the host name; for a lab use `insecure = true` only if the certificate is self-signed)",
    );
}

#[test]
fn a_url_with_a_password_is_refused_without_echoing_it() {
    let e = errors("url = \"https://admin:hunter2@vc.example.com/sdk\"\n");
    only(
        &e,
        "T/tree.toml:11:7: vsphere.url holds a password (the password must come from the environment: remove `user:password@` from the URL, set username, and put the password in VSPHERE_PASSWORD (or the variable password_env names))",
    );
    assert!(!e.contains("hunter2"));
}

#[test]
fn a_url_that_is_no_host_is_refused() {
    only(
        &errors("url = \"vc.example.com:https\"\n"),
        "T/tree.toml:11:7: vsphere.url `vc.example.com:https` is not a host name, host:port or https URL (write the vCenter or ESXi host: vc.example.com, vc.example.com:8443 or https://vc.example.com/sdk)",
    );
}

#[test]
fn insecure_and_ca_file_conflict() {
    let e = errors_in(&[
        ("tree.toml", &format!("{HEAD}insecure = true\nca_file = \"ca.pem\"\n")),
        ("ca.pem", "-----BEGIN CERTIFICATE-----\n"),
    ]);
    only(
        &e,
        "T/tree.toml:12:11: vsphere takes only one of insecure = true, ca_file, found insecure = true and ca_file (insecure = true accepts any certificate, so ca_file would not be used: keep ca_file to trust that CA and remove insecure, or remove ca_file)",
    );
}

#[test]
fn the_ca_file_must_exist() {
    only(
        &errors("ca_file = \"certs/vcenter.pem\"\n"),
        "T/tree.toml:11:11: vsphere.ca_file `certs/vcenter.pem` does not exist (looked for T/certs/vcenter.pem (paths are relative to the file that names them))",
    );
}

#[test]
fn password_env_must_be_a_variable_name() {
    let e = errors("password_env = \"s3cret!\"\n");
    only(
        &e,
        "T/tree.toml:11:16: vsphere.password_env is not an environment variable name (password_env names the variable that holds the password (e.g. VSPHERE_PASSWORD), not the password: letters, digits and `_`, not starting with a digit)",
    );
    assert!(!e.contains("s3cret"));
}

#[test]
fn a_password_key_is_refused_with_where_it_goes() {
    // In [defaults.vsphere]: one error, at the key, though two images inherit it.
    let text = format!(
        "{}[defaults.vsphere]\npassword = \"hunter2\"\n",
        HEAD.replace("[images.base.vsphere]\n", "[images.app]\nparent = \"base\"\n")
    );
    only(
        &errors_in(&[("tree.toml", &text)]),
        "T/tree.toml:13:1: no `password` key in images.base.vsphere: a password never goes in the tree file (put the password in the environment variable VSPHERE_PASSWORD (or GOVC_PASSWORD), or name another variable with password_env = \"NAME\"; the user goes in `username`)",
    );
}

#[test]
fn other_unknown_keys_get_the_usual_suggestion() {
    only(
        &errors("datacentre = \"DC0\"\n"),
        "T/tree.toml:11:1: unknown key `datacentre` in images.base.vsphere (did you mean `datacenter`?)",
    );
}

// ---- placement ----

#[test]
fn an_empty_cluster_is_refused() {
    only(
        &errors("cluster = \"\"\n"),
        "T/tree.toml:11:11: vsphere.cluster is empty (name it (a name, or an inventory path like /DC1/host/Cluster1), or leave vsphere.cluster out)",
    );
}

#[test]
fn a_folder_with_an_empty_element_is_refused() {
    only(
        &errors("folder = \"imgbake//builds\"\n"),
        "T/tree.toml:11:10: vsphere.folder `imgbake//builds` has an empty path element (`//`) (inventory paths look like /DC1/vm/templates/debian-12; a `/` inside a name is written %2f)",
    );
}

#[test]
fn cluster_host_and_resource_pool_combine_freely() {
    let d = tree(&[(
        "tree.toml",
        &format!(
            "{HEAD}cluster = \"DC0_C0\"\nhost = \"DC0_C0_H0\"\nresource_pool = \"builds\"\n\n[images.other]\nsource = {{ template = \"debian-12\" }}\nvsphere = {{ host = \"/DC0/host/DC0_H0/DC0_H0\", resource_pool = \"builds\" }}\n"
        ),
    )]);
    load(d.path());
}

// ---- hardware ----

#[test]
fn cpus_out_of_range_are_refused() {
    only(
        &errors("cpus = 0\n"),
        "T/tree.toml:11:8: cpus 0 is out of range (in images.base.vsphere) (vSphere gives a VM 1 to 768 virtual CPUs; or leave cpus out to keep the source's)",
    );
    only(
        &errors("cpus = 769\n"),
        "T/tree.toml:11:8: cpus 769 is out of range (in images.base.vsphere) (vSphere gives a VM 1 to 768 virtual CPUs; or leave cpus out to keep the source's)",
    );
}

#[test]
fn memory_too_small_is_refused() {
    only(
        &errors("memory = \"2MiB\"\n"),
        "T/tree.toml:11:10: vsphere.memory 2.0 MiB is too small (a VM has at least 4MiB of memory, in multiples of 4MiB (e.g. 2GiB))",
    );
}

#[test]
fn memory_must_be_a_multiple_of_4_mib() {
    only(
        &errors("memory = \"1G\"\n"),
        "T/tree.toml:11:10: vsphere.memory 953.7 MiB is not a multiple of 4MiB (vSphere gives memory in multiples of 4MiB: write 952MiB or 956MiB)",
    );
}

#[test]
fn memory_past_24_tib_is_refused() {
    only(
        &errors("memory = \"32TiB\"\n"),
        "T/tree.toml:11:10: vsphere.memory 32.0 TiB is too large (a VM has at most 24TiB of memory)",
    );
}

#[test]
fn disk_size_too_small_is_refused() {
    only(
        &errors("disk_size = \"512KiB\"\n"),
        "T/tree.toml:11:13: vsphere.disk_size 512.0 KiB is too small (a disk is at least 1MiB; disk_size grows the first disk (e.g. 20GiB), or leave it out to keep the source's)",
    );
}

#[test]
fn an_extra_disk_too_small_is_refused() {
    only(
        &errors("[[images.base.vsphere.disks]]\nsize = \"10GiB\"\n[[images.base.vsphere.disks]]\nsize = \"0B\"\n"),
        "T/tree.toml:14:8: vsphere.disks[2].size 0 B is too small (a disk is at least 1MiB (e.g. size = \"10GiB\"))",
    );
}

#[test]
fn more_than_59_extra_disks_are_refused() {
    let disks = "[[images.base.vsphere.disks]]\nsize = \"1GiB\"\n".repeat(60);
    // The 60th disk's size: its table header is line 11 + 2 × 59.
    only(
        &errors(&disks),
        "T/tree.toml:130:8: vsphere.disks has 60 disks, more than 59 (a VM takes at most 60 SCSI disks (4 controllers of 15) and the first disk is one of them: use fewer, larger disks)",
    );
    let d = tree(&[("tree.toml", &format!("{HEAD}{}", "[[images.base.vsphere.disks]]\nsize = \"1GiB\"\n".repeat(59)))]);
    assert_eq!(settings::of(load(d.path()).image("base").unwrap()).unwrap().disks.len(), 59);
}

// ---- output ----

#[test]
fn an_unknown_output_gets_a_suggestion() {
    only(
        &errors("output = \"templat\"\n"),
        "T/tree.toml:11:10: unknown vsphere.output `templat` (did you mean `template`?)",
    );
    only(
        &errors("output = \"ovf\"\n"),
        "T/tree.toml:11:10: unknown vsphere.output `ovf` (one of: template (the build VM becomes the template), clone (it is cloned to a template))",
    );
}

#[test]
fn a_template_name_is_at_most_80_characters_with_a_real_build_id() {
    // 69 characters as validated, 80 with a real build id (b20261124-101500-3fa2): fits.
    let fits = format!("{}-{{{{ build.id }}}}", "x".repeat(58));
    let d = tree(&[("tree.toml", &format!("{HEAD}template_name = \"{fits}\"\n"))]);
    load(d.path());
    let long = format!("{}-{{{{ build.id }}}}", "x".repeat(59));
    only(
        &errors(&format!("template_name = \"{long}\"\n")),
        &format!(
            "T/tree.toml:11:17: template name `{}-b-validate` is 81 characters long with a build id, more than 80 (vSphere names are at most 80 characters: shorten template_name)",
            "x".repeat(59)
        ),
    );
}

#[test]
fn a_template_name_has_no_slash_backslash_or_percent() {
    only(
        &errors("template_name = '50%'\n"),
        "T/tree.toml:11:17: template name `50%` contains `%` (vSphere names cannot hold / \\ or % (they are escaped in inventory paths): use - or _ instead)",
    );
    only(
        &errors("template_name = \"{{ image.name }}/v1\"\n"),
        "T/tree.toml:11:17: template name `base/v1` contains `/` (vSphere names cannot hold / \\ or % (they are escaped in inventory paths): use - or _ instead)",
    );
}

#[test]
fn an_empty_template_name_is_refused() {
    only(
        &errors("template_name = \" \"\n"),
        "T/tree.toml:11:17: vsphere.template_name is empty (name the template, e.g. \"{{ image.name }}-{{ timestamp }}\", or leave template_name out for the default)",
    );
}

// ---- a good tree ----

const GOOD: &str = r#"[settings]
id = "vsphere-test-0001"

[defaults]
builder = "vsphere"
communicator = { username = "debian" }

[defaults.vsphere]
url = "vc.example.com"
username = "builder@vsphere.local"
password_env = "LAB_VC_PASSWORD"
ca_file = "ca.pem"
datacenter = "DC0"
cluster = "DC0_C0"
folder = "imgbake"
network = "VM Network"
linked_clone = true
task_timeout = "20m"

[images.base]
source = { template = "/DC0/vm/templates/debian-12", snapshot = "clean" }
[images.base.vsphere]
cpus = 2
memory = "4GiB"
notes = "base image"
template_name = "base-{{ build.id }}"
[[images.base.vsphere.disks]]
size = "10GiB"
thin = true

[images.app]
parent = "base"
vsphere = { cpus = 4, output = "clone" }
"#;

#[test]
fn a_good_tree_loads_and_reads_back() {
    let d = tree(&[("tree.toml", GOOD), ("ca.pem", "-----BEGIN CERTIFICATE-----\n")]);
    let t = load(d.path());
    assert_eq!(t.order(), vec!["base", "app"]);
    let base = t.image("base").unwrap();
    let src = settings::source_of(base.source.as_ref().unwrap().get_ref()).unwrap();
    assert_eq!(src.template.as_ref().unwrap().get_ref(), "/DC0/vm/templates/debian-12");
    assert_eq!(src.snapshot.as_ref().unwrap().get_ref(), "clean");
    assert_eq!(
        VsphereSchema.source_label(base.source.as_ref().unwrap().get_ref()).as_deref(),
        Some("template /DC0/vm/templates/debian-12")
    );

    let s = settings::of(base).unwrap();
    assert_eq!(s.url.as_ref().unwrap().get_ref(), "vc.example.com");
    assert_eq!(s.username.as_ref().unwrap().get_ref(), "builder@vsphere.local");
    assert_eq!(s.password_env.as_ref().unwrap().get_ref(), "LAB_VC_PASSWORD");
    assert_eq!(s.datacenter.as_ref().unwrap().get_ref(), "DC0");
    assert_eq!(s.linked_clone, Some(true));
    assert_eq!(s.cpus, Some(2));
    assert_eq!(s.memory.as_ref().unwrap().get_ref().bytes(), 4 << 30);
    assert!(s.disk_size.is_none(), "a linked clone keeps its source's disk size");
    assert_eq!(s.disks.len(), 1);
    let ExtraDisk { size, thin } = &s.disks[0];
    assert_eq!((size.get_ref().bytes(), *thin), (10 << 30, Some(true)));
    assert_eq!(s.notes.as_deref(), Some("base image"));
    assert_eq!(s.template_name.as_ref().unwrap().get_ref(), "base-b-validate", "rendered");
    assert_eq!(s.task_timeout.unwrap().get().as_secs(), 20 * 60);
    assert!(s.output.is_none() && s.insecure.is_none() && s.ip_timeout.is_none());

    // The child inherits the defaults and its parent's table, and overrides what it sets.
    let app = t.image("app").unwrap();
    assert!(app.source.is_none());
    let a = settings::of(app).unwrap();
    assert_eq!(a.cpus, Some(4));
    assert_eq!(a.output.as_ref().unwrap().get_ref(), "clone");
    assert_eq!(a.memory.as_ref().unwrap().get_ref().bytes(), 4 << 30);
    assert_eq!(a.cluster.as_ref().unwrap().get_ref(), "DC0_C0");

    // The schema's promises.
    assert_eq!(VsphereSchema.name(), NAME);
    assert_eq!(VsphereSchema.source_keys(), ["template", "snapshot"]);
    assert!(VsphereSchema.needs_tree_id());
    assert!(VsphereSchema.local_files(base).is_empty(), "ca_file is operational: not hashed");
}

#[test]
fn no_vsphere_table_is_fine_everything_may_come_from_the_environment() {
    let d = tree(&[("tree.toml", &HEAD.replace("[images.base.vsphere]\n", ""))]);
    let t = load(d.path());
    assert!(settings::of(t.image("base").unwrap()).is_none());
}

#[test]
fn url_forms_that_are_accepted() {
    for url in
        ["vc.example.com", "vc.example.com:8443", "https://vc.example.com/sdk", "HTTPS://10.0.0.5", "[2001:db8::5]:443"]
    {
        let d = tree(&[("tree.toml", &format!("{HEAD}url = \"{url}\"\n"))]);
        Tree::load(&d.path().join("tree.toml"), &opts()).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn a_vsphere_image_needs_a_tree_id() {
    let e = errors_in(&[("tree.toml", &HEAD.replace("[settings]\nid = \"vsphere-test-0001\"\n", "\n\n"))]);
    assert!(
        e.contains("T/tree.toml:8:9: this tree builds with vsphere (image `base`) but has no `settings.id`"),
        "{e}"
    );
}

// ---- fingerprints ----

/// The fingerprint of `image` in `text`, each tree written to the same directory.
fn fingerprint(dir: &Path, text: &str, image: &str) -> String {
    std::fs::write(dir.join("tree.toml"), text).unwrap();
    let masked = load(dir).rerender(&Stamp::masked()).unwrap_or_else(|e| panic!("{e}"));
    let inputs = Inputs::compute(&masked, masked.image(image).unwrap(), NAME, "origin-1").unwrap();
    inputs.fingerprint().as_str().to_string()
}

#[test]
fn operational_keys_leave_the_fingerprint_alone() {
    let d = tree(&[("ca.pem", "-----BEGIN CERTIFICATE-----\n")]);
    let plain = format!("{HEAD}cpus = 2\n");
    let before = fingerprint(d.path(), &plain, "base");
    // Every operational key at once: where and how it is built, not what.
    let all = format!(
        r#"{plain}url = "https://vc2.example.com/sdk"
username = "other@vsphere.local"
password_env = "OTHER_PASSWORD"
insecure = false
ca_file = "ca.pem"
datacenter = "DC1"
cluster = "C1"
host = "H1"
resource_pool = "pool"
folder = "elsewhere"
datastore = "ds2"
network = "other net"
ip_timeout = "20m"
shutdown_timeout = "1m"
task_timeout = "1h"
template_name = "renamed-{{{{ timestamp }}}}"
output = "clone"
"#
    );
    let set: Vec<&str> = all.lines().skip(plain.lines().count()).filter_map(|l| l.split(" = ").next()).collect();
    assert_eq!(set, VsphereSchema.operational_keys(), "the test sets every operational key");
    assert_eq!(fingerprint(d.path(), &all, "base"), before);
    // A new CA bundle rebuilds nothing either.
    std::fs::write(d.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\nrenewed\n").unwrap();
    assert_eq!(fingerprint(d.path(), &all, "base"), before);

    // What the template is made of does change it.
    assert_ne!(fingerprint(d.path(), &format!("{HEAD}cpus = 4\n"), "base"), before);
    for other in ["memory = \"2GiB\"", "disk_size = \"30GiB\"", "linked_clone = true", "notes = \"x\""] {
        assert_ne!(fingerprint(d.path(), &format!("{plain}{other}\n"), "base"), before, "{other}");
    }
    assert_ne!(
        fingerprint(d.path(), &HEAD.replace("debian-12", "debian-13"), "base"),
        fingerprint(d.path(), HEAD, "base"),
        "the source template"
    );
}

#[test]
fn absent_keys_are_not_serialized() {
    // What fingerprints hash: a key added later, or absent, must not change existing fingerprints
    // (and the source's view must add nothing to other builders').
    assert_eq!(serde_json::to_value(VsphereSettings::default()).unwrap(), serde_json::json!({}));
    assert_eq!(serde_json::to_value(imgbake_vsphere::VsphereSource::default()).unwrap(), serde_json::json!({}));
    let s = VsphereSettings { cpus: Some(2), ..VsphereSettings::default() };
    assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::json!({ "cpus": 2 }));
}

/// A password typed into the tree is never shown back, not even in the rendered source snippet.
#[test]
fn a_password_typed_into_the_tree_is_not_rendered_back() {
    for rest in [
        "password = \"hunter2-secret\"\n",
        "url = \"https://admin:hunter2-secret@vc.example.com/sdk\"\n",
        "password_env = \"hunter2-secret!\"\n",
    ] {
        let d = tree(&[("tree.toml", &format!("{HEAD}{rest}"))]);
        let e = Tree::load(&d.path().join("tree.toml"), &opts()).expect_err("rejected");
        let shown = format!("{}\n{}", e.render(false), e);
        assert!(!shown.contains("hunter2"), "{rest}: {shown}");
        assert!(shown.contains("tree.toml:11:"), "{rest}: still located: {shown}");
    }
}
