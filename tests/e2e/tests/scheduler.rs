//! The planner and scheduler over a whole tree, fast: the "platform" is a directory (a test builder
//! in this file keeps artifacts as JSON files) while every step really runs over SSH on the bed's
//! OpenSSH server through the real step runner. What the cloud adds is tested in aws_tree.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use imgbake_config::schema::Open;
use imgbake_config::{Image, LoadOptions, Schemas, Span, Tree};
use imgbake_core::artifact::Artifact;
use imgbake_core::builder::{Build, BuildJob, Builder, ResolvedSource, SweepFilter};
use imgbake_core::cleanup::{Journal, Resource};
use imgbake_core::communicator::Communicator;
use imgbake_core::error::{BuildError, ErrorKind};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::plan::{Action, PlanOptions, plan};
use imgbake_core::registry::Registry;
use imgbake_core::sanitize::SanitizeItems;
use imgbake_core::schedule::{RunOptions, Status, run};
use imgbake_core::wait::Wait;
use imgbake_e2e::{write, write_tree};
use imgbake_ssh::SshCommunicator;
use imgbake_ssh::spec::{Machine, ssh_config};
use imgbake_testbed::{SshTarget, Sshd};

/// The fake builder's name: any name works, since builders declare their own part of the tree file.
const KIND: &str = "dir";

/// A builder whose artifacts are JSON files in `out/`, and whose machine is the bed's sshd.
struct DirBuilder {
    out: PathBuf,
    work: PathBuf,
    builds: AtomicUsize,
    built: Mutex<Vec<String>>,
    /// (image, start, end) of every build.
    spans: Mutex<Vec<(String, std::time::Instant, std::time::Instant)>>,
    /// Successful `publish` calls.
    publishes: AtomicUsize,
}

impl DirBuilder {
    fn new(root: &Path) -> Arc<Self> {
        Arc::new(DirBuilder {
            out: root.join("out"),
            work: root.join("work"),
            builds: AtomicUsize::new(0),
            built: Mutex::new(Vec::new()),
            spans: Mutex::new(Vec::new()),
            publishes: AtomicUsize::new(0),
        })
    }
}

fn err(e: impl std::fmt::Display) -> BuildError {
    BuildError::new(ErrorKind::Local, e.to_string())
}

#[async_trait]
impl Builder for DirBuilder {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn resolve_source(&self, tree: &Tree, image: &Image) -> Result<ResolvedSource, BuildError> {
        let src = image.source.as_ref().ok_or_else(|| err("no source"))?;
        let disk = src.get_ref().json(KIND).and_then(|s| s["disk"].as_str()).ok_or_else(|| err("no disk"))?;
        let text = std::fs::read_to_string(tree.sources().resolve(Span::new(src.span()), disk)).map_err(err)?;
        Ok(ResolvedSource::new(format!("disk-{}", text.trim()), format!("{disk} ({})", text.trim())))
    }

