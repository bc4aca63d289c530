//! The staleness audit's settings (`[audit]`): which channel is "current", the deadline by which
//! every running machine must run it, and the tags that name a machine's owner (see docs/audit.md).

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::DeValue;

use crate::diag::Diagnostic;
use crate::load::span_of;
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::units::Duration;

/// The owner tag keys looked for when `[audit] owner_tags` is not set, in this order.
pub const DEFAULT_OWNER_TAGS: &[&str] = &["Owner", "owner", "Team", "team", "Contact", "contact"];

/// `[audit]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// A running machine whose image was superseded longer ago than this fails the audit (exit 1).
    pub deadline: Option<Spanned<Duration>>,
    /// The channel that says what is current (default: the end of the promotion chain).
    pub channel: Option<Spanned<String>>,
    /// The machine tags that name its owner (default [`DEFAULT_OWNER_TAGS`]).
    pub owner_tags: Option<Spanned<Vec<String>>>,
}

impl Audit {
    /// The owner tag keys to report.
    pub fn owner_tags(&self) -> Vec<String> {
        match &self.owner_tags {
            Some(t) => t.get_ref().clone(),
            None => DEFAULT_OWNER_TAGS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

const KEYS: &[&str] = &["deadline", "channel", "owner_tags"];

/// `[audit]` of the root file, checked: known keys, types, a positive deadline, owner tags that are
/// not empty. The channel is checked against the tree's channels by [`check_channel`].
pub(crate) fn audit_from(v: Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Audit {
    let DeValue::Table(t) = v.get_ref() else {
        diags.push(Diagnostic::at(
            span_of(&v),
            format!(
                "`audit` must be a table ([audit] with deadline, channel, owner_tags), found {}",
                v.get_ref().type_str()
            ),
        ));
        return Audit::default();
    };
    let mut bad = false;
    for key in t.keys() {
        let k: &str = key.get_ref().as_ref();
        if !KEYS.contains(&k) {
            bad = true;
            let d = Diagnostic::at(span_of(key), format!("unknown key `{k}` in [audit]"));
            diags.push(match did_you_mean(k, KEYS.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("expected one of: {}", KEYS.join(", "))),
            });
        }
    }
    if bad {
        return Audit::default();
    }
    let fallback = span_of(&v);
    let audit = match Audit::deserialize(toml::de::ValueDeserializer::from(v)) {
        Ok(a) => a,
        Err(e) => {
            diags.push(crate::render::serde_diag(&e, fallback, "[audit]"));
            return Audit::default();
        }
    };
    if let Some(d) = &audit.deadline
        && d.get_ref().get().is_zero()
    {
        diags.push(
            Diagnostic::at(Span::new(d.span()), "audit.deadline must be longer than zero")
                .help("e.g. deadline = \"30d\": machines must run the current image within 30 days of its release"),
        );
    }
    if let Some(t) = &audit.owner_tags
        && (t.get_ref().is_empty() || t.get_ref().iter().any(|k| k.trim().is_empty()))
    {
        diags.push(
            Diagnostic::at(Span::new(t.span()), "audit.owner_tags must list tag keys, none of them empty")
                .help("e.g. owner_tags = [\"Owner\", \"Team\"]; leave it out for the default"),
        );
    }
    audit
}

/// `audit.channel` must name a channel of the tree.
pub(crate) fn check_channel(
    audit: &Audit,
    channels: &indexmap::IndexMap<String, crate::channels::Channel>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(c) = &audit.channel else { return };
    if channels.contains_key(c.get_ref()) {
        return;
    }
    let at = Span::new(c.span());
    let d = Diagnostic::at(at, format!("audit.channel names `{}`, which is not a channel of the tree", c.get_ref()));
    diags.push(if channels.is_empty() {
        d.help("declare release channels ([channels.stable], see docs/channels.md), or leave audit.channel out: the audit then compares with each image's newest artifact")
    } else {
        match did_you_mean(c.get_ref(), channels.keys().map(String::as_str)) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("use one of: {}", channels.keys().cloned().collect::<Vec<_>>().join(", "))),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(text: &str) -> (Audit, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let t: toml::de::DeTable<'_> = toml::de::DeTable::parse(text).unwrap().into_inner();
        let v = t.get("audit").cloned().unwrap();
        let a = audit_from(v, &mut diags);
        (a, diags)
    }

    #[test]
    fn keys_are_read_and_checked() {
        let (a, d) = audit("[audit]\ndeadline = \"30d\"\nchannel = \"stable\"\nowner_tags = [\"CostCenter\"]\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.deadline.as_ref().map(|d| d.get_ref().get().as_secs()), Some(30 * 86400));
        assert_eq!(a.owner_tags(), vec!["CostCenter".to_string()]);
        let (a, d) = audit("[audit]\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.owner_tags()[0], "Owner");
        let (_, d) = audit("[audit]\ndeadlin = \"30d\"\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].help.as_deref(), Some("did you mean `deadline`?"));
        let (_, d) = audit("[audit]\ndeadline = \"0s\"\nowner_tags = []\n");
        assert_eq!(d.len(), 2, "{d:?}");
        let (_, d) = audit("[audit]\ndeadline = \"soon\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
        let mut diags = Vec::new();
        let (a, _) = audit("[audit]\nchannel = \"stabel\"\n");
        let mut ch = indexmap::IndexMap::new();
        ch.insert("stable".to_string(), crate::channels::Channel { name: "stable".into(), ..Default::default() });
        check_channel(&a, &ch, &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `stable`?"));
    }
}
