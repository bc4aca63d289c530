//! `breakpoint`: pause the build until the person running it presses Enter, saying how to reach the
//! machine meanwhile. Only interactive runs and `--debug` pause; otherwise the step logs that it was
//! passed and the build goes on (so a tree with breakpoints still builds in CI).

use imgbake_config::Breakpoint;

use super::Ctx;
use crate::error::BuildError;

pub(crate) async fn run(cx: &Ctx<'_>, b: &Breakpoint) -> Result<(), BuildError> {
    let message = b.message.clone().unwrap_or_else(|| format!("breakpoint ({})", cx.label));
    let rc = &cx.runner.cx;
    if !(rc.debug || rc.interaction.is_interactive()) {
        cx.events.info(format!("breakpoint passed without pausing (not an interactive run): {message}"));
        return Ok(());
    }
    let info = cx.breakpoint_info(message);
    cx.events.info(format!(
        "paused: {}; reach the machine with `{}`; press Enter to go on",
        info.message,
        info.ssh_command()
    ));
    rc.interaction.breakpoint(info).await;
    cx.events.info("resumed");
    Ok(())
}
