//! imgbake's local test bed: real servers on loopback for every test of the project.
//!
//! - [`Moto`]: a private `moto_server` (AWS API) on a free port; with feature `aws` (default)
//!   [`Moto::sdk_config`], [`Moto::ec2_client`] and [`Moto::register_image`].
//! - [`Sshd`]: a private OpenSSH sshd as root, with generated host and client keys;
//!   [`Sshd::stop`] / [`Sshd::start_again`] / [`Sshd::kill_sessions`] simulate outages.
//! - [`QemuGuest`]: a tiny Linux guest under QEMU/TCG that really reboots (new boot id each
//!   boot), runs reboot chains by itself, and can be frozen through QMP.
//! - [`Vcsim`]: govmomi's vCenter simulator (vSphere SOAP API) over TLS with a certificate of
//!   its own ([`Vcsim::ca_file`]), logging the SOAP method of every request ([`Vcsim::requests`]).
//! - [`Nginx`]: Debian's nginx with WebDAV `PUT`/`DELETE` on a temp root ([`Nginx::root`]),
//!   optional basic auth, and an access log ([`Nginx::access_log`]): the bed's artifact store.
//! - [`Vagrant`]: Debian's real Vagrant with its own `VAGRANT_HOME`, no Vagrantfile, no TTY and a
//!   hard timeout per run, for `vagrant box add/outdated/update` against a served catalog.
//! - [`Chromium`]: Debian's Chromium, headless, with its own profile and a hard timeout per run,
//!   for checking pages (the HTML build report) in a real browser.
//!
//! Everything is installed by `tests/bed/install.sh` (see `tests/bed/README.md`); when
//! something is missing, constructors fail with [`BedError::NotInstalled`] saying so.
//!
//! Every process is started through [`spawn_guarded`]: own process group,
//! `PR_SET_PDEATHSIG=SIGKILL`, and its whole process tree killed when the guard (or the
//! server owning it) is dropped. Readiness is polled with backoff under a deadline.
//!
//! ```no_run
//! use imgbake_testbed::{Moto, Sshd, SshTarget, ssh_output};
//! # async fn demo() -> imgbake_testbed::Result<()> {
//! let moto = Moto::start().await?;
//! let ec2 = moto.ec2_client("eu-west-1").await;
//! let ami = moto.register_image("eu-west-1", "source-image", &[("role", "base")]).await?;
//!
//! let sshd = Sshd::start().await?;
//! let out = ssh_output(&sshd, "echo hi").await?;
//! assert_eq!(out.stdout, b"hi\n");
//! # let _ = (ec2, ami); Ok(()) }
//! ```

#[cfg(feature = "aws")]
mod aws;
mod chromium;
mod error;
mod http;
mod keys;
mod moto;
mod nginx;
mod paths;
mod poll;
mod port;
/// PowerShell syntax checks (feature `powershell`).
#[cfg(feature = "powershell")]
pub mod powershell;
mod process;
mod qemu;
mod qmp;
mod ssh_target;
mod sshd;
mod state_disk;
mod vagrant;
mod vcsim;

#[cfg(feature = "aws")]
pub use aws::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, http_client};
pub use chromium::{Chromium, chromium_binary};
pub use error::{BedError, Result};
pub use keys::{KeyKind, KeyPair, generate_key, public_key_without_comment};
pub use moto::{Moto, MotoOptions};
pub use nginx::{Nginx, NginxOptions};
pub use paths::{ansible_bin_dir, bed_dir, cache_dir, guest_dir, repo_root, venv_dir};
pub use poll::{Backoff, read_ssh_banner, wait_for_port, wait_ssh_banner};
pub use port::free_port;
pub use process::{ChildGuard, descendants, pid_alive, spawn_guarded};
pub use qemu::{GuestOptions, Nic, QemuGuest};
pub use ssh_target::{SshTarget, known_hosts_line, ssh_output};
pub use sshd::{Sshd, SshdOptions};
pub use state_disk::RebootChain;
pub use vagrant::{Vagrant, VagrantOutput, vagrant_binary};
pub use vcsim::{Vcsim, VcsimOptions, vcsim_binary};