    async fn list_artifacts(&self, _tree: &Tree, images: &[&Image]) -> Result<Vec<Artifact>, BuildError> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.out) else { return Ok(out) };
        for e in entries.flatten() {
            let a: Artifact = serde_json::from_str(&std::fs::read_to_string(e.path()).map_err(err)?).map_err(err)?;
            if images.iter().any(|i| i.name == a.image) {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn prepare<'a>(&'a self, job: &'a BuildJob) -> Result<Box<dyn Build + 'a>, BuildError> {
        let build = DirBuild { b: self, job, started: std::time::Instant::now() };
        self.builds.fetch_add(1, Ordering::SeqCst);
        self.built.lock().unwrap().push(job.image.clone());
        let work = self.work.join(format!("{}-{}", job.image, job.build_id));
        std::fs::create_dir_all(&work).map_err(err)?;
        job.record(Resource::new(KIND, "workdir", work.display().to_string()))?;
        // A bug after something exists (like an overflow computing a deprecation time).
        if self.work.with_file_name(format!("panic-{}", job.image)).exists() {
            panic!("attempt to add with overflow");
        }
        Ok(Box::new(build))
    }

    async fn destroy(&self, _tree: &Tree, r: &Resource, _events: &EventSink) -> Result<(), BuildError> {
        if self.work.with_file_name("undeletable").exists() {
            return Err(err(format!("{} is undeletable", r.id)));
        }
        match std::fs::remove_dir_all(&r.id) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn sweep(&self, _tree: &Tree, _f: &SweepFilter) -> Result<Vec<Resource>, BuildError> {
        let Ok(entries) = std::fs::read_dir(&self.work) else { return Ok(Vec::new()) };
        Ok(entries.flatten().map(|e| Resource::new(KIND, "workdir", e.path().display().to_string())).collect())
    }

    async fn delete_artifact(&self, _tree: &Tree, a: &Artifact, _events: &EventSink) -> Result<(), BuildError> {
        std::fs::remove_file(self.out.join(format!("{}.json", a.id))).map_err(err)
    }

    /// The announcement is a file `announced-IMAGE` holding the artifact id; a file `publish-fails`
    /// beside the tree makes publishing fail.
    async fn publish(
        &self,
        _tree: &Tree,
        image: &Image,
        a: &Artifact,
        _e: &EventSink,
    ) -> Result<Vec<String>, BuildError> {
        if self.work.with_file_name("publish-fails").exists() {
            return Err(err("the announcement service is down"));
        }
        std::fs::write(self.work.with_file_name(format!("announced-{}", image.name)), &a.id).map_err(err)?;
        self.publishes.fetch_add(1, Ordering::SeqCst);
        Ok(vec![format!("announced {}", a.id)])
    }

    async fn is_published(&self, _tree: &Tree, image: &Image, a: &Artifact) -> Result<Option<bool>, BuildError> {
        let held = std::fs::read_to_string(self.work.with_file_name(format!("announced-{}", image.name)));
        Ok(Some(held.is_ok_and(|id| id == a.id)))
    }
}

/// One build of a [`DirBuilder`]: its span is recorded when it ends, however it ends.
struct DirBuild<'a> {
    b: &'a DirBuilder,
    job: &'a BuildJob,
    started: std::time::Instant,
}

impl Drop for DirBuild<'_> {
    fn drop(&mut self) {
        if let Ok(mut spans) = self.b.spans.lock() {
            spans.push((self.job.image.clone(), self.started, std::time::Instant::now()));
        }
    }
}

#[async_trait]
impl Build for DirBuild<'_> {
    async fn launch(&mut self) -> Result<(), BuildError> {
        Ok(())
    }

    async fn connect(&mut self) -> Result<Box<dyn Communicator>, BuildError> {
        let job = self.job;
        let comm = SshCommunicator::new(ssh_config(&job.tree, job.image()?, &Machine::new("127.0.0.1"))?)
            .with_events(job.events.clone());
        comm.connect(&Wait::new(Duration::from_secs(30))).await?;
        Ok(Box::new(comm))
    }

    fn sanitize_items(&self) -> SanitizeItems {
        SanitizeItems::default()
    }

    async fn shutdown(&mut self, comm: &dyn Communicator) -> Result<(), BuildError> {
        comm.disconnect().await;
        Ok(())
    }

    async fn capture(&mut self) -> Result<Artifact, BuildError> {
        let (job, img) = (self.job, self.job.image()?);
        let id = format!("dir-{}-{}", job.image, job.build_id);
        let a = Artifact {
            image: job.image.clone(),
            builder: KIND.into(),
            id: id.clone(),
            locations: BTreeMap::from([("local".to_string(), id.clone())]),
            fingerprint: job.fingerprint.clone(),
            source: job.source.id_in("local"),
            parent: img.parent.as_ref().map(|p| p.get_ref().clone()),
            build_id: job.build_id.clone(),
            created: Utc::now(),
            extra: BTreeMap::new(),
        };
        let out = &self.b.out;
        std::fs::create_dir_all(out).map_err(err)?;
        std::fs::write(out.join(format!("{id}.json")), serde_json::to_string(&a).map_err(err)?).map_err(err)?;
        Ok(a)
    }
}

