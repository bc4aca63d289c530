//! The configuration-management step kinds: `chef_solo`, `puppet_apply` and `powershell_dsc`.
//!
//! Kept apart from [`crate::model`] so the step kinds other branches add there merge cleanly; they are
//! re-exported at the crate root like the rest of the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Which build of the Chef Infra Client a `chef_solo` step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChefFlavor {
    /// Cinc Client, the free build of Chef Infra Client (`cinc-solo`; default: no license to accept).
    #[default]
    Cinc,
    /// Chef Infra Client from Progress Chef (`chef-solo`; needs `chef_license`).
    Chef,
}

/// `chef_solo = { ... }`: Chef Infra Client (or Cinc) in solo mode with cookbooks from the tree.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChefSolo {
    /// `cinc` (default) or `chef`.
    #[serde(default)]
    pub flavor: ChefFlavor,
    /// The run list, e.g. `["recipe[base]", "role[web]"]`. Must not be empty.
    #[serde(default)]
    pub run_list: Vec<Spanned<String>>,
    /// Local cookbook directories, each uploaded and put on `cookbook_path`.
    #[serde(default)]
    pub cookbook_paths: Vec<Spanned<String>>,
    /// A local directory of roles.
    pub roles_path: Option<Spanned<String>>,
    /// A local directory of data bags.
    pub data_bags_path: Option<Spanned<String>>,
    /// A local directory of environments.
    pub environments_path: Option<Spanned<String>>,
    /// The Chef environment to run in (needs `environments_path`).
    pub environment: Option<String>,
    /// Node attributes, written to a JSON file (0600, deleted after the run; never on a command line).
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
    /// The command that installs the client when it is missing. Default: the vendor's install script
    /// (omnitruck) for `flavor` and `version`.
    pub install: Option<String>,
    /// The version the default install command asks for (default: the latest).
    pub version: Option<String>,
    /// `--chef-license` for `flavor = "chef"`. Default `accept-no-persist`.
    pub chef_license: Option<String>,
    /// Where cookbooks, `solo.rb` and the attributes go on the machine. Default
    /// `/tmp/imgbake-chef` (Windows `C:/Windows/Temp/imgbake-chef`).
    pub staging_dir: Option<String>,
    /// Leave the staging directory on the machine (the attributes file is removed in any case).
    #[serde(default)]
    pub keep_staging: bool,
    /// Wrapper template for the install and the run (e.g. `sudo -n sh -c {{quote command}}`).
    pub execute_command: Option<Spanned<String>>,
}

/// `puppet_apply = { ... }`: masterless Puppet with a manifest, modules and Hiera data from the tree.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PuppetApply {
    /// The local manifest file, or a directory of manifests.
    pub manifest: Spanned<String>,
    /// Local module directories, uploaded and joined into `--modulepath`.
    #[serde(default)]
    pub module_paths: Vec<Spanned<String>>,
    /// A local `hiera.yaml` (Hiera 5), passed as `--hiera_config`.
    pub hiera_config: Option<Spanned<String>>,
    /// A local directory of Hiera data, uploaded beside `hiera.yaml` under its own name (so its
    /// `datadir`, Hiera 5's default `data`, finds it as it does in the tree).
    pub hiera_data: Option<Spanned<String>>,
    /// Facts, set as `FACTER_<name>` in the run's environment (which travels in a 0600 file).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// More arguments for `puppet apply` (e.g. `["--vardir", "/var/tmp/puppet"]`).
    #[serde(default)]
    pub extra_arguments: Vec<String>,
    /// The command that installs Puppet when it is missing. Default (Debian/Ubuntu):
    /// `apt-get update` then `apt-get install -y --no-install-recommends puppet`.
    pub install: Option<String>,
    /// Where the manifest, modules and Hiera files go. Default `/tmp/imgbake-puppet`.
    pub staging_dir: Option<String>,
    /// Leave the staging directory on the machine.
    #[serde(default)]
    pub keep_staging: bool,
    /// Wrapper template for the install and the run.
    pub execute_command: Option<Spanned<String>>,
}

/// `powershell_dsc = { ... }`: compile a DSC configuration on the Windows machine and apply it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PowershellDsc {
    /// The local `.ps1` that defines `Configuration NAME`.
    pub configuration: Spanned<String>,
    /// NAME (default: the script's file name without `.ps1`).
    pub configuration_name: Option<String>,
    /// A local `.psd1` of configuration data (`-ConfigurationData`).
    pub configuration_data: Option<Spanned<String>>,
    /// Modules from the PowerShell Gallery, name → version: installed with `Install-Module -Name X
    /// -RequiredVersion Y` when that version is missing.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
    /// Local module directories, each copied into `C:/Program Files/WindowsPowerShell/Modules`.
    #[serde(default)]
    pub module_paths: Vec<Spanned<String>>,
    /// Run `Test-DscConfiguration` afterwards and fail when a resource is not in the desired state.
    #[serde(default)]
    pub test: bool,
    /// Apply rounds (each after the reboot the LCM asked for) before giving up. Default 5.
    pub max_rounds: Option<u32>,
    /// Run elevated (as a scheduled task under SYSTEM).
    #[serde(default)]
    pub elevated: bool,
    /// Where the script, data and MOFs go. Default `C:/Windows/Temp/imgbake-dsc`.
    pub staging_dir: Option<String>,
    /// Leave the staging directory (with the MOFs) on the machine.
    #[serde(default)]
    pub keep_staging: bool,
    /// Wrapper template for the PowerShell invocation.
    pub execute_command: Option<Spanned<String>>,
}

