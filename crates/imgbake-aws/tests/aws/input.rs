//! Bad input is a clear error, pointing at the value, before anything is created.

use imgbake_aws::{AwsBuilder, AwsOptions, ClientOptions, Environment, Polling};
use imgbake_core::builder::Builder;
use imgbake_core::error::ErrorKind;
use imgbake_core::event::EventSink;

use crate::support::*;

fn located(tree: &imgbake_config::Tree, e: &imgbake_core::error::BuildError) -> String {
    tree.locate(e.span.unwrap_or_else(|| panic!("no span on: {}", e.chain())))
}

#[tokio::test]
async fn an_unknown_region() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "").clone();
    let text = std::fs::read_to_string(bed.dir.path().join("tree.toml"))
        .unwrap()
        .replace("region = \"eu-west-1\"", "region = \"eu-west-9\"");
    std::fs::write(bed.dir.path().join("tree.toml"), text).unwrap();
    let tree2 = imgbake_config::Tree::load(&bed.dir.path().join("tree.toml"), &aws_options()).unwrap();
    drop(tree);
    let img = tree2.image("base").unwrap();
    let e = builder.resolve_source(&tree2, img).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{}", e.chain());
    assert!(e.message.contains("`eu-west-9` is not an AWS region (did you mean"), "{}", e.message);
    assert!(located(&tree2, &e).ends_with("tree.toml:12:10"), "{}", located(&tree2, &e));
    let job = bed.job_from(&tree2, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(e.message.contains("`eu-west-9` is not an AWS region"), "{}", e.message);
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
    assert!(job.journal.pending().is_empty());
}

#[tokio::test]
async fn filters_matching_nothing_or_too_much() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let filter = |name: &str, most_recent: bool| {
        format!(
            "[images.base.source.ami_filter]\nname = \"{name}\"\nowners = [\"self\"]\nmost_recent = {most_recent}\n"
        )
    };
    let write = |extra: String| {
        let t = bed.tree("", "");
        let text = std::fs::read_to_string(bed.dir.path().join("tree.toml"))
            .unwrap()
            .replace(&format!("source = {{ ami = \"{}\" }}\n", bed.source), "")
            + &extra;
        std::fs::write(bed.dir.path().join("tree.toml"), text).unwrap();
        drop(t);
        imgbake_config::Tree::load(&bed.dir.path().join("tree.toml"), &aws_options()).unwrap_or_else(|d| panic!("{d}"))
    };
    let tree = write(filter("ubuntu-*", false));
    let e = builder.resolve_source(&tree, tree.image("base").unwrap()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains("the AMI filter (name `ubuntu-*`, owners self) matches no available AMI in eu-west-1"),
        "{}",
        e.message
    );
    assert!(located(&tree, &e).contains("tree.toml:"), "{}", located(&tree, &e));

    let newer = bed.moto.register_image(REGION, "debian-12-amd64-20240201", &[]).await.unwrap();
    let tree = write(filter("debian-12-*", false));
    let e = builder.resolve_source(&tree, tree.image("base").unwrap()).await.unwrap_err();
    assert!(e.message.contains("matches 2 AMIs in eu-west-1"), "{}", e.message);
    assert!(e.message.contains("set most_recent = true"), "{}", e.message);
    assert!(e.message.contains(&bed.source) && e.message.contains(&newer), "{}", e.message);

    let tree = write(filter("debian-12-*", true));
    let s = builder.resolve_source(&tree, tree.image("base").unwrap()).await.unwrap();
    // Registered in that order within a second or two: moto's creation dates may tie, then the id decides.
    assert!(s.id == newer || s.id == bed.source, "{s:?}");
    assert!(s.description.contains("newest of 2 matches"), "{s:?}");
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
}

