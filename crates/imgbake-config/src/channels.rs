//! Release channels (`[channels.NAME]`): named pointers at one artifact of an image (`candidate`,
//! `stable`...), moved by builds and by `imgbake promote` (see docs/channels.md).
//!
//! Declaring any channel declares [`CANDIDATE`] too: every build that publishes points it at the
//! new artifact. Any other channel is promoted to from another (`from`, default `candidate`) and
//! may ask that the artifact passed its on-box tests (`require_tests`) and stayed in `from` for a
//! while (`soak`). Where a pointer lives is each builder's business (AWS: an SSM parameter per
//! channel and region).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use crate::diag::Diagnostic;
use crate::load::span_of;
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::units::Duration;

/// The channel every build that publishes points at its new artifact; implicit when any channel is
/// declared.
pub const CANDIDATE: &str = "candidate";

/// One channel (`[channels.NAME]`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Channel {
    /// Its name (the key under `[channels]`).
    pub name: String,
    /// What it is for, for people.
    pub description: Option<String>,
    /// The channel promotions to this one take their artifact from. Default `candidate` (none for
    /// `candidate` itself, which builds point).
    pub from: Option<Spanned<String>>,
    /// How long the artifact must have been in `from` before it may be promoted here.
    pub soak: Option<Spanned<Duration>>,
    /// The artifact must carry a passing result of its on-box tests (`test` steps).
    pub require_tests: bool,
    /// Where `[channels.NAME]` is (none for the implicit `candidate`).
    #[serde(skip)]
    pub span: Option<Span>,
}

impl Channel {
    /// The channel promotions take their artifact from: `from`, else `candidate`; `None` for
    /// `candidate` itself.
    pub fn source(&self) -> Option<&str> {
        match &self.from {
            Some(f) => Some(f.get_ref()),
            None if self.name == CANDIDATE => None,
            None => Some(CANDIDATE),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRaw {
    description: Option<String>,
    from: Option<Spanned<String>>,
    soak: Option<Spanned<Duration>>,
    require_tests: Option<bool>,
}

const KEYS: &[&str] = &["description", "from", "soak", "require_tests"];

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase())
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
        && n.len() <= 64
}

/// `[channels]` of the root file: every channel, checked (names, keys, `from` naming a declared
/// channel), with `candidate` added when missing.
pub(crate) fn channels_from(v: Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> IndexMap<String, Channel> {
    let mut out = IndexMap::new();
    let DeValue::Table(t) = v.get_ref() else {
        diags.push(Diagnostic::at(
            span_of(&v),
            format!("`channels` must be a table of channels ([channels.NAME]), found {}", v.get_ref().type_str()),
        ));
        return out;
    };
    for (k, cv) in t {
        let name = k.get_ref().to_string();
        let kspan = span_of(k);
        if !valid_name(&name) {
            diags.push(Diagnostic::at(
                kspan,
                format!("channel name `{name}` must be lowercase letters, digits, `-` and `_`, starting with a letter"),
            ));
        }
        let section = format!("channels.{name}");
        if let DeValue::Table(ct) = cv.get_ref() {
            // Unknown keys with a suggestion drawn from this table's keys (serde's message lists them all).
            let mut bad = false;
            for key in ct.keys() {
                let kname: &str = key.get_ref().as_ref();
                if !KEYS.contains(&kname) {
                    bad = true;
                    let d = Diagnostic::at(span_of(key), format!("unknown key `{kname}` in {section}"));
                    diags.push(match did_you_mean(kname, KEYS.iter().copied()) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!("expected one of: {}", KEYS.join(", "))),
                    });
                }
            }
            if bad {
                continue;
            }
        }
        let raw = match ChannelRaw::deserialize(ValueDeserializer::from(cv.clone())) {
            Ok(r) => r,
            Err(e) => {
                diags.push(crate::render::serde_diag(&e, span_of(cv), &section));
                continue;
            }
        };
        let channel = Channel {
            name: name.clone(),
            description: raw.description,
            from: raw.from,
            soak: raw.soak,
            require_tests: raw.require_tests.unwrap_or(false),
            span: Some(kspan),
        };
        if name == CANDIDATE {
            for (key, at) in [
                ("from", channel.from.as_ref().map(|f| Span::new(f.span()))),
                ("soak", channel.soak.as_ref().map(|s| Span::new(s.span()))),
            ] {
                if let Some(at) = at {
                    diags.push(
                        Diagnostic::at(at, format!("channels.candidate cannot have `{key}`: every build that publishes points it at its new artifact"))
                            .help("put promotion rules on the channels promoted from it, e.g. [channels.stable] from = \"candidate\""),
                    );
                }
            }
            if raw.require_tests == Some(true) {
                diags.push(
                    Diagnostic::at(
                        kspan,
                        "channels.candidate cannot have `require_tests`: a build whose tests fail makes no artifact",
                    )
                    .help("set `require_tests = true` on the channels promoted from it"),
                );
            }
        }
        out.insert(name, channel);
    }
    if !out.is_empty() && !out.contains_key(CANDIDATE) {
        out.insert(CANDIDATE.to_string(), Channel { name: CANDIDATE.to_string(), ..Default::default() });
    }
    for c in out.values() {
        let Some(from) = &c.from else { continue };
        let f = from.get_ref();
        let at = Span::new(from.span());
        if f == &c.name {
            diags.push(
                Diagnostic::at(at, format!("channel `{}` cannot be promoted from itself", c.name))
                    .help("name the channel its artifacts come from, e.g. from = \"candidate\""),
            );
        } else if !out.contains_key(f) {
            let d =
                Diagnostic::at(at, format!("channels.{}.from names `{f}`, which is not a channel of the tree", c.name));
            diags.push(match did_you_mean(f, out.keys().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "declare it with [channels.{f}], or use one of: {}",
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(text: &str) -> (IndexMap<String, Channel>, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let t: toml::de::DeTable<'_> = toml::de::DeTable::parse(text).unwrap().into_inner();
        let v = t.get("channels").cloned().unwrap();
        let c = channels_from(v, &mut diags);
        (c, diags)
    }

    #[test]
    fn candidate_is_implicit_and_the_default_source() {
        let (c, d) = channels("[channels.stable]\nsoak = \"24h\"\nrequire_tests = true\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(c["stable"].source(), Some(CANDIDATE));
        assert_eq!(c[CANDIDATE].source(), None);
        assert_eq!(c["stable"].soak.as_ref().map(|s| s.get_ref().get().as_secs()), Some(86400));
        assert!(c["stable"].require_tests);
    }

    #[test]
    fn an_unknown_source_a_self_source_and_candidate_rules_are_refused() {
        let (_, d) = channels(
            "[channels.stable]\nfrom = \"candidat\"\n[channels.beta]\nfrom = \"beta\"\n[channels.candidate]\nsoak = \"1h\"\n",
        );
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(d.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("cannot have `soak`"), "{msgs:?}");
        assert!(msgs[1].contains("`candidat`, which is not a channel"), "{msgs:?}");
        assert_eq!(d[1].help.as_deref(), Some("did you mean `candidate`?"));
        assert!(msgs[2].contains("cannot be promoted from itself"), "{msgs:?}");
    }
}