struct Bed {
    _sshd: Sshd,
    dir: tempfile::TempDir,
    builder: Arc<DirBuilder>,
    registry: Registry,
}

/// base → runtime → app, and base → tools; the machine is the bed's sshd.
async fn bed() -> Bed {
    let sshd = Sshd::start().await.expect("the bed's sshd (run tests/bed/install.sh)");
    let head = format!(
        r#"[settings]
name = "e2e"
manifest = "out-manifest.json"

[defaults]
builder = "dir"
communicator = {{ username = "root", host = "127.0.0.1", port = {port}, private_key_file = "{key}", host_key = "known_hosts", known_hosts_file = "{known}" }}
"#,
        port = sshd.port(),
        key = sshd.client_key_path().display(),
        known = sshd.known_hosts_path().display()
    );
    let tree = format!(
        r#"{head}
[images.base]
source = {{ disk = "base.disk" }}
max_age = "7d"
[[images.base.steps]]
shell = {{ script = "scripts/base.sh" }}

[images.runtime]
parent = "base"
[[images.runtime.steps]]
shell = {{ script = "scripts/runtime.sh" }}

[images.app]
parent = "runtime"
[[images.app.steps]]
shell = {{ inline = ["echo app $IMGBAKE_TEST"], env = {{ IMGBAKE_TEST = "x" }} }}
[[images.app.steps]]
name = "the parent's artifact reaches templates"
local = {{ command = "test -n \"$IMGBAKE_PARENT_ARTIFACT\" && test '{{{{ parent.artifact }}}}' = \"$IMGBAKE_PARENT_ARTIFACT\"" }}

[images.tools]
parent = "base"
[[images.tools.steps]]
shell = {{ inline = ["echo tools"] }}
"#
    );
    let dir = write_tree(&[
        ("tree.toml", &tree),
        ("base.disk", "v1\n"),
        ("scripts/base.sh", "echo base\n"),
        ("scripts/runtime.sh", "echo runtime\n"),
    ]);
    let builder = DirBuilder::new(dir.path());
    let mut registry = Registry::new();
    registry.register(builder.clone());
    Bed { _sshd: sshd, dir, builder, registry }
}

impl Bed {
    fn tree(&self) -> Tree {
        // The fake builder's tree-file part: any settings, and `source.disk`.
        let schema = Open::new(KIND, &["disk"]).publishes(&["announce"]).arc();
        let opts = LoadOptions { schemas: Schemas::new().with(schema), ..Default::default() };
        Tree::load(&self.dir.path().join("tree.toml"), &opts).expect("valid tree")
    }

    async fn plan(&self, opts: &PlanOptions) -> imgbake_core::plan::Plan {
        plan(&self.tree(), &self.registry, opts, &EventSink::discard()).await.expect("plan")
    }

    async fn build(&self, opts: &PlanOptions) -> imgbake_core::schedule::RunSummary {
        self.build_with(opts, RunOptions::default(), EventSink::discard()).await
    }

    async fn build_with(
        &self,
        popts: &PlanOptions,
        ropts: RunOptions,
        events: EventSink,
    ) -> imgbake_core::schedule::RunSummary {
        let tree = self.tree();
        let p = plan(&tree, &self.registry, popts, &events).await.expect("plan");
        run(&tree, &p, &self.registry, ropts, &events).await.expect("run")
    }

    fn builds(&self) -> usize {
        self.builder.builds.load(Ordering::SeqCst)
    }

    fn built(&self) -> Vec<String> {
        std::mem::take(&mut *self.builder.built.lock().unwrap())
    }

    fn journals_left(&self) -> usize {
        Journal::open_all(&self.dir.path().join(".imgbake")).unwrap().len()
    }

    fn work_dirs_left(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("work")).map(|d| d.count()).unwrap_or(0)
    }
}

fn status_of(s: &imgbake_core::schedule::RunSummary, image: &str) -> Status {
    s.results.iter().find(|r| r.image == image).map(|r| r.status).unwrap_or_else(|| panic!("no result for {image}"))
}

fn reasons(p: &imgbake_core::plan::Plan, image: &str) -> String {
    p.get(image, KIND).unwrap().reasons.join("; ")
}

