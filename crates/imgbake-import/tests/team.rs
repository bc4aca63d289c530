//! The template from the team's own write-up (corpus case 01): a Windows AMI over SSH with a
//! binary batch file run through a cmd execute_command.

use std::path::Path;

use imgbake_import::{ImportParams, Outcome, import};

#[test]
fn the_teams_windows_template_becomes_a_windows_image_that_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/01-team-windows-json");
    let out = tempfile::tempdir().unwrap();
    let tree_path = out.path().join("tree.toml");
    let imported = import(&ImportParams {
        inputs: vec![dir.join("win2012r2-template.json")],
        output: tree_path.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(imported.report.count(Outcome::Unmapped), 0, "{}", imported.report);
    std::fs::write(&tree_path, &imported.tree).unwrap();
    let opts =
        imgbake::config::LoadOptions { vars: vec![("vm_name".into(), "test-ami".into())], ..imgbake::load_options() };
    let tree = imgbake::config::Tree::load(&tree_path, &opts)
        .unwrap_or_else(|d| panic!("{}\n{}", d.render(false), imported.tree));
    let img = &tree.images()["win2012r2-template"];
    assert_eq!(img.communicator.os, Some(imgbake::config::os::Os::Windows));
    assert_eq!(img.communicator.username.as_ref().map(|u| u.get_ref().as_str()), Some("Administrator"));

    let text = &imported.tree;
    assert!(text.contains("ami_name = \"{{ var.vm_name }}\""), "{text}");
    assert!(text.contains("iam_instance_profile = \"packer-iam-instance-profile\""), "{text}");
    assert!(!text.contains("user_data"), "imgbake's own user data replaces the SSH installer: {text}");
    // The batch file is uploaded where the execute_command ran it, and run with cmd /c.
    assert!(text.contains("destination = \"C:/Windows/Temp/win-updates.bat\""), "{text}");
    assert!(text.contains("powershell = { inline = ['cmd /c \"C:/Windows/Temp/win-updates.bat\"'] }"), "{text}");

    let note =
        |key: &str| imported.report.entries.iter().find(|e| e.key == key).map(|e| e.note.clone()).unwrap_or_default();
    assert!(note("amazon-ebs.user_data_file").contains("OpenSSH"), "{}", imported.report);
    assert!(note("provisioner shell.execute_command").contains("cmd /c"), "{}", imported.report);
    let ami = imported.report.entries.iter().find(|e| e.key == "amazon-ebs.ami_name").unwrap();
    assert_eq!((ami.loc.line, ami.outcome), (15, Outcome::Mapped));
}
