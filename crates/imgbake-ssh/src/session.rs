//! One connection attempt: TCP (or a tunnel through a bastion), the server's banner, key exchange with
//! host key verification, then authentication. Failures are sorted into "not up yet" (worth retrying)
//! and final ones (wrong key, wrong host key).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use imgbake_core::communicator::CommError;
use imgbake_core::event::EventSink;
use russh::client::{self, AuthResult, DisconnectReason, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Disconnect, MethodKind};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{Auth, SshConfig};
use crate::hostkey::{HostKeyVerifier, describe_key};

/// What the russh session loop may fail with: its own errors or our host key verdict.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Ssh(russh::Error),
    HostKey(CommError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

/// State the session loop shares with the communicator.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Why the session ended, once it has.
    pub ended: Mutex<Option<String>>,
    /// The server's SSH identification (`SSH-2.0-OpenSSH_9.2p1 ...`), once a channel is open.
    pub server_id: OnceLock<String>,
}

impl Shared {
    pub(crate) fn end_reason(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|g| g.clone())
    }

    /// Whether the server is OpenSSH (its sftp-server takes SSH_FXP_SYMLINK's paths reversed).
    pub(crate) fn is_openssh(&self) -> bool {
        self.server_id.get().is_some_and(|id| id.contains("OpenSSH"))
    }
}

pub(crate) struct Client {
    verifier: Arc<HostKeyVerifier>,
    shared: Arc<Shared>,
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verifier.check(key).map_err(HandlerError::HostKey)?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(cert) => Err(HandlerError::HostKey(CommError::Protocol {
                target: String::new(),
                reason: format!(
                    "the server presented a host certificate (key {}); imgbake verifies plain host keys only",
                    cert.public_key().fingerprint(HashAlg::Sha256)
                ),
            })),
        }
    }

    async fn channel_open_confirmation(
        &mut self,
        _id: russh::ChannelId,
        _max_packet_size: u32,
        _window_size: u32,
        session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let _ = self.shared.server_id.set(String::from_utf8_lossy(session.remote_sshid()).into_owned());
        Ok(())
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        let text = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                format!("the server closed the connection ({:?}: {})", info.reason_code, info.message)
            }
            DisconnectReason::Error(HandlerError::Ssh(russh::Error::KeepaliveTimeout)) => {
                "the server stopped answering keepalives".to_string()
            }
            DisconnectReason::Error(HandlerError::Ssh(e)) => describe_ssh_error(e),
            DisconnectReason::Error(HandlerError::HostKey(e)) => e.to_string(),
        };
        if let Ok(mut g) = self.shared.ended.lock() {
            g.get_or_insert(text);
        }
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// A second handle on a connection's TCP socket, shut down when dropped. russh runs each session in a
/// task of its own that lives until the peer speaks or closes: an attempt dropped during key exchange
/// (a hedged loser, a connect timeout, a machine rebooting under the handshake) or a session dropped
/// while a channel (SFTP) still holds it would otherwise keep the TCP connection open, and our handler
/// (and with it the build's event sink) alive, after the build. Shutting the socket down ends that
/// task at once.
pub(crate) struct SocketGuard(Option<std::net::TcpStream>);

impl SocketGuard {
    fn shutdown(&self) {
        if let Some(s) = &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long `close` lets russh say goodbye before it shuts the socket down.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A live, authenticated SSH session (and the bastion session it is tunnelled through, if any).
/// Dropping it ends the connection (see [`SocketGuard`]).
pub(crate) struct Session {
    pub handle: Handle<Client>,
    pub shared: Arc<Shared>,
    pub bastion: Option<Box<Session>>,
    socket: SocketGuard,
}

impl Session {
    /// `true` once the session (or its bastion) has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.bastion.as_ref().is_some_and(|b| b.is_closed())
    }

    /// Why it ended, as far as known.
    pub(crate) fn end_reason(&self) -> String {
        self.shared
            .end_reason()
            .or_else(|| self.bastion.as_ref().and_then(|b| b.shared.end_reason()).map(|r| format!("bastion: {r}")))
            .unwrap_or_else(|| "the session ended".to_string())
    }

    /// Say goodbye, then make sure the connection is gone: sessions otherwise outlive their closed
    /// channels, and a peer that stopped answering never acknowledges the goodbye.
    pub(crate) async fn close(&self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "imgbake disconnects", "en").await;
        let deadline = Instant::now() + CLOSE_GRACE;
        while !self.handle.is_closed() && Instant::now() < deadline {
            // Not readiness polling: a short bounded grace for the goodbye to be written.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.socket.shutdown();
        if let Some(b) = &self.bastion {
            Box::pin(b.close()).await;
        }
    }
}

/// Make one connection attempt within `cfg.connect_timeout`. `answered` is set when a server
/// answered (its banner arrived, or the bastion opened the tunnel).
pub(crate) fn attempt<'a>(
    cfg: &'a SshConfig,
    events: &'a EventSink,
    answered: &'a OnceLock<Instant>,
) -> BoxFuture<'a, Result<Session, CommError>> {
    Box::pin(async move {
        let target = cfg.target();
        match tokio::time::timeout(cfg.connect_timeout, attempt_inner(cfg, events, answered)).await {
            Ok(r) => r,
            Err(_) => Err(CommError::NotUp {
                target,
                reason: format!("no SSH session within the connect timeout ({:?})", cfg.connect_timeout),
            }),
        }
    })
}

