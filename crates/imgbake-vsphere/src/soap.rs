//! The SOAP transport of the vSphere API: one HTTPS connection pool (rustls on ring), the session
//! cookie, envelopes, and faults as typed errors.
//!
//! Why our own ~15 calls instead of a generated client: the generated crate we measured (`vim_rs`)
//! costs minutes of compile, a 100 MB binary and a second TLS stack (aws-lc), and its session is
//! unusable after one failed task. A fault here is an ordinary error value; the session stays usable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quick_xml::events::Event;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The API version imgbake speaks (vSphere 6.5 and later answer it).
const SOAP_ACTION: &str = "urn:vim25/6.5";

/// How TLS certificates are checked.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// Accept any certificate (opt-in only: a lab's self-signed vCenter).
    pub insecure: bool,
    /// PEM CA certificates to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
}

/// What went wrong talking to vSphere.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    /// The TLS settings cannot be used (unreadable CA file...).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The URL is not usable.
    #[error("bad vSphere URL `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer: connection refused, TLS handshake failed, DNS...
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// Where.
        url: String,
        /// The cause chain, flattened.
        message: String,
    },
    /// No answer within the request timeout.
    #[error("{url} did not answer {method} within {timeout:?}")]
    Timeout {
        /// Where.
        url: String,
        /// The SOAP method.
        method: String,
        /// The limit.
        timeout: Duration,
    },
    /// vSphere answered with a SOAP fault (`InvalidLogin`, `ManagedObjectNotFound`, a task's error...).
    #[error("{method}: {message} ({fault})")]
    Fault {
        /// The SOAP method (or task) that failed.
        method: String,
        /// The fault's type, e.g. `InvalidLogin`, `DuplicateName`.
        fault: String,
        /// vSphere's message.
        message: String,
    },
    /// An answer that is not the SOAP we expect.
    #[error("{method}: unexpected answer (HTTP {status}): {detail}")]
    Protocol {
        /// The SOAP method.
        method: String,
        /// HTTP status.
        status: u16,
        /// What was wrong, with the start of the body.
        detail: String,
    },
}

impl SoapError {
    /// The fault type, for a SOAP fault.
    pub fn fault(&self) -> Option<&str> {
        match self {
            SoapError::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// Is it worth trying again (the server or the network, not the request)?
    pub fn is_transient(&self) -> bool {
        match self {
            SoapError::Transport { .. } | SoapError::Timeout { .. } => true,
            SoapError::Protocol { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// One element of an answer: local name, `xsi:type`, text and children. Namespaces are dropped:
/// vim25 answers use one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// Local name.
    pub name: String,
    /// The `xsi:type` attribute (local part), when given.
    pub xsi_type: Option<String>,
    /// The `type` attribute (managed object references carry it).
    pub kind: Option<String>,
    /// Text content (trimmed of nothing: values are exact).
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The descendant at `path` (first match at each level).
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, p| n.child(p))
    }

    /// Text of the descendant at `path`.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).map(|n| n.text.as_str())
    }

    /// Parse one XML document into its root element.
    pub fn parse(xml: &str) -> Result<Node, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack: Vec<Node> = Vec::new();
        loop {
            match reader.read_event().map_err(|e| format!("XML at byte {}: {e}", reader.buffer_position()))? {
                Event::Start(e) => stack.push(node_of(&e)?),
                Event::Empty(e) => {
                    let n = node_of(&e)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(n),
                        None => return Ok(n),
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(top) = stack.last_mut() {
                        let text = match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => unescape_ref(&r.xml10_content())?,
                        };
                        top.text.push_str(&text);
                    }
                }
                Event::CData(c) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&String::from_utf8_lossy(c.as_ref().as_bytes()));
                    }
                }
                Event::End(_) => {
                    let done = stack.pop().ok_or("unbalanced end tag")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::Eof => return Err("the document ended before its root element closed".into()),
                _ => {}
            }
        }
    }
}

