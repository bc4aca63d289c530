//! `imgbake audit`: call `imgbake::core::audit`, render the report.

use std::process::ExitCode;

use imgbake::core::audit::{AuditOptions, AuditReport, MachineReport, Status};

use crate::args::TreeArgs;
use crate::commands::{load_or_report, report_build_error};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `40d 3h`, `5h 10m`, `45s`.
pub fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn line(m: &MachineReport) -> String {
    let status = match (m.status, m.overdue) {
        (_, true) => "OVERDUE",
        (Status::Behind, _) => "behind",
        (Status::Current, _) => "current",
        (Status::Ahead, _) => "ahead",
        (Status::Unknown, _) => "unknown",
    };
    let mut s = format!("{status:8} {:20} {:12} {:20} {}", m.machine, m.location, m.image, m.artifact);
    if let Some(a) = &m.account {
        s.push_str(&format!("  account {a}"));
    }
    if m.status == Status::Behind {
        let since = m.behind_seconds.map(|b| format!(", superseded {} ago", age(b))).unwrap_or_default();
        s.push_str(&format!("  {} version(s) behind{since}", m.versions_behind));
        if let Some(c) = &m.current {
            s.push_str(&format!(" (current {c})"));
        }
    }
    if let Some(a) = m.age_seconds {
        s.push_str(&format!("  built {} ago", age(a)));
    }
    let owners: Vec<String> = m.owners.iter().map(|(k, v)| format!("{k}={v}")).collect();
    s.push_str(&format!("  owner: {}", if owners.is_empty() { "-".to_string() } else { owners.join(" ") }));
    for a in &m.lineage {
        s.push_str(&format!(
            "\n         built from {} {}: {} version(s) behind (current {})",
            a.image,
            a.artifact,
            a.versions_behind,
            a.current.as_deref().unwrap_or("-")
        ));
    }
    if let Some(n) = &m.note {
        s.push_str(&format!("\n         note: {n}"));
    }
    s
}

fn print(r: &AuditReport) {
    let against = match &r.channel {
        Some(c) => format!("channel `{c}`"),
        None => "each image's newest artifact".to_string(),
    };
    println!("audit of tree `{}` against {against}", r.tree);
    for m in &r.machines {
        println!("{}", line(m));
    }
    for u in &r.unsupported {
        println!("note: {u}");
    }
    let s = &r.summary;
    let deadline = match r.deadline_seconds {
        Some(d) => format!(", {} past the {} deadline", s.overdue, age(d)),
        None => String::new(),
    };
    println!(
        "{} machine(s) of the tree: {} current, {} behind, {} ahead, {} unknown{deadline}; {} other machine(s) ignored",
        s.machines, s.current, s.behind, s.ahead, s.unknown, s.other_machines
    );
}

pub async fn audit_cmd(t: &TreeArgs, opts: &AuditOptions, json: bool, color: bool) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    let report = match imgbake::core::audit::audit(&tree, &registry, opts).await {
        Ok(r) => r,
        Err(e) => {
            report_build_error(&tree, &e, color);
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    if report.failed() {
        eprintln!(
            "audit failed: {} machine(s) run an image superseded longer than the deadline ago",
            report.summary.overdue
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