#[tokio::test]
async fn missing_credentials() {
    let bed = Bed::start().await;
    let builder = AwsBuilder::new(AwsOptions {
        client: ClientOptions { credentials: None, environment: Environment::Isolated, ..ClientOptions::default() },
        polling: Polling::default(),
        ..AwsOptions::default()
    });
    let tree = bed.tree("", "");
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{}", e.chain());
    assert!(
        e.message.contains("no usable AWS credentials") || e.message.contains("no AWS credentials"),
        "{}",
        e.chain()
    );
    assert!(e.message.contains("aws sso login"), "{}", e.message);
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
    assert!(job.journal.pending().is_empty());
}

#[tokio::test]
async fn a_subnet_in_another_vpc_and_a_missing_security_group() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let ec2 = bed.ec2(REGION).await;
    let vpc_a =
        ec2.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let vpc_b =
        ec2.create_vpc().cidr_block("10.2.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc_a).cidr_block("10.1.1.0/24").send().await.unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    bed.proxy.reset();

    let tree = bed.tree(&format!("subnet_id = \"{subnet}\"\nvpc_id = \"{vpc_b}\""), "");
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains(&format!("subnet {subnet} is in VPC {vpc_a}, not in aws.vpc_id {vpc_b}")),
        "{}",
        e.message
    );
    assert!(located(&tree, &e).ends_with("tree.toml:17:13"), "{}", located(&tree, &e));

    let tree = bed.tree(&format!("subnet_id = \"{subnet}\"\nsecurity_group_ids = [\"sg-0000000000000dead\"]"), "");
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job).await.unwrap_err();
    assert!(e.message.contains("security group sg-0000000000000dead does not exist in eu-west-1"), "{}", e.message);

    let tree = bed.tree("subnet_id = \"subnet-0000000000000dead\"", "");
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job).await.unwrap_err();
    assert!(e.message.contains("subnet subnet-0000000000000dead does not exist in eu-west-1"), "{}", e.message);

    let job =
        bed.job_from(&bed.tree("", ""), "base", Steps::new(&["true"]), "ami-0000000000000dead", EventSink::discard());
    let e = builder.build(job).await.unwrap_err();
    assert!(e.message.contains("AMI ami-0000000000000dead does not exist in eu-west-1"), "{}", e.message);
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
}

/// A subnet that gives no public IP, no `ssh_cidrs`, no `ssh_interface`: SSH would go to the private
/// address through a group that admits only this machine's public /32, and time out after minutes.
#[tokio::test]
async fn ssh_to_a_private_address_through_a_public_only_group_is_refused_before_launch() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let ec2 = bed.ec2(REGION).await;
    let vpc =
        ec2.create_vpc().cidr_block("10.3.0.0/16").send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.3.1.0/24").send().await.unwrap();
    let subnet = subnet.subnet().unwrap();
    assert_eq!(subnet.map_public_ip_on_launch(), Some(false), "a new subnet assigns no public IP");
    let subnet = subnet.subnet_id().unwrap().to_string();
    bed.tree(&format!("subnet_id = \"{subnet}\""), "");
    let path = bed.dir.path().join("tree.toml");
    // Where a real build connects: the machine's own address, not the bed's sshd.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("host = \"127.0.0.1\", ", "")
        .replace("ssh_cidrs = [\"127.0.0.1/32\"]\n", "");
    std::fs::write(&path, text).unwrap();
    bed.proxy.reset();
    let tree = imgbake_config::Tree::load(&path, &crate::support::aws_options()).unwrap();
    let job = bed.job_from(&tree, "base", Steps::new(&["true"]), &bed.source, EventSink::discard());
    let e = builder.build(job.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{}", e.chain());
    assert!(
        e.message.contains(&format!("gets no public IP (subnet {subnet} does not assign public IPs)"))
            && e.message.contains("aws.ssh_interface = \"private_ip\""),
        "{}",
        e.message
    );
    assert!(located(&tree, &e).ends_with("tree.toml:16:13"), "{}", located(&tree, &e));
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
    assert!(job.journal.pending().is_empty());
}
