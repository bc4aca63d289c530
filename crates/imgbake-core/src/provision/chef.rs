//! `chef_solo`: Chef Infra Client (or Cinc Client, its free build) in solo mode, with cookbooks, roles,
//! data bags and environments from the tree.
//!
//! 1. The client is looked for (`cinc-solo`/`chef-solo` on `PATH` or in the vendor's install directory)
//!    and installed only when missing, with `install` (default: the vendor's omnitruck installer for
//!    `flavor` and `version`).
//! 2. The local directories are uploaded under `staging_dir`, with a generated `solo.rb` pointing at
//!    them and a JSON file holding `json` (the node attributes) and the run list. The JSON file is
//!    uploaded 0600 and removed after the run in every case: attributes may hold secrets, which is
//!    also why they never go on a command line.
//! 3. The client runs with `--config solo.rb --json-attributes FILE` through `execute_command`; a
//!    non-zero exit fails the step.
//! 4. The staging directory is removed (unless `keep_staging = true`), also after a failure.
//!
//! Linux and Windows share [`plan`]; only the paths and the command language differ. The generating
//! functions are public so tests can check what is sent (there is no Chef or Cinc in imgbake's test
//! bed: neither is packaged by Debian 12 or a language registry).

use imgbake_config::{ChefFlavor, ChefSolo, Os};

use super::Ctx;
use super::cm::{Tool, Upload, clean_up, ensure_tool, staging, upload_all};
use super::remote::{Ran, RebootPolicy, remote_join};
use crate::command::quote;
use crate::communicator::ExecRequest;
use crate::error::{BuildError, ErrorKind};

/// Where everything goes on Linux when `staging_dir` is not set.
pub const DEFAULT_STAGING_LINUX: &str = "/tmp/imgbake-chef";
/// Where everything goes on Windows when `staging_dir` is not set.
pub const DEFAULT_STAGING_WINDOWS: &str = "C:/Windows/Temp/imgbake-chef";
/// `--chef-license` for `flavor = "chef"` when `chef_license` is not set (Cinc needs none).
pub const DEFAULT_CHEF_LICENSE: &str = "accept-no-persist";

/// The client of a flavor on an OS: its command and where the vendor's installer puts it.
pub struct Client {
    /// For messages.
    pub name: &'static str,
    /// The command looked up on `PATH`.
    pub command: &'static str,
    /// The full path the vendor's package installs it to.
    pub installed: &'static str,
    /// The omnitruck installer script.
    pub installer_url: &'static str,
    /// The omnitruck project name.
    pub project: &'static str,
}

/// The client for `flavor` on `os`.
pub fn client(flavor: ChefFlavor, os: Os) -> Client {
    match (flavor, os) {
        (ChefFlavor::Cinc, Os::Linux) => Client {
            name: "Cinc Client",
            command: "cinc-solo",
            installed: "/opt/cinc/bin/cinc-solo",
            installer_url: "https://omnitruck.cinc.sh/install.sh",
            project: "cinc",
        },
        (ChefFlavor::Chef, Os::Linux) => Client {
            name: "Chef Infra Client",
            command: "chef-solo",
            installed: "/opt/chef/bin/chef-solo",
            installer_url: "https://omnitruck.chef.io/install.sh",
            project: "chef",
        },
        (ChefFlavor::Cinc, Os::Windows) => Client {
            name: "Cinc Client",
            command: "cinc-solo",
            installed: "C:/cinc-project/cinc/bin/cinc-solo.bat",
            installer_url: "https://omnitruck.cinc.sh/install.ps1",
            project: "cinc",
        },
        (ChefFlavor::Chef, Os::Windows) => Client {
            name: "Chef Infra Client",
            command: "chef-solo",
            installed: "C:/opscode/chef/bin/chef-solo.bat",
            installer_url: "https://omnitruck.chef.io/install.ps1",
            project: "chef",
        },
    }
}

/// Everything a `chef_solo` step sends, decided before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The staging directory on the machine.
    pub staging: String,
    /// The local directories and where they go.
    pub uploads: Vec<Upload>,
    /// The generated `solo.rb` and its remote path.
    pub solo_rb: String,
    pub solo_rb_path: String,
    /// The attributes file (attributes plus `run_list`) and its remote path: uploaded 0600, always removed.
    pub json: String,
    pub json_path: String,
    /// The client: how to find it and install it.
    pub tool: Tool,
    /// The command that runs the client.
    pub run: String,
}

