//! `powershell_dsc`: compile a PowerShell DSC configuration on the Windows machine and apply it.
//!
//! 1. The configuration script (a `.ps1` defining `Configuration NAME`) and its optional data (`.psd1`)
//!    are uploaded to `staging_dir`; local module directories go to
//!    `C:/Program Files/WindowsPowerShell/Modules` (where the LCM, running as SYSTEM, finds them).
//! 2. A generated script ([`script`]) installs the Gallery `modules` whose version is missing
//!    (`Install-Module -Name X -RequiredVersion Y`), dot-sources the configuration, runs it to write the
//!    MOFs into `staging_dir/mof`, applies them with `Start-DscConfiguration -Path … -Wait -Verbose
//!    -Force`, optionally checks with `Test-DscConfiguration -Detailed`, and ends with one result line
//!    ([`RESULT_PREFIX`] and JSON) saying whether the LCM wants a reboot (its `LCMState` is
//!    `PendingReboot` after a resource set `$global:DSCMachineStatus = 1`) and whether the node is in
//!    the desired state.
//! 3. A reboot the LCM asked for is done by imgbake, watched by the boot identity like a `reboot` step
//!    (see [`super::reboot::restart`]), and the configuration applied again (without compiling) — up to
//!    `max_rounds` rounds, like `windows_update`. An LCM with `RebootNodeIfNeeded = $true` reboots by
//!    itself: the connection drops under the round, the new boot identity is noticed, and the round
//!    runs again on the new boot.
//! 4. Resources not in the desired state after the last round (with `test = true`) fail the step; the
//!    staging directory is removed unless `keep_staging = true`.
//!
//! The generating functions are public so their output can be checked (golden files and a PowerShell
//! grammar in this crate's tests); none of it runs on real Windows in imgbake's CI.

use imgbake_config::{OnReboot, Os, PowershellDsc};
use serde::Deserialize;

use super::Ctx;
use super::cm::{Upload, clean_up, file_name, staging, upload_all};
use super::powershell::{Run, invocation, run_invocation, script_file};
use super::remote::{Ran, RebootPolicy, remote_join};
use crate::command::quote;
use crate::error::{BuildError, ErrorKind};
use crate::reboot::RebootOptions;

/// Where everything goes when `staging_dir` is not set.
pub const DEFAULT_STAGING: &str = "C:/Windows/Temp/imgbake-dsc";

/// Where uploaded module directories go: on `PSModulePath` for every user, SYSTEM (the LCM) included.
pub const MODULES_DIR: &str = "C:/Program Files/WindowsPowerShell/Modules";

/// The start of the script's result line.
pub const RESULT_PREFIX: &str = "imgbake-dsc: ";

/// Apply rounds when `max_rounds` is not set.
pub const DEFAULT_MAX_ROUNDS: u32 = 5;

/// What one round reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RoundResult {
    /// The LCM waits for a reboot to go on.
    pub reboot_required: bool,
    /// `Test-DscConfiguration` said so (`None`: not tested).
    pub in_desired_state: Option<bool>,
    /// The resources that are not (with `test = true`).
    pub not_in_desired_state: Vec<String>,
}

/// Find the result line in the script's output (the last one wins).
pub fn parse_result(output: &str) -> Option<RoundResult> {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(RESULT_PREFIX.trim_end()))
        .and_then(|json| serde_json::from_str(json.trim()).ok())
}

/// The configuration's name: `configuration_name`, else the script's file name without `.ps1`.
pub fn configuration_name(d: &PowershellDsc) -> String {
    d.configuration_name.clone().unwrap_or_else(|| {
        let name = file_name(d.configuration.get_ref());
        match name.rsplit_once('.') {
            Some((stem, ext)) if ext.eq_ignore_ascii_case("ps1") => stem.to_string(),
            _ => name,
        }
    })
}

/// Everything a `powershell_dsc` step sends, decided before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The staging directory on the machine.
    pub staging: String,
    /// The local files and directories and where they go.
    pub uploads: Vec<Upload>,
    /// The generated script.
    pub script: String,
    /// Its remote path.
    pub script_path: String,
}