/// Offline checks of the configuration-management steps (called from [`crate::validate`]).
pub(crate) mod check {
    use toml::Spanned;

    use super::{ChefSolo, PowershellDsc, PuppetApply};
    use crate::Tree;
    use crate::diag::Diagnostic;
    use crate::load::span_of;
    use crate::source::Span;
    use crate::validate::{local_path, template_check};

    /// A local path that must be a directory (cookbooks, modules, Hiera data).
    fn local_dir(tree: &Tree, p: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) {
        let before = diags.len();
        local_path(tree, p, what, true, diags);
        if diags.len() == before && tree.project.check_files && tree.path(p).is_file() {
            diags.push(
                Diagnostic::at(span_of(p), format!("{what} `{}` is a file", p.get_ref()))
                    .help(format!("{} must be a directory", tree.path(p).display())),
            );
        }
    }

    pub(crate) fn chef_solo(tree: &Tree, w: &str, span: Span, c: &ChefSolo, diags: &mut Vec<Diagnostic>) {
        if c.run_list.is_empty() {
            diags.push(
                Diagnostic::at(span, format!("{w}: chef_solo needs a `run_list`"))
                    .help("e.g. run_list = [\"recipe[base]\", \"role[web]\"]"),
            );
        }
        for r in &c.run_list {
            if r.get_ref().trim().is_empty() {
                diags.push(Diagnostic::at(span_of(r), format!("{w}: an entry of run_list is empty")));
            }
        }
        for p in &c.cookbook_paths {
            local_dir(tree, p, "cookbook path", diags);
        }
        for (p, what) in [
            (&c.roles_path, "roles_path"),
            (&c.data_bags_path, "data_bags_path"),
            (&c.environments_path, "environments_path"),
        ] {
            if let Some(p) = p {
                local_dir(tree, p, what, diags);
            }
        }
        if c.environment.is_some() && c.environments_path.is_none() {
            diags.push(Diagnostic::at(span, format!("{w}: `environment` needs `environments_path`")));
        }
        if let Some(t) = &c.execute_command {
            template_check(t, diags);
        }
    }

    pub(crate) fn puppet_apply(
        tree: &Tree,
        w: &str,
        span: Span,
        p: &PuppetApply,
        os: crate::Os,
        diags: &mut Vec<Diagnostic>,
    ) {
        if os != crate::Os::Linux {
            diags.push(Diagnostic::at(span, format!("{w}: puppet_apply runs on Linux machines only (for now)")));
        }
        local_path(tree, &p.manifest, "puppet manifest", true, diags);
        for m in &p.module_paths {
            local_dir(tree, m, "puppet module path", diags);
        }
        if let Some(h) = &p.hiera_config {
            local_path(tree, h, "hiera_config", false, diags);
        }
        if let Some(h) = &p.hiera_data {
            local_dir(tree, h, "hiera_data", diags);
            if p.hiera_config.is_none() {
                diags.push(
                    Diagnostic::at(span_of(h), format!("{w}: `hiera_data` needs `hiera_config`"))
                        .help("the data directory is uploaded beside the uploaded hiera.yaml"),
                );
            }
        }
        for k in p.facts.keys() {
            let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                diags.push(Diagnostic::at(
                    span,
                    format!("{w}: fact name `{k}` must be letters, digits and _ (it becomes FACTER_{k})"),
                ));
            }
        }
        if let Some(t) = &p.execute_command {
            template_check(t, diags);
        }
    }

    pub(crate) fn powershell_dsc(
        tree: &Tree,
        w: &str,
        span: Span,
        d: &PowershellDsc,
        os: crate::Os,
        diags: &mut Vec<Diagnostic>,
    ) {
        if os != crate::Os::Windows {
            diags.push(Diagnostic::at(span, format!("{w}: powershell_dsc needs communicator.os = \"windows\"")));
        }
        local_path(tree, &d.configuration, "DSC configuration", false, diags);
        if let Some(c) = &d.configuration_data {
            local_path(tree, c, "DSC configuration_data", false, diags);
        }
        for m in &d.module_paths {
            local_dir(tree, m, "DSC module path", diags);
        }
        for (name, version) in &d.modules {
            if version.trim().is_empty() {
                diags.push(
                    Diagnostic::at(span, format!("{w}: module `{name}` needs a version"))
                        .help("modules = { ModuleName = \"1.2.3\" } (Install-Module -RequiredVersion)"),
                );
            }
        }
        if d.configuration_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            diags.push(Diagnostic::at(span, format!("{w}: configuration_name is empty")));
        }
        if d.max_rounds == Some(0) {
            diags.push(Diagnostic::at(span, format!("{w}: max_rounds must be at least 1")));
        }
        if let Some(t) = &d.execute_command {
            template_check(t, diags);
        }
    }
}
