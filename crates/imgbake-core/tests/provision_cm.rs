//! What the configuration-management steps send, checked without running the tools: the DSC script
//! and the Windows commands of `chef_solo` against golden files and a PowerShell grammar
//! (tree-sitter-powershell, no syntax error allowed), the generated `solo.rb` through Ruby's own
//! syntax check (`ruby -c`; Ruby comes with the bed's Debian `puppet`), the attributes JSON, and the
//! `puppet apply` command line. Nothing here runs on Windows or runs Chef (see docs/testing.md).
//!
//! `IMGBAKE_BLESS=1 cargo test -p imgbake-core --test provision_cm` rewrites the golden files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imgbake_config::{ChefFlavor, ChefSolo, Os, PowershellDsc, PuppetApply, Spanned};
use imgbake_core::command::{compose, powershell_script};
use imgbake_core::communicator::ExecRequest;
use imgbake_core::provision::{chef, dsc, puppet};
use imgbake_testbed::powershell::syntax_errors;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provision_golden")
}

/// Compare `actual` with the golden file `name` (or write it with IMGBAKE_BLESS=1).
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("IMGBAKE_BLESS").is_some() {
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

fn assert_parses(what: &str, script: &str) {
    let errors = syntax_errors(script);
    assert!(errors.is_empty(), "{what}: PowerShell syntax errors at {errors:?}\n{script}");
}

fn s(v: &str) -> Spanned<String> {
    Spanned::new(0..0, v.to_string())
}

fn chef_step(flavor: ChefFlavor) -> ChefSolo {
    ChefSolo {
        flavor,
        run_list: vec![s("recipe[base]"), s("role[web]")],
        cookbook_paths: vec![s("cookbooks"), s("vendor/cookbooks")],
        roles_path: Some(s("roles")),
        data_bags_path: Some(s("data_bags")),
        environments_path: Some(s("environments")),
        environment: Some("it's-prod".into()),
        json: BTreeMap::from([
            ("app".to_string(), toml::Value::Table(toml::map::Map::from_iter([("port".to_string(), 8080.into())]))),
            ("password".to_string(), "hunter2".into()),
        ]),
        ..ChefSolo::default()
    }
}

/// `ruby -c` on `source`, under a hard timeout.
fn ruby_syntax_ok(source: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("solo.rb");
    std::fs::write(&file, source).unwrap();
    let mut child = std::process::Command::new("ruby")
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("ruby (Debian `ruby`, installed with `puppet` by tests/bed/install.sh): {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("ruby -c did not finish in 30s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chef_solo_linux_plan_solo_rb_attributes_and_commands() {
    let c = chef_step(ChefFlavor::Cinc);
    let plan = chef::plan(&c, Os::Linux, "imgbake-box-1-attributes-0a1b2c3d.json").unwrap();
    assert_eq!(plan.staging, "/tmp/imgbake-chef");
    let remotes: Vec<&str> = plan.uploads.iter().map(|u| u.remote.as_str()).collect();
    assert_eq!(
        remotes,
        vec![
            "/tmp/imgbake-chef/cookbooks-1",
            "/tmp/imgbake-chef/cookbooks-2",
            "/tmp/imgbake-chef/roles",
            "/tmp/imgbake-chef/data_bags",
            "/tmp/imgbake-chef/environments"
        ]
    );
    golden("chef-solo.rb", &plan.solo_rb);
    ruby_syntax_ok(&plan.solo_rb).unwrap_or_else(|e| panic!("solo.rb is not valid Ruby: {e}\n{}", plan.solo_rb));
    assert!(plan.solo_rb.contains("environment 'it\\'s-prod'\n"), "{}", plan.solo_rb);

    let json: serde_json::Value = serde_json::from_str(&plan.json).unwrap();
    assert_eq!(json["run_list"], serde_json::json!(["recipe[base]", "role[web]"]));
    assert_eq!(json["app"]["port"], 8080);
    assert_eq!(json["password"], "hunter2");
    assert_eq!(plan.json_path, "/tmp/imgbake-chef/imgbake-box-1-attributes-0a1b2c3d.json");

    assert_eq!(plan.tool.probe, "command -v cinc-solo >/dev/null 2>&1 || test -x /opt/cinc/bin/cinc-solo");
    assert_eq!(
        plan.tool.install,
        "curl -fsSL --retry 3 -o /tmp/imgbake-chef/install.sh https://omnitruck.cinc.sh/install.sh && sh /tmp/imgbake-chef/install.sh -P cinc"
    );
    assert!(plan.tool.default_install);
    assert_eq!(
        plan.run,
        "c=$(command -v cinc-solo || echo /opt/cinc/bin/cinc-solo) && \"$c\" --no-color --config /tmp/imgbake-chef/solo.rb \
         --json-attributes /tmp/imgbake-chef/imgbake-box-1-attributes-0a1b2c3d.json"
    );
    // The attributes (with the password) are in the file only.
    for cmd in [&plan.run, &plan.tool.install, &plan.tool.probe] {
        assert!(!cmd.contains("hunter2"), "{cmd}");
    }

    // Chef itself: its paths, its installer, the license on the command line.
    let mut c = chef_step(ChefFlavor::Chef);
    c.version = Some("18.5.0".into());
    let plan = chef::plan(&c, Os::Linux, "a.json").unwrap();
    assert!(plan.run.contains("command -v chef-solo || echo /opt/chef/bin/chef-solo"), "{}", plan.run);
    assert!(plan.run.ends_with(" --chef-license accept-no-persist"), "{}", plan.run);
    assert!(
        plan.tool.install.contains("https://omnitruck.chef.io/install.sh")
            && plan.tool.install.ends_with("-P chef -v 18.5.0"),
        "{}",
        plan.tool.install
    );
    c.install = Some("apt-get install -y chef".into());
    c.staging_dir = Some("/var/tmp/my chef".into());
    let plan = chef::plan(&c, Os::Linux, "a.json").unwrap();
    assert_eq!(plan.tool.install, "apt-get install -y chef");
    assert!(!plan.tool.default_install);
    assert!(plan.run.contains("--config '/var/tmp/my chef/solo.rb'"), "{}", plan.run);
    ruby_syntax_ok(&plan.solo_rb).unwrap();
}

#[test]
fn chef_solo_windows_commands_share_the_generation_and_parse() {
    let c = chef_step(ChefFlavor::Cinc);
    let plan = chef::plan(&c, Os::Windows, "imgbake-win-1-attributes-0a1b2c3d.json").unwrap();
    assert_eq!(plan.staging, "C:/Windows/Temp/imgbake-chef");
    golden("chef-solo-windows.rb", &plan.solo_rb);
    ruby_syntax_ok(&plan.solo_rb).unwrap();
    let linux = chef::plan(&c, Os::Linux, "imgbake-win-1-attributes-0a1b2c3d.json").unwrap();
    assert_eq!(
        plan.solo_rb.replace("C:/Windows/Temp/", "/tmp/"),
        linux.solo_rb,
        "one solo.rb generator for both systems"
    );
    assert_eq!(plan.json, linux.json);
    let commands =
        format!("# probe\r\n{}\r\n# install\r\n{}\r\n# run\r\n{}\r\n", plan.tool.probe, plan.tool.install, plan.run);
    golden("chef-solo-windows.ps1", &commands);
    for (what, cmd) in [("probe", &plan.tool.probe), ("install", &plan.tool.install), ("run", &plan.run)] {
        assert_parses(what, cmd);
        // As sent: inside the encoded script of the default execute_command.
        let composed = compose(Os::Windows, &ExecRequest::new(cmd.clone())).unwrap();
        assert!(composed.len() < 8191, "cmd.exe limit: {}", composed.len());
        assert_parses(&format!("{what} (composed)"), &powershell_script(&ExecRequest::new(cmd.clone())));
    }
    assert!(plan.run.contains("'C:/cinc-project/cinc/bin/cinc-solo.bat'"), "{}", plan.run);
    let chef = chef::plan(&chef_step(ChefFlavor::Chef), Os::Windows, "a.json").unwrap();
    assert!(chef.run.contains("'C:/opscode/chef/bin/chef-solo.bat'") && chef.run.contains("--chef-license"));
    assert!(
        chef.tool.install.contains("'https://omnitruck.chef.io/install.ps1'")
            && chef.tool.install.ends_with("install -project chef")
    );
    assert_parses("chef install", &chef.tool.install);
    assert_parses("chef run", &chef.run);
}

#[test]
fn ruby_strings_escape_quotes_and_backslashes() {
    assert_eq!(chef::ruby_string("C:\\it's"), "'C:\\\\it\\'s'");
    ruby_syntax_ok(&format!("x = {}\n", chef::ruby_string("a'b\\c #{x}"))).unwrap();
}

fn dsc_step() -> PowershellDsc {
    PowershellDsc {
        configuration: s("dsc/WebServer.ps1"),
        configuration_name: None,
        configuration_data: Some(s("dsc/nodes.psd1")),
        modules: BTreeMap::from([
            ("ComputerManagementDsc".to_string(), "9.1.0".to_string()),
            ("it'sModule".to_string(), "1.0".to_string()),
        ]),
        module_paths: vec![s("dsc/MyResources")],
        test: true,
        max_rounds: None,
        elevated: false,
        staging_dir: None,
        keep_staging: false,
        execute_command: None,
    }
}

#[test]
fn dsc_script_matches_its_golden_file_and_parses() {
    let d = dsc_step();
    assert_eq!(dsc::configuration_name(&d), "WebServer");
    let plan = dsc::plan(&d);
    assert_eq!(plan.staging, "C:/Windows/Temp/imgbake-dsc");
    assert_eq!(plan.script_path, "C:/Windows/Temp/imgbake-dsc/imgbake-dsc.ps1");
    let remotes: Vec<&str> = plan.uploads.iter().map(|u| u.remote.as_str()).collect();
    assert_eq!(
        remotes,
        vec![
            "C:/Windows/Temp/imgbake-dsc/WebServer.ps1",
            "C:/Windows/Temp/imgbake-dsc/nodes.psd1",
            "C:/Program Files/WindowsPowerShell/Modules/MyResources"
        ]
    );
    golden("dsc.ps1", &plan.script);
    assert_parses("DSC script", &plan.script);
    for needle in [
        "Install-Module -Name $m.Name -RequiredVersion $m.Version",
        "@{ Name = 'it''sModule'; Version = '1.0' }",
        ". 'C:/Windows/Temp/imgbake-dsc/WebServer.ps1'",
        "$params.ConfigurationData = 'C:/Windows/Temp/imgbake-dsc/nodes.psd1'",
        "Start-DscConfiguration -Path $mof -Wait -Verbose -Force",
        "(Get-DscLocalConfigurationManager).LCMState -eq 'PendingReboot'",
        "Test-DscConfiguration -Detailed",
    ] {
        assert!(plan.script.contains(needle), "missing `{needle}`:\n{}", plan.script);
    }
    assert!(plan.script.contains(dsc::RESULT_PREFIX.trim_end()));

    // Without modules or data, and named explicitly: still valid PowerShell.
    let mut bare = dsc_step();
    bare.modules.clear();
    bare.configuration_data = None;
    bare.configuration_name = Some("Base".into());
    let bare = dsc::plan(&bare);
    golden("dsc-bare.ps1", &bare.script);
    assert_parses("bare DSC script", &bare.script);
    assert!(!bare.script.contains("Install-Module") && !bare.script.contains("ConfigurationData"));

    // Round 1 compiles; later rounds (after the LCM's reboot) only apply.
    assert_eq!(dsc::arguments(1, true), "-Compile -Test");
    assert_eq!(dsc::arguments(2, false), "");
    let inv = imgbake_core::provision::powershell::invocation(&plan.script_path, &dsc::arguments(1, true));
    golden("dsc-invocation.ps1", &inv);
    assert_parses("DSC invocation", &inv);
}

#[test]
fn dsc_result_lines() {
    let out = "VERBOSE: [WIN]: LCM:  [ Start  Set      ]\r\nimgbake-dsc: {\"reboot_required\":true,\"in_desired_state\":null,\"not_in_desired_state\":[]}\r\n";
    let r = dsc::parse_result(out).unwrap();
    assert!(r.reboot_required);
    assert_eq!(r.in_desired_state, None);
    let r = dsc::parse_result(
        "imgbake-dsc: {\"reboot_required\":false,\"in_desired_state\":false,\"not_in_desired_state\":[\"[File]Site\"]}",
    )
    .unwrap();
    assert_eq!(r.in_desired_state, Some(false));
    assert_eq!(r.not_in_desired_state, vec!["[File]Site".to_string()]);
    assert_eq!(dsc::parse_result("no result"), None);
}

#[test]
fn puppet_apply_command_and_layout() {
    let p = PuppetApply {
        manifest: s("manifests/site.pp"),
        module_paths: vec![s("modules"), s("vendor/modules")],
        hiera_config: Some(s("hiera/hiera.yaml")),
        hiera_data: Some(s("hiera/data")),
        facts: BTreeMap::from([("role".to_string(), "web".to_string())]),
        extra_arguments: vec!["--noop".into()],
        install: None,
        staging_dir: None,
        keep_staging: false,
        execute_command: None,
    };
    let plan = puppet::plan(&p, false);
    let remotes: Vec<&str> = plan.uploads.iter().map(|u| u.remote.as_str()).collect();
    assert_eq!(
        remotes,
        vec![
            "/tmp/imgbake-puppet/manifests/site.pp",
            "/tmp/imgbake-puppet/modules-1",
            "/tmp/imgbake-puppet/modules-2",
            "/tmp/imgbake-puppet/hiera/hiera.yaml",
            "/tmp/imgbake-puppet/hiera/data"
        ]
    );
    assert_eq!(
        plan.run,
        "p=$(command -v puppet || echo /opt/puppetlabs/bin/puppet) && cd /tmp/imgbake-puppet && \"$p\" apply \
         --detailed-exitcodes --color=false --modulepath /tmp/imgbake-puppet/modules-1:/tmp/imgbake-puppet/modules-2 \
         --hiera_config /tmp/imgbake-puppet/hiera/hiera.yaml --noop /tmp/imgbake-puppet/manifests/site.pp"
    );
    assert_eq!(plan.env, vec![("FACTER_role".to_string(), "web".to_string())]);
    assert_eq!(plan.tool.install, puppet::DEFAULT_INSTALL);
    assert!(plan.tool.install.contains("apt-get install -y --no-install-recommends puppet"));
    let dir = puppet::plan(&p, true);
    assert!(dir.run.ends_with(" /tmp/imgbake-puppet/manifests"), "a manifest directory is passed whole: {}", dir.run);
    assert_eq!(puppet::exit_meaning(4), "some resources failed");
    assert_eq!(puppet::exit_meaning(6), "changes were made and some resources failed");
}
