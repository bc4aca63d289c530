//! Verifying the server's host key against a [`HostKeyPolicy`]: pinned keys, an OpenSSH `known_hosts`
//! file, or (loudly) anything.

use std::path::Path;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use imgbake_core::communicator::CommError;
use imgbake_core::event::EventSink;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use crate::config::HostKeyPolicy;

/// `ssh-ed25519 SHA256:...`: how keys are named in messages (what `ssh-keygen -lf` shows).
pub fn describe_key(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm().as_str(), key.fingerprint(HashAlg::Sha256))
}

/// Parse an OpenSSH public key line (`type base64 [comment]`).
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim())
        .map_err(|e| format!("`{}` is not an OpenSSH public key line: {e}", short(line)))
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.len() > 60 {
        format!("{}...", &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

/// The keys a policy expects for one host, read once per connection attempt.
#[derive(Debug)]
pub(crate) struct HostKeyVerifier {
    target: String,
    policy: Policy,
    events: EventSink,
}

#[derive(Debug)]
enum Policy {
    Pinned(Vec<PublicKey>),
    KnownHosts { path: String, entries: Vec<KnownEntry> },
    Insecure,
}

#[derive(Debug)]
struct KnownEntry {
    line: usize,
    revoked: bool,
    key: PublicKey,
}

impl HostKeyVerifier {
    /// Prepare checking `host:port` under `policy`. Unparsable pinned keys or an unreadable
    /// known_hosts file are errors now, not surprises during the handshake.
    pub(crate) fn new(
        policy: &HostKeyPolicy,
        host: &str,
        port: u16,
        target: &str,
        events: &EventSink,
    ) -> Result<Self, CommError> {
        let bad = |reason: String| CommError::Protocol { target: target.to_string(), reason };
        let policy = match policy {
            HostKeyPolicy::Pinned(lines) => {
                if lines.is_empty() {
                    return Err(bad(
                        "the host key policy pins no key: give at least one OpenSSH public key line".into()
                    ));
                }
                Policy::Pinned(
                    lines
                        .iter()
                        .map(|l| parse_public_key(l).map_err(|e| bad(format!("pinned host key: {e}"))))
                        .collect::<Result<_, _>>()?,
                )
            }
            HostKeyPolicy::KnownHosts(path) => {
                let entries = known_hosts_entries(path, host, port).map_err(bad)?;
                Policy::KnownHosts { path: path.display().to_string(), entries }
            }
            HostKeyPolicy::InsecureAcceptAny => Policy::Insecure,
        };
        Ok(HostKeyVerifier { target: target.to_string(), policy, events: events.clone() })
    }

    /// Host key algorithms to ask for first, so a server with several host keys presents the one we
    /// know (OpenSSH's client does the same with its known_hosts).
    pub(crate) fn preferred_algorithms(&self) -> Vec<Algorithm> {
        let keys: Vec<&PublicKey> = match &self.policy {
            Policy::Pinned(k) => k.iter().collect(),
            Policy::KnownHosts { entries, .. } => entries.iter().filter(|e| !e.revoked).map(|e| &e.key).collect(),
            Policy::Insecure => Vec::new(),
        };
        let mut out: Vec<Algorithm> = Vec::new();
        let mut push = |a: Algorithm| {
            if !out.contains(&a) {
                out.push(a);
            }
        };
        for k in keys {
            match k.algorithm() {
                Algorithm::Rsa { .. } => {
                    push(Algorithm::Rsa { hash: Some(HashAlg::Sha512) });
                    push(Algorithm::Rsa { hash: Some(HashAlg::Sha256) });
                }
                a => push(a),
            }
        }
        for a in russh::Preferred::DEFAULT.key.iter() {
            push(a.clone());
        }
        out
    }

    /// Decide about the key the server presented.
    pub(crate) fn check(&self, presented: &PublicKey) -> Result<(), CommError> {
        match &self.policy {
            Policy::Insecure => {
                let msg = format!(
                    "accepting host key {} of {} WITHOUT verification (insecure host key policy): pin it or use a known_hosts file",
                    describe_key(presented),
                    self.target
                );
                tracing::warn!("{msg}");
                self.events.warn(msg);
                Ok(())
            }
            Policy::Pinned(keys) => {
                if keys.iter().any(|k| k.key_data() == presented.key_data()) {
                    Ok(())
                } else {
                    Err(CommError::HostKeyMismatch {
                        target: self.target.clone(),
                        expected: format!("pinned {}", keys.iter().map(describe_key).collect::<Vec<_>>().join(" or ")),
                        presented: describe_key(presented),
                    })
                }
            }
            Policy::KnownHosts { path, entries } => {
                if let Some(e) = entries.iter().find(|e| e.revoked && e.key.key_data() == presented.key_data()) {
                    return Err(CommError::HostKeyMismatch {
                        target: self.target.clone(),
                        expected: format!("any key but the one marked @revoked at {path}:{}", e.line),
                        presented: describe_key(presented),
                    });
                }
                let known: Vec<&KnownEntry> = entries.iter().filter(|e| !e.revoked).collect();
                if known.iter().any(|e| e.key.key_data() == presented.key_data()) {
                    return Ok(());
                }
                if known.is_empty() {
                    return Err(CommError::UnknownHostKey {
                        target: self.target.clone(),
                        presented: format!("{}; {path} has no entry for this host", describe_key(presented)),
                    });
                }
                Err(CommError::HostKeyMismatch {
                    target: self.target.clone(),
                    expected: known
                        .iter()
                        .map(|e| format!("{} ({path}:{})", describe_key(&e.key), e.line))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    presented: describe_key(presented),
                })
            }
        }
    }
}

/// The entries of a known_hosts file that apply to `host:port`. A missing file has none.
fn known_hosts_entries(path: &Path, host: &str, port: u16) -> Result<Vec<KnownEntry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read known_hosts file {}: {e}", path.display())),
    };
    // OpenSSH looks up `[host]:port` for ports other than 22.
    let name = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                // Host certificates are not supported: such lines do not vouch for a plain key.
                _ => continue,
            }
            first = fields.next().unwrap_or_default();
        }
        if !host_matches(first, &name) {
            continue;
        }
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else { continue };
        // A line we cannot parse (an unknown key type) does not make the whole file unusable.
        if let Ok(key) = PublicKey::from_openssh(&format!("{kind} {blob}")) {
            out.push(KnownEntry { line: i + 1, revoked, key });
        }
    }
    Ok(out)
}

