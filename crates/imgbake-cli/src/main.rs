//! `imgbake`: argument parsing and rendering only; the work is in the `imgbake` library.

mod args;
mod audit;
mod channels;
mod commands;
mod interact;
mod output;
mod signals;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    output::init_logging(cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
