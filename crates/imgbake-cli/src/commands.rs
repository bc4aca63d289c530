//! One function per command: call the library, render the result.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use imgbake::config::{Diagnostics, LoadOptions, Tree};
use imgbake::core::event::EventSink;
use imgbake::core::plan::{Action, Plan, PlanOptions};
use imgbake::core::schedule::{RunOptions, RunSummary, Status};

use crate::args::{Cli, Command, GraphFormat, ImportFrom, OnError, PackerImport, PlanFormat, Selection, TreeArgs};
use crate::output::color_stderr;
use crate::view;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let color = color_stderr(cli.color);
    match cli.command {
        Command::Validate(t) => Ok(validate(&t, color)),
        Command::Graph { tree, format } => graph(&tree, format, color),
        Command::Import(ImportFrom::Packer(p)) => import_packer(&p, color),
        other => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let code = rt.block_on(run_async(other, color));
            // Dropping a runtime waits for blocking tasks (a prompt reading stdin): bound it, so a
            // finished command always exits.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
    }
}

async fn run_async(cmd: Command, color: bool) -> Result<ExitCode> {
    match cmd {
        Command::Plan { tree, selection, json, format } => {
            let format = if json { PlanFormat::Json } else { format };
            plan_cmd(&tree, &selection, format, color).await
        }
        Command::Build {
            tree,
            selection,
            parallel,
            dry_run,
            json,
            timestamps,
            on_error,
            debug,
            prune,
            no_publish,
            manifest,
            lease,
            report,
        } => {
            if dry_run {
                let format = if json { PlanFormat::Json } else { PlanFormat::Text };
                return plan_cmd(&tree, &selection, format, color).await;
            }
            let opts = BuildArgs {
                parallel,
                json,
                timestamps,
                on_error,
                debug,
                prune,
                publish: !no_publish,
                manifest,
                lease,
                report,
            };
            build_cmd(&tree, &selection, opts, color).await
        }
        Command::Clean { tree, build_id, older_than, dry_run } => {
            clean_cmd(&tree, build_id, older_than, dry_run, color).await
        }
        Command::Prune { tree, keep, only, dry_run } => prune_cmd(&tree, keep, only, dry_run, color).await,
        Command::Promote { tree, image, to, from, artifact, rollback, dry_run, json } => {
            let opts = imgbake::core::promote::PromoteOptions { to, from, artifact, rollback, dry_run, now: None };
            crate::channels::promote_cmd(&tree, &image, &opts, json, color).await
        }
        Command::Channels { tree, images, history, json } => {
            crate::channels::channels_cmd(&tree, &images, history, json, color).await
        }
        Command::Audit { tree, deadline, channel, owner_tags, json } => {
            let opts = imgbake::core::audit::AuditOptions {
                channel,
                deadline,
                owner_tags: if owner_tags.is_empty() { None } else { Some(owner_tags) },
                now: None,
            };
            crate::audit::audit_cmd(&tree, &opts, json, color).await
        }
        Command::Validate(_) | Command::Graph { .. } | Command::Import(_) => unreachable!("handled without a runtime"),
    }
}

fn load(t: &TreeArgs) -> std::result::Result<Tree, Diagnostics> {
    load_with(t, true)
}

fn load_with(t: &TreeArgs, check_files: bool) -> std::result::Result<Tree, Diagnostics> {
    let opts =
        LoadOptions { vars: t.vars.clone(), var_files: t.var_files.clone(), check_files, ..imgbake::load_options() };
    Tree::load(&t.tree, &opts)
}

fn report(d: &Diagnostics, color: bool) {
    eprint!("{}", d.render(color));
    let n = d.len();
    let file = d.sources().files().first().map(|f| f.path.display().to_string()).unwrap_or_default();
    eprintln!("{n} error{} in {file}", if n == 1 { "" } else { "s" });
}

