//! Ctrl-C and SIGTERM: the first one cancels the run (builds stop and clean up), the second exits at
//! once (the cleanup journal lets `imgbake clean` finish later). The exit code is the shell's for the
//! signal: 130 for SIGINT, 143 for SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The exit code for the first signal received (0 while none).
#[derive(Clone, Default)]
pub struct Received(Arc<AtomicU8>);

impl Received {
    /// 128 + the signal number, once a signal arrived.
    pub fn exit_code(&self) -> Option<u8> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c),
        }
    }
}

/// Watch for SIGINT/SIGTERM; cancel `token` on the first, exit on the second.
pub fn install(token: CancellationToken) -> std::io::Result<Received> {
    let received = Received::default();
    let seen = received.clone();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let (name, code) = tokio::select! {
                _ = int.recv() => ("interrupt", 128 + libc_sig::INT),
                _ = term.recv() => ("terminate", 128 + libc_sig::TERM),
            };
            let _ = seen.0.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
            count += 1;
            if count == 1 {
                eprintln!(
                    "\n{name}: stopping builds and cleaning up what they created (again to exit at once; `imgbake clean` finishes later)"
                );
                token.cancel();
            } else {
                eprintln!("\n{name} again: exiting now; run `imgbake clean TREE` to remove what is left");
                std::process::exit(i32::from(code));
            }
        }
    });
    Ok(received)
}

/// Signal numbers on Linux (the exit code is 128 + the number).
mod libc_sig {
    pub const INT: u8 = 2;
    pub const TERM: u8 = 15;
}
