//! Spreading API calls: a process-wide token bucket per (endpoint, region, service, bucket), taken
//! before each request is sent, so that many builds at once stay under an account's request limits
//! instead of bursting into them and living on retries.
//!
//! # What AWS limits
//!
//! EC2 throttles each account per region with token buckets ("Request throttling for the Amazon EC2
//! API", <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>): every request
//! takes a token, a bucket refills at a fixed rate up to its capacity, and an empty bucket answers
//! `RequestLimitExceeded`. The page evaluates each API on its own bucket, sized by the API's category
//! (request token bucket sizes and refill rates, defaults that AWS may raise per account):
//!
//! | category | capacity | refill per second |
//! |---|---|---|
//! | non-mutating (`Describe*`, `Get*`) | 100 | 20 |
//! | unfiltered and unpaginated non-mutating | 50 | 10 |
//! | mutating (everything else) | 200 | 5 |
//! | resource-intensive (`AuthorizeSecurityGroupIngress`, `CreateKeyPair`, `RevokeSecurityGroupIngress`, …) | 50 | 5 |
//!
//! `RunInstances`, `StartInstances`, `StopInstances` and `TerminateInstances` also spend resource
//! tokens (one per instance, RunInstances refilling at 2 a second from 1,000): one build launches one
//! instance per call, so the request bucket is the tighter one for it and is what this module spreads.
//! Systems Manager's Parameter Store allows 40 transactions a second by default for
//! `GetParameter`/`GetParameters`/`GetParametersByPath` together ("Systems Manager endpoints and
//! quotas"; the API reference of `GetParameter` and `PutParameter` points there); its writes are
//! spread at a conservative 3 a second.
//!
//! # Why here, and not the SDK's adaptive retry mode
//!
//! The SDK's `adaptive` retry mode is reactive: its client rate limiter stays off until a throttling
//! error comes back (`aws-smithy-runtime`, `client::retries::client_rate_limiter`: "when a throttling
//! error is encountered it is enabled") and then cubically backs off the whole client. 500 builds
//! starting at once would first spend the account's burst, get throttled, and only then slow down —
//! the burst the issue asks to avoid, and a throttled account hurts everything else running in it.
//! This limiter is proactive: it never lets more than the bucket out, so a well-behaved process is
//! not throttled at all, and the standard retry mode (which still retries `RequestLimitExceeded`
//! caused by other users of the account) stays the retry policy.
//!
//! # How
//!
//! The builder's clients share one HTTP client ([`crate::clients::ClientCache`]); [`RateLimitedClient`]
//! wraps it. Its connector reads what a request is before it goes out: the service and region from
//! the SigV4 credential scope in `Authorization`, the EC2 action from the form body (`Action=…`; a
//! `Describe*` with no parameter but `Action`/`Version` is "unfiltered and unpaginated"), the SSM
//! action from `X-Amz-Target`. Then it takes a token — waiting, asynchronously, until the moment the
//! token is due (no polling, no fixed sleeps) — and sends. The wrapper sees every attempt, retries
//! included (each is a request AWS counts), for every client built on it, with no change at the ~50
//! call sites; a per-operation `customize()` would need one at each, and interceptors cannot wait.
//! Services without a bucket here (STS, S3, EBS direct) pass straight through.
//!
//! Tokens are handed out by reservation (a bucket may go into debt; each caller learns the instant its
//! token is due and sleeps until then), so waiters are served in arrival order and the lock is never
//! held across an await. A caller dropped while waiting has spent its token: conservative.
//!
//! The SDK's per-attempt timeout would count the wait for a token as part of the attempt (and retry a
//! call that only queued). So with a limiter the attempt timeout moves here: it covers the request
//! from the moment its token is granted ([`RateLimitedClient::attempt_timeout`]).
//!
//! A single build is never slowed: its calls are far below any bucket's capacity, which starts full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_ec2::config::SharedHttpClient;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::time::Instant;

/// One bucket's size: `capacity` tokens (the burst), refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens the bucket holds when full (and starts with).
    pub capacity: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Limit {
    /// A limit of `capacity` tokens refilled at `per_second`.
    pub const fn new(capacity: u32, per_second: f64) -> Self {
        Limit { capacity, per_second }
    }
}