pub(crate) fn load_or_report(t: &TreeArgs, color: bool) -> Option<Tree> {
    report_failure(load(t), color)
}

fn report_failure(loaded: std::result::Result<Tree, Diagnostics>, color: bool) -> Option<Tree> {
    match loaded {
        Ok(tree) => Some(tree),
        Err(d) => {
            report(&d, color);
            None
        }
    }
}

fn validate(t: &TreeArgs, color: bool) -> ExitCode {
    let Some(tree) = load_or_report(t, color) else { return ExitCode::from(1) };
    let mut per_builder = std::collections::BTreeMap::<String, usize>::new();
    for img in tree.images().values() {
        for b in &img.builders {
            *per_builder.entry(b.get_ref().clone()).or_default() += 1;
        }
    }
    let builders: Vec<String> = per_builder.iter().map(|(b, n)| format!("{b}: {n}")).collect();
    let steps: usize = tree.images().values().map(|i| i.steps.len()).sum();
    println!(
        "{}: valid — {} images ({}), {steps} steps, {} files",
        t.tree.display(),
        tree.images().len(),
        builders.join(", "),
        tree.sources().files().len()
    );
    ExitCode::SUCCESS
}

fn import_packer(p: &PackerImport, color: bool) -> Result<ExitCode> {
    use imgbake::import::{ImportParams, import};
    let params = ImportParams {
        inputs: p.paths.clone(),
        var_files: p.var_files.clone(),
        chains: p.chain.clone(),
        output: p.output.clone(),
        name: p.name.clone(),
    };
    let imported = match import(&params) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(if matches!(e, imgbake::import::Error::Usage(_)) { 2 } else { 1 }));
        }
    };
    let unmapped = imported.report.unmapped().count();
    if p.check {
        print!("{}", imported.report);
        return Ok(ExitCode::from(if unmapped > 0 && !p.allow_unmapped { 1 } else { 0 }));
    }
    eprint!("{}", imported.report);
    if unmapped > 0 && !p.allow_unmapped {
        eprintln!(
            "{unmapped} key{} ha{} no imgbake equivalent yet (UNMAPPED above): nothing written. Change the templates, or pass --allow-unmapped to write the tree with TODO comments",
            if unmapped == 1 { "" } else { "s" },
            if unmapped == 1 { "s" } else { "ve" }
        );
        return Ok(ExitCode::from(1));
    }
    if p.output.exists() && !p.force {
        eprintln!("error: {} exists; pass --force to overwrite it", p.output.display());
        return Ok(ExitCode::from(2));
    }
    std::fs::write(&p.output, &imported.tree).map_err(|e| format!("writing {}: {e}", p.output.display()))?;
    eprintln!("wrote {}", p.output.display());
    // Say at once whether the tree validates (a required variable may still need --var).
    let args = TreeArgs { tree: p.output.clone(), vars: Vec::new(), var_files: Vec::new() };
    match load(&args) {
        Ok(_) => eprintln!("{}: valid", p.output.display()),
        Err(d) => {
            eprintln!("{} does not validate yet (variables without defaults need --var):", p.output.display());
            report(&d, color);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(t: &TreeArgs, format: GraphFormat, color: bool) -> Result<ExitCode> {
    // The shape only: a tree is drawn before its scripts and disks exist.
    let Some(tree) = report_failure(load_with(t, false), color) else { return Ok(ExitCode::from(1)) };
    let f = match format {
        GraphFormat::Dot => imgbake::config::graph::GraphFormat::Dot,
        GraphFormat::Mermaid => imgbake::config::graph::GraphFormat::Mermaid,
    };
    print!("{}", imgbake::config::graph::render(&tree, f));
    Ok(ExitCode::SUCCESS)
}

/// A library error with the configuration value it is about, rendered like a validation error.
pub(crate) fn report_build_error(tree: &Tree, e: &imgbake::core::error::BuildError, color: bool) {
    match e.span {
        Some(span) => eprint!("{}", tree.error_at(Some(span), e.chain()).render(color)),
        None => eprintln!("error: {}", e.chain()),
    }
}

fn plan_options(sel: &Selection) -> PlanOptions {
    PlanOptions { force: sel.force, only: sel.only.clone(), downstream: sel.downstream, ..PlanOptions::default() }
}

fn print_plan(plan: &Plan) {
    let w = plan.decisions.iter().map(|d| d.image.len()).max().unwrap_or(5).max(5);
    println!("{:w$}  {:7}  {:6}  WHY", "IMAGE", "BUILDER", "ACTION");
    for d in &plan.decisions {
        let action = match d.action {
            Action::Build => "build",
            Action::Reuse => "reuse",
            Action::Skip => "skip",
        };
        println!("{:w$}  {:7}  {:6}  {}", d.image, d.builder, action, d.reasons.join("; "));
    }
    println!(
        "\n{} to build, {} up to date, {} skipped",
        plan.count(Action::Build),
        plan.count(Action::Reuse),
        plan.count(Action::Skip)
    );
}

async fn plan_cmd(t: &TreeArgs, sel: &Selection, format: PlanFormat, color: bool) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    match imgbake::core::plan::plan(&tree, &registry, &plan_options(sel), &EventSink::discard()).await {
        Ok(plan) => {
            match format {
                PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                PlanFormat::Matrix => println!("{}", serde_json::to_string(&plan.matrix())?),
                PlanFormat::Text => print_plan(&plan),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            report_build_error(&tree, &e, color);
            Ok(ExitCode::from(1))
        }
    }
}

struct BuildArgs {
    parallel: Option<usize>,
    json: bool,
    timestamps: bool,
    on_error: OnError,
    debug: bool,
    prune: bool,
    publish: bool,
    manifest: Option<std::path::PathBuf>,
    lease: Option<std::time::Duration>,
    report: Option<std::path::PathBuf>,
}

/// Write `--report` for what the run got to (the report of a failed or interrupted run is the
/// most useful one). A report that cannot be written is said on stderr and turns a successful
/// exit code into 1: CI asked for the file. Returns the exit code to use.
fn write_report(
    path: Option<&std::path::Path>,
    tree: &Tree,
    recorder: &imgbake::report::Recorder,
    summary: Option<&RunSummary>,
    note: Option<String>,
    code: ExitCode,
) -> ExitCode {
    let Some(path) = path else { return code };
    let events = recorder.events();
    let mut report = imgbake::report::Report::for_tree(tree, &events);
    if let Some(s) = summary {
        report = report.summary(s);
    }
    if let Some(n) = note {
        report = report.note(n);
    }
    match report.write(path) {
        Ok(()) => {
            eprintln!("report: {}", path.display());
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            if code == ExitCode::SUCCESS { ExitCode::from(1) } else { code }
        }
    }
}

/// Let the renderer show what is queued, then end it. It ends by itself once every clone of the event
/// sink is gone; one kept by something that outlived its build must not keep imgbake from printing
/// its summary and exiting.
async fn finish_rendering(renderer: tokio::task::JoinHandle<()>) {
    let abort = renderer.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(3), renderer).await.is_err() {
        tracing::warn!("the event renderer was still held after the run ended; stopping it");
        abort.abort();
    }
}

async fn build_cmd(t: &TreeArgs, sel: &Selection, a: BuildArgs, color: bool) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    let cancel = tokio_util::sync::CancellationToken::new();
    let received = crate::signals::install(cancel.clone())?;

    let live_ok = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mode = view::choose(a.json, a.timestamps, live_ok);
    let (sink, rx) = EventSink::channel();
    // With --report, every event also goes to the report's recorder on its way to the renderer.
    let recorder = imgbake::report::Recorder::new();
    let rx = if a.report.is_some() { recorder.tee(rx) } else { rx };
    let renderer = tokio::spawn(view::render(mode, rx));
    let report_to = a.report.as_deref();

    let popts = plan_options(sel);
    let plan = tokio::select! {
        p = imgbake::core::plan::plan(&tree, &registry, &popts, &sink) => p,
        _ = cancel.cancelled() => {
            drop(sink);
            finish_rendering(renderer).await;
            let code = ExitCode::from(received.exit_code().unwrap_or(130));
            let note = Some("interrupted while planning: nothing was built".to_string());
            return Ok(write_report(report_to, &tree, &recorder, None, note, code));
        }
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            drop(sink);
            finish_rendering(renderer).await;
            report_build_error(&tree, &e, color);
            let note = Some(format!("planning failed, nothing was built: {}", e.chain()));
            return Ok(write_report(report_to, &tree, &recorder, None, note, ExitCode::from(1)));
        }
    };
    let interactive = std::io::stdin().is_terminal() && !a.json;
    let opts = RunOptions {
        parallel: a.parallel,
        on_error: match a.on_error {
            OnError::Cleanup => imgbake::core::schedule::OnError::Cleanup,
            OnError::Abort => imgbake::core::schedule::OnError::Abort,
            OnError::Ask => imgbake::core::schedule::OnError::Ask,
        },
        debug: a.debug,
        interaction: if interactive {
            Arc::new(crate::interact::Terminal)
        } else {
            Arc::new(imgbake::core::provision::NonInteractive)
        },
        cancel: cancel.clone(),
        publish: a.publish,
        manifest: a.manifest.clone(),
        lease: a.lease,
        force: sel.force,
        ..RunOptions::default()
    };
    let summary = imgbake::core::schedule::run(&tree, &plan, &registry, opts, &sink).await;
    let prune_report = match (&summary, a.prune) {
        (Ok(s), true) if s.ok() && !cancel.is_cancelled() => {
            Some(imgbake::core::prune::prune(&tree, &registry, &Default::default(), &sink).await)
        }
        _ => None,
    };
    drop(sink);
    finish_rendering(renderer).await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            report_build_error(&tree, &e, color);
            let note = Some(format!("the run could not start: {}", e.chain()));
            return Ok(write_report(report_to, &tree, &recorder, None, note, ExitCode::from(1)));
        }
    };
    if a.json {
        println!("{}", serde_json::json!({ "event": "summary", "summary": summary }));
    } else {
        print_summary(&tree, &summary, color);
    }
    if let Some(Err(e)) = &prune_report {
        report_build_error(&tree, e, color);
    } else if let Some(Ok(r)) = &prune_report
        && !a.json
    {
        println!("pruned {} artifact(s); {} could not be deleted", r.deleted.len(), r.failed.len());
    }
    let ok = summary.ok()
        && !matches!(prune_report, Some(Err(_)))
        && !prune_report.as_ref().is_some_and(|r| r.as_ref().is_ok_and(|r| !r.failed.is_empty()));
    if cancel.is_cancelled() {
        let code = ExitCode::from(received.exit_code().unwrap_or(130));
        let note = Some("interrupted: running builds were stopped and cleaned up".to_string());
        return Ok(write_report(report_to, &tree, &recorder, Some(&summary), note, code));
    }
    let code = if ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    Ok(write_report(report_to, &tree, &recorder, Some(&summary), None, code))
}

