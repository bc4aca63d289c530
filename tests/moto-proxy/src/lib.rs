//! A small HTTP proxy in front of moto for what moto cannot do (see `/work/shared/bed.md`): moto makes
//! every instance `running` and every AMI `available` at once and never throttles. Through this proxy:
//!
//! - new instances stay `pending`, stopped ones `stopping`, terminated ones `shutting-down`, new AMIs
//!   `pending` (or end `failed`) for configured times ([`Delays`], [`ImageOutcome`]);
//! - chosen actions answer throttling (`RequestLimitExceeded`, HTTP 503), 5xx or any error a chosen
//!   number of times ([`FaultRule`]);
//! - every API call is counted per action and logged, and every state transition is logged with the
//!   moment it really happened and the moment a client first saw it ([`Transition`]), so a benchmark
//!   can tell how late a client noticed;
//! - the EBS direct APIs are checked like AWS does (block length and SHA256, block count and LINEAR
//!   aggregate checksum), EC2 shows their snapshots `pending` until completed, and an opt-in fast
//!   mode answers AWS's block size and takes the blocks itself ([`MotoProxy::ebs_block_size`], [`ebs`]);
//! - a hook sees each RunInstances' user data (to act like cloud-init would on the bed, e.g. install
//!   an injected SSH host key into the bed's sshd).
//!
//! In-process for tests, or as the `imgbake-moto-proxy` binary (control endpoints under `/_proxy/`).
//!
//! ```no_run
//! use std::time::Duration;
//! use imgbake_moto_proxy::{Delays, Fault, FaultRule, MotoProxy};
//! # async fn demo(moto_endpoint: &str) -> Result<(), imgbake_moto_proxy::ProxyError> {
//! let proxy = MotoProxy::start(moto_endpoint).await?;
//! proxy.set_delays(Delays { instance_pending: Duration::from_secs(2), ..Delays::default() });
//! proxy.inject(FaultRule::new("DescribeInstances", Fault::throttle(), 2));
//! // ... point an SDK client at proxy.endpoint() ...
//! println!("{:?} calls", proxy.calls());
//! # Ok(()) }
//! ```

pub mod ebs;
mod faults;
mod lifecycle;
pub mod request;
pub mod rewrite;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use ebs::EbsSnapshot;
pub use faults::{Fault, FaultRule};
use lifecycle::Lifecycle;
pub use lifecycle::{Delays, ImageOutcome, Transition};
pub use request::ApiCall;
use rewrite::{Shown, rewrite_states, shapes};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream URL is not `http://host:port`.
    #[error("upstream `{0}` is not an http://host:port URL (the moto server's endpoint)")]
    BadUpstream(String),
    /// The listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One API call that went through the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The action (`DescribeInstances`).
    pub action: String,
    /// The service (`ec2`, `ssm`, `sts`).
    pub service: String,
    /// The region.
    pub region: String,
    /// When it arrived (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The HTTP status answered.
    pub status: u16,
    /// The answer was an injected fault.
    pub injected: bool,
    /// How long moto took to answer (zero when it was not asked).
    pub moto: std::time::Duration,
    /// How long the proxy took to rewrite moto's answer (held states).
    pub rewrite: std::time::Duration,
    /// A query-protocol call with no parameter besides `Action` and `Version` (EC2 counts such a
    /// describe as "unfiltered and unpaginated": a bucket of its own).
    #[serde(default)]
    pub bare: bool,
}

/// A RunInstances call, as the user-data hook sees it.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The region.
    pub region: String,
    /// The user data, base64-decoded (lossy UTF-8), if any.
    pub user_data: Option<String>,
    /// Every form parameter of the call.
    pub params: Vec<(String, String)>,
}

type LaunchHook = Arc<dyn Fn(&Launch) + Send + Sync>;
type CallHook = Arc<dyn Fn(&ApiCall) + Send + Sync>;

/// Everything the proxy recorded, for reports (`GET /_proxy/report`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The delays in force.
    pub delays: Delays,
    /// Calls per action.
    pub calls: BTreeMap<String, u32>,
    /// All calls.
    pub total_calls: u32,
    /// Every call in order.
    pub log: Vec<CallRecord>,
    /// Every transition.
    pub transitions: Vec<Transition>,
}