/// The bucket categories (EC2's, plus Parameter Store reads and writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// EC2 `Describe*`/`Get*` with filters, ids or pagination.
    NonMutating,
    /// EC2 `Describe*`/`Get*` with no parameter at all.
    Unfiltered,
    /// Every other EC2 action.
    Mutating,
    /// EC2's resource-intensive actions ([`RESOURCE_INTENSIVE`]).
    ResourceIntensive,
    /// SSM reads (`Get*`, `Describe*`, `List*`).
    SsmRead,
    /// Other SSM actions (`PutParameter`, `DeleteParameter`, tags...).
    SsmWrite,
}

impl Category {
    /// Short name, for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::NonMutating => "ec2 non-mutating",
            Category::Unfiltered => "ec2 unfiltered describe",
            Category::Mutating => "ec2 mutating",
            Category::ResourceIntensive => "ec2 resource-intensive",
            Category::SsmRead => "ssm read",
            Category::SsmWrite => "ssm write",
        }
    }
}

/// EC2 actions in the resource-intensive category (of those documented, the ones a builder may call
/// and their kin).
pub const RESOURCE_INTENSIVE: &[&str] = &[
    "AcceptVpcPeeringConnection",
    "AuthorizeSecurityGroupIngress",
    "CancelSpotFleetRequests",
    "CreateKeyPair",
    "CreateVpcPeeringConnection",
    "DeleteVpcPeeringConnection",
    "RejectVpcPeeringConnection",
    "RevokeSecurityGroupIngress",
    "RequestSpotFleet",
    "RequestSpotInstances",
];

/// The category of an EC2 action (`unfiltered`: the call has no parameter besides the action).
pub fn ec2_category(action: &str, unfiltered: bool) -> Category {
    if action.starts_with("Describe") || action.starts_with("Get") {
        if unfiltered { Category::Unfiltered } else { Category::NonMutating }
    } else if RESOURCE_INTENSIVE.contains(&action) {
        Category::ResourceIntensive
    } else {
        Category::Mutating
    }
}

/// The category of an SSM action.
pub fn ssm_category(action: &str) -> Category {
    if ["Get", "Describe", "List"].iter().any(|p| action.starts_with(p)) {
        Category::SsmRead
    } else {
        Category::SsmWrite
    }
}

/// Which calls share a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// One bucket per API action, sized by its category: how EC2 evaluates requests today.
    #[default]
    PerAction,
    /// One bucket per category for all its actions: stricter (how EC2 documented it earlier), for an
    /// account whose other users leave little headroom.
    PerCategory,
}

/// The limits the builder keeps to, per account and region.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    /// EC2 non-mutating calls. Default 100, 20/s.
    pub non_mutating: Limit,
    /// EC2 unfiltered and unpaginated describes. Default 50, 10/s.
    pub unfiltered: Limit,
    /// EC2 mutating calls. Default 200, 5/s.
    pub mutating: Limit,
    /// EC2 resource-intensive calls. Default 50, 5/s.
    pub resource_intensive: Limit,
    /// SSM reads. Default 40, 40/s.
    pub ssm_read: Limit,
    /// SSM writes. Default 3, 3/s.
    pub ssm_write: Limit,
    /// Which calls share a bucket. Default per action.
    pub granularity: Granularity,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::documented()
    }
}

impl RateLimits {
    /// The documented default limits (see the module doc).
    pub fn documented() -> Self {
        RateLimits {
            non_mutating: Limit::new(100, 20.0),
            unfiltered: Limit::new(50, 10.0),
            mutating: Limit::new(200, 5.0),
            resource_intensive: Limit::new(50, 5.0),
            ssm_read: Limit::new(40, 40.0),
            ssm_write: Limit::new(3, 3.0),
            granularity: Granularity::PerAction,
        }
    }

    /// The same limit for every category (tests, or an account with its own known limits).
    pub fn uniform(limit: Limit, granularity: Granularity) -> Self {
        RateLimits {
            non_mutating: limit,
            unfiltered: limit,
            mutating: limit,
            resource_intensive: limit,
            ssm_read: limit,
            ssm_write: limit,
            granularity,
        }
    }

