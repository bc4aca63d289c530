//! imgbake's core (work in progress): traits, events, waiters.

pub mod artifact;
pub mod cleanup;
pub mod command;
pub mod communicator;
pub mod error;
pub mod event;
pub mod provision;
pub mod reboot;
pub mod wait;