/// A Ruby string literal (single-quoted: no interpolation).
pub fn ruby_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The default install command for `flavor` on `os`: the vendor's omnitruck installer, downloaded to
/// `staging` first (piping a failed download into `sh` would "succeed" with nothing installed).
pub fn default_install(flavor: ChefFlavor, os: Os, version: Option<&str>, staging: &str) -> String {
    let c = client(flavor, os);
    match os {
        Os::Linux => {
            let script = remote_join(staging, "install.sh");
            let version = version.map(|v| format!(" -v {}", quote(os, v))).unwrap_or_default();
            format!(
                "curl -fsSL --retry 3 -o {s} {url} && sh {s} -P {p}{version}",
                s = quote(os, &script),
                url = c.installer_url,
                p = c.project
            )
        }
        Os::Windows => {
            let version = version.map(|v| format!(" -version {}", quote(os, v))).unwrap_or_default();
            // Windows PowerShell 5.1 does not offer TLS 1.2 by default.
            format!(
                "[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12; \
                 . {{ Invoke-WebRequest -UseBasicParsing -Uri {url} }} | Invoke-Expression; install -project {p}{version}",
                url = quote(os, c.installer_url),
                p = c.project
            )
        }
    }
}

/// The command that exits 0 when the client is installed.
pub fn probe(flavor: ChefFlavor, os: Os) -> String {
    let c = client(flavor, os);
    match os {
        Os::Linux => format!("command -v {} >/dev/null 2>&1 || test -x {}", c.command, quote(os, c.installed)),
        Os::Windows => format!(
            "if ((Get-Command {} -ErrorAction SilentlyContinue) -or (Test-Path -LiteralPath {})) {{ exit 0 }} else {{ exit 1 }}",
            c.command,
            quote(os, c.installed)
        ),
    }
}

/// The generated `solo.rb`.
pub fn solo_rb(c: &ChefSolo, staging: &str, cookbooks: &[String]) -> String {
    let list: Vec<String> = cookbooks.iter().map(|p| ruby_string(p)).collect();
    let mut s = String::from("# Generated by imgbake for a chef_solo step.\n");
    s.push_str(&format!("cookbook_path [{}]\n", list.join(", ")));
    if c.roles_path.is_some() {
        s.push_str(&format!("role_path {}\n", ruby_string(&remote_join(staging, "roles"))));
    }
    if c.data_bags_path.is_some() {
        s.push_str(&format!("data_bag_path {}\n", ruby_string(&remote_join(staging, "data_bags"))));
    }
    if c.environments_path.is_some() {
        s.push_str(&format!("environment_path {}\n", ruby_string(&remote_join(staging, "environments"))));
    }
    if let Some(e) = &c.environment {
        s.push_str(&format!("environment {}\n", ruby_string(e)));
    }
    // Everything the client writes stays in the staging directory, so it leaves with it.
    s.push_str(&format!("file_cache_path {}\n", ruby_string(&remote_join(staging, "cache"))));
    s.push_str(&format!("node_path {}\n", ruby_string(&remote_join(staging, "nodes"))));
    s
}

/// The attributes file: `json`, with the run list.
pub fn attributes(c: &ChefSolo) -> Result<String, serde_json::Error> {
    let mut map = serde_json::Map::new();
    for (k, v) in &c.json {
        map.insert(k.clone(), serde_json::to_value(v)?);
    }
    let run_list: Vec<&str> = c.run_list.iter().map(|r| r.get_ref().as_str()).collect();
    map.insert("run_list".into(), serde_json::to_value(run_list)?);
    serde_json::to_string_pretty(&serde_json::Value::Object(map))
}

