//! The `null` builder's part of the tree file: `source = { host = "...", host_key = "..." }` and an
//! (empty) `[images.NAME.null]` table, with their offline checks.

use imgbake_config::{BuilderSchema, Check, Diagnostic, Image, Parsed, Raw, Source, Span, Spanned};
use serde::{Deserialize, Serialize};

/// The builder's name in the tree file.
pub const NAME: &str = "null";

/// The `source` keys of the `null` builder: the existing machine.
// Absent keys are not serialized: another builder's keys must hash as before this one existed.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NullSource {
    /// The machine's address (`communicator.host` overrides it, as for every builder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    /// The machine's SSH host public key (`ssh-ed25519 AAAA…`), pinned like the key a cloud builder
    /// injects. Without it, set `communicator.host_key = "known_hosts"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<Spanned<String>>,
}

/// `[images.NAME.null]`: no settings yet; the table exists so a typo in it is an error, not ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NullSettings {}

/// The `null` keys of a `source` (none set when the builder is not registered).
pub fn source_of(source: &Source) -> Option<&NullSource> {
    source.get::<NullSource>(NAME)
}

/// Declares the `host` and `host_key` source keys and `[images.NAME.null]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSchema;

impl NullSchema {
    /// As a schema to register.
    pub fn arc() -> std::sync::Arc<dyn BuilderSchema> {
        std::sync::Arc::new(NullSchema)
    }
}

fn span<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span())
}

impl BuilderSchema for NullSchema {
    fn name(&self) -> &str {
        NAME
    }

    fn source_keys(&self) -> &[&str] {
        &["host", "host_key"]
    }

    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<NullSettings>()
    }

    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<NullSource>()
    }

    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        let s = source_of(source.get_ref()).cloned().unwrap_or_default();
        let Some(host) = &s.host else {
            cx.push(
                Diagnostic::at(span(source), format!("source of image `{}` (null) needs `host`", image.name)).help(
                    "the machine to provision: source = { host = \"192.0.2.10\", host_key = \"ssh-ed25519 AAAA...\" }",
                ),
            );
            return;
        };
        if host.get_ref().trim().is_empty() {
            cx.push(Diagnostic::at(span(host), "source.host is empty"));
        }
        let pinned = image.communicator.host_key.as_ref().is_none_or(|p| p.get_ref() == "pinned");
        match &s.host_key {
            Some(k) if k.get_ref().split_whitespace().count() < 2 => cx.push(
                Diagnostic::at(span(k), "source.host_key is not an OpenSSH public key line")
                    .help("as in the machine's /etc/ssh/ssh_host_ed25519_key.pub: ssh-ed25519 AAAA..."),
            ),
            None if pinned => cx.push(
                Diagnostic::at(span(host), format!("image `{}`: nothing to pin the machine's host key to", image.name))
                    .help("the null builder does not create the machine, so it cannot inject a host key: set source.host_key to the machine's public host key, or communicator.host_key = \"known_hosts\""),
            ),
            _ => {}
        }
    }

    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        // An image whose parent builds with `null` builds with it too: there is no disk to start from.
        if let Some(p) = &image.parent {
            cx.push(
                Diagnostic::at(
                    span(p),
                    format!("image `{}` cannot start from `{}`: the null builder makes no image", image.name, p.get_ref()),
                )
                .help("a null image provisions an existing machine and captures nothing, so it cannot be a parent: give this image its own `source` (and a builder that makes images)"),
            );
        }
    }
}
