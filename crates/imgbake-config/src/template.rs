//! Templating of tree values with handlebars in strict mode.
//!
//! Context: `var.NAME` (variables), `image.name`, `parent.name`, `parent.artifact` (the parent's artifact
//! id in this build; `{parent.artifact}` while validating), `build.id`, `build.timestamp`,
//! `tree.name`, `tree.dir`. Helpers: `env "NAME" ["default"]`, `timestamp` (build start, Unix seconds),
//! `isotime ["strftime format"]` (build start, UTC; default RFC 3339), `uuid`, `lower`, `upper`,
//! `trim`, `replace s "from" "to"`, `clean_name` (keep only characters valid in AMI and file names).
//! An undefined variable or helper is an error, never an empty string. Output is not HTML-escaped.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError, RenderErrorReason, handlebars_helper,
};
use serde_json::Value as Json;

/// The build values a rendering uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The build id (tags every resource of the build).
    pub build_id: String,
    /// The build's start time (`timestamp`, `isotime`).
    pub time: DateTime<Utc>,
    /// Render build-dependent values as fixed markers (`{timestamp}`, `{build.id}`, `{uuid}`), so the
    /// result depends only on the configuration: used for fingerprints.
    pub masked: bool,
    /// Artifact ids of parents built or reused in this run, by image name (`{{ parent.artifact }}`;
    /// the marker `{parent.artifact}` where not known, as in validation and fingerprints).
    pub parent_artifacts: std::collections::BTreeMap<String, String>,
}

impl Stamp {
    /// Values for a real build.
    pub fn new(build_id: impl Into<String>, time: DateTime<Utc>) -> Self {
        Stamp { build_id: build_id.into(), time, masked: false, parent_artifacts: Default::default() }
    }

    /// Values for validation and planning: a recognisable build id, the current time.
    pub fn placeholder() -> Self {
        Stamp { build_id: "b-validate".into(), time: Utc::now(), masked: false, parent_artifacts: Default::default() }
    }

    /// Values that never change: for fingerprints.
    pub fn masked() -> Self {
        Stamp {
            build_id: "{build.id}".into(),
            time: DateTime::<Utc>::UNIX_EPOCH,
            masked: true,
            parent_artifacts: Default::default(),
        }
    }
}

/// A handlebars registry with imgbake's helpers, for one stamp and one environment.
pub struct Engine {
    hb: Handlebars<'static>,
}

/// Why a template failed, with the position inside the template text when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    /// What went wrong, in words.
    pub message: String,
    /// The undefined variable's path (e.g. `var.regon`), when that is the problem.
    pub missing_variable: Option<String>,
    /// 1-based line and column inside the template.
    pub position: Option<(usize, usize)>,
}

impl Engine {
    /// An engine for `stamp`, reading environment variables from `env`.
    pub fn new(stamp: &Stamp, env: Arc<BTreeMap<String, String>>) -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);

        let env_map = env;
        hb.register_helper(
            "env",
            Box::new(move |h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output| -> HelperResult {
                let name = h
                    .param(0)
                    .and_then(|p| p.value().as_str())
                    .ok_or(RenderErrorReason::ParamNotFoundForIndex("env", 0))?;
                match (env_map.get(name), h.param(1).and_then(|p| p.value().as_str())) {
                    (Some(v), _) => out.write(v)?,
                    (None, Some(default)) => out.write(default)?,
                    (None, None) => {
                        return Err(RenderErrorReason::Other(format!(
                            "environment variable `{name}` is not set (give a default: {{{{env \"{name}\" \"value\"}}}})"
                        ))
                        .into());
                    }
                }
                Ok(())
            }),
        );

        let (ts, iso, uuid_fixed) = if stamp.masked {
            ("{timestamp}".to_string(), None, true)
        } else {
            (stamp.time.timestamp().to_string(), Some(stamp.time), false)
        };
        hb.register_helper(
            "timestamp",
            Box::new(
                move |_: &Helper,
                      _: &Handlebars,
                      _: &Context,
                      _: &mut RenderContext,
                      out: &mut dyn Output|
                      -> HelperResult {
                    out.write(&ts)?;
                    Ok(())
                },
            ),
        );
        hb.register_helper(
            "isotime",
            Box::new(
                move |h: &Helper,
                      _: &Handlebars,
                      _: &Context,
                      _: &mut RenderContext,
                      out: &mut dyn Output|
                      -> HelperResult {
                    let Some(time) = iso else {
                        out.write("{isotime}")?;
                        return Ok(());
                    };
                    let text = match h.param(0).and_then(|p| p.value().as_str()) {
                        Some(fmt) => {
                            use std::fmt::Write;
                            let mut s = String::new();
                            write!(s, "{}", time.format(fmt)).map_err(|_| {
                                RenderErrorReason::Other(format!("isotime: invalid strftime format `{fmt}`"))
                            })?;
                            s
                        }
                        None => time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    };
                    out.write(&text)?;
                    Ok(())
                },
            ),
        );
        hb.register_helper(
            "uuid",
            Box::new(
                move |_: &Helper,
                      _: &Handlebars,
                      _: &Context,
                      _: &mut RenderContext,
                      out: &mut dyn Output|
                      -> HelperResult {
                    if uuid_fixed {
                        out.write("{uuid}")?;
                    } else {
                        out.write(&uuid::Uuid::new_v4().to_string())?;
                    }
                    Ok(())
                },
            ),
        );
        handlebars_helper!(lower: |s: str| s.to_lowercase());
        handlebars_helper!(upper: |s: str| s.to_uppercase());
        handlebars_helper!(trim: |s: str| s.trim().to_string());
        handlebars_helper!(replace: |s: str, from: str, to: str| s.replace(from, to));
        handlebars_helper!(clean: |s: str| clean_name(s));
        hb.register_helper("lower", Box::new(lower));
        hb.register_helper("upper", Box::new(upper));
        hb.register_helper("trim", Box::new(trim));
        hb.register_helper("replace", Box::new(replace));
        hb.register_helper("clean_name", Box::new(clean));
        Engine { hb }
    }

    /// Render `template` with `data`.
    pub fn render(&self, template: &str, data: &Json) -> Result<String, TemplateFailure> {
        self.hb.render_template(template, data).map_err(failure)
    }
}