    /// Every limit scaled by `fraction` (capacity rounded up to at least 1): to leave headroom for
    /// other users of the account.
    pub fn scaled(&self, fraction: f64) -> Self {
        let s = |l: Limit| Limit::new(((l.capacity as f64 * fraction).ceil() as u32).max(1), l.per_second * fraction);
        RateLimits {
            non_mutating: s(self.non_mutating),
            unfiltered: s(self.unfiltered),
            mutating: s(self.mutating),
            resource_intensive: s(self.resource_intensive),
            ssm_read: s(self.ssm_read),
            ssm_write: s(self.ssm_write),
            granularity: self.granularity,
        }
    }

    /// The limit of a category.
    pub fn of(&self, c: Category) -> Limit {
        match c {
            Category::NonMutating => self.non_mutating,
            Category::Unfiltered => self.unfiltered,
            Category::Mutating => self.mutating,
            Category::ResourceIntensive => self.resource_intensive,
            Category::SsmRead => self.ssm_read,
            Category::SsmWrite => self.ssm_write,
        }
    }
}

/// What a request is, as far as the limiter cares.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallKey {
    /// `scheme://host[:port]` the request goes to.
    pub endpoint: String,
    /// The region of its signature.
    pub region: String,
    /// `ec2` or `ssm`.
    pub service: String,
    /// The API action.
    pub action: String,
    /// Its category.
    pub category: Category,
}

/// Read what a signed request is: `None` for services without a bucket (or an unsigned request).
pub fn classify(req: &HttpRequest) -> Option<CallKey> {
    let auth = req.headers().get("authorization")?;
    let scope = auth.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    // AKID/DATE/REGION/SERVICE/aws4_request
    let mut parts = scope.split('/').skip(2);
    let region = parts.next()?.to_string();
    let service = parts.next()?.to_string();
    let (action, category) = match service.as_str() {
        "ec2" => {
            let body = std::str::from_utf8(req.body().bytes()?).ok()?;
            let mut action = None;
            let mut unfiltered = true;
            for pair in body.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "Action" => action = Some(v.to_string()),
                    "Version" | "DryRun" | "" => {}
                    _ => unfiltered = false,
                }
            }
            let action = action?;
            let c = ec2_category(&action, unfiltered);
            (action, c)
        }
        "ssm" => {
            let target = req.headers().get("x-amz-target")?;
            let action = target.rsplit('.').next()?.to_string();
            let c = ssm_category(&action);
            (action, c)
        }
        _ => return None,
    };
    let uri = req.uri();
    let endpoint = match uri.find("://") {
        Some(i) => {
            let rest = &uri[i + 3..];
            let end = rest.find('/').map(|j| i + 3 + j).unwrap_or(uri.len());
            uri[..end].to_string()
        }
        None => uri.to_string(),
    };
    Some(CallKey { endpoint, region, service, action, category })
}

/// (endpoint, region, service, category, action when per action)
type BucketKey = (String, String, String, Category, Option<String>);

#[derive(Debug)]
struct Bucket {
    limit: Limit,
    /// May be negative: tokens promised to callers still waiting.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(limit: Limit, now: Instant) -> Self {
        Bucket { limit, tokens: limit.capacity as f64, at: now }
    }

    /// Take one token; how long until it is due.
    fn reserve(&mut self, now: Instant) -> Duration {
        let rate = self.limit.per_second.max(1e-9);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.limit.capacity.max(1) as f64);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / rate) }
    }
}

/// Counters of one category, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Calls that took a token.
    pub calls: u64,
    /// Of them, calls that had to wait.
    pub waited: u64,
    /// Their total wait.
    pub total_wait: Duration,
    /// The longest single wait.
    pub max_wait: Duration,
}

/// The buckets of a process: share one (behind an `Arc`) between every client that talks to the same
/// accounts.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    stats: Mutex<HashMap<Category, Stats>>,
}

