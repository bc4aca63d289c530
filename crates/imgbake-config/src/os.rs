//! The operating-system family of a machine.

use serde::{Deserialize, Serialize};

/// The operating-system family of the machine being built; it picks default commands (how to read the
/// boot identity, how to reboot, which shell runs commands).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux and other POSIX systems: commands run through `sh -c`.
    #[default]
    Linux,
    /// Windows with OpenSSH Server: commands run through PowerShell.
    Windows,
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Os::Linux => "linux",
            Os::Windows => "windows",
        })
    }
}
