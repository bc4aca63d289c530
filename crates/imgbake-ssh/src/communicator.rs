//! [`SshCommunicator`]: the [`Communicator`] over SSH.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use imgbake_config::Os;
use imgbake_core::command::compose;
use imgbake_core::communicator::{CommError, Communicator, ExecOutput, ExecRequest};
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::wait::{self, Poll, Wait, WaitError};
use tokio::sync::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::SshConfig;
use crate::fallback::Fallback;
use crate::session::{Session, attempt};
use crate::sftp::{OpenError, Sftp};

/// Talks to one machine over SSH. Cheap to share (`Arc`); operations may run concurrently on the one
/// connection (each command gets its own channel).
///
/// ```no_run
/// use std::time::Duration;
/// use imgbake_core::communicator::{Communicator, ExecRequest};
/// use imgbake_core::event::EventSink;
/// use imgbake_core::wait::Wait;
/// use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = SshConfig::new("203.0.113.7", 22, "admin")
///     .with_auth(Auth::key_file("/home/me/.ssh/id_ed25519"))
///     .with_host_key(HostKeyPolicy::Pinned(vec!["ssh-ed25519 AAAAC3Nza... host".into()]));
/// let ssh = SshCommunicator::new(config);
/// ssh.connect(&Wait::new(Duration::from_secs(300))).await?;
/// let out = ssh.exec(&ExecRequest::new("uname -a"), &EventSink::discard()).await?;
/// assert!(out.status.success());
/// ssh.disconnect().await;
/// # Ok(()) }
/// ```
pub struct SshCommunicator {
    config: SshConfig,
    events: EventSink,
    conn: Mutex<Option<Arc<Connection>>>,
}

/// One live session and what was learnt about it.
struct Connection {
    session: Session,
    sftp: Mutex<SftpState>,
    /// A Disconnected event was sent for this connection already.
    reported: AtomicBool,
}

enum SftpState {
    NotTried,
    Ready(Arc<Sftp>),
    Unsupported,
}

impl SshCommunicator {
    /// A communicator for `config`; nothing happens until [`Communicator::connect`].
    pub fn new(config: SshConfig) -> Self {
        SshCommunicator { config, events: EventSink::discard(), conn: Mutex::new(None) }
    }

    /// Send connection events (`connected`, `disconnected`, host key warnings) to `events`.
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    /// The live connection, or why there is none.
    async fn live(&self) -> Result<Arc<Connection>, CommError> {
        let guard = self.conn.lock().await;
        match guard.as_ref() {
            Some(c) if !c.session.is_closed() => Ok(c.clone()),
            Some(c) => {
                let reason = c.session.end_reason();
                self.report_lost(c, &reason);
                Err(CommError::Disconnected { target: self.target(), reason })
            }
            None => {
                Err(CommError::Disconnected { target: self.target(), reason: "not connected (connect first)".into() })
            }
        }
    }

    fn report_lost(&self, c: &Connection, reason: &str) {
        if !c.reported.swap(true, Ordering::SeqCst) {
            self.events.emit(EventKind::Disconnected { reason: reason.to_string() });
        }
    }

    /// The connection's SFTP session, opened on first use; `None` when the server has none.
    async fn sftp(&self, c: &Connection) -> Result<Option<Arc<Sftp>>, CommError> {
        let mut state = c.sftp.lock().await;
        match &*state {
            SftpState::Ready(s) if !s.is_closed() => return Ok(Some(s.clone())),
            SftpState::Unsupported => return Ok(None),
            _ => {}
        }
        match Sftp::open(&c.session, &self.config).await {
            Ok(s) => {
                let s = Arc::new(s);
                *state = SftpState::Ready(s.clone());
                Ok(Some(s))
            }
            Err(OpenError::Unsupported(why)) => {
                if c.session.is_closed() {
                    return Err(CommError::Disconnected { target: self.target(), reason: c.session.end_reason() });
                }
                self.events.info(format!("{}: no SFTP ({why}); transferring files with exec and cat", self.target()));
                *state = SftpState::Unsupported;
                Ok(None)
            }
            Err(OpenError::Comm(e)) => Err(e),
        }
    }

    fn fallback<'a>(&self, c: &'a Connection) -> Fallback<'a> {
        Fallback { session: &c.session, target: self.target(), os: self.config.os }
    }
}

#[async_trait]
impl Communicator for SshCommunicator {
    fn target(&self) -> String {
        self.config.target()
    }

    fn os(&self) -> Os {
        self.config.os
    }

    fn ssh_access(&self) -> Option<imgbake_core::ssh_access::SshAccess> {
        Some(crate::config::access(&self.config))
    }