fn unescape_ref(name: &str) -> Result<String, String> {
    Ok(match name {
        "lt" => "<".into(),
        "gt" => ">".into(),
        "amp" => "&".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        n if n.starts_with("#x") => char_of(u32::from_str_radix(&n[2..], 16).ok())?,
        n if n.starts_with('#') => char_of(n[1..].parse().ok())?,
        n => return Err(format!("unknown entity &{n};")),
    })
}

fn char_of(code: Option<u32>) -> Result<String, String> {
    code.and_then(char::from_u32).map(String::from).ok_or_else(|| "bad character reference".to_string())
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or_default().to_string()
}

fn node_of(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, String> {
    let mut n = Node { name: local(e.name().as_ref()), ..Node::default() };
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| e.to_string())?.into_owned();
        match local(a.key.as_ref()).as_str() {
            // `xsi:type`, whatever the prefix (vcsim writes `XMLSchema-instance:type`).
            "type" if a.key.as_ref().contains(':') => n.xsi_type = Some(local(&value)),
            "type" => n.kind = Some(value),
            _ => {}
        }
    }
    Ok(n)
}

/// Escape text for an element or attribute.
pub fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// A vSphere SOAP endpoint with its session cookie. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: hyper::Uri,
    cookie: Mutex<Option<String>>,
    timeout: Duration,
    calls: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.inner.url).finish_non_exhaustive()
    }
}

/// `vc.example.com`, `vc.example.com:8443` or `https://vc.example.com/sdk` → the SDK URL.
pub fn sdk_url(given: &str) -> Result<hyper::Uri, SoapError> {
    let bad = |reason: &str| SoapError::Url { url: given.to_string(), reason: reason.to_string() };
    let with_scheme = if given.contains("://") { given.to_string() } else { format!("https://{given}") };
    let uri: hyper::Uri = with_scheme.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("vSphere is reached over https only"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials do not go in the URL (use username and the password's environment variable)"));
    }
    let path = match uri.path() {
        "" | "/" => "/sdk",
        p => p,
    };
    format!("https://{authority}{path}").parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))
}

impl Client {
    /// A client for `url` (see [`sdk_url`]) with `tls`; each request gives up after `timeout`.
    pub fn new(url: &str, tls: &Tls, timeout: Duration) -> Result<Client, SoapError> {
        let url = sdk_url(url)?;
        let config = tls_config(tls)?;
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().build();
        let http = HttpClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(50)).build(https);
        Ok(Client { inner: Arc::new(Inner { http, url, cookie: Mutex::new(None), timeout, calls: AtomicU64::new(0) }) })
    }

    /// The SDK URL.
    pub fn url(&self) -> String {
        self.inner.url.to_string()
    }

    /// SOAP requests sent so far (for benchmarks and tests).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Call `method` with `args` (the XML inside the method's element). Returns the method's
    /// response element (`<XResponse>`).
    pub async fn call(&self, method: &str, args: &str) -> Result<Node, SoapError> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><{method} xmlns=\"urn:vim25\">{args}</{method}></soapenv:Body></soapenv:Envelope>"
        );
        let mut req = Request::post(self.inner.url.clone())
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", SOAP_ACTION);
        if let Some(c) = self.cookie() {
            req = req.header(COOKIE, c);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| self.protocol(method, 0, e.to_string()))?;
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let timeout = self.inner.timeout;
        let exchange = async {
            let resp = self.inner.http.request(req).await.map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            let cookie = resp.headers().get_all(SET_COOKIE).iter().find_map(|v| session_cookie(v.to_str().ok()?));
            let bytes = resp.into_body().collect().await.map_err(|e| self.transport(e))?.to_bytes();
            Ok::<_, SoapError>((status, cookie, bytes))
        };
        let (status, cookie, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SoapError::Timeout { url: self.url(), method: method.to_string(), timeout })??;
        if let Some(c) = cookie
            && let Ok(mut slot) = self.inner.cookie.lock()
        {
            *slot = Some(c);
        }
        let text = String::from_utf8_lossy(&bytes);
        let root = Node::parse(&text).map_err(|e| self.protocol(method, status, format!("{e}: {}", head(&text))))?;
        let body = root
            .child("Body")
            .ok_or_else(|| self.protocol(method, status, format!("no SOAP body: {}", head(&text))))?;
        if let Some(f) = body.child("Fault") {
            return Err(fault_of(method, f));
        }
        if status != 200 {
            return Err(self.protocol(method, status, head(&text)));
        }
        let response = format!("{method}Response");
        body.child(&response)
            .cloned()
            .ok_or_else(|| self.protocol(method, status, format!("no <{response}>: {}", head(&text))))
    }

    fn cookie(&self) -> Option<String> {
        self.inner.cookie.lock().ok().and_then(|c| c.clone())
    }

    fn transport(&self, e: impl std::error::Error) -> SoapError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        SoapError::Transport { url: self.url(), message }
    }

    fn protocol(&self, method: &str, status: u16, detail: String) -> SoapError {
        SoapError::Protocol { method: method.to_string(), status, detail }
    }
}