/// Plan a `powershell_dsc` step.
pub fn plan(d: &PowershellDsc) -> Plan {
    let staging = staging(Os::Windows, d.staging_dir.as_deref(), DEFAULT_STAGING, DEFAULT_STAGING);
    let configuration = remote_join(&staging, &file_name(d.configuration.get_ref()));
    let mut uploads = vec![Upload {
        source: d.configuration.clone(),
        what: format!("the DSC configuration ({})", d.configuration.get_ref()),
        remote: configuration.clone(),
    }];
    let data = d.configuration_data.as_ref().map(|c| {
        let remote = remote_join(&staging, &file_name(c.get_ref()));
        uploads.push(Upload {
            source: c.clone(),
            what: format!("the configuration data ({})", c.get_ref()),
            remote: remote.clone(),
        });
        remote
    });
    for m in &d.module_paths {
        uploads.push(Upload {
            source: m.clone(),
            what: format!("the module {}", m.get_ref()),
            remote: remote_join(MODULES_DIR, &file_name(m.get_ref())),
        });
    }
    let script = script(&Script {
        name: &configuration_name(d),
        configuration: &configuration,
        data: data.as_deref(),
        modules: &d.modules.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>(),
        mof_dir: &remote_join(&staging, "mof"),
    });
    Plan { script_path: remote_join(&staging, "imgbake-dsc.ps1"), staging, uploads, script }
}

/// What [`script`] is made of.
pub struct Script<'a> {
    /// The configuration's name.
    pub name: &'a str,
    /// The configuration script on the machine.
    pub configuration: &'a str,
    /// The configuration data on the machine.
    pub data: Option<&'a str>,
    /// Gallery modules (name, version).
    pub modules: &'a [(String, String)],
    /// Where the MOFs go.
    pub mof_dir: &'a str,
}

/// The generated script. `-Compile` installs the modules and compiles (the first round); `-Test` runs
/// `Test-DscConfiguration` after applying.
pub fn script(s: &Script<'_>) -> String {
    let q = |v: &str| quote(Os::Windows, v);
    let mut out = format!(
        "# Generated by imgbake: compiles the DSC configuration {name} and applies it.\r\n\
         param([switch]$Compile, [switch]$Test)\r\n\
         $ErrorActionPreference = 'Stop'\r\n\
         $ProgressPreference = 'SilentlyContinue'\r\n\
         $name = {qname}\r\n\
         $mof = {mof}\r\n\
         if ($Compile) {{\r\n",
        name = s.name,
        qname = q(s.name),
        mof = q(s.mof_dir),
    );
    if !s.modules.is_empty() {
        out.push_str("    $modules = @(\r\n");
        for (name, version) in s.modules {
            out.push_str(&format!("        @{{ Name = {}; Version = {} }}\r\n", q(name), q(version)));
        }
        out.push_str(
            "    )\r\n\
             \x20   foreach ($m in $modules) {\r\n\
             \x20       $have = Get-Module -ListAvailable -Name $m.Name | Where-Object { $_.Version -eq [version]$m.Version }\r\n\
             \x20       if (-not $have) {\r\n\
             \x20           Write-Output \"imgbake: installing module $($m.Name) $($m.Version)\"\r\n\
             \x20           # Install-Module needs the NuGet provider; asking for it interactively would hang.\r\n\
             \x20           if (-not (Get-PackageProvider -ListAvailable -Name NuGet -ErrorAction SilentlyContinue)) {\r\n\
             \x20               Install-PackageProvider -Name NuGet -MinimumVersion 2.8.5.201 -Force | Out-Null\r\n\
             \x20           }\r\n\
             \x20           Install-Module -Name $m.Name -RequiredVersion $m.Version -Scope AllUsers -Force -AllowClobber\r\n\
             \x20       }\r\n\
             \x20   }\r\n",
        );
    }
    out.push_str(&format!(
        "    Write-Output \"imgbake: compiling configuration $name\"\r\n\
         \x20   if (Test-Path -LiteralPath $mof) {{ Remove-Item -LiteralPath $mof -Recurse -Force }}\r\n\
         \x20   . {configuration}\r\n\
         \x20   $params = @{{ OutputPath = $mof }}\r\n",
        configuration = q(s.configuration),
    ));
    if let Some(data) = s.data {
        out.push_str(&format!("    $params.ConfigurationData = {}\r\n", q(data)));
    }
    out.push_str(
        "    & $name @params | Out-Null\r\n\
         \x20   if (-not (Get-ChildItem -LiteralPath $mof -Filter '*.mof')) { throw \"configuration $name wrote no MOF to $mof\" }\r\n\
         }\r\n\
         Write-Output \"imgbake: applying configuration $name\"\r\n\
         Start-DscConfiguration -Path $mof -Wait -Verbose -Force 4>&1\r\n\
         # A resource that set $global:DSCMachineStatus = 1 leaves the LCM waiting for a reboot.\r\n\
         $reboot = (Get-DscLocalConfigurationManager).LCMState -eq 'PendingReboot'\r\n\
         $result = @{ reboot_required = [bool]$reboot; in_desired_state = $null; not_in_desired_state = @() }\r\n\
         if ($Test -and -not $reboot) {\r\n\
         \x20   $t = Test-DscConfiguration -Detailed\r\n\
         \x20   $result.in_desired_state = [bool]$t.InDesiredState\r\n\
         \x20   $result.not_in_desired_state = @($t.ResourcesNotInDesiredState | ForEach-Object { [string]$_.ResourceId })\r\n\
         }\r\n\
         Write-Output ('imgbake-dsc: ' + ($result | ConvertTo-Json -Compress))\r\n\
         exit 0\r\n",
    );
    out
}