fn print_summary(tree: &Tree, s: &RunSummary, color: bool) {
    println!("\nbuild {}:", s.build_id);
    for r in &s.results {
        let what = match (&r.artifact, r.status) {
            (Some(a), Status::Built | Status::Reused) => {
                let extra: Vec<String> =
                    a.locations.iter().filter(|(_, id)| **id != a.id).map(|(l, id)| format!("{l}: {id}")).collect();
                if extra.is_empty() { a.id.clone() } else { format!("{} ({})", a.id, extra.join(", ")) }
            }
            _ => r.reasons.join("; "),
        };
        let took = r.duration.map(|d| format!(" in {:.0}s", d.as_secs_f64())).unwrap_or_default();
        println!("  {:9} {:20} {}{took}", r.status.as_str(), format!("{} ({})", r.image, r.builder), what);
        if let Some(err) = &r.error {
            match r.error_span {
                Some(span) => eprint!("{}", tree.error_at(Some(span), format!("{}: {err}", r.image)).render(color)),
                None => eprintln!("    error: {err}"),
            }
        }
    }
    // The line agrees with the exit code: resources left behind make a run fail even when every
    // image was built.
    let left = s.leftovers.len();
    println!(
        "{} built, {} reused, {} failed, {} skipped{}{}",
        s.count(Status::Built),
        s.count(Status::Reused),
        s.count(Status::Failed),
        s.count(Status::Skipped),
        if s.count(Status::Cancelled) > 0 {
            format!(", {} cancelled", s.count(Status::Cancelled))
        } else {
            String::new()
        },
        if left > 0 {
            format!(", {left} resource{} left behind", if left == 1 { "" } else { "s" })
        } else {
            String::new()
        }
    );
    for l in &s.leftovers {
        eprintln!("left behind: {}", l.describe());
    }
    if left > 0 {
        eprintln!(
            "run `imgbake clean {}` to remove what was left behind (build {})",
            tree.project().root().display(),
            s.build_id
        );
    }
    if let Some(m) = &s.manifest {
        println!("manifest: {}", m.display());
    }
}

