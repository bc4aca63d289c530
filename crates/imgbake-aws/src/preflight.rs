//! Everything that can be checked before anything is created: the regions exist, the network
//! settings name things that exist and fit together (a subnet in another VPC, a security group of
//! another VPC), the SSH source CIDRs are known.

use std::time::Duration;

use aws_sdk_ec2::types::Subnet;
use imgbake_config::{Span, Spanned};

use crate::settings::AwsSettings;
use imgbake_core::error::BuildError;

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt, config};
use crate::tags;

fn span<T>(v: &Spanned<T>) -> Span {
    Span::new(v.span())
}

/// The regions EC2 knows (opted in or not), asked in `c`'s region. A preflight call: it fails fast.
pub async fn known_regions(c: &Clients) -> Result<Vec<String>, ApiError> {
    let out = c.ec2.describe_regions().all_regions(true).customize().config_override(quick_ec2()).send().await.api(
        "DescribeRegions",
        c.region(),
        None,
    )?;
    Ok(out.regions().iter().filter_map(|r| r.region_name().map(str::to_string)).collect())
}

/// Preflight calls answer within seconds: a closed or wrong endpoint fails after two quick
/// attempts, not after the SDK's usual eight with backoff (30 s and more).
fn quick_retry() -> (aws_config::retry::RetryConfig, aws_config::timeout::TimeoutConfig) {
    (
        aws_config::retry::RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(200)),
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build(),
    )
}

/// [`quick_retry`] for EC2 calls.
pub fn quick_ec2() -> aws_sdk_ec2::config::Builder {
    let (r, t) = quick_retry();
    aws_sdk_ec2::config::Builder::default().retry_config(r).timeout_config(t)
}

/// [`quick_retry`] for STS calls.
pub fn quick_sts() -> aws_sdk_sts::config::Builder {
    let (r, t) = quick_retry();
    aws_sdk_sts::config::Builder::default().retry_config(r).timeout_config(t)
}

/// The one line for an endpoint that never answered.
pub fn unreachable(c: &Clients, e: &ApiError) -> String {
    let at = c.session.endpoint.clone().unwrap_or_else(|| format!("the {} endpoint", c.region()));
    format!(
        "cannot reach AWS at {at} ({}: {}): check aws.endpoint, the network, or the proxy settings (HTTPS_PROXY)",
        e.operation, e.detail
    )
}

/// `region` must be one of `known`; `at` is the value naming it.
pub fn check_region(known: &[String], region: &str, at: Span, what: &str) -> Result<(), BuildError> {
    if known.iter().any(|r| r == region) {
        return Ok(());
    }
    let close: Vec<&String> = known.iter().filter(|r| similar(r, region)).take(3).collect();
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(" or "))
    };
    Err(config(format!("{what} `{region}` is not an AWS region{hint}")).at(at))
}

fn similar(a: &str, b: &str) -> bool {
    // Same prefix and direction (eu-west-*), or one character apart.
    let pa: Vec<&str> = a.split('-').collect();
    let pb: Vec<&str> = b.split('-').collect();
    (pa.len() == 3 && pb.len() == 3 && pa[..2] == pb[..2])
        || (a.len() == b.len() && a.chars().zip(b.chars()).filter(|(x, y)| x != y).count() == 1)
}

/// Where the build machine goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// The VPC (temporary security group goes there); `None`: the region's default VPC.
    pub vpc_id: Option<String>,
    /// The subnet; `None`: EC2 picks one of the default VPC.
    pub subnet_id: Option<String>,
    /// The VPC's CIDR, when known (the default SSH source for private addresses).
    pub vpc_cidr: Option<String>,
    /// Whether the chosen subnet gives instances a public IP (`None`: EC2 picks a default-VPC
    /// subnet, which does).
    pub maps_public_ip: Option<bool>,
}

