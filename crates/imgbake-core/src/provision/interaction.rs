//! Talking to the person running the build: breakpoints and "what now?" after a failed step.
//!
//! The CLI implements [`Interaction`] on the terminal; tests script it; [`NonInteractive`] (CI, `--json`,
//! no terminal) never waits and always cleans up.

use async_trait::async_trait;
use imgbake_config::Os;

/// Where the build paused, and how to reach the machine meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakpointInfo {
    /// The image being built.
    pub image: String,
    /// The step about to run (or the breakpoint step itself).
    pub step: String,
    /// Position of that step, from 1.
    pub index: usize,
    /// The breakpoint's message, or why the build paused (`--debug`).
    pub message: String,
    /// Who the communicator talks to (`admin@203.0.113.7:22`).
    pub target: String,
    /// The machine's OS.
    pub os: Os,
    /// The temporary private key, written to a 0600 file in debug mode.
    pub key_file: Option<std::path::PathBuf>,
}

impl BreakpointInfo {
    /// An OpenSSH command line that reaches the machine.
    pub fn ssh_command(&self) -> String {
        let (userhost, port) = match self.target.rsplit_once(':') {
            Some((uh, p)) if p.parse::<u16>().is_ok() => (uh.to_string(), p.to_string()),
            _ => (self.target.clone(), "22".to_string()),
        };
        let mut cmd = String::from("ssh");
        if port != "22" {
            cmd.push_str(&format!(" -p {port}"));
        }
        if let Some(k) = &self.key_file {
            cmd.push_str(&format!(
                " -i {} -o IdentitiesOnly=yes",
                crate::command::quote(Os::Linux, &k.display().to_string())
            ));
        }
        cmd.push(' ');
        cmd.push_str(&userhost);
        cmd
    }
}

/// A step that failed, after its retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFailure {
    /// The image being built.
    pub image: String,
    /// The step's name.
    pub step: String,
    /// Position of the step, from 1.
    pub index: usize,
    /// How many times it ran.
    pub attempts: u32,
    /// The error, secrets redacted.
    pub error: String,
    /// Who the communicator talks to, to inspect the machine before deciding.
    pub target: String,
}

/// What to do after a failed step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureChoice {
    /// Fail the build; the builder removes the machine and every temporary resource (the default).
    Cleanup,
    /// Stop here and leave the machine running for inspection (the build fails with
    /// [`ErrorKind::Aborted`](crate::error::ErrorKind::Aborted); `imgbake clean` removes it later).
    Abort,
    /// Run the step again.
    Retry,
}

/// The person running the build, if any.
#[async_trait]
pub trait Interaction: Send + Sync {
    /// Is someone there to answer? Breakpoint steps only pause when this is true (or in debug mode).
    fn is_interactive(&self) -> bool;

    /// Pause until the person says to go on (presses Enter).
    async fn breakpoint(&self, info: BreakpointInfo);

    /// A step failed: clean up, abort (keep the machine), or retry?
    async fn on_failure(&self, failure: &StepFailure) -> FailureChoice;
}

/// Nobody is there: never pause, always clean up.
#[derive(Clone, Copy, Debug, Default)]
pub struct NonInteractive;

#[async_trait]
impl Interaction for NonInteractive {
    fn is_interactive(&self) -> bool {
        false
    }

    async fn breakpoint(&self, _info: BreakpointInfo) {}

    async fn on_failure(&self, _failure: &StepFailure) -> FailureChoice {
        FailureChoice::Cleanup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(target: &str, key: Option<&str>) -> BreakpointInfo {
        BreakpointInfo {
            image: "web".into(),
            step: "shell #1".into(),
            index: 1,
            message: String::new(),
            target: target.into(),
            os: Os::Linux,
            key_file: key.map(Into::into),
        }
    }

    #[test]
    fn ssh_command_names_port_and_key() {
        assert_eq!(info("admin@10.0.0.1:22", None).ssh_command(), "ssh admin@10.0.0.1");
        assert_eq!(
            info("root@127.0.0.1:2222", Some("/tmp/my key")).ssh_command(),
            "ssh -p 2222 -i '/tmp/my key' -o IdentitiesOnly=yes root@127.0.0.1"
        );
    }
}