async fn clean_cmd(
    t: &TreeArgs,
    build_id: Option<String>,
    older_than: Option<std::time::Duration>,
    dry_run: bool,
    color: bool,
) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    let opts = imgbake::core::clean::CleanOptions { build_id, older_than, dry_run };
    // Removals are listed once, below; only notes and warnings are shown as they happen.
    let sink = EventSink::callback(|e| match e.kind {
        imgbake::core::event::EventKind::Info { message } => eprintln!("{message}"),
        imgbake::core::event::EventKind::Warning { message } => eprintln!("warning: {message}"),
        _ => {}
    });
    let res = imgbake::core::clean::clean(&tree, &registry, &opts, &sink).await;
    match res {
        Ok(r) => {
            let verb = if dry_run { "would remove" } else { "removed" };
            for x in &r.removed {
                println!("{verb} {}", x.describe());
            }
            for (x, e) in &r.failed {
                eprintln!("could not remove {}: {e}", x.describe());
            }
            println!("{verb} {} resource(s); {} failed", r.removed.len(), r.failed.len());
            if r.skipped_young > 0 {
                let age = r.older_than.map(humantime_short).unwrap_or_default();
                println!(
                    "skipped {} resource(s) younger than {age}: they may belong to a build still running elsewhere; \
                     pass --older-than (e.g. --older-than 0s) or --build-id to remove them",
                    r.skipped_young
                );
            }
            Ok(if r.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) => {
            report_build_error(&tree, &e, color);
            Ok(ExitCode::from(1))
        }
    }
}

/// `6h`, `90m`, `45s`: the largest whole unit.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn prune_cmd(t: &TreeArgs, keep: Option<u32>, only: Vec<String>, dry_run: bool, color: bool) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    let opts = imgbake::core::prune::PruneOptions { keep, only, dry_run };
    match imgbake::core::prune::prune(&tree, &registry, &opts, &EventSink::discard()).await {
        Ok(r) => {
            for k in &r.kept {
                println!("keep    {:20} {} ({})", k.artifact.image, k.artifact.id, k.why);
            }
            let verb = if dry_run { "would delete" } else { "deleted" };
            for a in &r.deleted {
                println!("{verb:7} {:20} {}", a.image, a.id);
            }
            for (a, e) in &r.failed {
                eprintln!("could not delete {} {}: {e}", a.image, a.id);
            }
            Ok(if r.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) => {
            report_build_error(&tree, &e, color);
            Ok(ExitCode::from(1))
        }
    }
}
