//! The bed's vcsim answers SOAP over TLS with its own certificate (curl trusting only
//! `ca_file()`), enforces its credentials, marks the asked-for VM as a template, logs every SOAP
//! method, and is gone (with its temp dir) after drop.

use std::path::Path;
use std::time::Duration;

use imgbake_testbed::{Vcsim, VcsimOptions, pid_alive};

const TIMEOUT: Duration = Duration::from_secs(30);

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

/// POSTs `body` (a SOAP body element) to vcsim with curl, trusting `ca` only (or the system's
/// roots when `None`), keeping the session cookie in `jar`. Returns curl's exit code and output.
async fn soap(vcsim: &Vcsim, ca: Option<&Path>, jar: &Path, body: &str) -> (i32, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-H", "Content-Type: text/xml; charset=utf-8"])
        .args(["-H", "SOAPAction: urn:vim25/6.5", "--data-binary", &envelope(body)])
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .kill_on_drop(true);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(vcsim.url());
    let out = tokio::time::timeout(TIMEOUT, cmd.output()).await.expect("curl timed out").expect("run curl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn login(vcsim: &Vcsim, password: &str) -> String {
    format!(
        r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>{}</userName><password>{password}</password></Login>"#,
        vcsim.username()
    )
}

#[tokio::test]
async fn soap_over_tls_login_template_and_request_log() {
    let started = std::time::Instant::now();
    let options = VcsimOptions { templates: vec!["DC0_H0_VM1".into()], ..VcsimOptions::default() };
    let vcsim = Vcsim::start_with(options).await.expect("start vcsim");
    eprintln!("timing: Vcsim::start: {:.2?}", started.elapsed());
    assert_eq!(vcsim.url(), format!("https://127.0.0.1:{}/sdk", vcsim.port()));
    let jar_dir = tempfile::tempdir().expect("temp dir");
    let jar = jar_dir.path().join("cookies");
    let ca = vcsim.ca_file();

    // Not a CA: rustls/webpki refuse a CA certificate as a server's own (CaUsedAsEndEntity), and
    // plain `openssl req -x509` makes one.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "basicConstraints,subjectAltName", "-in"])
        .arg(&ca)
        .output()
        .expect("run openssl x509");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA:FALSE") && text.contains("IP Address:127.0.0.1"), "{text}");

    // Without the CA file the certificate is not trusted (curl: 60): it is ours, not a known one.
    let (code, text) = soap(&vcsim, None, &jar, "").await;
    assert_eq!(code, 60, "{text}");
    assert!(vcsim.requests().is_empty(), "{:?}", vcsim.requests());

    let (code, text) = soap(
        &vcsim,
        Some(&ca),
        &jar,
        r#"<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>"#,
    )
    .await;
    assert_eq!(code, 0, "{text}\nvcsim log:\n{}", vcsim.log());
    assert!(text.contains("<apiVersion>6.5</apiVersion>") && text.contains("SearchIndex"), "{text}");

    let (code, text) = soap(&vcsim, Some(&ca), &jar, &login(&vcsim, "wrong")).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("InvalidLogin"), "{text}");
    let (code, text) = soap(&vcsim, Some(&ca), &jar, &login(&vcsim, vcsim.password())).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("LoginResponse"), "{text}");

    // The documented inventory path resolves, and -template made that VM a template.
    let (_, text) = soap(
        &vcsim,
        Some(&ca),
        &jar,
        r#"<FindByInventoryPath xmlns="urn:vim25"><_this type="SearchIndex">SearchIndex</_this><inventoryPath>/DC0/vm/DC0_H0_VM1</inventoryPath></FindByInventoryPath>"#,
    )
    .await;
    let vm = text
        .split_once(r#"<returnval type="VirtualMachine">"#)
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no VM in {text}"));
    let (_, text) = soap(
        &vcsim,
        Some(&ca),
        &jar,
        &format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>VirtualMachine</type><pathSet>config.template</pathSet></propSet><objectSet><obj type="VirtualMachine">{vm}</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
        ),
    )
    .await;
    // vcsim (Go's encoding/xml) spells the type attribute `XMLSchema-instance:type` with its own
    // xmlns declaration, not `xsi:type`: clients must resolve the namespace, not match the prefix.
    let template = text.split_once("<name>config.template</name>").map(|(_, rest)| rest).unwrap_or_default();
    assert!(template.starts_with("<val ") && template.contains(">true</val>"), "{text}");

    assert_eq!(
        vcsim.requests(),
        ["RetrieveServiceContent", "Login", "Login", "FindByInventoryPath", "RetrievePropertiesEx"],
        "vcsim log:\n{}",
        vcsim.log()
    );
    vcsim.clear_requests().expect("clear requests");
    assert!(vcsim.requests().is_empty());
    let (_, text) = soap(
        &vcsim,
        Some(&ca),
        &jar,
        r#"<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>"#,
    )
    .await;
    assert!(text.contains("CurrentTimeResponse"), "{text}");
    assert_eq!(vcsim.requests(), ["CurrentTime"]);

    let pid = vcsim.pid();
    let dir = ca.parent().expect("cert dir").to_owned();
    assert!(pid_alive(pid));
    drop(vcsim);
    assert!(!pid_alive(pid), "vcsim {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[tokio::test]
async fn failed_start_reports_vcsim_log() {
    let options = VcsimOptions { templates: vec!["NO_SUCH_VM".into()], ..VcsimOptions::default() };
    let err = Vcsim::start_with(options).await.expect_err("unknown template VM");
    let text = err.to_string();
    assert!(text.contains("exited before it was ready") && text.contains("NO_SUCH_VM"), "{text}");
}