fn head(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() { format!("{t}…") } else { t }
}

/// `vmware_soap_session="…"; Path=/; …` → the `name=value` to send back.
fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    first.starts_with("vmware_soap_session=").then(|| first.to_string())
}

/// A SOAP fault: its message, and the fault's type from the detail (`InvalidLogin`...).
pub fn fault_of(method: &str, f: &Node) -> SoapError {
    let message = f.text_at(&["faultstring"]).unwrap_or("no message").trim().to_string();
    let fault = f
        .child("detail")
        .and_then(|d| d.children.first())
        .map(|d| d.xsi_type.clone().unwrap_or_else(|| d.name.trim_end_matches("Fault").to_string()))
        .unwrap_or_else(|| f.text_at(&["faultcode"]).unwrap_or("Fault").to_string());
    SoapError::Fault { method: method.to_string(), fault, message }
}

fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig, SoapError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SoapError::Tls(e.to_string()))?;
    if tls.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots; unreadable ones are skipped (a CA file may be all the user needs).
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &tls.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| SoapError::Tls(format!("reading CA file {}: {e}", path.display())))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| SoapError::Tls(format!("CA file {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| SoapError::Tls(format!("CA file {}: {e}", path.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(SoapError::Tls(format!("CA file {} holds no PEM certificate", path.display())));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecure = true`: any certificate, but handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_sdk_urls_and_unsafe_ones_are_refused() {
        assert_eq!(sdk_url("vc.example.com").unwrap().to_string(), "https://vc.example.com/sdk");
        assert_eq!(sdk_url("vc:8443").unwrap().to_string(), "https://vc:8443/sdk");
        assert_eq!(sdk_url("https://127.0.0.1:1234/sdk").unwrap().to_string(), "https://127.0.0.1:1234/sdk");
        assert!(sdk_url("http://vc/sdk").unwrap_err().to_string().contains("https only"));
        assert!(sdk_url("https://u:p@vc/sdk").unwrap_err().to_string().contains("credentials"));
    }

    #[test]
    fn answers_and_faults_parse() {
        let xml = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password.</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let root = Node::parse(xml).unwrap();
        let e = fault_of("Login", root.at(&["Body", "Fault"]).unwrap());
        assert_eq!(e.fault(), Some("InvalidLogin"));
        assert_eq!(
            e.to_string(),
            "Login: Cannot complete login due to an incorrect user name or password. (InvalidLogin)"
        );
        let n = Node::parse(r#"<a><returnval type="VirtualMachine">vm-42</returnval><t>x &amp; y &#65;</t><e/></a>"#)
            .unwrap();
        assert_eq!(n.child("returnval").unwrap().kind.as_deref(), Some("VirtualMachine"));
        assert_eq!(n.text_at(&["t"]), Some("x & y A"));
        assert_eq!(n.children.len(), 3);
        assert!(Node::parse("<a><b></a>").is_err());
    }

    #[test]
    fn the_session_cookie_is_kept_without_its_attributes() {
        assert_eq!(
            session_cookie("vmware_soap_session=\"abc\"; Path=/; HttpOnly; Secure;").as_deref(),
            Some("vmware_soap_session=\"abc\"")
        );
        assert_eq!(session_cookie("other=1; Path=/"), None);
    }
}
