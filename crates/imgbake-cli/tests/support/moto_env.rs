//! An `imgbake` process on the bed's moto: its dummy credentials, and nothing from the host's AWS
//! setup (profiles, config files, instance metadata), so tests stay hermetic.

// Each test crate uses part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// `imgbake ARGS`, run in `dir` against moto, without colours.
pub fn imgbake(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbake"));
    c.args(args).current_dir(dir);
    on_moto(&mut c);
    c
}

/// Give `c` moto's credentials only, and no colours.
pub fn on_moto(c: &mut Command) -> &mut Command {
    c.env("AWS_ACCESS_KEY_ID", imgbake_testbed::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", imgbake_testbed::SECRET_ACCESS_KEY)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
}
