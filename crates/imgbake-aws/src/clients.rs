//! AWS clients, one set per (region, profile, endpoint, role), made once and shared.
//!
//! Credentials come from the standard aws-config chain (environment, shared profile files, SSO,
//! `credential_process`, web identity, ECS, IMDS) unless the library user hands in a provider; a role
//! to assume wraps them. TLS is rustls on ring only (no aws-lc), through an explicitly built client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::AwsSettings;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{ProvideCredentials, Region, SharedCredentialsProvider, SharedHttpClient};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use imgbake_core::cleanup::Resource;
use imgbake_core::error::{BuildError, ErrorKind};

use crate::error::SdkResultExt;

/// Which AWS session a set of clients talks to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Session {
    /// The region.
    pub region: String,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Endpoint override for every service the builder uses (EC2, SSM, STS, EBS).
    pub endpoint: Option<String>,
    /// Role assumed on top of the base credentials.
    pub role: Option<String>,
}

impl Session {
    /// The session of an image's settings, in `region`.
    pub fn of(settings: &AwsSettings, region: &str) -> Self {
        Session {
            region: region.to_string(),
            profile: settings.profile.clone(),
            endpoint: settings.endpoint.as_ref().map(|e| e.get_ref().clone()),
            role: settings.assume_role_arn.clone(),
        }
    }

    /// The same session in another region.
    pub fn in_region(&self, region: &str) -> Self {
        Session { region: region.to_string(), ..self.clone() }
    }

    /// The session a journaled resource was created in (so `imgbake clean` reaches it again).
    pub fn of_resource(r: &Resource) -> Self {
        Session {
            region: r.region.clone().unwrap_or_default(),
            profile: r.extra.get("profile").cloned(),
            endpoint: r.extra.get("endpoint").cloned(),
            role: r.extra.get("role").cloned(),
        }
    }

    /// A resource of this session: region and the session's details in `extra`.
    pub fn resource(&self, kind: &str, id: &str) -> Resource {
        let mut r = Resource::new("aws", kind, id).region(&self.region);
        if let Some(p) = &self.profile {
            r = r.with("profile", p);
        }
        if let Some(e) = &self.endpoint {
            r = r.with("endpoint", e);
        }
        if let Some(role) = &self.role {
            r = r.with("role", role);
        }
        r
    }
}

/// Where the credentials chain looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Environment {
    /// The process environment and the user's shared config files (the normal case).
    #[default]
    Process,
    /// Nothing from the process environment or the user's profile files: only what the options hand
    /// in (tests, embedding).
    Isolated,
}

/// Who the credentials belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The account id.
    pub account: String,
    /// The caller's ARN.
    pub arn: String,
}

/// One session's clients.
#[derive(Debug)]
pub struct Clients {
    /// The session.
    pub session: Session,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// SSM.
    pub ssm: aws_sdk_ssm::Client,
    /// EBS direct APIs (snapshots written block by block: [`crate::ebs_direct`]).
    pub ebs: aws_sdk_ebs::Client,
    /// STS.
    pub sts: aws_sdk_sts::Client,
    credentials: Option<SharedCredentialsProvider>,
    /// The library user handed the credentials in (no profile is read then).
    explicit_credentials: bool,
    environment: Environment,
    credentials_ok: tokio::sync::OnceCell<()>,
    identity: tokio::sync::OnceCell<Identity>,
}

impl Clients {
    /// The region.
    pub fn region(&self) -> &str {
        &self.session.region
    }

    /// Check that the credentials chain yields credentials at all (locally, no AWS call; once per
    /// session): missing credentials are a clear error before anything else.
    pub async fn check_credentials(&self) -> Result<(), BuildError> {
        self.credentials_ok
            .get_or_try_init(|| async {
                let profile = self.session.profile.as_deref().map(|p| format!(" (profile `{p}`)")).unwrap_or_default();
                let hint = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, choose a profile (aws.profile or AWS_PROFILE), log in with `aws sso login`, or run with an instance role";
                let Some(provider) = &self.credentials else {
                    return Err(BuildError::new(ErrorKind::Config, format!("no AWS credentials are configured{profile}; {hint}")));
                };
                if let Some(p) = &self.session.profile
                    && !self.explicit_credentials
                    && !profile_exists(self.environment, p).await
                {
                    return Err(BuildError::new(
                        ErrorKind::Config,
                        format!(
                            "AWS profile `{p}` does not exist in the shared config files (~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE): check aws.profile, or create it with `aws configure --profile {p}`"
                        ),
                    ));
                }
                match provider.provide_credentials().await {
                    Ok(_) => Ok(()),
                    // One line: the chain's last word (every source was tried), not the SDK's dump.
                    Err(e) => Err(BuildError::new(
                        ErrorKind::Config,
                        format!("no AWS credentials found{profile}; {hint} (last: {})", innermost(&e)),
                    )),
                }
            })
            .await
            .map(|_| ())
    }