/// Check the subnet, VPC and given security groups, and pick the subnet when only a filter or a VPC
/// is given. No call is made when none of them is set, except to find the default VPC's CIDR when
/// `need_cidr`.
pub async fn network(c: &Clients, a: &AwsSettings, need_cidr: bool) -> Result<Network, BuildError> {
    let region = c.region();
    let mut net = Network::default();
    if let Some(id) = &a.subnet_id {
        let subnet =
            subnets(c, Some(id.get_ref()), None, None)
                .await
                .map_err(|e| e.at(span(id)))?
                .into_iter()
                .next()
                .ok_or_else(|| config(format!("subnet {} does not exist in {region}", id.get_ref())).at(span(id)))?;
        let subnet_vpc = subnet.vpc_id().unwrap_or_default().to_string();
        if let Some(v) = &a.vpc_id
            && v.get_ref() != &subnet_vpc
        {
            return Err(config(format!(
                "subnet {} is in VPC {subnet_vpc}, not in aws.vpc_id {} ({region}): pick a subnet of that VPC, or drop vpc_id",
                id.get_ref(),
                v.get_ref()
            ))
            .at(span(id)));
        }
        net.subnet_id = Some(id.get_ref().clone());
        net.vpc_id = Some(subnet_vpc);
        net.maps_public_ip = subnet.map_public_ip_on_launch();
    } else if let Some(f) = &a.subnet_filter {
        let vpc = a.vpc_id.as_ref().map(|v| v.get_ref().as_str());
        let found = subnets(c, None, Some(f.get_ref()), vpc).await.map_err(|e| e.at(span(f)))?;
        let best = most_free(&found).ok_or_else(|| {
            let tags: Vec<String> = f.get_ref().iter().map(|(k, v)| format!("{k}={v}")).collect();
            let in_vpc = vpc.map(|v| format!(" in VPC {v}")).unwrap_or_default();
            config(format!("aws.subnet_filter ({}) matches no subnet{in_vpc} in {region}", tags.join(", "))).at(span(f))
        })?;
        net.subnet_id = best.subnet_id().map(str::to_string);
        net.vpc_id = best.vpc_id().map(str::to_string);
        net.maps_public_ip = best.map_public_ip_on_launch();
    } else if let Some(v) = &a.vpc_id {
        let found = subnets(c, None, None, Some(v.get_ref())).await.map_err(|e| e.at(span(v)))?;
        vpc_cidr(c, Some(v.get_ref())).await.map_err(|e| e.at(span(v)))?;
        let best = most_free(&found).ok_or_else(|| {
            config(format!("VPC {} has no subnet in {region}; set aws.subnet_id", v.get_ref())).at(span(v))
        })?;
        net.subnet_id = best.subnet_id().map(str::to_string);
        net.vpc_id = Some(v.get_ref().clone());
        net.maps_public_ip = best.map_public_ip_on_launch();
    }
    if let Some(v) = &a.vpc_id
        && net.vpc_id.is_none()
    {
        net.vpc_id = Some(v.get_ref().clone());
    }
    if !a.security_group_ids.is_empty() {
        check_groups(c, a, net.vpc_id.as_deref()).await?;
    }
    if need_cidr {
        net.vpc_cidr = vpc_cidr(c, net.vpc_id.as_deref()).await?;
        if net.vpc_id.is_none() && net.vpc_cidr.is_none() {
            return Err(config(format!(
                "{region} has no default VPC: set aws.subnet_id, aws.subnet_filter or aws.vpc_id"
            )));
        }
    }
    Ok(net)
}