    async fn connect(&self, wait: &Wait) -> Result<(), CommError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.session.is_closed() {
                return Ok(());
            }
            let reason = c.session.end_reason();
            self.report_lost(c, &reason);
            c.session.close().await;
            *guard = None;
        }
        let target = self.target();
        match connect_hedged(&self.config, &self.events, wait).await {
            Ok(session) => {
                *guard = Some(Arc::new(Connection {
                    session,
                    sftp: Mutex::new(SftpState::NotTried),
                    reported: AtomicBool::new(false),
                }));
                self.events.emit(EventKind::Connected { target, boot_id: None });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn disconnect(&self) {
        let taken = self.conn.lock().await.take();
        if let Some(c) = taken {
            if let SftpState::Ready(s) = &*c.sftp.lock().await {
                let _ = s.session.close().await;
            }
            if !c.reported.swap(true, Ordering::SeqCst) {
                self.events.emit(EventKind::Disconnected { reason: "closed by imgbake".into() });
            }
            c.session.close().await;
        }
    }

    async fn exec(&self, req: &ExecRequest, events: &EventSink) -> Result<ExecOutput, CommError> {
        // A bad template is an error before anything else.
        compose(self.config.os, req)?;
        let c = self.live().await?;
        let out = crate::exec::run(&c.session, self.config.os, req, events, &self.target()).await?;
        if c.session.is_closed() {
            self.report_lost(&c, &c.session.end_reason());
        }
        Ok(out)
    }

    async fn upload(&self, local: &Path, remote: &str, events: &EventSink) -> Result<u64, CommError> {
        let c = self.live().await?;
        if self.config.archive_uploads
            && self.config.os == imgbake_config::Os::Linux
            && local.is_dir()
            && let Some(sent) = self.fallback(&c).upload_archive(local, remote, events).await?
        {
            return Ok(sent);
        }
        match self.sftp(&c).await? {
            Some(sftp) => sftp.upload(local, remote, events).await,
            None => self.fallback(&c).upload(local, remote, events).await,
        }
    }

    async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), CommError> {
        let c = self.live().await?;
        match self.sftp(&c).await? {
            Some(sftp) => sftp.upload_bytes(data, remote, mode).await,
            None => self.fallback(&c).upload_bytes(data, remote, mode).await,
        }
    }

    async fn download(&self, remote: &str, local: &Path, events: &EventSink) -> Result<u64, CommError> {
        let c = self.live().await?;
        match self.sftp(&c).await? {
            Some(sftp) => sftp.download(remote, local, events).await,
            None => self.fallback(&c).download(remote, local, events).await,
        }
    }

    fn boot_identity_command(&self) -> String {
        self.config
            .boot_identity_command
            .clone()
            .unwrap_or_else(|| imgbake_core::command::default_boot_identity_command(self.config.os).to_string())
    }
}

/// Attempts allowed in flight at once while none has reached a server.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 4;

/// Connect, retrying "not up yet" failures at the pace of `wait`.
///
/// Attempts to a machine that is down can hang until the banner timeout (dropped SYNs, or a port
/// forward that accepts and stays silent). Rather than wait for each to give up, a new attempt starts at
/// every poll of `wait` while no attempt in flight has reached a server (up to
/// [`MAX_ATTEMPTS_IN_FLIGHT`]); the first session wins and the rest are dropped. A machine coming back
/// is so noticed within one poll interval.
async fn connect_hedged(cfg: &SshConfig, events: &EventSink, wait: &Wait) -> Result<Session, CommError> {
    let target = cfg.target();
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Session, CommError>>();
    let last_error = std::sync::Mutex::new(String::from("connecting"));
    let mut tasks = JoinSet::new();

    let results = async {
        let mut first_auth_failure: Option<Instant> = None;
        while let Some(r) = rx.recv().await {
            match r {
                Ok(s) => return Ok(s),
                Err(e) if e.is_not_up() => {
                    if let Ok(mut l) = last_error.lock() {
                        *l = e.to_string();
                    }
                }
                // A first boot may reject the key until cloud-init has installed it (`auth_grace`).
                Err(e @ CommError::Auth { .. })
                    if first_auth_failure.get_or_insert_with(Instant::now).elapsed() < cfg.auth_grace =>
                {
                    if let Ok(mut l) = last_error.lock() {
                        *l = format!(
                            "{e} (retrying for up to {:?}: the login key may not be installed yet)",
                            cfg.auth_grace
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Every sender is kept alive by the spawner below, so the channel does not close first.
        std::future::pending().await
    };
    // Per attempt in flight: (when it reached a server, finished).
    let mut attempts: Vec<(Arc<OnceLock<Instant>>, Arc<AtomicBool>)> = Vec::new();
    // An attempt that reached a server but makes no progress for this long (the machine died under
    // its handshake) no longer holds back a fresh one.
    let stalled = cfg.banner_timeout * 3;
    let what = format!("SSH on {target}");
    let spawner = wait::until(wait, &what, || {
        attempts.retain(|(_, done)| !done.load(Ordering::SeqCst));
        // Hedge only while no attempt is talking to a live server: never two handshakes with one.
        let talking = attempts.iter().any(|(r, _)| r.get().is_some_and(|at| at.elapsed() < stalled));
        if attempts.len() < MAX_ATTEMPTS_IN_FLIGHT && !talking {
            let (reached, done) = (Arc::new(OnceLock::new()), Arc::new(AtomicBool::new(false)));
            attempts.push((reached.clone(), done.clone()));
            let (cfg, events, tx) = (cfg.clone(), events.clone(), tx.clone());
            tasks.spawn(async move {
                let result = attempt(&cfg, &events, &reached).await;
                done.store(true, Ordering::SeqCst);
                let _ = tx.send(result);
            });
        }
        let state = last_error.lock().map(|l| l.clone()).unwrap_or_default();
        async move { Poll::<Infallible, Infallible>::Pending(state) }
    });
    let outcome = tokio::select! {
        r = results => r,
        t = spawner => match t {
            Ok(never) | Err(WaitError::Failed(never)) => match never {},
            Err(WaitError::TimedOut { waited, last_state, .. }) => {
                Err(CommError::ConnectTimeout { target: target.clone(), waited, last_error: last_state })
            }
        },
    };
    // Losers: stop them, and close any session that made it in the meantime.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    rx.close();
    while let Ok(r) = rx.try_recv() {
        if let Ok(s) = r {
            s.close().await;
        }
    }
    outcome
}