async fn attempt_inner(
    cfg: &SshConfig,
    events: &EventSink,
    answered: &OnceLock<Instant>,
) -> Result<Session, CommError> {
    let target = cfg.target();
    let not_up = |reason: String| CommError::NotUp { target: target.clone(), reason };
    let verifier = Arc::new(HostKeyVerifier::new(&cfg.host_key, &cfg.host, cfg.port, &target, events)?);
    let config = Arc::new(russh_config(cfg, &verifier)?);
    let shared = Arc::new(Shared::default());
    let client = Client { verifier, shared: shared.clone() };

    let (handle, bastion, socket) = match &cfg.bastion {
        Some(b) => {
            let bastion = attempt(b, events, &OnceLock::new()).await.map_err(|e| via_bastion(e, &target))?;
            let channel = bastion
                .handle
                .channel_open_direct_tcpip(cfg.host.clone(), u32::from(cfg.port), "127.0.0.1", 0)
                .await
                .map_err(|e| {
                    not_up(format!(
                        "bastion {} cannot reach {}:{}: {}",
                        b.target(),
                        cfg.host,
                        cfg.port,
                        describe_ssh_error(&e)
                    ))
                })?;
            let _ = answered.set(Instant::now());
            let handle = client::connect_stream(config, channel.into_stream(), client)
                .await
                .map_err(|e| handshake_error(e, &target))?;
            // The tunnel ends with the bastion session, which has its own guard.
            (handle, Some(Box::new(bastion)), SocketGuard(None))
        }
        None => {
            // A live server accepts and sends its banner within moments. A machine that is down drops
            // SYNs (TCP connect hangs) or sits behind a port forward that accepts TCP and then says
            // nothing (QEMU user networking): both are "not up yet" once `banner_timeout` passes.
            let deadline = Instant::now() + cfg.banner_timeout;
            let socket =
                match tokio::time::timeout_at(deadline, TcpStream::connect((cfg.host.as_str(), cfg.port))).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(not_up(format!("TCP connect to {}:{}: {e}", cfg.host, cfg.port))),
                    Err(_) => {
                        return Err(not_up(format!(
                            "TCP connect to {}:{} timed out ({:?})",
                            cfg.host, cfg.port, cfg.banner_timeout
                        )));
                    }
                };
            let _ = socket.set_nodelay(true);
            // From here on, the connection ends with this attempt unless it becomes a session.
            let (socket, guard) = guarded(socket).map_err(|e| not_up(format!("TCP socket: {e}")))?;
            let mut byte = [0u8; 1];
            match tokio::time::timeout_at(
                deadline.max(Instant::now() + Duration::from_millis(100)),
                socket.peek(&mut byte),
            )
            .await
            {
                Ok(Ok(0)) => return Err(not_up("the connection was closed before the SSH banner".into())),
                Ok(Ok(_)) => {
                    let _ = answered.set(Instant::now());
                }
                Ok(Err(e)) => return Err(not_up(format!("waiting for the SSH banner: {e}"))),
                Err(_) => {
                    return Err(not_up(format!(
                        "timed out during banner exchange ({:?}): the port accepts connections but no SSH server answers",
                        cfg.banner_timeout
                    )));
                }
            }
            let handle =
                client::connect_stream(config, socket, client).await.map_err(|e| handshake_error(e, &target))?;
            (handle, None, guard)
        }
    };
    let mut session = Session { handle, shared, bastion, socket };
    if let Err(e) = authenticate(&mut session.handle, cfg).await {
        session.close().await;
        return Err(e);
    }
    Ok(session)
}

/// `socket` and a guard holding a second descriptor of it.
fn guarded(socket: TcpStream) -> std::io::Result<(TcpStream, SocketGuard)> {
    let std = socket.into_std()?;
    let dup = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, SocketGuard(Some(dup))))
}

fn russh_config(cfg: &SshConfig, verifier: &HostKeyVerifier) -> Result<client::Config, CommError> {
    let mut ciphers = Vec::new();
    for name in &cfg.ciphers {
        match russh::cipher::Name::try_from(name.as_str()) {
            Ok(n) => ciphers.push(n),
            Err(()) => {
                return Err(CommError::Protocol {
                    target: cfg.target(),
                    reason: format!(
                        "unknown cipher `{name}` in the SSH settings; known: {}",
                        crate::config::DEFAULT_CIPHERS.join(", ")
                    ),
                });
            }
        }
    }
    let preferred = russh::Preferred {
        key: verifier.preferred_algorithms().into(),
        cipher: if ciphers.is_empty() { russh::Preferred::DEFAULT.cipher } else { ciphers.into() },
        ..russh::Preferred::DEFAULT
    };
    Ok(client::Config {
        keepalive_interval: Some(cfg.keepalive_interval),
        keepalive_max: cfg.keepalive_max,
        preferred,
        nodelay: true,
        ..client::Config::default()
    })
}

