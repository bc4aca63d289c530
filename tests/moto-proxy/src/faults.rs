//! Errors the proxy answers instead of moto: throttling, 5xx, or any AWS error, on chosen actions a
//! chosen number of times.

use serde::{Deserialize, Serialize};

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP status.
    pub status: u16,
    /// AWS error code (`RequestLimitExceeded`, `InternalError`...).
    pub code: String,
    /// Error message.
    pub message: String,
    /// Forward the call to moto first and answer the error anyway: the call took effect but its
    /// answer was lost (what makes clients retry something that succeeded).
    #[serde(default)]
    pub forward: bool,
}

impl Fault {
    /// EC2 throttling: HTTP 503 `RequestLimitExceeded`.
    pub fn throttle() -> Self {
        Fault::error(503, "RequestLimitExceeded", "Request limit exceeded.")
    }

    /// An internal error: HTTP 500 `InternalError`.
    pub fn server_error() -> Self {
        Fault::error(500, "InternalError", "An internal error has occurred (injected by imgbake-moto-proxy).")
    }

    /// Service unavailable: HTTP 503 `Unavailable`.
    pub fn unavailable() -> Self {
        Fault::error(503, "Unavailable", "The service is unavailable.")
    }

    /// Any error, e.g. a non-retryable 400 `UnauthorizedOperation` to fail a build mid-way.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Fault { status, code: code.into(), message: message.into(), forward: false }
    }

    /// The same error, answered after moto carried the call out.
    pub fn after_forwarding(mut self) -> Self {
        self.forward = true;
        self
    }

    /// The answer body: EC2's query-protocol error XML, or the JSON protocol's error document.
    pub fn body(&self, json: bool) -> (String, &'static str) {
        if json {
            let doc = serde_json::json!({ "__type": self.code, "message": self.message });
            (doc.to_string(), "application/x-amz-json-1.1")
        } else {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>imgbake-moto-proxy</RequestID></Response>",
                escape(&self.code),
                escape(&self.message)
            );
            (xml, "text/xml")
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Answer `fault` to `action` calls: skip the first `after` matching calls, then fail `times` of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The API action (`DescribeInstances`); `*` matches every action.
    pub action: String,
    /// The error to answer.
    pub fault: Fault,
    /// Let this many matching calls through first.
    #[serde(default)]
    pub after: u32,
    /// Then fail this many (`u32::MAX`: every one).
    pub times: u32,
    /// How many it failed so far.
    #[serde(default)]
    pub injected: u32,
    #[serde(default)]
    seen: u32,
}

impl FaultRule {
    /// Fail the next `times` calls of `action`.
    pub fn new(action: &str, fault: Fault, times: u32) -> Self {
        FaultRule { action: action.into(), fault, after: 0, times, injected: 0, seen: 0 }
    }

    /// Let `n` matching calls through before failing.
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }

    /// Does this rule fail this call? Counts it either way.
    pub fn applies(&mut self, action: &str) -> bool {
        if self.action != "*" && self.action != action {
            return false;
        }
        self.seen += 1;
        if self.seen <= self.after || self.injected >= self.times {
            return false;
        }
        self.injected += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_then_times() {
        let mut r = FaultRule::new("CreateImage", Fault::throttle(), 2).after(1);
        assert!(!r.applies("DescribeImages"));
        assert!(!r.applies("CreateImage"));
        assert!(r.applies("CreateImage"));
        assert!(r.applies("CreateImage"));
        assert!(!r.applies("CreateImage"));
        assert_eq!(r.injected, 2);
        let (xml, _) = Fault::throttle().body(false);
        assert!(xml.contains("<Code>RequestLimitExceeded</Code>"));
    }
}