#[derive(Default)]
struct State {
    lifecycle: Lifecycle,
    rules: Vec<FaultRule>,
    log: Vec<CallRecord>,
    hook: Option<LaunchHook>,
    call_hooks: Vec<CallHook>,
    /// EnableImageDeprecation calls: (AMI, DeprecateAt as sent).
    deprecations: Vec<(String, String)>,
    /// New instances are missing from DescribeInstances this long (EC2's eventual consistency).
    hide_new_instances: Duration,
    /// Instances hidden until then.
    hidden: HashMap<String, Instant>,
    /// Answers held back this long after moto gave them, by action (a slow answer in flight).
    held_answers: HashMap<String, Duration>,
    /// EBS direct API snapshots and the fast mode.
    ebs: ebs::Ebs,
}

struct Shared {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running proxy; stops (with every open connection) when dropped.
pub struct MotoProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MotoProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoProxy").field("addr", &self.addr).field("upstream", &self.shared.upstream).finish()
    }
}

impl MotoProxy {
    /// A proxy to `upstream` (moto's `http://127.0.0.1:PORT`) on a free loopback port, with no delays
    /// and no faults.
    pub async fn start(upstream: &str) -> Result<MotoProxy, ProxyError> {
        Self::start_on(upstream, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// The same on a given address (port 0: any free port).
    pub async fn start_on(upstream: &str, listen: SocketAddr) -> Result<MotoProxy, ProxyError> {
        let upstream = upstream.trim_end_matches('/').to_string();
        let authority = upstream.strip_prefix("http://").ok_or_else(|| ProxyError::BadUpstream(upstream.clone()))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(ProxyError::BadUpstream(upstream));
        }
        let listener = TcpListener::bind(listen).await.map_err(|source| ProxyError::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind { addr: listen, source })?;
        let shared = Arc::new(Shared {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            state: Mutex::new(State::default()),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(MotoProxy { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for SDK clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays for resources created from now on.
    pub fn set_delays(&self, delays: Delays) {
        self.shared.state().lifecycle.delays = delays;
    }

    /// What AMIs created from now on turn into after their pending time.
    pub fn set_image_outcome(&self, outcome: ImageOutcome) {
        self.shared.state().lifecycle.image_outcome = outcome;
    }

    /// Add a fault rule (rules are checked in the order added; the first that applies answers).
    pub fn inject(&self, rule: FaultRule) {
        self.shared.state().rules.push(rule);
    }

    /// Remove every fault rule.
    pub fn clear_faults(&self) {
        self.shared.state().rules.clear();
    }

    /// How many faults were answered to `action` (`*` for all).
    pub fn injected(&self, action: &str) -> u32 {
        self.shared.state().log.iter().filter(|c| c.injected && (action == "*" || c.action == action)).count() as u32
    }

    /// Call `hook` with every RunInstances call, before it reaches moto.
    pub fn on_launch(&self, hook: impl Fn(&Launch) + Send + Sync + 'static) {
        self.shared.state().hook = Some(Arc::new(hook));
    }

    /// Call `hook` with every API call that goes on to moto (not with injected faults), before it
    /// reaches moto: to play what AWS does besides the API (e.g. install an imported key pair), or to
    /// watch the calls' parameters. Hooks add up: each one added is called, in order.
    pub fn on_call(&self, hook: impl Fn(&ApiCall) + Send + Sync + 'static) {
        self.shared.state().call_hooks.push(Arc::new(hook));
    }

    /// Leave instances created from now on out of DescribeInstances for `d` after RunInstances: EC2
    /// lists a new resource only some time after it exists.
    pub fn hide_new_instances(&self, d: Duration) {
        self.shared.state().hide_new_instances = d;
    }

    /// Hold moto's answer to `action` back for `d` (the call has taken effect meanwhile): a create
    /// call still in flight when the client gives up.
    pub fn hold_answers(&self, action: &str, d: Duration) {
        self.shared.state().held_answers.insert(action.to_string(), d);
    }

    /// The EnableImageDeprecation calls answered so far (moto lacks it: the proxy answers it as EC2
    /// would): (AMI id, DeprecateAt as sent).
    pub fn deprecations(&self) -> Vec<(String, String)> {
        self.shared.state().deprecations.clone()
    }

    /// Fast EBS mode for snapshots started from now on: StartSnapshot still goes to moto (the EC2
    /// snapshot with its tags and size) but answers `block_size` bytes (AWS: 524288; moto: 512, at
    /// about 500 requests a second), and the proxy takes PutSnapshotBlock itself (checked and
    /// counted, not stored: such blocks cannot be read back); CompleteSnapshot is checked and
    /// forwarded, so moto and EC2 see the snapshot completed. `None`: every call goes to moto
    /// (checked all the same).
    pub fn ebs_block_size(&self, block_size: impl Into<Option<u32>>) {
        self.shared.state().ebs.fast_block_size = block_size.into().filter(|b| *b > 0);
    }

    /// The EBS direct API snapshots started through the proxy, in order, with the blocks accepted.
    pub fn ebs_snapshots(&self) -> Vec<EbsSnapshot> {
        self.shared.state().ebs.snapshots()
    }

    /// Calls per action so far (injected faults included).
    pub fn calls(&self) -> BTreeMap<String, u32> {
        count(&self.shared.state().log)
    }

    /// Calls of one action so far.
    pub fn count(&self, action: &str) -> u32 {
        self.shared.state().log.iter().filter(|c| c.action == action).count() as u32
    }

    /// Every call so far, in order.
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.shared.state().log.clone()
    }

    /// Every state transition so far.
    pub fn transitions(&self) -> Vec<Transition> {
        self.shared.state().lifecycle.transitions()
    }

    /// Everything recorded.
    pub fn report(&self) -> Report {
        report(&self.shared.state())
    }

    /// Forget calls, transitions, holds and faults (delays and the hook stay).
    pub fn reset(&self) {
        let mut s = self.shared.state();
        s.log.clear();
        s.rules.clear();
        s.lifecycle.clear();
        s.hidden.clear();
        s.ebs.clear();
    }
}

impl Drop for MotoProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn count(log: &[CallRecord]) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for c in log {
        *m.entry(c.action.clone()).or_insert(0) += 1;
    }
    m
}

fn report(s: &State) -> Report {
    Report {
        delays: s.lifecycle.delays,
        calls: count(&s.log),
        total_calls: s.log.len() as u32,
        log: s.log.clone(),
        transitions: s.lifecycle.transitions(),
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here: aborting the accept task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn plain(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The log keeps when a call arrived, not when moto's answer came back (moto's queue would bunch them).
    let arrived = now_ms();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(plain(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"), "text/plain"));
        }
    };
    if parts.uri.path().starts_with("/_proxy/") {
        return Ok(control(&shared, parts.method.as_str(), parts.uri.path(), &body));
    }
    let call = ApiCall::parse_request(parts.method.as_str(), parts.uri.path(), &parts.headers, &body);
    // JSON errors for the JSON protocol (SSM) and REST JSON (EBS); XML for the query protocol.
    let json = parts.headers.contains_key("x-amz-target") || call.service == "ebs";

    let (fault, hook, call_hook) = {
        let mut s = shared.state();
        let fault = s.rules.iter_mut().find_map(|r| r.applies(&call.action).then(|| r.fault.clone()));
        (fault, s.hook.clone(), s.call_hooks.clone())
    };
    let answer_fault = |f: &Fault| {
        record(&shared, &call, arrived, f.status, true);
        let (text, ct) = f.body(json);
        plain(StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), text, ct)
    };
    if let Some(f) = fault.as_ref().filter(|f| !f.forward) {
        return Ok(answer_fault(f));
    }
    for h in call_hook {
        h(&call);
    }
    if call.action == "EnableImageDeprecation" {
        // moto answers HTTP 500: answer as EC2 does, and keep what was asked.
        let image = call.param("ImageId").unwrap_or_default().to_string();
        let at = call.param("DeprecateAt").unwrap_or_default().to_string();
        shared.state().deprecations.push((image, at));
        record(&shared, &call, arrived, 200, false);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<EnableImageDeprecationResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>imgbake-moto-proxy</requestId><return>true</return></EnableImageDeprecationResponse>";
        return Ok(plain(StatusCode::OK, xml.into(), "text/xml"));
    }
    if call.service == "ebs"
        && let Some(answer) = ebs_locally(&shared, &call, &parts.headers, &body)
    {
        return Ok(answer);
    }
    if call.action == "RunInstances"
        && let Some(hook) = hook
    {
        let user_data = call.param("UserData").map(|b64| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap_or_else(|_| b64.as_bytes().to_vec());
            String::from_utf8_lossy(&raw).into_owned()
        });
        hook(&Launch { region: call.region.clone(), user_data, params: call.params.clone() });
    }

    let uri = format!("{}{}", shared.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut up = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        up = up.header(k, v);
    }
    let up = match up.body(Full::new(body.clone())) {
        Ok(r) => r,
        Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, format!("cannot forward: {e}"), "text/plain")),
    };
    let asked = std::time::Instant::now();
    let resp = match shared.client.request(up).await {
        Ok(r) => r,
        Err(e) => {
            record(&shared, &call, arrived, 502, false);
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                format!("moto at {} did not answer: {e}", shared.upstream),
                "text/plain",
            ));
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    let rbody = match rbody.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, format!("moto's answer broke off: {e}"), "text/plain")),
    };
    let status = rparts.status.as_u16();
    let answered = asked.elapsed();
    let rewriting = std::time::Instant::now();
    let rbody = match (rparts.status.is_success(), call.service == "ebs") {
        (true, true) => ebs_answered(&shared, &call, rbody),
        (true, false) => adjust(&shared, &call, rbody),
        (false, _) => rbody,
    };
    let rewrite = rewriting.elapsed();
    let hold = shared.state().held_answers.get(&call.action).copied();
    if let Some(d) = hold {
        tokio::time::sleep(d).await;
    }
    if let Some(f) = &fault {
        return Ok(answer_fault(f));
    }
    record_timed(&shared, &call, arrived, status, false, answered, rewrite);
    rparts.headers.remove(hyper::header::CONTENT_LENGTH);
    rparts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(rparts, Full::new(rbody)))
}

