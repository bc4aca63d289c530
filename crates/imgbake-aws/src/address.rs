//! Which address of the build machine SSH connects to.

use aws_sdk_ec2::types::Instance;

/// The address for `interface` (`public_ip`, `private_ip`, `public_dns`, `private_dns`); without one,
/// the public IP when there is one, else the private IP.
pub fn ssh_address(i: &Instance, interface: Option<&str>) -> Option<String> {
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    match interface {
        Some("public_ip") => nonempty(i.public_ip_address()),
        Some("private_ip") => nonempty(i.private_ip_address()),
        Some("public_dns") => nonempty(i.public_dns_name()),
        Some("private_dns") => nonempty(i.private_dns_name()),
        _ => nonempty(i.public_ip_address()).or_else(|| nonempty(i.private_ip_address())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_interface() {
        let i = Instance::builder()
            .private_ip_address("10.0.0.5")
            .public_ip_address("")
            .private_dns_name("ip-10-0-0-5")
            .build();
        assert_eq!(ssh_address(&i, None).as_deref(), Some("10.0.0.5"));
        assert_eq!(ssh_address(&i, Some("public_ip")), None);
        assert_eq!(ssh_address(&i, Some("private_dns")).as_deref(), Some("ip-10-0-0-5"));
        let i = Instance::builder().private_ip_address("10.0.0.5").public_ip_address("203.0.113.1").build();
        assert_eq!(ssh_address(&i, None).as_deref(), Some("203.0.113.1"));
    }
}
