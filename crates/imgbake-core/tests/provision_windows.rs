//! What imgbake sends to Windows machines, checked without Windows: the generated PowerShell (the
//! elevated runner and launcher, the composed command of a script run, the Windows Update arguments,
//! the pending-reboot check) against golden files, and every script — generated ones and the shipped
//! `provisioners/windows/windows-update.ps1` — through a PowerShell grammar (tree-sitter-powershell),
//! which must find no syntax error. None of it runs on real Windows here (see docs/steps.md).
//!
//! `IMGBAKE_BLESS=1 cargo test -p imgbake-core --test provision_windows` rewrites the golden files.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use imgbake_config::{Os, WindowsUpdate};
use imgbake_core::command::{compose, env_file, powershell_script, sourcing_env};
use imgbake_core::communicator::ExecRequest;
use imgbake_core::provision::{powershell, windows_update};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provision_golden")
}

/// Compare `actual` with the golden file `name` (or write it with IMGBAKE_BLESS=1).
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("IMGBAKE_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (IMGBAKE_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the generated text:\n--- golden\n{expected}\n--- generated\n{actual}",
        path.display()
    );
}

use imgbake_testbed::powershell::syntax_errors;

fn assert_parses(what: &str, script: &str) {
    let errors = syntax_errors(script);
    assert!(errors.is_empty(), "{what}: PowerShell syntax errors at {errors:?}\n{script}");
}

fn sample_elevated() -> powershell::Elevated {
    let invocation = powershell::invocation("C:/Windows/Temp/imgbake-win-2-script1-0a1b2c3d.ps1", "");
    let env =
        vec![("APP_MODE".to_string(), "prod".to_string()), ("QUOTED".to_string(), "it's \"here\" $notvar".to_string())];
    powershell::elevated("C:/Windows/Temp", "imgbake-win-2-elevated-0a1b2c3d", &invocation, &env)
}