impl RateLimiter {
    /// A limiter with these limits, all buckets full.
    pub fn new(limits: RateLimits) -> Self {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()), stats: Mutex::new(HashMap::new()) }
    }

    /// The process's limiter at the documented limits (what [`crate::ClientOptions::default`] uses):
    /// every builder of the process shares its buckets.
    pub fn process_default() -> Arc<RateLimiter> {
        static SHARED: OnceLock<Arc<RateLimiter>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(RateLimiter::new(RateLimits::documented()))).clone()
    }

    /// The limits.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Take a token for a call of `key`, waiting until it is due.
    pub async fn acquire(&self, key: &CallKey) {
        let wait = self.reserve(key, Instant::now());
        {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            let s = stats.entry(key.category).or_default();
            s.calls += 1;
            if !wait.is_zero() {
                s.waited += 1;
                s.total_wait += wait;
                s.max_wait = s.max_wait.max(wait);
            }
        }
        if !wait.is_zero() {
            tracing::trace!(action = %key.action, region = %key.region, wait_ms = wait.as_millis() as u64, "waiting for an API token");
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserve a token at `now`: how long until it is due.
    fn reserve(&self, key: &CallKey, now: Instant) -> Duration {
        let action = (self.limits.granularity == Granularity::PerAction).then(|| key.action.clone());
        let bk = (key.endpoint.clone(), key.region.clone(), key.service.clone(), key.category, action);
        let limit = self.limits.of(key.category);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.entry(bk).or_insert_with(|| Bucket::new(limit, now)).reserve(now)
    }

    /// Counters per category so far.
    pub fn stats(&self) -> HashMap<Category, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An HTTP client that takes a token from a [`RateLimiter`] before each EC2 and SSM request.
#[derive(Debug, Clone)]
pub struct RateLimitedClient {
    inner: SharedHttpClient,
    limiter: Arc<RateLimiter>,
    attempt_timeout: Option<Duration>,
}

impl RateLimitedClient {
    /// Wrap `inner`.
    pub fn new(inner: SharedHttpClient, limiter: Arc<RateLimiter>) -> Self {
        RateLimitedClient { inner, limiter, attempt_timeout: None }
    }

    /// Give up on a request this long after its token was granted (the SDK's attempt timeout, moved
    /// here so that waiting for a token does not count).
    pub fn attempt_timeout(mut self, d: Option<Duration>) -> Self {
        self.attempt_timeout = d;
        self
    }

    /// As the SDK's shared client type.
    pub fn shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }
}

impl HttpClient for RateLimitedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
            attempt_timeout: self.attempt_timeout,
        })
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct Connector {
    inner: SharedHttpConnector,
    limiter: Arc<RateLimiter>,
    attempt_timeout: Option<Duration>,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let key = classify(&request);
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        let timeout = self.attempt_timeout;
        HttpConnectorFuture::new(async move {
            if let Some(k) = &key {
                limiter.acquire(k).await;
            }
            let call = inner.call(request);
            match timeout {
                Some(d) => match tokio::time::timeout(d, call).await {
                    Ok(r) => r,
                    Err(_) => Err(ConnectorError::timeout(
                        format!("no answer within the attempt timeout ({} s)", d.as_secs()).into(),
                    )),
                },
                None => call.await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(action: &str, category: Category) -> CallKey {
        CallKey {
            endpoint: "https://ec2.eu-west-1.amazonaws.com".into(),
            region: "eu-west-1".into(),
            service: "ec2".into(),
            action: action.into(),
            category,
        }
    }

    fn signed(body: &str, target: Option<&str>, service: &str) -> HttpRequest {
        let mut req = HttpRequest::new(aws_smithy_types::body::SdkBody::from(body.to_string()));
        req.set_uri("http://127.0.0.1:4566/").unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/{service}/aws4_request, SignedHeaders=host, Signature=00"),
        );
        if let Some(t) = target {
            req.headers_mut().insert("x-amz-target", t.to_string());
        }
        req
    }

    #[test]
    fn requests_are_classified_from_the_signature_and_body() {
        let k = classify(&signed("Action=DescribeImages&Version=2016-11-15&Owner.1=self", None, "ec2")).unwrap();
        assert_eq!((k.region.as_str(), k.service.as_str(), k.action.as_str()), ("eu-west-1", "ec2", "DescribeImages"));
        assert_eq!(k.category, Category::NonMutating);
        assert_eq!(k.endpoint, "http://127.0.0.1:4566");
        let k = classify(&signed("Action=DescribeInstances&Version=2016-11-15", None, "ec2")).unwrap();
        assert_eq!(k.category, Category::Unfiltered);
        let k = classify(&signed("Action=AuthorizeSecurityGroupIngress&GroupId=sg-1", None, "ec2")).unwrap();
        assert_eq!(k.category, Category::ResourceIntensive);
        let k = classify(&signed("Action=RunInstances&MinCount=1", None, "ec2")).unwrap();
        assert_eq!(k.category, Category::Mutating);
        let k = classify(&signed("{}", Some("AmazonSSM.GetParameter"), "ssm")).unwrap();
        assert_eq!((k.action.as_str(), k.category), ("GetParameter", Category::SsmRead));
        let k = classify(&signed("{}", Some("AmazonSSM.PutParameter"), "ssm")).unwrap();
        assert_eq!(k.category, Category::SsmWrite);
        assert!(classify(&signed("Action=GetCallerIdentity", None, "sts")).is_none());
    }

    /// A burst up to capacity goes at once; after it, tokens come at the refill rate, in order.
    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_refill_rate() {
        let limiter = Arc::new(RateLimiter::new(RateLimits::uniform(Limit::new(10, 5.0), Granularity::PerAction)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire(&key("DescribeImages", Category::NonMutating)).await;
                start.elapsed()
            }));
        }
        let mut at: Vec<Duration> = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap());
        }
        at.sort();
        assert!(at[..10].iter().all(|d| d.is_zero()), "the burst is not delayed: {at:?}");
        // The other 20 at 5 a second: the last one 4 s after the start.
        assert_eq!(at[29], Duration::from_secs(4));
        // No 1-second window holds more than capacity + rate.
        for (i, a) in at.iter().enumerate() {
            let n = at[i..].iter().take_while(|b| **b < *a + Duration::from_secs(1)).count();
            assert!(n <= 15, "{n} calls within a second from {a:?}");
        }
        let s = limiter.stats()[&Category::NonMutating];
        assert_eq!((s.calls, s.waited), (30, 20));
    }

    /// Buckets are apart per action (by default), category, region and endpoint; a full bucket never
    /// delays a call.
    #[tokio::test(start_paused = true)]
    async fn buckets_are_apart_and_start_full() {
        let limiter = RateLimiter::new(RateLimits::uniform(Limit::new(1, 1.0), Granularity::PerAction));
        let now = Instant::now();
        assert_eq!(limiter.reserve(&key("DescribeImages", Category::NonMutating), now), Duration::ZERO);
        assert_eq!(limiter.reserve(&key("DescribeInstances", Category::NonMutating), now), Duration::ZERO);
        let mut other = key("DescribeImages", Category::NonMutating);
        other.region = "us-east-1".into();
        assert_eq!(limiter.reserve(&other, now), Duration::ZERO);
        assert_eq!(limiter.reserve(&key("DescribeImages", Category::NonMutating), now), Duration::from_secs(1));

        let shared = RateLimiter::new(RateLimits::uniform(Limit::new(1, 1.0), Granularity::PerCategory));
        assert_eq!(shared.reserve(&key("DescribeImages", Category::NonMutating), now), Duration::ZERO);
        assert_eq!(shared.reserve(&key("DescribeInstances", Category::NonMutating), now), Duration::from_secs(1));
        // Refilled after a quiet while: no wait.
        let later = now + Duration::from_secs(10);
        assert_eq!(shared.reserve(&key("DescribeInstances", Category::NonMutating), later), Duration::ZERO);
    }

    #[test]
    fn documented_defaults() {
        let l = RateLimits::documented();
        assert_eq!(l.of(Category::NonMutating), Limit::new(100, 20.0));
        assert_eq!(l.of(Category::Unfiltered), Limit::new(50, 10.0));
        assert_eq!(l.of(Category::Mutating), Limit::new(200, 5.0));
        assert_eq!(l.of(Category::ResourceIntensive), Limit::new(50, 5.0));
        assert_eq!(l.scaled(0.5).of(Category::Mutating), Limit::new(100, 2.5));
    }
}
