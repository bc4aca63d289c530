//! Chains between templates: a child's source AMI filter that matches another image's AMI name
//! (the usual hand-made chain), or a `--chain parent=child` pair when nothing in the files says so.
//! A linked child gets `parent` instead of `source`: imgbake hands the parent's artifact over in
//! the same run.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use toml::Value as T;

use crate::error::Error;
use crate::model::Loc;
use crate::report::{Outcome, Report};
use crate::tree::{Image, Var};

/// What an AMI name template looks like once built: variables take their defaults, build values
/// (timestamps, uuids) a sample, so a filter like `base-*` can be tried against it.
fn sample(name: &str, vars: &IndexMap<String, Var>) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else { break };
        let expr = rest[start + 2..start + end].trim();
        let value = expr
            .strip_prefix("var.")
            .and_then(|v| vars.get(v))
            .and_then(|v| v.default.as_ref())
            .and_then(|d| match d {
                T::String(s) => Some(s.clone()),
                T::Integer(_) | T::Float(_) | T::Boolean(_) => Some(d.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| "20260101".to_string());
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn ami_name(img: &Image) -> Option<String> {
    match img.settings.get("aws")?.get("ami_name")? {
        T::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn filter_name(img: &Image) -> Option<String> {
    match img.source.get("ami_filter")? {
        T::Table(t) => t.get("name").and_then(|n| n.as_str()).map(str::to_string),
        _ => None,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn link(child: &mut Image, parent: &str, loc: &Loc, why: String, report: &mut Report) {
    child.parent = Some(parent.to_string());
    child.source.clear();
    report.push(
        Outcome::Changed,
        loc,
        format!("{} source", child.name),
        Some(format!("images.{}.parent", child.name)),
        why,
    );
}

/// Links children to parents; `explicit` pairs are (parent template, child template).
pub(crate) fn link_all(
    images: &mut [Image],
    vars: &IndexMap<String, Var>,
    explicit: &[(PathBuf, PathBuf)],
    report: &mut Report,
) -> Result<(), Error> {
    for (parent_t, child_t) in explicit {
        let parent =
            images.iter().find(|i| same_file(&i.template, parent_t)).map(|i| (i.name.clone(), i.builders.clone()));
        let Some((parent, builders)) = parent else {
            return Err(Error::Usage(format!("--chain: {} is not one of the templates given", parent_t.display())));
        };
        let mut found = false;
        for child in images.iter_mut().filter(|i| same_file(&i.template, child_t)) {
            found = true;
            let loc = child.source_loc.clone().unwrap_or_else(|| Loc {
                file: std::sync::Arc::new(child_t.clone()),
                line: 1,
                col: 1,
            });
            child.builders.retain(|b| builders.contains(b));
            if child.builders.is_empty() {
                return Err(Error::Usage(format!(
                    "--chain: {} builds with other builders than {} (a child uses its parent's builders)",
                    child_t.display(),
                    parent_t.display()
                )));
            }
            let kept = child.builders.clone();
            child.settings.retain(|b, _| kept.contains(b));
            link(
                child,
                &parent,
                &loc,
                format!(
                    "`--chain`: built from `{parent}`'s artifact, handed over in the same run (its source settings are not needed)"
                ),
                report,
            );
        }
        if !found {
            return Err(Error::Usage(format!("--chain: {} is not one of the templates given", child_t.display())));
        }
    }
    let names: Vec<(String, String, PathBuf)> = images
        .iter()
        .filter_map(|i| ami_name(i).map(|n| (i.name.clone(), sample(&n, vars), i.template.clone())))
        .collect();
    for child in images.iter_mut().filter(|i| i.parent.is_none()) {
        let Some(filter) = filter_name(child) else { continue };
        let Ok(pattern) = glob::Pattern::new(&sample(&filter, vars)) else { continue };
        let matches: Vec<&(String, String, PathBuf)> =
            names.iter().filter(|(n, s, t)| *n != child.name && *t != child.template && pattern.matches(s)).collect();
        let loc = child.source_loc.clone().unwrap_or_else(|| Loc {
            file: std::sync::Arc::new(child.template.clone()),
            line: 1,
            col: 1,
        });
        match matches.as_slice() {
            [(parent, built, _)] => {
                let why = format!("its AMI filter `{filter}` matches `{parent}`'s AMI names (`{built}`): built from `{parent}`'s AMI, handed over in the same run");
                let parent = parent.clone();
                link(child, &parent, &loc, why, report);
            }
            [] => {}
            several => report.push(
                Outcome::Changed,
                &loc,
                format!("{} source", child.name),
                None,
                format!(
                    "its AMI filter matches the AMI names of {}: not chained; set `parent` by hand or import with --chain",
                    several.iter().map(|(n, _, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    Ok(())
}

/// Parents before children, otherwise in the order given.
pub(crate) fn order(images: Vec<Image>) -> Vec<Image> {
    let mut out: Vec<Image> = Vec::with_capacity(images.len());
    let mut pending = images;
    while !pending.is_empty() {
        let before = pending.len();
        let mut i = 0;
        while i < pending.len() {
            let ready = pending[i]
                .parent
                .as_ref()
                .is_none_or(|p| out.iter().any(|o| &o.name == p) || !pending.iter().any(|q| &q.name == p));
            if ready {
                out.push(pending.remove(i));
            } else {
                i += 1;
            }
        }
        if pending.len() == before {
            out.append(&mut pending);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_take_defaults_and_stand_ins() {
        let mut vars = IndexMap::new();
        vars.insert("prefix".to_string(), Var { default: Some(T::String("acme".into())), ..Default::default() });
        assert_eq!(sample("{{ var.prefix }}-base-{{ timestamp }}", &vars), "acme-base-20260101");
        vars.insert("major".to_string(), Var { default: Some(T::Integer(20)), ..Default::default() });
        assert_eq!(sample("node{{ var.major }}-{{ uuid }}", &vars), "node20-20260101");
    }
}
