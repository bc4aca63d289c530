//! Shared helpers: a communicator for a bed server, quick waits, event log polling.

use std::time::Duration;

use imgbake_core::communicator::{Communicator, ExecOutput, ExecRequest};
use imgbake_core::event::{EventKind, EventLog, EventSink};
use imgbake_core::wait::{self, Poll, Wait};
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::{SshTarget, Sshd, SshdOptions};

/// Sessions of the bed's sshd log in as root through root's login shell, which runs root's
/// dotfiles; on the development machines those run `pyenv rehash`, which waits up to 60 s for a
/// lock that a killed session leaves behind (and these tests kill sessions on purpose). A HOME
/// without dotfiles keeps every command independent of the machine's root account.
pub const NO_DOTFILES: &str = "SetEnv HOME=/nonexistent";

pub async fn sshd() -> Sshd {
    sshd_with(SshdOptions::default()).await
}

pub async fn sshd_with(mut options: SshdOptions) -> Sshd {
    options.extra_config.push(NO_DOTFILES.into());
    Sshd::start_with(options).await.expect("starting the bed's sshd (run tests/bed/install.sh if it is missing)")
}

/// Settings for a bed server: its ed25519 client key and its pinned host key.
pub fn config_for(t: &impl SshTarget) -> SshConfig {
    SshConfig::new(t.host(), t.port(), t.user())
        .with_auth(Auth::key_file(t.client_key_path()))
        .with_host_key(HostKeyPolicy::Pinned(vec![t.host_public_key().to_string()]))
}

/// A short connect wait for servers that are up.
pub fn quick() -> Wait {
    Wait::new(Duration::from_secs(30)).interval(Duration::from_millis(50), Duration::from_millis(500))
}

pub async fn connected(t: &impl SshTarget) -> SshCommunicator {
    let c = SshCommunicator::new(config_for(t));
    c.connect(&quick()).await.expect("connect to the bed's server");
    c
}

/// Run a command, capturing its output (not streamed).
pub async fn run(c: &dyn Communicator, command: &str) -> ExecOutput {
    c.exec(&ExecRequest::new(command).captured(), &EventSink::discard()).await.expect("exec")
}

/// Poll an event log until `pred` holds for some event (the "machine" side of a test reacting to what
/// the communicator reports).
pub async fn until_event(log: &EventLog, what: &str, pred: impl Fn(&EventKind) -> bool) {
    let w = Wait::new(Duration::from_secs(60)).interval(Duration::from_millis(20), Duration::from_millis(100));
    let r: Result<(), wait::WaitError<String>> = wait::until(&w, what, || {
        let hit = log.events().iter().any(|e| pred(&e.kind));
        async move { if hit { Poll::Ready(()) } else { Poll::Pending("not yet".into()) } }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}; events: {:#?}", log.events()));
}

/// A remote path inside the server's private temp dir (removed with the server).
pub fn remote_path(sshd: &Sshd, name: &str) -> String {
    sshd.dir().join(name).display().to_string()
}
