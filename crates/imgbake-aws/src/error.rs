//! Errors of the EC2 builder. Every API failure names the call, the region and the resource it was
//! about, keeps AWS's error code, and says what to do where that is clear.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use imgbake_core::error::{BuildError, ErrorKind};

/// An AWS API call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} in {region}{target}: {detail}{hint}", target = self.target_text(), hint = self.hint())]
pub struct ApiError {
    /// The call (`RunInstances`, `PutParameter`...).
    pub operation: &'static str,
    /// The region it was made in.
    pub region: String,
    /// The resource it was about (an AMI id, a subnet...), if any.
    pub target: Option<String>,
    /// AWS's error code (`InvalidAMIID.NotFound`, `RequestLimitExceeded`...), if AWS answered.
    pub code: Option<String>,
    /// The HTTP status, if AWS answered.
    pub status: Option<u16>,
    /// AWS's message, or the transport error's chain.
    pub detail: String,
}

/// Codes that mean the credentials are wrong, not the request.
const CREDENTIAL_CODES: &[&str] = &[
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "InvalidAccessKeyId",
];

impl ApiError {
    /// From an SDK error.
    pub fn from_sdk<E>(
        operation: &'static str,
        region: &str,
        target: Option<String>,
        e: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        let detail = match (&code, e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            // No answer at all (refused, unresolvable, timed out): the innermost cause is what a user
            // can act on, not the SDK's whole chain.
            _ if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
                let mut cause: &dyn std::error::Error = &e;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                let what = if matches!(e, SdkError::TimeoutError(_)) { "no answer in time" } else { "cannot connect" };
                format!("{what}: {cause}")
            }
            _ => DisplayErrorContext(&e).to_string(),
        };
        ApiError { operation, region: region.to_string(), target, code, status, detail }
    }

    fn target_text(&self) -> String {
        self.target.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
    }

    fn hint(&self) -> &'static str {
        if self.is_credentials() {
            " (check the AWS credentials: environment, profile, or assumed role)"
        } else if self.is_unreachable() {
            " (check aws.endpoint, the network, or the proxy settings)"
        } else if self.code_is("UnauthorizedOperation") {
            " (the credentials lack this IAM permission)"
        } else {
            ""
        }
    }

    /// The error code is `code`.
    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The code ends with `.NotFound` / `NotFound` (the resource does not exist, or not yet).
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(|c| c.ends_with("NotFound") || c == "ParameterNotFound")
    }

    /// AWS never answered (no status): a wrong or closed endpoint, no network.
    pub fn is_unreachable(&self) -> bool {
        self.status.is_none() && self.code.is_none()
    }

    /// The credentials were refused.
    pub fn is_credentials(&self) -> bool {
        self.code.as_deref().is_some_and(|c| CREDENTIAL_CODES.contains(&c))
    }

    /// Throttled, or a 5xx: worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            matches!(
                c,
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "TooManyRequestsException"
                    | "InternalError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "Unavailable"
            )
        }) || self.status.is_some_and(|s| s >= 500)
    }
}

impl From<ApiError> for BuildError {
    fn from(e: ApiError) -> Self {
        BuildError::new(ErrorKind::Platform, e.to_string()).caused_by(e)
    }
}

/// `.api("RunInstances", region, target)?` on SDK results.
pub trait SdkResultExt<T> {
    /// Name the failed call.
    fn api(self, operation: &'static str, region: &str, target: Option<String>) -> Result<T, ApiError>;
}

impl<T, E> SdkResultExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn api(self, operation: &'static str, region: &str, target: Option<String>) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::from_sdk(operation, region, target, e))
    }
}

/// A configuration problem found at build time (a filter matching nothing...).
pub fn config(message: impl Into<String>) -> BuildError {
    BuildError::new(ErrorKind::Config, message)
}

/// The platform answered something unusable (an answer without an id...).
pub fn platform(message: impl Into<String>) -> BuildError {
    BuildError::new(ErrorKind::Platform, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Option<&str>, status: Option<u16>) -> ApiError {
        ApiError {
            operation: "DescribeImages",
            region: "eu-west-1".into(),
            target: Some("ami-1".into()),
            code: code.map(str::to_string),
            status,
            detail: "x".into(),
        }
    }

    #[test]
    fn classification_and_text() {
        assert!(err(Some("InvalidAMIID.NotFound"), Some(400)).is_not_found());
        assert!(err(Some("RequestLimitExceeded"), Some(503)).is_transient());
        assert!(err(None, Some(502)).is_transient());
        assert!(!err(Some("InvalidParameterValue"), Some(400)).is_transient());
        let e = err(Some("AuthFailure"), Some(401));
        assert!(e.is_credentials());
        assert_eq!(
            e.to_string(),
            "DescribeImages in eu-west-1 (ami-1): x (check the AWS credentials: environment, profile, or assumed role)"
        );
    }
}