#[test]
fn elevated_runner_and_launcher_match_their_golden_files_and_parse() {
    let e = sample_elevated();
    assert_eq!(e.runner_path, "C:/Windows/Temp/imgbake-win-2-elevated-0a1b2c3d-runner.ps1");
    assert_eq!(e.launcher_path, "C:/Windows/Temp/imgbake-win-2-elevated-0a1b2c3d-launcher.ps1");
    assert_eq!(e.log_path, "C:/Windows/Temp/imgbake-win-2-elevated-0a1b2c3d.log");
    assert_eq!(e.task, "imgbake-win-2-elevated-0a1b2c3d");
    golden("elevated-runner.ps1", &e.runner);
    golden("elevated-launcher.ps1", &e.launcher);
    assert_parses("elevated runner", &e.runner);
    assert_parses("elevated launcher", &e.launcher);
    // The environment is set in the runner, quoted for PowerShell (no expansion of `$notvar`).
    assert!(e.runner.contains("$env:QUOTED = 'it''s \"here\" $notvar'\r\n"), "{}", e.runner);
    // The task runs the runner file, and the launcher cleans up after it.
    assert!(e.launcher.contains(r#"-File "C:/Windows/Temp/imgbake-win-2-elevated-0a1b2c3d-runner.ps1""#));
    assert!(e.launcher.contains("Unregister-ScheduledTask -TaskName $task"));
}

/// Decode `powershell.exe ... -EncodedCommand B64` back to the script.
fn decode(command: &str) -> String {
    let b64 = command.rsplit(' ').next().unwrap();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let units: Vec<u16> = raw.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).unwrap()
}

#[test]
fn a_script_run_composes_to_the_golden_command_and_parses() {
    // What a non-elevated powershell step sends for its uploaded script: the environment is in a file
    // the script dot-sources and deletes first, so no value is on the command line.
    let env_path = "C:/Windows/Temp/imgbake-win-1-env-0a1b2c3d.ps1";
    let req = ExecRequest {
        command: sourcing_env(
            Os::Windows,
            env_path,
            &powershell::invocation("C:/Windows/Temp/imgbake-win-1-script1-0a1b2c3d.ps1", ""),
        ),
        ..ExecRequest::default()
    };
    let composed = compose(Os::Windows, &req).unwrap();
    assert!(composed.starts_with("powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "));
    let script = decode(&composed);
    assert_eq!(script, powershell_script(&req));
    golden("script-run.ps1", &script);
    assert_parses("composed script run", &script);
    // cmd.exe (OpenSSH's default shell on Windows) takes at most 8191 characters.
    assert!(composed.len() < 8191, "{}", composed.len());
}

#[test]
fn the_environment_file_matches_its_golden_file_parses_and_keeps_values_literal() {
    let env = vec![
        ("APP_MODE".to_string(), "prod".to_string()),
        ("QUOTED".to_string(), "it's \"here\" $notvar `n".to_string()),
    ];
    let file = env_file(Os::Windows, &env).unwrap();
    golden("env-file.ps1", &file);
    assert_parses("environment file", &file);
    assert!(file.contains("$env:QUOTED = 'it''s \"here\" $notvar `n'\r\n"), "{file}");
    let composed = compose(
        Os::Windows,
        &ExecRequest {
            command: sourcing_env(Os::Windows, "C:/T/e.ps1", "Write-Output $env:QUOTED"),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!decode(&composed).contains("notvar"), "the value stays off the command line");
}

#[test]
fn the_elevated_launcher_invocation_stays_short() {
    let e = sample_elevated();
    let req = ExecRequest { command: powershell::invocation(&e.launcher_path, ""), ..ExecRequest::default() };
    let composed = compose(Os::Windows, &req).unwrap();
    assert!(composed.len() < 1000, "the launcher runs from a file, not the command line: {}", composed.len());
    assert_parses("launcher invocation", &decode(&composed));
}

#[test]
fn uploaded_scripts_get_a_utf8_bom_once() {
    let f = powershell::script_file("Write-Output 'é'".as_bytes());
    assert_eq!(&f[..3], &[0xEF, 0xBB, 0xBF]);
    assert_eq!(powershell::script_file(&f), f, "an existing BOM is not doubled");
}

#[test]
fn the_pending_reboot_check_parses() {
    golden("pending-reboot-check.ps1", powershell::PENDING_REBOOT_CHECK);
    assert_parses("PENDING_REBOOT_CHECK", powershell::PENDING_REBOOT_CHECK);
}

#[test]
fn windows_update_script_and_its_invocation() {
    assert_parses("provisioners/windows/windows-update.ps1", windows_update::SCRIPT);
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../provisioners/windows/windows-update.ps1"),
    )
    .unwrap();
    assert_eq!(windows_update::SCRIPT, shipped, "imgbake runs the shipped script");
    // The parameters imgbake passes exist in the script.
    assert!(
        windows_update::SCRIPT.contains("[string]$SearchCriteria")
            && windows_update::SCRIPT.contains("[string[]]$Exclude")
    );
    assert!(windows_update::SCRIPT.contains(windows_update::RESULT_PREFIX.trim_end()));

    let w = WindowsUpdate {
        search_criteria: Some("IsInstalled=0 and Type='Software'".into()),
        exclude: vec!["*Preview*".into(), "Microsoft Silverlight*".into()],
        max_rounds: Some(3),
    };
    let invocation = powershell::invocation(
        "C:/Windows/Temp/imgbake-win-4-windows-update-1-0a1b2c3d.ps1",
        &windows_update::arguments(&w),
    );
    let e = powershell::elevated("C:/Windows/Temp", "imgbake-win-4-elevated-0a1b2c3d", &invocation, &[]);
    golden("windows-update-runner.ps1", &e.runner);
    assert_parses("windows update runner", &e.runner);
}

#[test]
fn the_result_line_the_script_prints_is_the_one_imgbake_reads() {
    // The script builds the line with ConvertTo-Json over these keys; imgbake's parser must take
    // exactly that shape (as PowerShell 5.1 prints it, compressed).
    for key in ["found", "installed", "failed", "reboot_required", "failed_titles"] {
        assert!(windows_update::SCRIPT.contains(&format!("{key} ")), "the script writes `{key}`");
    }
    let line = r#"imgbake-windows-update: {"found":3,"installed":2,"failed":1,"reboot_required":true,"failed_titles":["KB5005565"]}"#;
    let r = windows_update::parse_result(line).unwrap();
    assert_eq!((r.found, r.installed, r.failed, r.reboot_required), (3, 2, 1, true));
    assert_eq!(r.failed_titles, vec!["KB5005565"]);
}

#[test]
fn the_os_readiness_check_after_a_reboot_matches_its_golden_file_and_parses() {
    golden("windows-os-ready.ps1", imgbake_core::reboot::WINDOWS_OS_READY);
    assert_parses("WINDOWS_OS_READY", imgbake_core::reboot::WINDOWS_OS_READY);
}

#[test]
fn the_sanitize_script_matches_its_golden_file_and_parses() {
    let items = imgbake_core::sanitize::SanitizeItems {
        host_public_key: Some(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9 imgbake-b-golden".into(),
        ),
        host_key_files: vec![r"C:\ProgramData\ssh\ssh_host_ed25519_key".into()],
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab it's-the-login".into()],
        files: vec![r"C:\Windows\Temp\imgbake-o'brien.txt".into()],
    };
    let script = imgbake_core::sanitize::windows_script(&items);
    golden("sanitize.ps1", &script);
    assert_parses("sanitize.ps1", &script);
    // What the builder names arrives as literal strings, quotes doubled.
    assert!(script.contains("$hostPub = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9'"));
    assert!(script.contains("$loginKeys = @('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab')"));
    assert!(script.contains(r"foreach ($f in @('C:\Windows\Temp\imgbake-o''brien.txt'))"));
    // The mode file is the one the OpenSSH user data writes.
    let enable = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../provisioners/windows/enable-openssh.ps1"),
    )
    .unwrap();
    assert!(enable.contains(r"Join-Path $env:ProgramData 'imgbake\sshd-start-mode'"));
    assert_eq!(imgbake_core::sanitize::WINDOWS_SSHD_START_MODE_FILE, r"C:\ProgramData\imgbake\sshd-start-mode");
}