fn record(shared: &Shared, call: &ApiCall, arrived: u64, status: u16, injected: bool) {
    record_timed(shared, call, arrived, status, injected, Default::default(), Default::default());
}

fn record_timed(
    shared: &Shared,
    call: &ApiCall,
    arrived: u64,
    status: u16,
    injected: bool,
    moto: std::time::Duration,
    rewrite: std::time::Duration,
) {
    if call.action.is_empty() {
        return;
    }
    shared.state().log.push(CallRecord {
        action: call.action.clone(),
        service: call.service.clone(),
        region: call.region.clone(),
        at_unix_ms: arrived,
        status,
        injected,
        moto,
        rewrite,
        bare: !call.params.is_empty() && call.params.iter().all(|(k, _)| ["Action", "Version"].contains(&k.as_str())),
    });
}

/// Track new resources and show held states in moto's answer.
fn adjust(shared: &Shared, call: &ApiCall, body: Bytes) -> Bytes {
    let Ok(text) = std::str::from_utf8(&body) else { return body };
    let mut guard = shared.state();
    let s = &mut *guard;
    let lc = &mut s.lifecycle;
    let region = call.region.as_str();
    let out = match call.action.as_str() {
        "RunInstances" => {
            let until = Instant::now() + s.hide_new_instances;
            let hidden = &mut s.hidden;
            rewrite_states(text, shapes::INSTANCES, |id, _| {
                lc.launched(id, region);
                hidden.insert(id.to_string(), until);
                None
            })
        }
        "DescribeInstances" => {
            let now = Instant::now();
            let hidden = &s.hidden;
            rewrite_states(text, shapes::INSTANCES, |id, real| {
                if hidden.get(id).is_some_and(|until| now < *until) {
                    return Some(Shown::hidden());
                }
                lc.show(id, real)
            })
        }
        "DescribeInstanceStatus" => rewrite_states(text, shapes::INSTANCE_STATUS, |id, real| lc.show(id, real)),
        "StopInstances" => rewrite_states(text, shapes::STATE_CHANGES, |id, real| {
            lc.stopping(id, region);
            lc.show(id, real)
        }),
        "TerminateInstances" => rewrite_states(text, shapes::STATE_CHANGES, |id, real| {
            lc.terminating(id, region);
            lc.show(id, real)
        }),
        "CreateImage" | "CopyImage" => {
            if let Some(id) = element_text(text, "imageId") {
                lc.image_created(&id, region);
            }
            return body;
        }
        "DescribeImages" => rewrite_states(text, shapes::IMAGES, |id, real| lc.show(id, real)),
        // moto's snapshot is `completed` from StartSnapshot on; AWS's only after CompleteSnapshot.
        "DescribeSnapshots" => {
            let ebs = &s.ebs;
            rewrite_states(text, shapes::SNAPSHOTS, |id, real| {
                (real == "completed" && ebs.pending(id)).then(|| Shown { code: None, name: "pending".into() })
            })
        }
        _ => return body,
    };
    match out {
        Ok(t) => Bytes::from(t),
        // An answer we cannot parse goes through as it is.
        Err(_) => body,
    }
}

