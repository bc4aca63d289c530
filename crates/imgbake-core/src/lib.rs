//! # imgbake-core
//!
//! The platform-independent heart of imgbake: the traits every builder and communicator implements,
//! and the machinery they share.
//!
//! | module | what |
//! |---|---|
//! | [`builder`] | the [`Builder`](builder::Builder) trait and the build phases core drives ([`Build`](builder::Build), [`run`](builder::run)), [`BuildJob`](builder::BuildJob), [`Provision`](builder::Provision), the one removal path [`remove`](builder::remove), journal [`unwind`](builder::unwind) |
//! | [`communicator`], [`command`] | the [`Communicator`](communicator::Communicator) trait; building command lines (env, workdir, `execute_command`) per OS |
//! | [`reboot`] | reboots and unplanned disconnects judged by the machine's boot identity |
//! | [`provision`] | the step runner: shell, file, powershell, reboot, windows_update, test, local, breakpoint |
//! | [`wait`] | the one generic waiter: backoff, timeouts, terminal states, N successes in a row |
//! | [`event`] | the typed event stream (with secret redaction) every stage reports to |
//! | [`cleanup`] | the fsynced undo journal of every resource a build creates |
//! | [`fingerprint`], [`plan`] | what an artifact was built from; reuse or build, and why |
//! | [`schedule`], [`manifest`] | running a plan: parents first, branches in parallel, cleanup on every path |
//! | [`prune`], [`clean`] | deleting old artifacts; removing what interrupted builds left |
//! | [`channel`], [`promote`] | release channels (`candidate`, `stable`...): pointers, history, policies, rollback |
//! | [`audit`] | running machines built from superseded images (lineage, deadline) |
//! | [`artifact`], [`error`], [`registry`] | the result of a build; errors; builders by kind |
//!
//! Planning and building a tree with the builders you register:
//!
//! ```no_run
//! use imgbake_config::{LoadOptions, Schemas, Tree};
//! use imgbake_core::event::EventSink;
//! use imgbake_core::plan::{PlanOptions, plan};
//! use imgbake_core::registry::Registry;
//! use imgbake_core::schedule::{RunOptions, run};
//!
//! // `schemas`: the builders' tree-file parts (`imgbake::schemas()` has this build's).
//! # async fn example(registry: Registry, schemas: Schemas) -> Result<(), Box<dyn std::error::Error>> {
//! let tree = Tree::load("images/tree.toml".as_ref(), &LoadOptions { schemas, ..Default::default() })?;
//! let (events, mut stream) = EventSink::channel();
//! tokio::spawn(async move {
//!     while let Some(e) = stream.recv().await {
//!         println!("{}", serde_json::to_string(&e).unwrap_or_default());
//!     }
//! });
//! let plan = plan(&tree, &registry, &PlanOptions::default(), &events).await?;
//! let summary = run(&tree, &plan, &registry, RunOptions::default(), &events).await?;
//! assert!(summary.ok());
//! # Ok(()) }
//! ```

pub mod artifact;
pub mod audit;
pub mod builder;
pub mod channel;
pub mod clean;
pub mod cleanup;
pub mod command;
pub mod communicator;
pub mod error;
pub mod event;
pub mod fingerprint;
pub mod lease;
pub mod manifest;
pub mod plan;
pub mod promote;
pub mod provision;
pub mod prune;
pub mod reboot;
pub mod registry;
pub mod sanitize;
pub mod schedule;
pub mod ssh_access;
pub mod wait;
