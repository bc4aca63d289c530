//! The build's temporary security group: SSH from the given CIDRs only.

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, Tag};
use imgbake_core::error::BuildError;
use imgbake_core::wait::Wait;

use crate::clients::Clients;
use crate::error::{ApiError, SdkResultExt};
use crate::tags;
use crate::waiters;

/// Create group `name` in `vpc` (default VPC when `None`), tagged; returns its id. The name is unique
/// to the build, so "duplicate" means an SDK retry of a call that had succeeded: the group is found by
/// name.
pub async fn create(c: &Clients, name: &str, vpc: Option<&str>, tags: &[Tag]) -> Result<String, ApiError> {
    let sent = c
        .ec2
        .create_security_group()
        .group_name(name)
        .description("imgbake build machine: SSH only, removed after the build")
        .set_vpc_id(vpc.map(str::to_string))
        .tag_specifications(tags::spec(ResourceType::SecurityGroup, tags))
        .send()
        .await
        .api("CreateSecurityGroup", c.region(), Some(name.into()));
    let no_id = || ApiError {
        operation: "CreateSecurityGroup",
        region: c.region().into(),
        target: Some(name.into()),
        code: None,
        status: None,
        detail: "the answer has no group id".into(),
    };
    match sent {
        Ok(out) => out.group_id().map(str::to_string).ok_or_else(no_id),
        Err(e) if e.code_is("InvalidGroup.Duplicate") => {
            let mut req = c.ec2.describe_security_groups().filters(tags::attr("group-name", &[name]));
            if let Some(v) = vpc {
                req = req.filters(tags::attr("vpc-id", &[v]));
            }
            let out = req.send().await.api("DescribeSecurityGroups", c.region(), Some(name.into()))?;
            out.security_groups().first().and_then(|g| g.group_id()).map(str::to_string).ok_or(e)
        }
        Err(e) => Err(e),
    }
}

/// Allow TCP `port` from `cidrs`.
pub async fn allow_ssh(c: &Clients, group: &str, port: u16, cidrs: &[String]) -> Result<(), ApiError> {
    let ranges: Vec<IpRange> =
        cidrs.iter().map(|cidr| IpRange::builder().cidr_ip(cidr).description("imgbake SSH").build()).collect();
    let rule = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(i32::from(port))
        .to_port(i32::from(port))
        .set_ip_ranges(Some(ranges))
        .build();
    c.ec2.authorize_security_group_ingress().group_id(group).ip_permissions(rule).send().await.api(
        "AuthorizeSecurityGroupIngress",
        c.region(),
        Some(group.into()),
    )?;
    Ok(())
}

/// Delete group `id`, retrying while EC2 still counts a (terminating) instance in it. A group that
/// does not exist is fine.
pub async fn delete(c: &Clients, id: &str, wait: &Wait) -> Result<(), BuildError> {
    waiters::retry(
        wait,
        &format!("security group {id} ({}) to be deletable", c.region()),
        |e| e.code_is("DependencyViolation"),
        || async {
            match c.ec2.delete_security_group().group_id(id).send().await.api(
                "DeleteSecurityGroup",
                c.region(),
                Some(id.into()),
            ) {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        },
    )
    .await
}
