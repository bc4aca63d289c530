//! No secret of a Packer template reaches the tree file or the report.

use imgbake_import::{ImportParams, import};

#[test]
fn passwords_keys_and_sensitive_values_stay_out_of_the_tree_and_the_report() {
    let d = tempfile::tempdir().unwrap();
    let template = d.path().join("t.json");
    std::fs::write(
        &template,
        r#"{
  "variables": { "vc_pw": "sens-default-1", "admin_pw": "{{env `ADMIN_PW`}}" },
  "sensitive-variables": ["vc_pw", "admin_pw"],
  "builders": [
    { "type": "amazon-ebs", "name": "aws", "region": "eu-west-1", "source_ami": "ami-0123456789abcdef0",
      "access_key": "AKIA-literal-2", "secret_key": "secret-literal-3", "ssh_username": "admin",
      "ami_name": "t-{{timestamp}}" },
    { "type": "vsphere-clone", "name": "vs", "vcenter_server": "vc.example.com", "username": "u",
      "password": "{{user `vc_pw`}}", "template": "base", "communicator": "winrm",
      "winrm_username": "Administrator", "winrm_password": "winrm-literal-4",
      "ssh_bastion_host": "jump", "ssh_bastion_password": "bastion-literal-5" }
  ],
  "provisioners": [
    { "type": "shell", "only": ["aws"], "inline": ["true"], "execute_command": "echo 'sudo-literal-6' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'" },
    { "type": "powershell", "only": ["vs"], "inline": ["hostname"], "environment_vars": ["PW={{user `admin_pw`}}"], "elevated_user": "Administrator", "elevated_password": "elevated-literal-7" }
  ]
}"#,
    )
    .unwrap();
    let var_file = d.path().join("secrets.json");
    std::fs::write(&var_file, r#"{ "vc_pw": "from-var-file-8" }"#).unwrap();
    let imported = import(&ImportParams {
        inputs: vec![template],
        var_files: vec![var_file],
        output: d.path().join("tree.toml"),
        ..Default::default()
    })
    .unwrap();
    let report = imported.report.to_string();
    for secret in [
        "sens-default-1",
        "AKIA-literal-2",
        "secret-literal-3",
        "winrm-literal-4",
        "bastion-literal-5",
        "sudo-literal-6",
        "elevated-literal-7",
        "from-var-file-8",
    ] {
        assert!(!imported.tree.contains(secret), "{secret} in the tree:\n{}", imported.tree);
        assert!(!report.contains(secret), "{secret} in the report:\n{report}");
    }
    // What was left out is said, with what to do.
    let note =
        |key: &str| imported.report.entries.iter().find(|e| e.key == key).map(|e| e.note.clone()).unwrap_or_default();
    assert!(note("amazon-ebs.access_key").contains("default chain"));
    assert!(note("vsphere-clone.winrm_password").contains("sensitive variable"));
    assert!(note("vsphere-clone.ssh_bastion_password").contains("sensitive variable"));
    assert!(note("provisioner shell.execute_command").contains("passwordless sudo"));
    // A sensitive variable still used is declared without its value; the vCenter password comes
    // from the environment, so its variable goes.
    assert!(note("variable admin_pw").contains("stays out of the tree"), "{}", imported.report);
    assert!(imported.tree.contains("admin_pw = { sensitive = true }"), "{}", imported.tree);
    assert!(imported.tree.contains("password_env = \"VSPHERE_PASSWORD\""), "{}", imported.tree);
}