/// OpenSSH host pattern lists: comma-separated, `*`/`?` wildcards, `!` negation, `|1|salt|hash` hashes.
fn host_matches(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard(neg, name) {
                return false;
            }
        } else if pat.starts_with("|1|") {
            matched |= hashed_matches(pat, name);
        } else if wildcard(pat, name) {
            matched = true;
        }
    }
    matched
}

fn hashed_matches(pat: &str, name: &str) -> bool {
    let mut parts = pat.split('|').skip(2);
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(Ok(salt)), Some(Ok(hash))) = (parts.next().map(|p| b64.decode(p)), parts.next().map(|p| b64.decode(p)))
    else {
        return false;
    };
    match Hmac::<Sha1>::new_from_slice(&salt) {
        Ok(mac) => mac.chain_update(name.as_bytes()).verify_slice(&hash).is_ok(),
        Err(_) => false,
    }
}

fn wildcard(pat: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ test";

    #[test]
    fn patterns() {
        assert!(host_matches("example.com,10.0.0.1", "10.0.0.1"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com,!bad.example.com", "bad.example.com"));
        assert!(host_matches("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
        assert!(!host_matches("127.0.0.1", "[127.0.0.1]:2222"));
        assert!(host_matches("host?", "host1"));
    }

    #[test]
    fn hashed_names_match() {
        // `ssh-keygen -H` format: HMAC-SHA1 of the name keyed with the salt.
        let salt = [7u8; 20];
        let mac =
            Hmac::<Sha1>::new_from_slice(&salt).unwrap().chain_update(b"[127.0.0.1]:2222").finalize().into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let pat = format!("|1|{}|{}", b64.encode(salt), b64.encode(mac));
        assert!(host_matches(&pat, "[127.0.0.1]:2222"));
        assert!(!host_matches(&pat, "127.0.0.1"));
    }

    #[test]
    fn known_hosts_file_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        std::fs::write(
            &path,
            format!("# comment\n\n[127.0.0.1]:2222 {ED}\nbogus-line\n@revoked * {other}\nother.host ssh-foo AAAA\n"),
        )
        .unwrap();
        let e = known_hosts_entries(&path, "127.0.0.1", 2222).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].line, 3);
        assert!(!e[0].revoked && e[1].revoked);
        let v = HostKeyVerifier::new(
            &HostKeyPolicy::KnownHosts(path.clone()),
            "127.0.0.1",
            2222,
            "t",
            &EventSink::discard(),
        )
        .unwrap();
        v.check(&parse_public_key(ED).unwrap()).unwrap();
        let err = v.check(&parse_public_key(other).unwrap()).unwrap_err().to_string();
        assert!(err.contains("@revoked"), "{err}");
        // Another port: no entry → unknown.
        let v = HostKeyVerifier::new(&HostKeyPolicy::KnownHosts(path), "127.0.0.1", 22, "t", &EventSink::discard())
            .unwrap();
        assert!(matches!(v.check(&parse_public_key(ED).unwrap()), Err(CommError::UnknownHostKey { .. })));
    }

    #[test]
    fn pinned_keys_and_preferred_algorithms() {
        let v =
            HostKeyVerifier::new(&HostKeyPolicy::Pinned(vec![ED.into()]), "h", 22, "t", &EventSink::discard()).unwrap();
        assert_eq!(v.preferred_algorithms()[0], Algorithm::Ed25519);
        v.check(&parse_public_key(ED).unwrap()).unwrap();
        let bad = HostKeyVerifier::new(
            &HostKeyPolicy::Pinned(vec!["ssh-ed25519 notbase64".into()]),
            "h",
            22,
            "t",
            &EventSink::discard(),
        );
        assert!(bad.unwrap_err().to_string().contains("pinned host key"));
    }
}
