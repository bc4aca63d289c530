//! [`StoreError`]: one line per failure, naming the store, the object and what to do.

use std::fmt;

/// Why a store operation failed. `Display` is one line a user can act on.
///
/// `store` fields read like "http store `artifacts`" (or "host 127.0.0.1:8081" for
/// [`crate::fetch`]), so messages start or end with where things went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No `[stores.NAME]` with that name.
    #[error("unknown store `{name}`{}", KnownStores(known))]
    UnknownStore {
        /// The name asked for.
        name: String,
        /// The stores that exist.
        known: Vec<String>,
    },

    /// The store's settings cannot work (no `url`, a malformed URL, half a credential pair, ...).
    #[error("store `{store}`: {message}")]
    Config {
        /// Store name.
        store: String,
        /// What is wrong and what to set.
        message: String,
    },

    /// A credential's environment variable is unset or empty.
    #[error("store `{store}`: environment variable {var} (`{setting}`) is not set")]
    MissingCredential {
        /// Store name.
        store: String,
        /// The variable.
        var: String,
        /// The setting that names it (`password_env`, ...).
        setting: &'static str,
    },

    /// A key that cannot name an object (empty, `..`, leading `/`, ...).
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// The object does not exist (404).
    #[error("`{key}` is not in {store} (404 at {url}): was it published there?")]
    NotFound {
        /// "http store `x`".
        store: String,
        /// The key (or URL for [`crate::fetch`]).
        key: String,
        /// The URL asked for.
        url: String,
    },

    /// The server refused the credentials (401/403).
    #[error("{store} refused {method} `{key}` ({status}): {hint}")]
    Denied {
        /// "http store `x`".
        store: String,
        /// The request method or S3 operation.
        method: String,
        /// The key.
        key: String,
        /// 401 or 403.
        status: u16,
        /// Which credentials to check.
        hint: String,
    },

    /// The bytes do not hash to the expected sha256; nothing was kept under the final name.
    #[error(
        "checksum mismatch for `{key}` from {store}: expected sha256 {expected} ({source_of_expected}), got {actual}; the download was discarded"
    )]
    Checksum {
        /// "http store `x`".
        store: String,
        /// The key or URL.
        key: String,
        /// The sha256 it should have.
        expected: String,
        /// Where `expected` came from ("asked for", "recorded by the store").
        source_of_expected: &'static str,
        /// The sha256 of what arrived.
        actual: String,
    },

    /// The object's size is not what the store announced (or, after an upload, what was sent).
    #[error("size mismatch for `{key}` in {store}: expected {expected} bytes, found {actual}")]
    Size {
        /// "http store `x`".
        store: String,
        /// The key.
        key: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },

    /// No connection to the server (refused, DNS, TLS handshake, timeout).
    #[error("cannot reach {store} at {address}: {cause}")]
    Unreachable {
        /// "http store `x`".
        store: String,
        /// host:port.
        address: String,
        /// The innermost cause.
        cause: String,
    },

    /// Any other unexpected HTTP status.
    #[error("{store}: {method} `{key}` failed with HTTP {status}: {detail}")]
    Status {
        /// "http store `x`".
        store: String,
        /// Request method.
        method: String,
        /// The key.
        key: String,
        /// HTTP status.
        status: u16,
        /// The start of the response body (one line).
        detail: String,
    },

    /// A transfer broke or stalled (after the retries, if it was retried).
    #[error("{store}: {operation} `{key}` failed: {detail}")]
    Transfer {
        /// "http store `x`".
        store: String,
        /// What was being done (`GET`, `UploadPart 3`, ...).
        operation: String,
        /// The key.
        key: String,
        /// What happened (one line).
        detail: String,
    },

    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// Whether this error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

struct KnownStores<'a>(&'a [String]);

impl fmt::Display for KnownStores<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(" (no [stores.NAME] is defined)");
        }
        let names: Vec<String> = self.0.iter().map(|n| format!("`{n}`")).collect();
        write!(f, " (defined: {})", names.join(", "))
    }
}

/// A failure inside a retry loop: retried with backoff, or returned at once.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connect errors, 5xx, 408, 429, a connection lost mid-body, a stall.
    Transient(StoreError),
    /// Everything else (4xx, local I/O, checksum).
    Permanent(StoreError),
}

impl Failure {
    pub(crate) fn into_error(self) -> StoreError {
        match self {
            Failure::Transient(e) | Failure::Permanent(e) => e,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Permanent(e)
    }
}

/// An error and its sources on one line (hyper and the AWS SDK hide the useful part in sources).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Wrappers often repeat their source's text.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    one_line(&parts.join(": "), 300)
}

/// `text` on one line, at most `max` chars.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{cut}…")
}
