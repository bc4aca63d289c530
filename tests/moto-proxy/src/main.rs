//! `imgbake-moto-proxy`: the proxy as a process, for benchmarks against other tools (Packer).
//!
//! Prints `listening on http://127.0.0.1:PORT` once ready; runs until SIGINT or SIGTERM, then writes
//! the report (calls, transitions) as JSON to `--report` if given. `GET /_proxy/report` returns the
//! same report while it runs; `POST /_proxy/reset`, `/_proxy/delays` and `/_proxy/faults` change it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use imgbake_moto_proxy::{Delays, MotoProxy};

#[derive(Parser)]
#[command(about = "A proxy in front of moto: pending states, injected faults, call counts")]
struct Args {
    /// moto's endpoint, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    upstream: String,
    /// Address to listen on (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How long new instances stay `pending`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    instance_pending: Duration,
    /// How long stopped instances stay `stopping`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    instance_stopping: Duration,
    /// How long terminated instances stay `shutting-down`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    instance_shutting_down: Duration,
    /// How long new AMIs stay `pending`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    image_pending: Duration,
    /// Fast EBS mode: answer this block size to StartSnapshot and take PutSnapshotBlock in the proxy
    /// (AWS: 524288; moto's own 512-byte blocks go at ~500 requests/s).
    #[arg(long)]
    ebs_block_size: Option<u32>,
    /// Write the report here on exit.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let proxy = match MotoProxy::start_on(&args.upstream, args.listen).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("imgbake-moto-proxy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    proxy.set_delays(Delays {
        instance_pending: args.instance_pending,
        instance_stopping: args.instance_stopping,
        instance_shutting_down: args.instance_shutting_down,
        image_pending: args.image_pending,
    });
    proxy.ebs_block_size(args.ebs_block_size);
    println!("listening on {}", proxy.endpoint());
    let _ = std::io::stdout().flush();

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("imgbake-moto-proxy: cannot watch SIGTERM: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let report = proxy.report();
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("imgbake-moto-proxy: cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    eprintln!("imgbake-moto-proxy: {} calls", report.total_calls);
    std::process::ExitCode::SUCCESS
}
