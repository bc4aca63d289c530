//! The EC2 builder against the bed: moto behind imgbake's delaying/faulting proxy, the bed's sshd as
//! the build machine.

mod build;
mod cancel;
mod errors;
mod failures;
mod import;
mod input;
mod preflight;
mod reboot_probe;
mod scope;
mod support;
mod sweep;
mod waits;
