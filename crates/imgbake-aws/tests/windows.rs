//! The user data imgbake generates, checked without a real machine: golden files for Linux and Windows,
//! and the Windows PowerShell parsed for syntax errors (tree-sitter's PowerShell grammar, through
//! `imgbake_testbed::powershell`). Set `IMGBAKE_BLESS=1` to rewrite the golden files after an
//! intended change, then review the diff.

use std::path::{Path, PathBuf};

use imgbake_aws::userdata::{self, HostKey};
use imgbake_testbed::powershell::syntax_errors;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fixed (throwaway) key, so the output is the same every time.
fn key() -> HostKey {
    HostKey {
        private_openssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBmaWxsZXJmaWxsZXJmaWxsZXJmaWxsZXJmaWxsZXI=\n-----END OPENSSH PRIVATE KEY-----\n".into(),
        public_line: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ imgbake-b-golden".into(),
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(ROOT).join("tests/golden").join(name);
    if std::env::var_os("IMGBAKE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (IMGBAKE_BLESS=1 writes it)", path.display()));
    assert!(want == actual, "{} differs from what imgbake generates now; IMGBAKE_BLESS=1 rewrites it", path.display());
}

fn windows_user_data() -> String {
    userdata::windows(
        &key(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl imgbake-login",
        Some("https://downloads.example.com/OpenSSH-Win64.zip"),
        2222,
        Some("<powershell>\nWrite-Output 'custom user data'\n</powershell>"),
    )
    .unwrap()
}

#[test]
fn linux_user_data_is_golden() {
    let doc = userdata::linux(&key(), Some("#cloud-config\npackages: [nginx]\n")).unwrap();
    golden("linux-user-data.txt", &doc);
}

#[test]
fn windows_user_data_is_golden() {
    golden("windows-user-data.txt", &windows_user_data());
}

#[test]
fn windows_powershell_parses() {
    let doc = windows_user_data();
    let body =
        doc.strip_prefix("<powershell>\n").and_then(|d| d.split("</powershell>").next()).expect("a <powershell> block");
    let script_path: PathBuf = Path::new(ROOT).join("../../provisioners/windows/enable-openssh.ps1");
    let script = std::fs::read_to_string(&script_path).unwrap();
    for (what, text) in [("enable-openssh.ps1", script.as_str()), ("the generated user data", body)] {
        let errors = syntax_errors(text);
        assert!(errors.is_empty(), "{what}: PowerShell syntax errors at {errors:?}");
    }
    // The check finds real errors in this very text (so a pass means something).
    let broken = body.replace("'@ -HostPublicKey", "'@ -HostPublicKey (");
    assert!(!syntax_errors(&broken).is_empty(), "a broken script passed");
}
