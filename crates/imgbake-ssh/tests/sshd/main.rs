//! The SSH communicator against the bed's real OpenSSH sshd (and a few servers of our own making):
//! exec, files, authentication, host keys, keepalives, and the reboot state machine made fast by
//! "rebooting" sshd itself.

mod auth;
mod exec;
mod files;
mod lifetime;
mod reboot_fast;
mod support;