/// The arguments of round `round`.
pub fn arguments(round: u32, test: bool) -> String {
    let mut a = Vec::new();
    if round == 1 {
        a.push("-Compile");
    }
    if test {
        a.push("-Test");
    }
    a.join(" ")
}

pub(crate) async fn run(cx: &Ctx<'_>, d: &PowershellDsc) -> Result<(), BuildError> {
    if cx.os() != Os::Windows {
        return Err(
            cx.fail(ErrorKind::Config, "powershell_dsc runs on Windows machines: set communicator.os = \"windows\"")
        );
    }
    let plan = plan(d);
    let execute_command = cx.execute_command(d.execute_command.as_ref());
    let result = apply(cx, d, &plan, &execute_command).await;
    clean_up(cx, &plan.staging, d.keep_staging, &[], &execute_command).await;
    result
}

async fn apply(
    cx: &Ctx<'_>,
    d: &PowershellDsc,
    plan: &Plan,
    execute_command: &Option<String>,
) -> Result<(), BuildError> {
    upload_all(cx, &plan.staging, &plan.uploads).await?;
    let content = script_file(plan.script.as_bytes());
    cx.transfer("uploading the DSC script", || cx.comm.upload_bytes(&content, &plan.script_path, 0o600)).await?;
    let run = Run {
        scripts: Vec::new(),
        env: Vec::new(),
        execute_command: execute_command.clone(),
        valid: vec![0],
        // An LCM with RebootNodeIfNeeded reboots by itself: the round is then applied again.
        policy: RebootPolicy { expect_reboot: false, on_reboot: OnReboot::Rerun },
        remote_dir: Some(plan.staging.clone()),
        elevated: d.elevated,
    };
    let reboot_opts = RebootOptions {
        execute_command: cx.image.communicator.execute_command.clone(),
        probe: cx.platform.clone(),
        timeout: cx.bounded(super::remote::REBOOT_TIMEOUT),
        ..RebootOptions::default()
    };
    let max_rounds = d.max_rounds.unwrap_or(DEFAULT_MAX_ROUNDS).max(1);
    // Compile once; later rounds apply the MOFs already in the staging directory.
    let mut compiled = false;
    for round in 1..=max_rounds {
        let args = arguments(if compiled { 2 } else { 1 }, d.test);
        let ran = run_invocation(cx, &run, &plan.staging, &invocation(&plan.script_path, &args), true).await?;
        let out = match ran {
            (Ran::Exited(out), _) => out,
            (Ran::Rebooted | Ran::Rerun, _) => {
                cx.events.warn(format!(
                    "the machine rebooted during DSC round {round} (the LCM's RebootNodeIfNeeded?); applying again"
                ));
                continue;
            }
        };
        cx.check_exit("the DSC configuration", &out, &[0])?;
        compiled = true;
        let Some(result) = parse_result(&String::from_utf8_lossy(&out.stdout)) else {
            return Err(cx.fail(
                ErrorKind::Step,
                format!(
                    "the DSC script printed no result line (`{}{{...}}`); see its output above",
                    RESULT_PREFIX.trim_end()
                ),
            ));
        };
        if result.reboot_required {
            if round == max_rounds {
                break;
            }
            cx.events.info(format!("DSC round {round}: the LCM asks for a reboot; rebooting"));
            super::reboot::restart(cx, &reboot_opts).await?;
            continue;
        }
        if result.in_desired_state == Some(false) {
            return Err(cx.fail(
                ErrorKind::Step,
                format!(
                    "Test-DscConfiguration: the machine is not in the desired state after applying ({})",
                    if result.not_in_desired_state.is_empty() {
                        "no resource named".to_string()
                    } else {
                        result.not_in_desired_state.join(", ")
                    }
                ),
            ));
        }
        cx.events.info(format!("DSC configuration applied in {round} round(s)"));
        return Ok(());
    }
    Err(cx.fail(
        ErrorKind::Step,
        format!(
            "the LCM still asked for a reboot after {max_rounds} DSC rounds; raise `max_rounds` if the configuration needs more"
        ),
    ))
}