#[tokio::test]
async fn builds_parents_first_then_reuses_everything() {
    let bed = bed().await;
    let s = bed.build(&PlanOptions::default()).await;
    assert!(s.ok(), "{s:#?}");
    for i in ["base", "runtime", "app", "tools"] {
        assert_eq!(status_of(&s, i), Status::Built, "{i}");
    }
    let order = bed.built();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("base") < pos("runtime") && pos("runtime") < pos("app") && pos("base") < pos("tools"), "{order:?}");
    // The child's artifact records the parent artifact it was built from.
    let base_id = s.results.iter().find(|r| r.image == "base").unwrap().artifact.as_ref().unwrap().id.clone();
    let runtime = s.results.iter().find(|r| r.image == "runtime").unwrap().artifact.clone().unwrap();
    assert_eq!(runtime.source, base_id);
    assert_eq!(bed.work_dirs_left(), 0, "temporary resources are removed on success");
    assert_eq!(bed.journals_left(), 0);

    // The manifest lists every image with its steps.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.dir.path().join("out-manifest.json")).unwrap()).unwrap();
    assert_eq!(m["images"]["app"][KIND]["status"], "built");
    assert_eq!(m["images"]["app"][KIND]["steps"][0]["outcome"], "ok", "{m:#}");
    assert_eq!(m["build_id"], s.build_id.as_str());

    // Nothing changed: everything is reused, nothing is built.
    let before = bed.builds();
    let p = bed.plan(&PlanOptions::default()).await;
    assert_eq!(p.count(Action::Reuse), 4, "{p:#?}");
    assert!(reasons(&p, "app").starts_with("up to date (dir-app-"), "{}", reasons(&p, "app"));
    let s2 = bed.build(&PlanOptions::default()).await;
    assert!(s2.ok());
    assert_eq!(bed.builds(), before, "a second run builds nothing");
    assert_eq!(status_of(&s2, "app"), Status::Reused);
}

#[tokio::test]
async fn a_changed_script_rebuilds_that_image_and_its_descendants_only() {
    let bed = bed().await;
    assert!(bed.build(&PlanOptions::default()).await.ok());
    bed.built();
    write(bed.dir.path(), "scripts/runtime.sh", "echo runtime v2\n");
    let p = bed.plan(&PlanOptions::default()).await;
    assert_eq!(p.get("base", KIND).unwrap().action, Action::Reuse);
    assert_eq!(p.get("tools", KIND).unwrap().action, Action::Reuse, "the sibling branch is untouched");
    assert_eq!(p.get("runtime", KIND).unwrap().action, Action::Build);
    assert_eq!(reasons(&p, "runtime"), "file scripts/runtime.sh changed");
    assert_eq!(reasons(&p, "app"), "parent runtime is rebuilt");
    let s = bed.build(&PlanOptions::default()).await;
    assert!(s.ok(), "{s:#?}");
    let mut built = bed.built();
    built.sort();
    assert_eq!(built, vec!["app", "runtime"]);
    // The rebuilt child starts from the new parent artifact.
    let runtime = s.results.iter().find(|r| r.image == "runtime").unwrap().artifact.clone().unwrap();
    let app = s.results.iter().find(|r| r.image == "app").unwrap().artifact.clone().unwrap();
    assert_eq!(app.source, runtime.id);

    // A new source (the disk changed) rebuilds the whole tree and says why.
    write(bed.dir.path(), "base.disk", "v2\n");
    let p = bed.plan(&PlanOptions::default()).await;
    assert_eq!(reasons(&p, "base"), "source disk-v1 → disk-v2 (base.disk (v2))");
    assert_eq!(p.count(Action::Build), 4);
}

