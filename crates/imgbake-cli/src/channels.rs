//! `imgbake promote` and `imgbake channels`: call `imgbake::core::promote`, render the result.

use std::process::ExitCode;

use chrono::Utc;
use imgbake::core::channel::{PointAction, Pointing};
use imgbake::core::event::EventSink;
use imgbake::core::promote::{PromoteError, PromoteOptions, short};

use crate::args::TreeArgs;
use crate::commands::{load_or_report, report_build_error};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub async fn promote_cmd(
    t: &TreeArgs,
    image: &str,
    opts: &PromoteOptions,
    json: bool,
    color: bool,
) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    let registry = imgbake::registry();
    match imgbake::core::promote::promote(&tree, &registry, image, opts, &EventSink::discard()).await {
        Ok(done) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "promotions": done }))?);
                return Ok(ExitCode::SUCCESS);
            }
            for p in &done {
                let id = &p.artifact.id;
                let was = p.previous.as_deref().map(|x| format!(", was {x}")).unwrap_or_default();
                let would = if p.dry_run { "would " } else { "" };
                match (p.unchanged, p.action) {
                    (true, _) => println!("{}: `{}` already points at {id} ({})", p.image, p.channel, p.builder),
                    (false, PointAction::Rollback) => println!(
                        "{}: {would}roll `{}` back to {id} (build {}{was})",
                        p.image, p.channel, p.artifact.build_id
                    ),
                    (false, _) => println!(
                        "{}: {would}promote {id} from `{}` to `{}` (build {}{was})",
                        p.image,
                        p.from.as_deref().unwrap_or("?"),
                        p.channel,
                        p.artifact.build_id
                    ),
                }
                for w in &p.written {
                    println!("  {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PromoteError::Refused(r)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "refused": r, "message": r.to_string() }))?
                );
            }
            eprintln!("refused: {r}");
            Ok(ExitCode::from(1))
        }
        Err(PromoteError::Failed(e)) => {
            report_build_error(&tree, &e, color);
            Ok(ExitCode::from(1))
        }
    }
}

fn describe(p: &Pointing) -> String {
    let mut s = format!("{}  {}", p.at.format("%Y-%m-%d %H:%M:%SZ"), p.artifact);
    match &p.record {
        Some(r) => {
            s.push_str(&format!("  {} by {}", r.action, r.by));
            if let Some(f) = &r.from {
                s.push_str(&format!(" from `{f}`"));
            }
            if let Some(x) = &r.reverts {
                s.push_str(&format!(" (away from {x})"));
            }
        }
        None => s.push_str("  set outside imgbake"),
    }
    if let Some(u) = &p.platform_user {
        s.push_str(&format!(" [{u}]"));
    }
    s
}

pub async fn channels_cmd(
    t: &TreeArgs,
    images: &[String],
    history: usize,
    json: bool,
    color: bool,
) -> Result<ExitCode> {
    let Some(tree) = load_or_report(t, color) else { return Ok(ExitCode::from(1)) };
    if tree.channels().is_empty() {
        eprintln!("error: the tree declares no release channels: add [channels.stable] (see docs/channels.md)");
        return Ok(ExitCode::from(1));
    }
    let registry = imgbake::registry();
    let views = match imgbake::core::promote::channels(&tree, &registry, images).await {
        Ok(v) => v,
        Err(e) => {
            report_build_error(&tree, &e, color);
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "channels": views }))?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let mut last_image = String::new();
    for v in &views {
        if v.image != last_image {
            println!("{} ({})", v.image, v.builder);
            last_image = v.image.clone();
        }
        let s = &v.state;
        match s.history.first() {
            Some(cur) => {
                let age = short((now - cur.at).to_std().unwrap_or_default());
                let elsewhere: Vec<String> = s
                    .current
                    .iter()
                    .filter(|(_, id)| **id != cur.artifact)
                    .map(|(r, id)| format!("{r} {id}"))
                    .collect();
                let also =
                    if elsewhere.is_empty() { String::new() } else { format!(" (copies: {})", elsewhere.join(", ")) };
                println!("  {:10} {}{also}  for {age}  {}", s.channel, cur.artifact, s.location);
            }
            None => println!("  {:10} -  never set  {}", s.channel, s.location),
        }
        for p in s.history.iter().take(history) {
            println!("      {}", describe(p));
        }
        if s.history.len() > history {
            println!("      ... {} earlier (--history N)", s.history.len() - history);
        }
    }
    Ok(ExitCode::SUCCESS)
}