    /// Who the credentials belong to (STS GetCallerIdentity, once per session): refused credentials
    /// are a clear error before anything is created.
    pub async fn identity(&self) -> Result<&Identity, BuildError> {
        self.check_credentials().await?;
        self.identity
            .get_or_try_init(|| async {
                let out = match self
                    .sts
                    .get_caller_identity()
                    .customize()
                    .config_override(crate::preflight::quick_sts())
                    .send()
                    .await
                    .api("GetCallerIdentity", self.region(), None)
                {
                    Ok(out) => out,
                    Err(e) if e.is_unreachable() => {
                        return Err(BuildError::new(ErrorKind::Config, crate::preflight::unreachable(self, &e)));
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Identity {
                    account: out.account().unwrap_or_default().to_string(),
                    arn: out.arn().unwrap_or_default().to_string(),
                })
            })
            .await
    }
}

/// Whether the shared config files define profile `name` (in isolated mode there are none).
async fn profile_exists(env: Environment, name: &str) -> bool {
    if env == Environment::Isolated {
        return false;
    }
    use aws_types::os_shim_internal::{Env, Fs};
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    match aws_config::profile::load(&Fs::real(), &Env::real(), &files, None).await {
        Ok(set) => set.get_profile(name).is_some(),
        // Unreadable or malformed files: let the credentials chain say what is wrong.
        Err(_) => true,
    }
}

/// The innermost cause of an error, shortened: what a user can act on.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// How the builder talks to AWS: credentials, environment, retries, HTTP client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Use these credentials instead of the standard chain.
    pub credentials: Option<SharedCredentialsProvider>,
    /// Where the chain looks.
    pub environment: Environment,
    /// Attempts per API call (the SDK's standard retry mode: throttling, 5xx and transient network
    /// errors are retried with jittered exponential backoff). Default 8.
    pub max_attempts: u32,
    /// First backoff of those retries. Default 500 ms (grows to 20 s).
    pub initial_backoff: Duration,
    /// The HTTP client; default hyper + rustls on ring.
    pub http_client: Option<SharedHttpClient>,
    /// Spread EC2 and SSM calls over token buckets before they are sent ([`crate::rate`]); default the
    /// process's limiter at EC2's documented limits; `None`: no limiting.
    pub rate_limiter: Option<Arc<crate::rate::RateLimiter>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            credentials: None,
            environment: Environment::Process,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            http_client: None,
            rate_limiter: Some(crate::rate::RateLimiter::process_default()),
        }
    }
}

/// The HTTP client the builder uses by default: hyper + rustls on ring.
pub fn default_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// How long one attempt of an API call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Clients made so far, by session.
#[derive(Debug)]
pub struct ClientCache {
    options: ClientOptions,
    http: SharedHttpClient,
    sessions: tokio::sync::Mutex<HashMap<Session, Arc<Clients>>>,
}

impl ClientCache {
    /// An empty cache.
    pub fn new(options: ClientOptions) -> Self {
        let mut http = options.http_client.clone().unwrap_or_else(default_http_client);
        if let Some(limiter) = &options.rate_limiter {
            // The attempt timeout moves into the wrapper: waiting for a token is not a slow answer.
            let limited =
                crate::rate::RateLimitedClient::new(http, limiter.clone()).attempt_timeout(Some(ATTEMPT_TIMEOUT));
            http = limited.shared();
        }
        ClientCache { options, http, sessions: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The clients of `session`, made on first use.
    pub async fn get(&self, session: &Session) -> Arc<Clients> {
        let mut map = self.sessions.lock().await;
        if let Some(c) = map.get(session) {
            return c.clone();
        }
        let c = Arc::new(self.make(session).await);
        map.insert(session.clone(), c.clone());
        c
    }

    async fn make(&self, session: &Session) -> Clients {
        let o = &self.options;
        let retry = RetryConfig::standard()
            .with_max_attempts(o.max_attempts.max(1))
            .with_initial_backoff(o.initial_backoff)
            .with_max_backoff(Duration::from_secs(20));
        let mut timeouts = TimeoutConfig::builder().connect_timeout(Duration::from_secs(10));
        if o.rate_limiter.is_none() {
            timeouts = timeouts.operation_attempt_timeout(ATTEMPT_TIMEOUT);
        }
        let timeouts = timeouts.build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(session.region.clone()))
            .http_client(self.http.clone())
            .retry_config(retry)
            .timeout_config(timeouts);
        if o.rate_limiter.is_some() {
            // Upload stall protection would take the wait for a token for a stalled body (measured:
            // ThroughputBelowMinimum after its 5 s grace); EC2 and SSM send small in-memory bodies.
            use aws_config::stalled_stream_protection::StalledStreamProtectionConfig as Stall;
            loader = loader.stalled_stream_protection(Stall::enabled().upload_enabled(false).build());
        }
        if o.environment == Environment::Isolated {
            use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
            loader = loader
                .empty_test_environment()
                .profile_files(EnvConfigFiles::builder().with_contents(EnvConfigFileKind::Config, "").build());
        }
        if let Some(p) = &session.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &session.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(c) = &o.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let mut conf = loader.load().await;
        if let Some(role) = &session.role {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("imgbake")
                .region(Region::new(session.region.clone()))
                .configure(&conf)
                .build()
                .await;
            conf = conf.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
        }
        Clients {
            session: session.clone(),
            ec2: aws_sdk_ec2::Client::new(&conf),
            ssm: aws_sdk_ssm::Client::new(&conf),
            ebs: aws_sdk_ebs::Client::new(&conf),
            sts: aws_sdk_sts::Client::new(&conf),
            credentials: conf.credentials_provider(),
            explicit_credentials: o.credentials.is_some(),
            environment: o.environment,
            credentials_ok: tokio::sync::OnceCell::new(),
            identity: tokio::sync::OnceCell::new(),
        }
    }
}