/// The command that runs the client.
pub fn run_command(c: &ChefSolo, os: Os, solo_rb_path: &str, json_path: &str) -> String {
    let cl = client(c.flavor, os);
    let mut args =
        format!("--no-color --config {} --json-attributes {}", quote(os, solo_rb_path), quote(os, json_path));
    if c.flavor == ChefFlavor::Chef {
        let license = c.chef_license.as_deref().unwrap_or(DEFAULT_CHEF_LICENSE);
        args.push_str(&format!(" --chef-license {}", quote(os, license)));
    }
    match os {
        Os::Linux => {
            format!("c=$(command -v {} || echo {}) && \"$c\" {args}", cl.command, quote(os, cl.installed))
        }
        Os::Windows => format!(
            "$c = (Get-Command {} -ErrorAction SilentlyContinue).Source; if (-not $c) {{ $c = {} }}; & $c {args}",
            cl.command,
            quote(os, cl.installed)
        ),
    }
}

/// Plan a `chef_solo` step on `os`; `json_name` is the attributes file's (unique) name.
pub fn plan(c: &ChefSolo, os: Os, json_name: &str) -> Result<Plan, serde_json::Error> {
    let staging = staging(os, c.staging_dir.as_deref(), DEFAULT_STAGING_LINUX, DEFAULT_STAGING_WINDOWS);
    let mut uploads = Vec::new();
    let mut cookbooks = Vec::new();
    for (n, p) in c.cookbook_paths.iter().enumerate() {
        let remote = remote_join(&staging, &format!("cookbooks-{}", n + 1));
        cookbooks.push(remote.clone());
        uploads.push(Upload { source: p.clone(), what: format!("the cookbooks ({})", p.get_ref()), remote });
    }
    for (p, name) in
        [(&c.roles_path, "roles"), (&c.data_bags_path, "data_bags"), (&c.environments_path, "environments")]
    {
        if let Some(p) = p {
            uploads.push(Upload {
                source: p.clone(),
                what: format!("the {} ({})", name.replace('_', " "), p.get_ref()),
                remote: remote_join(&staging, name),
            });
        }
    }
    let solo_rb_path = remote_join(&staging, "solo.rb");
    let json_path = remote_join(&staging, json_name);
    let tool = Tool {
        name: client(c.flavor, os).name.to_string(),
        probe: probe(c.flavor, os),
        install: c.install.clone().unwrap_or_else(|| default_install(c.flavor, os, c.version.as_deref(), &staging)),
        default_install: c.install.is_none(),
    };
    Ok(Plan {
        solo_rb: solo_rb(c, &staging, &cookbooks),
        json: attributes(c)?,
        run: run_command(c, os, &solo_rb_path, &json_path),
        staging,
        uploads,
        solo_rb_path,
        json_path,
        tool,
    })
}

pub(crate) async fn run(cx: &Ctx<'_>, c: &ChefSolo) -> Result<(), BuildError> {
    let os = cx.os();
    let json_name = cx.remote_name("attributes", "json");
    let plan =
        plan(c, os, &json_name).map_err(|e| cx.fail(ErrorKind::Config, format!("the `json` attributes: {e}")))?;
    let execute_command = cx.execute_command(c.execute_command.as_ref());
    let result = apply(cx, &plan, &execute_command).await;
    clean_up(cx, &plan.staging, c.keep_staging, &[&plan.json_path], &execute_command).await;
    result
}

async fn apply(cx: &Ctx<'_>, plan: &Plan, execute_command: &Option<String>) -> Result<(), BuildError> {
    // The staging directory first: the default installer is downloaded into it.
    cx.make_remote_dir(&plan.staging).await?;
    ensure_tool(cx, &plan.tool, execute_command).await?;
    upload_all(cx, &plan.staging, &plan.uploads).await?;
    cx.transfer("uploading solo.rb", || cx.comm.upload_bytes(plan.solo_rb.as_bytes(), &plan.solo_rb_path, 0o644))
        .await?;
    cx.transfer("uploading the attributes", || cx.comm.upload_bytes(plan.json.as_bytes(), &plan.json_path, 0o600))
        .await?;
    let req = ExecRequest { command: plan.run.clone(), execute_command: execute_command.clone(), ..Default::default() };
    match cx.exec_guarded(&req, RebootPolicy::default(), &[0]).await? {
        Ran::Exited(out) => cx.check_exit(&format!("{} (solo mode)", plan.tool.name), &out, &[0]),
        Ran::Rebooted | Ran::Rerun => Ok(()),
    }
}
