//! What an AWS API request is: its action, service and region, read from the request itself.
//!
//! EC2 and STS use the query protocol (`Action=...` in a form body); SSM uses JSON with an
//! `X-Amz-Target: AmazonSSM.PutParameter` header. The region and service are in the SigV4 credential
//! scope of the `Authorization` header (`Credential=AKID/20240101/eu-west-1/ec2/aws4_request`).
//! The EBS direct APIs are REST: the action is in the method and the path
//! (`PUT /snapshots/snap-1/blocks/7` is PutSnapshotBlock), and the body is block data.

use hyper::HeaderMap;

/// The parts of a request the proxy cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiCall {
    /// `DescribeInstances`, `PutParameter`... (empty when the request is not an API call).
    pub action: String,
    /// `ec2`, `ssm`, `sts`... from the credential scope.
    pub service: String,
    /// The region from the credential scope.
    pub region: String,
    /// The decoded form parameters (query protocol only).
    pub params: Vec<(String, String)>,
}

impl ApiCall {
    /// Read an API call from its headers and body.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> ApiCall {
        let (region, service) = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(credential_scope)
            .unwrap_or_default();
        if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
            let action = target.rsplit('.').next().unwrap_or(target).to_string();
            return ApiCall { action, service, region, params: Vec::new() };
        }
        let params = parse_form(body);
        let action = params.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()).unwrap_or_default();
        ApiCall { action, service, region, params }
    }

    /// Read an API call from the whole request: REST calls (EBS) by their method and path, the
    /// others as [`ApiCall::parse`] does. For EBS, `params` holds `SnapshotId` and `BlockIndex`
    /// from the path.
    pub fn parse_request(method: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> ApiCall {
        let (region, service) = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(credential_scope)
            .unwrap_or_default();
        if service == "ebs" {
            let (action, params) = ebs_action(method, path);
            return ApiCall { action: action.to_string(), service, region, params };
        }
        ApiCall::parse(headers, body)
    }

    /// The first value of a form parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `(region, service)` from a SigV4 `Authorization` header.
fn credential_scope(auth: &str) -> (String, String) {
    let Some(rest) = auth.split("Credential=").nth(1) else { return Default::default() };
    let scope = rest.split([',', ' ']).next().unwrap_or_default();
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [_, _, region, service, ..] => (region.to_string(), service.to_string()),
        _ => Default::default(),
    }
}

/// The EBS direct API action of a request, and the ids in its path.
fn ebs_action(method: &str, path: &str) -> (&'static str, Vec<(String, String)>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), percent_decode(v))).collect();
    match (method, parts.as_slice()) {
        ("POST", ["snapshots"]) => ("StartSnapshot", Vec::new()),
        ("POST", ["snapshots", "completion", id]) => ("CompleteSnapshot", p(&[("SnapshotId", id)])),
        ("PUT", ["snapshots", id, "blocks", index]) => {
            ("PutSnapshotBlock", p(&[("SnapshotId", id), ("BlockIndex", index)]))
        }
        ("GET", ["snapshots", id, "blocks", index]) => {
            ("GetSnapshotBlock", p(&[("SnapshotId", id), ("BlockIndex", index)]))
        }
        ("GET", ["snapshots", id, "blocks"]) => ("ListSnapshotBlocks", p(&[("SnapshotId", id)])),
        ("GET", ["snapshots", id, "changedblocks"]) => ("ListChangedBlocks", p(&[("SnapshotId", id)])),
        _ => ("", Vec::new()),
    }
}

/// Decode an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_protocol_call() {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=x"
                .parse()
                .unwrap(),
        );
        let call = ApiCall::parse(
            &h,
            b"Action=RunInstances&Version=2016-11-15&UserData=aGk%3D&TagSpecification.1.Tag.1.Value=a+b",
        );
        assert_eq!(call.action, "RunInstances");
        assert_eq!(call.region, "eu-west-1");
        assert_eq!(call.service, "ec2");
        assert_eq!(call.param("UserData"), Some("aGk="));
        assert_eq!(call.param("TagSpecification.1.Tag.1.Value"), Some("a b"));
    }

    #[test]
    fn ebs_rest_calls() {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/ebs/aws4_request, SignedHeaders=host, Signature=x"
                .parse()
                .unwrap(),
        );
        let put = ApiCall::parse_request("PUT", "/snapshots/snap-1/blocks/7", &h, b"Action=Nope");
        assert_eq!((put.action.as_str(), put.service.as_str()), ("PutSnapshotBlock", "ebs"));
        assert_eq!((put.param("SnapshotId"), put.param("BlockIndex")), (Some("snap-1"), Some("7")));
        assert_eq!(ApiCall::parse_request("POST", "/snapshots", &h, b"{}").action, "StartSnapshot");
        assert_eq!(ApiCall::parse_request("POST", "/snapshots/completion/snap-1", &h, b"").action, "CompleteSnapshot");
        assert_eq!(ApiCall::parse_request("GET", "/snapshots/snap-1/blocks", &h, b"").action, "ListSnapshotBlocks");
        assert_eq!(ApiCall::parse_request("GET", "/snapshots/snap-1/blocks/7", &h, b"").action, "GetSnapshotBlock");
    }

    #[test]
    fn json_protocol_call_and_odd_escapes() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", "AmazonSSM.PutParameter".parse().unwrap());
        let call = ApiCall::parse(&h, b"{}");
        assert_eq!(call.action, "PutParameter");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