/// Keep only characters valid in AMI names and file names; others become `-`.
pub fn clean_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c) { c } else { '-' }).collect()
}

fn failure(e: RenderError) -> TemplateFailure {
    let position = match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => Some((l, c)),
        _ => None,
    };
    match e.reason() {
        RenderErrorReason::MissingVariable(path) => TemplateFailure {
            message: match path {
                Some(p) => format!("undefined variable `{p}`"),
                None => "undefined variable".into(),
            },
            missing_variable: path.clone(),
            position,
        },
        RenderErrorReason::HelperNotFound(name) => TemplateFailure {
            message: format!(
                "unknown helper `{name}` (helpers: env, timestamp, isotime, uuid, lower, upper, trim, replace, clean_name)"
            ),
            missing_variable: None,
            position,
        },
        RenderErrorReason::TemplateError(te) => TemplateFailure {
            message: format!("template syntax error: {}", te.reason()),
            missing_variable: None,
            position: te.pos().or(position),
        },
        RenderErrorReason::Other(msg) => TemplateFailure { message: msg.clone(), missing_variable: None, position },
        other => TemplateFailure { message: other.to_string(), missing_variable: None, position },
    }
}

/// Check an `execute_command` template offline: it may use `command`, `vars`, `workdir`, `encoded`
/// and the `quote` helper.
pub fn check_execute_command(template: &str) -> Result<(), TemplateFailure> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    handlebars_helper!(quote: |s: str| format!("'{s}'"));
    hb.register_helper("quote", Box::new(quote));
    let data = serde_json::json!({ "command": "c", "vars": "", "workdir": "", "encoded": "" });
    hb.render_template(template, &data).map(|_| ()).map_err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(masked: bool) -> Engine {
        let mut env = BTreeMap::new();
        env.insert("HOME".to_string(), "/root".to_string());
        let stamp = if masked {
            Stamp::masked()
        } else {
            Stamp::new("b-1", DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z").unwrap().to_utc())
        };
        Engine::new(&stamp, Arc::new(env))
    }

    #[test]
    fn helpers() {
        let e = engine(false);
        let d = serde_json::json!({ "var": { "x": "Hello World" } });
        assert_eq!(e.render("{{ lower var.x }}-{{upper var.x}}", &d).unwrap(), "hello world-HELLO WORLD");
        assert_eq!(e.render("{{ replace var.x \" \" \"_\" }}", &d).unwrap(), "Hello_World");
        assert_eq!(e.render("{{ env \"HOME\" }}|{{ env \"NOPE\" \"d\" }}", &d).unwrap(), "/root|d");
        assert_eq!(
            e.render("{{timestamp}} {{isotime \"%Y%m%d\"}} {{isotime}}", &d).unwrap(),
            "1795514400 20261124 2026-11-24T10:00:00Z"
        );
        assert_eq!(e.render("{{ clean_name \"a:b*c\" }}", &d).unwrap(), "a-b-c");
        assert_eq!(e.render("<&>", &d).unwrap(), "<&>", "no HTML escaping");
        assert_eq!(e.render("{{uuid}}", &d).unwrap().len(), 36);
    }

    #[test]
    fn masked_values_are_stable() {
        let e = engine(true);
        let d = serde_json::json!({});
        assert_eq!(e.render("{{timestamp}}/{{isotime}}/{{uuid}}", &d).unwrap(), "{timestamp}/{isotime}/{uuid}");
    }

    #[test]
    fn strict_errors() {
        let e = engine(false);
        let d = serde_json::json!({ "var": { "region": "x" } });
        let f = e.render("a {{ var.regon }}", &d).unwrap_err();
        assert_eq!(f.missing_variable.as_deref(), Some("var.regon"), "{f:?}");
        let f = e.render("{{ env \"NOPE\" }}", &d).unwrap_err();
        assert!(f.message.contains("`NOPE` is not set"), "{f:?}");
        let f = e.render("{{ frobnicate 1 }}", &d).unwrap_err();
        assert!(f.message.contains("unknown helper `frobnicate`"), "{f:?}");
        let f = e.render("{{#if}", &d).unwrap_err();
        assert!(f.message.contains("syntax"), "{f:?}");
    }

    #[test]
    fn execute_command_check() {
        assert!(check_execute_command("sudo -n env {{vars}} sh -c {{quote command}}").is_ok());
        let f = check_execute_command("sudo {{ comand }}").unwrap_err();
        assert_eq!(f.missing_variable.as_deref(), Some("comand"));
    }
}