/// An EBS call the proxy answers itself: a refused block or completion (checked like AWS), or a
/// fast-mode block. `None`: on to moto.
fn ebs_locally(
    shared: &Shared,
    call: &ApiCall,
    headers: &hyper::HeaderMap,
    body: &Bytes,
) -> Option<Response<Full<Bytes>>> {
    let id = call.param("SnapshotId").unwrap_or_default();
    // Hashed before taking the lock: blocks arrive in parallel.
    let digest = if call.action == "PutSnapshotBlock" { ebs::sha256(body) } else { [0; 32] };
    let checked = {
        let mut s = shared.state();
        match call.action.as_str() {
            "PutSnapshotBlock" => {
                let index = call.param("BlockIndex").unwrap_or_default();
                let fast = s.ebs.is_fast(id);
                match s.ebs.put_block(id, index, headers, body, digest) {
                    Ok(checksum) if fast => Ok(Some(checksum)),
                    Ok(_) => Ok(None),
                    Err(r) => Err(r),
                }
            }
            "CompleteSnapshot" => s.ebs.check_complete(id, headers).map(|()| None),
            _ => Ok(None),
        }
    };
    match checked {
        Ok(None) => None,
        // Fast mode: answer as AWS does (201, the checksum echoed, no body).
        Ok(Some(checksum)) => {
            record(shared, call, now_ms(), 201, false);
            let mut r = plain(StatusCode::CREATED, String::new(), "application/json");
            if let Ok(v) = checksum.parse() {
                r.headers_mut().insert("x-amz-checksum", v);
            }
            r.headers_mut().insert("x-amz-checksum-algorithm", hyper::header::HeaderValue::from_static("SHA256"));
            Some(r)
        }
        Err(refused) => {
            record(shared, call, now_ms(), 400, false);
            let mut r = plain(StatusCode::BAD_REQUEST, refused.body(), "application/json");
            r.headers_mut().insert("x-amzn-errortype", hyper::header::HeaderValue::from_static("ValidationException"));
            Some(r)
        }
    }
}