fn via_bastion(e: CommError, target: &str) -> CommError {
    match e {
        CommError::NotUp { target: b, reason } => {
            CommError::NotUp { target: target.into(), reason: format!("bastion {b}: {reason}") }
        }
        other => other,
    }
}

fn handshake_error(e: HandlerError, target: &str) -> CommError {
    match e {
        HandlerError::HostKey(CommError::Protocol { reason, .. }) => {
            CommError::Protocol { target: target.into(), reason }
        }
        HandlerError::HostKey(e) => e,
        HandlerError::Ssh(e) => classify(&e, target),
    }
}

/// Sort a russh error during the handshake into "not up yet" or final.
fn classify(e: &russh::Error, target: &str) -> CommError {
    use russh::Error as E;
    match e {
        // Configuration or compatibility problems will not heal by waiting.
        E::NoCommonAlgo { .. } | E::UnknownAlgo | E::WrongServerSig | E::Keys(_) => CommError::Protocol {
            target: target.into(),
            reason: format!("SSH handshake failed: {}", describe_ssh_error(e)),
        },
        // Resets, EOFs and disconnects during the handshake: a server that is starting or stopping.
        _ => CommError::NotUp { target: target.into(), reason: format!("SSH handshake: {}", describe_ssh_error(e)) },
    }
}

pub(crate) fn describe_ssh_error(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "connection closed by the server".into()
        }
        russh::Error::IO(io) => io.to_string(),
        russh::Error::Disconnect => "connection closed".into(),
        russh::Error::KeepaliveTimeout => "the server stopped answering keepalives".into(),
        other => other.to_string(),
    }
}

async fn authenticate(handle: &mut Handle<Client>, cfg: &SshConfig) -> Result<(), CommError> {
    let target = cfg.target();
    let fail = |reason: String| CommError::Auth { target: target.clone(), user: cfg.user.clone(), reason };
    let lost = |e: russh::Error| CommError::NotUp {
        target: target.clone(),
        reason: format!("connection lost during authentication: {}", describe_ssh_error(&e)),
    };
    if cfg.auth.is_empty() {
        return Err(fail("no authentication method is configured (give a key file, a key or a password)".into()));
    }
    let mut tried = Vec::new();
    let mut server_accepts = String::new();
    for auth in &cfg.auth {
        let result = match auth {
            Auth::KeyFile { path, passphrase } => {
                let key = russh::keys::load_secret_key(path, passphrase.as_deref()).map_err(|e| match e {
                    russh::keys::Error::IO(source) => CommError::LocalFile { path: path.clone(), source },
                    russh::keys::Error::KeyIsEncrypted => {
                        fail(format!("key file {} is encrypted: give its passphrase", path.display()))
                    }
                    other => fail(format!("cannot load key file {}: {other}", path.display())),
                })?;
                let desc = format!("key file {} ({})", path.display(), describe_key(key.public_key()));
                (desc, publickey(handle, cfg, Arc::new(key)).await.map_err(lost)?)
            }
            Auth::Key(key) => {
                let desc = format!("in-memory key {}", describe_key(key.public_key()));
                (desc, publickey(handle, cfg, key.clone()).await.map_err(lost)?)
            }
            Auth::Password(pw) => (
                "password".to_string(),
                handle.authenticate_password(cfg.user.clone(), pw.clone()).await.map_err(lost)?,
            ),
        };
        match result {
            (_, AuthResult::Success) => return Ok(()),
            // russh reports a session that died during authentication as a failure with no methods
            // left: that is a machine going down (or still starting), not a wrong key.
            (_, AuthResult::Failure { remaining_methods, .. })
                if handle.is_closed() || remaining_methods.is_empty() =>
            {
                return Err(CommError::NotUp {
                    target: target.clone(),
                    reason: "the connection closed during authentication".into(),
                });
            }
            (desc, AuthResult::Failure { remaining_methods, .. }) => {
                tried.push(desc);
                server_accepts = remaining_methods.iter().map(<&str>::from).collect::<Vec<_>>().join(",");
                if !remaining_methods.iter().any(|m| matches!(m, MethodKind::PublicKey | MethodKind::Password)) {
                    break;
                }
            }
        }
    }
    Err(fail(format!(
        "the server rejected {}{}",
        tried.join(", then "),
        if server_accepts.is_empty() { String::new() } else { format!(" (methods it accepts: {server_accepts})") }
    )))
}

async fn publickey(
    handle: &mut Handle<Client>,
    cfg: &SshConfig,
    key: Arc<russh::keys::PrivateKey>,
) -> Result<AuthResult, russh::Error> {
    let hash = if key.algorithm().is_rsa() {
        // rsa-sha2-512/256 where the server says it supports them; SHA-256 if it says nothing.
        match handle.best_supported_rsa_hash().await? {
            Some(h) => h,
            None => Some(HashAlg::Sha256),
        }
    } else {
        None
    };
    handle.authenticate_publickey(cfg.user.clone(), PrivateKeyWithHashAlg::new(key, hash)).await
}
