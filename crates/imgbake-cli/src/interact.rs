//! The person at the terminal: breakpoints and "what now?" after a failed step.

use std::io::{BufRead, Write};

use imgbake::core::provision::{BreakpointInfo, FailureChoice, Interaction, StepFailure};

/// Asks on stderr, reads answers from stdin.
pub struct Terminal;

fn read_line() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().lock().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim().to_lowercase()),
    }
}

#[async_trait::async_trait]
impl Interaction for Terminal {
    fn is_interactive(&self) -> bool {
        true
    }

    async fn breakpoint(&self, info: BreakpointInfo) {
        eprintln!("\n⏸  {} paused before {} (step {})", info.image, info.step, info.index);
        if !info.message.is_empty() {
            eprintln!("   {}", info.message);
        }
        eprintln!("   reach the machine with: {}", info.ssh_command());
        eprint!("   press Enter to continue ");
        let _ = std::io::stderr().flush();
        let _ = tokio::task::spawn_blocking(read_line).await;
    }

    async fn on_failure(&self, f: &StepFailure) -> FailureChoice {
        eprintln!("\n✗ {}: step {} ({}) failed after {} attempt(s): {}", f.image, f.index, f.step, f.attempts, f.error);
        eprintln!("  the machine is still up: {}", f.target);
        loop {
            eprint!("  [c]lean up, [a]bort and keep the machine, or [r]etry the step? ");
            let _ = std::io::stderr().flush();
            let answer = tokio::task::spawn_blocking(read_line).await.ok().flatten();
            match answer.as_deref() {
                None => return FailureChoice::Cleanup,
                Some("c" | "cleanup" | "clean") => return FailureChoice::Cleanup,
                Some("a" | "abort") => return FailureChoice::Abort,
                Some("r" | "retry") => return FailureChoice::Retry,
                Some(_) => continue,
            }
        }
    }
}