#[tokio::test]
async fn max_age_force_only_and_downstream() {
    let bed = bed().await;
    assert!(bed.build(&PlanOptions::default()).await.ok());
    // Age the base artifact by ten days.
    for e in std::fs::read_dir(bed.dir.path().join("out")).unwrap().flatten() {
        let mut a: Artifact = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        if a.image == "base" {
            a.created -= chrono::Duration::days(10);
            std::fs::write(e.path(), serde_json::to_string(&a).unwrap()).unwrap();
        }
    }
    let p = bed.plan(&PlanOptions::default()).await;
    assert_eq!(reasons(&p, "base"), "older than max_age 7days (built 10d ago)");
    assert_eq!(reasons(&p, "tools"), "parent base is rebuilt", "patches flow down");

    // --only: ancestors are reused (even if out of date), others skipped.
    let p = bed.plan(&PlanOptions { only: vec!["runtime".into()], ..Default::default() }).await;
    assert_eq!(p.get("base", KIND).unwrap().action, Action::Reuse);
    assert_eq!(p.get("tools", KIND).unwrap().action, Action::Skip);
    assert_eq!(p.get("app", KIND).unwrap().action, Action::Skip);
    assert_eq!(p.get("runtime", KIND).unwrap().action, Action::Reuse, "runtime itself is up to date");
    let p = bed
        .plan(&PlanOptions { only: vec!["runtime".into()], force: true, downstream: true, ..Default::default() })
        .await;
    assert_eq!(p.get("runtime", KIND).unwrap().action, Action::Build);
    assert_eq!(reasons(&p, "runtime"), "forced (--force)");
    assert_eq!(p.get("app", KIND).unwrap().action, Action::Build);
    assert_eq!(p.get("tools", KIND).unwrap().action, Action::Skip);

    let e = plan(
        &bed.tree(),
        &bed.registry,
        &PlanOptions { only: vec!["runtme".into()], ..Default::default() },
        &EventSink::discard(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no image `runtme` in the tree (did you mean `runtime`?)"), "{e}");
}

#[tokio::test]
async fn only_fails_clearly_when_an_ancestor_has_no_artifact() {
    let bed = bed().await;
    let e = plan(
        &bed.tree(),
        &bed.registry,
        &PlanOptions { only: vec!["app".into()], ..Default::default() },
        &EventSink::discard(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("image `base` is needed by the selected images but has no `dir` artifact"), "{e}");
}

#[tokio::test]
async fn a_failure_skips_descendants_and_the_other_branch_finishes() {
    let bed = bed().await;
    write(bed.dir.path(), "scripts/runtime.sh", "echo failing on purpose >&2\nexit 3\n");
    let s = bed.build(&PlanOptions::default()).await;
    assert!(!s.ok());
    assert_eq!(status_of(&s, "base"), Status::Built);
    assert_eq!(status_of(&s, "tools"), Status::Built, "the independent branch completes");
    assert_eq!(status_of(&s, "runtime"), Status::Failed);
    assert_eq!(status_of(&s, "app"), Status::Skipped);
    let r = s.results.iter().find(|r| r.image == "runtime").unwrap();
    assert!(r.error.as_deref().unwrap().contains("exited with code 3"), "{r:?}");
    assert_eq!(bed.work_dirs_left(), 0, "the failed build's resources are removed");
    assert_eq!(bed.journals_left(), 0);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.dir.path().join("out-manifest.json")).unwrap()).unwrap();
    assert_eq!(m["images"]["runtime"][KIND]["status"], "failed");
    assert_eq!(m["images"]["app"][KIND]["reasons"][0], "parent runtime failed");
}

#[tokio::test]
async fn cancelling_stops_running_builds_and_cleans_up() {
    let bed = bed().await;
    write(bed.dir.path(), "scripts/runtime.sh", "echo started; sleep 60\n");
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    // Cancel the moment runtime's step has started (what Ctrl-C does in the CLI).
    let events = EventSink::callback(move |e| {
        if e.image.as_deref() == Some("runtime") && matches!(e.kind, EventKind::StepStarted { .. }) {
            c.cancel();
        }
    });
    let started = std::time::Instant::now();
    let s = bed.build_with(&PlanOptions::default(), RunOptions { cancel, ..Default::default() }, events).await;
    assert!(started.elapsed() < Duration::from_secs(45), "did not wait for the 60 s step");
    assert_eq!(status_of(&s, "runtime"), Status::Cancelled);
    assert_eq!(status_of(&s, "app"), Status::Cancelled);
    assert!(!s.ok());
    assert_eq!(bed.work_dirs_left(), 0, "the interrupted build's resources are removed");
    assert_eq!(bed.journals_left(), 0);
}

#[tokio::test]
async fn a_panicking_build_is_failed_and_cleaned_up_and_its_children_skipped() {
    let bed = bed().await;
    write(bed.dir.path(), "panic-runtime", "");
    let s = bed.build(&PlanOptions::default()).await;
    assert!(!s.ok(), "a panic is never a success");
    assert_eq!(status_of(&s, "runtime"), Status::Failed);
    assert_eq!(status_of(&s, "app"), Status::Skipped);
    assert_eq!(status_of(&s, "tools"), Status::Built, "the other branch finishes");
    let r = s.results.iter().find(|r| r.image == "runtime").unwrap();
    let e = r.error.as_deref().unwrap();
    assert!(e.contains("panicked") && e.contains("attempt to add with overflow"), "{e}");
    assert_eq!(bed.work_dirs_left(), 0, "what the panicking build created is removed");
    assert_eq!(bed.journals_left(), 0);
    assert!(s.leftovers.is_empty(), "{:?}", s.leftovers);
}

#[tokio::test]
async fn a_build_whose_cleanup_fails_is_built_but_not_ok_and_lists_what_is_left() {
    let bed = bed().await;
    write(bed.dir.path(), "undeletable", "");
    let s = bed.build(&PlanOptions { only: vec!["base".into()], ..Default::default() }).await;
    assert_eq!(status_of(&s, "base"), Status::Built, "the artifact is good");
    assert!(!s.ok(), "something was left behind");
    assert_eq!(s.leftovers.len(), 1, "{:?}", s.leftovers);
    assert_eq!(bed.journals_left(), 1, "the journal stays for `imgbake clean`");
}

#[tokio::test]
async fn prune_keeps_the_newest_and_every_parent_of_a_kept_child() {
    let bed = bed().await;
    for v in 1..=3 {
        write(bed.dir.path(), "scripts/runtime.sh", &format!("echo runtime v{v}\n"));
        assert!(bed.build(&PlanOptions::default()).await.ok());
    }
    let tree = bed.tree();
    let arts = bed.builder.list_artifacts(&tree, &tree.images().values().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(arts.iter().filter(|a| a.image == "runtime").count(), 3);
    let report = imgbake_core::prune::prune(
        &tree,
        &bed.registry,
        &imgbake_core::prune::PruneOptions { keep: Some(1), ..Default::default() },
        &EventSink::discard(),
    )
    .await
    .unwrap();
    let deleted: Vec<&str> = report.deleted.iter().map(|a| a.image.as_str()).collect();
    assert_eq!(deleted.iter().filter(|i| **i == "runtime").count(), 2, "{deleted:?}");
    assert_eq!(deleted.iter().filter(|i| **i == "app").count(), 2, "{deleted:?}");
    assert!(!deleted.contains(&"base"), "only one base exists");
    let arts = bed.builder.list_artifacts(&tree, &tree.images().values().collect::<Vec<_>>()).await.unwrap();
    let app = arts.iter().find(|a| a.image == "app").unwrap();
    assert!(arts.iter().any(|a| a.id == app.source), "the kept app's parent artifact is still there");
}

#[tokio::test]
async fn independent_branches_build_in_parallel_up_to_the_limit() {
    let overlap = |spans: &[(String, std::time::Instant, std::time::Instant)], a: &str, b: &str| {
        let x = spans.iter().find(|s| s.0 == a).unwrap();
        let y = spans.iter().find(|s| s.0 == b).unwrap();
        x.1 < y.2 && y.1 < x.2
    };
    let bed = bed().await;
    // runtime and tools are siblings under base; make both take a while.
    write(bed.dir.path(), "scripts/runtime.sh", "sleep 1\n");
    let tree = std::fs::read_to_string(bed.dir.path().join("tree.toml")).unwrap();
    write(
        bed.dir.path(),
        "tree.toml",
        &tree.replace("shell = { inline = [\"echo tools\"] }", "shell = { inline = [\"sleep 1\"] }"),
    );
    assert!(bed.build(&PlanOptions::default()).await.ok());
    let spans = std::mem::take(&mut *bed.builder.spans.lock().unwrap());
    assert!(overlap(&spans, "runtime", "tools"), "siblings build at the same time by default");
    assert!(!overlap(&spans, "base", "runtime"), "a child waits for its parent");

    // settings.parallel = 1 (read by the library, not only the CLI): one build at a time.
    write(
        bed.dir.path(),
        "tree.toml",
        &std::fs::read_to_string(bed.dir.path().join("tree.toml"))
            .unwrap()
            .replace("name = \"e2e\"", "name = \"e2e\"\nparallel = 1"),
    );
    let s = bed.build(&PlanOptions { force: true, ..Default::default() }).await;
    assert!(s.ok(), "{s:#?}");
    let spans = std::mem::take(&mut *bed.builder.spans.lock().unwrap());
    assert!(!overlap(&spans, "runtime", "tools"), "parallel = 1 builds one at a time");
}

#[tokio::test]
async fn a_reused_artifact_whose_publish_failed_is_published_by_the_next_run() {
    let bed = bed().await;
    let tree = bed.dir.path().join("tree.toml");
    let mut text = std::fs::read_to_string(&tree).unwrap();
    text.push_str("\n[images.solo]\nsource = { disk = \"base.disk\" }\npublish = { announce = true }\n[[images.solo.steps]]\nshell = { inline = [\"echo solo\"] }\n");
    std::fs::write(&tree, text).unwrap();
    let flag = bed.dir.path().join("publish-fails");
    let result =
        |s: &imgbake_core::schedule::RunSummary| s.results.iter().find(|r| r.image == "solo").cloned().unwrap();

    // Built, but the announcement failed: the run fails, the artifact stays.
    std::fs::write(&flag, "").unwrap();
    let s = bed.build(&PlanOptions::default()).await;
    let r = result(&s);
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    assert!(r.error.as_deref().unwrap_or_default().contains("publishing failed"), "{r:#?}");
    let built = r.artifact.clone().expect("the artifact is kept").id;
    assert_eq!(bed.builder.publishes.load(Ordering::SeqCst), 0);

    // A run that does not publish leaves it alone.
    std::fs::remove_file(&flag).unwrap();
    let quiet = RunOptions { publish: false, ..RunOptions::default() };
    let s = bed.build_with(&PlanOptions::default(), quiet, EventSink::discard()).await;
    assert_eq!(result(&s).status, Status::Reused);
    assert_eq!(bed.builder.publishes.load(Ordering::SeqCst), 0);

    // The next run reuses it and publishes it, once; then there is nothing to do.
    let s = bed.build(&PlanOptions::default()).await;
    let r = result(&s);
    assert!(s.ok(), "{s:#?}");
    assert_eq!(r.status, Status::Reused);
    assert_eq!(r.artifact.as_ref().map(|a| a.id.as_str()), Some(built.as_str()));
    assert_eq!(r.published, vec![format!("announced {built}")]);
    assert!(r.reasons.iter().any(|x| x.contains("published now")), "{:?}", r.reasons);
    assert_eq!(bed.builder.publishes.load(Ordering::SeqCst), 1);
    let s = bed.build(&PlanOptions::default()).await;
    assert!(s.ok() && result(&s).published.is_empty(), "{s:#?}");
    assert_eq!(bed.builder.publishes.load(Ordering::SeqCst), 1, "published once");
    // Images without `publish` are never asked.
    assert!(s.results.iter().filter(|r| r.image != "solo").all(|r| r.published.is_empty()));

    // Publishing that fails on reuse fails the run, naming the artifact.
    std::fs::remove_file(bed.dir.path().join("announced-solo")).unwrap();
    std::fs::write(&flag, "").unwrap();
    let s = bed.build(&PlanOptions::default()).await;
    let r = result(&s);
    assert_eq!(r.status, Status::Failed);
    assert!(
        r.error.as_deref().unwrap_or_default().contains(&format!("reused {built} but publishing it failed")),
        "{r:#?}"
    );
}