async fn subnets(
    c: &Clients,
    id: Option<&str>,
    filter: Option<&std::collections::BTreeMap<String, String>>,
    vpc: Option<&str>,
) -> Result<Vec<Subnet>, BuildError> {
    let mut req = c.ec2.describe_subnets();
    if let Some(id) = id {
        req = req.subnet_ids(id);
    }
    for (k, v) in filter.into_iter().flatten() {
        req = req.filters(tags::filter(k, v));
    }
    if let Some(v) = vpc {
        req = req.filters(tags::attr("vpc-id", &[v]));
    }
    match req.send().await.api("DescribeSubnets", c.region(), id.map(str::to_string)) {
        Ok(out) => Ok(out.subnets().to_vec()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn most_free(subnets: &[Subnet]) -> Option<&Subnet> {
    subnets.iter().max_by_key(|s| (s.available_ip_address_count().unwrap_or(0), s.subnet_id().map(str::to_string)))
}

/// The CIDR of `vpc` (or of the default VPC); `None` when there is no default VPC.
async fn vpc_cidr(c: &Clients, vpc: Option<&str>) -> Result<Option<String>, BuildError> {
    let mut req = c.ec2.describe_vpcs();
    req = match vpc {
        Some(v) => req.vpc_ids(v),
        None => req.filters(tags::attr("is-default", &["true"])),
    };
    match req.send().await.api("DescribeVpcs", c.region(), vpc.map(str::to_string)) {
        Ok(out) => match (out.vpcs().first(), vpc) {
            (Some(v), _) => Ok(v.cidr_block().map(str::to_string)),
            (None, Some(v)) => Err(config(format!("VPC {v} does not exist in {}", c.region()))),
            (None, None) => Ok(None),
        },
        Err(e) if e.is_not_found() => {
            Err(config(format!("VPC {} does not exist in {}", vpc.unwrap_or("?"), c.region())))
        }
        Err(e) => Err(e.into()),
    }
}

async fn check_groups(c: &Clients, a: &AwsSettings, vpc: Option<&str>) -> Result<(), BuildError> {
    let ids: Vec<String> = a.security_group_ids.iter().map(|g| g.get_ref().clone()).collect();
    let out = c.ec2.describe_security_groups().set_group_ids(Some(ids)).send().await;
    let groups = match out.api("DescribeSecurityGroups", c.region(), None) {
        Ok(o) => o.security_groups().to_vec(),
        // One of them is missing: find which, below.
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    for g in &a.security_group_ids {
        let Some(found) = groups.iter().find(|x| x.group_id() == Some(g.get_ref().as_str())) else {
            return Err(config(format!("security group {} does not exist in {}", g.get_ref(), c.region())).at(span(g)));
        };
        if let (Some(v), Some(gv)) = (vpc, found.vpc_id())
            && v != gv
        {
            return Err(config(format!(
                "security group {} is in VPC {gv}, but the build machine goes to VPC {v} ({})",
                g.get_ref(),
                c.region()
            ))
            .at(span(g)));
        }
    }
    Ok(())
}

/// A build machine without a public IP is reached on its private address; a temporary security
/// group that admits only this machine's public IP would then refuse SSH until the connect timeout.
/// Refused here, before anything exists. `host_given`: `communicator.host` says where to connect.
pub fn check_reachable(a: &AwsSettings, net: &Network, host_given: bool) -> Result<(), BuildError> {
    let private_ssh = a.ssh_interface.as_ref().is_some_and(|i| i.get_ref().starts_with("private"));
    if host_given || private_ssh || !a.ssh_cidrs.is_empty() || !a.security_group_ids.is_empty() {
        return Ok(());
    }
    let public = a.associate_public_ip.or(net.maps_public_ip).unwrap_or(true);
    if public {
        return Ok(());
    }
    let why = match (&a.associate_public_ip, &net.subnet_id) {
        (Some(_), _) => "aws.associate_public_ip = false".to_string(),
        (None, Some(s)) => format!("subnet {s} does not assign public IPs"),
        (None, None) => "its subnet does not assign public IPs".to_string(),
    };
    let at = a.subnet_id.as_ref().map(span);
    Err(config(format!(
        "the build machine gets no public IP ({why}), so SSH would go to its private address, but the temporary security group admits only this machine's public IP: set aws.ssh_interface = \"private_ip\" (imgbake runs inside the VPC), aws.ssh_cidrs, or aws.associate_public_ip = true"
    ))
    .at(at))
}

/// The SSH source CIDRs of the temporary security group: `aws.ssh_cidrs`; else the VPC's CIDR when
/// SSH goes to a private address; else the caller's public IP /32.
pub async fn ssh_cidrs(a: &AwsSettings, net: &Network, public_ip_url: &str) -> Result<Vec<String>, BuildError> {
    if !a.ssh_cidrs.is_empty() {
        return Ok(a.ssh_cidrs.iter().map(|c| c.get_ref().clone()).collect());
    }
    let private = a.ssh_interface.as_ref().is_some_and(|i| i.get_ref().starts_with("private"));
    if private {
        return net.vpc_cidr.clone().map(|c| vec![c]).ok_or_else(|| {
            config("cannot tell the VPC's CIDR for SSH over private addresses: set aws.ssh_cidrs".to_string())
        });
    }
    let ip = crate::public_ip::lookup(public_ip_url, Duration::from_secs(10)).await.map_err(|e| {
        config(format!("cannot find this machine's public IP for the SSH rule ({e}): set aws.ssh_cidrs"))
    })?;
    Ok(vec![format!("{ip}/32")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_typos_get_suggestions() {
        let known: Vec<String> = ["eu-west-1", "eu-west-2", "us-east-1"].iter().map(|s| s.to_string()).collect();
        check_region(&known, "eu-west-1", Span::default(), "region").unwrap();
        let e = check_region(&known, "eu-west-9", Span::default(), "aws.region").unwrap_err();
        assert_eq!(e.message, "aws.region `eu-west-9` is not an AWS region (did you mean `eu-west-1` or `eu-west-2`?)");
        let e = check_region(&known, "mars-north-1", Span::default(), "region").unwrap_err();
        assert_eq!(e.message, "region `mars-north-1` is not an AWS region");
    }
}