/// moto answered an EBS call: remember started snapshots (fast mode: our block size), completions.
fn ebs_answered(shared: &Shared, call: &ApiCall, body: Bytes) -> Bytes {
    let mut s = shared.state();
    match call.action.as_str() {
        "StartSnapshot" => s.ebs.started(&body).map(Bytes::from).unwrap_or(body),
        "CompleteSnapshot" => {
            s.ebs.completed(call.param("SnapshotId").unwrap_or_default());
            body
        }
        _ => body,
    }
}

fn element_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find('<')? + start;
    Some(xml[start..end].trim().to_string())
}

fn control(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let ok = || plain(StatusCode::OK, "{}".into(), "application/json");
    let bad = |e: String| plain(StatusCode::BAD_REQUEST, e, "text/plain");
    match (method, path) {
        ("GET", "/_proxy/report") => {
            let r = report(&shared.state());
            plain(StatusCode::OK, serde_json::to_string_pretty(&r).unwrap_or_default(), "application/json")
        }
        ("POST", "/_proxy/reset") => {
            let mut s = shared.state();
            s.log.clear();
            s.rules.clear();
            s.lifecycle.clear();
            ok()
        }
        ("POST", "/_proxy/delays") => match serde_json::from_slice::<Delays>(body) {
            Ok(d) => {
                shared.state().lifecycle.delays = d;
                ok()
            }
            Err(e) => bad(format!("delays: {e}")),
        },
        ("POST", "/_proxy/faults") => match serde_json::from_slice::<FaultRule>(body) {
            Ok(r) => {
                shared.state().rules.push(r);
                ok()
            }
            Err(e) => bad(format!("fault rule: {e}")),
        },
        _ => plain(StatusCode::NOT_FOUND, format!("no control endpoint {method} {path}"), "text/plain"),
    }
}
