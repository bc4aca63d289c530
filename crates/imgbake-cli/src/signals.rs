//! Ctrl-C and SIGTERM: the first one cancels the run (builds stop and clean up), the second exits at
//! once (the cleanup journal lets `imgbake clean` finish later).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Watch for SIGINT/SIGTERM; cancel `token` on the first, exit with 130 on the second.
pub fn install(token: CancellationToken) -> std::io::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "interrupt",
                _ = term.recv() => "terminate",
            };
            count += 1;
            if count == 1 {
                eprintln!(
                    "\n{name}: stopping builds and cleaning up what they created (again to exit at once; `imgbake clean` finishes later)"
                );
                token.cancel();
            } else {
                eprintln!("\n{name} again: exiting now; run `imgbake clean TREE` to remove what is left");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
