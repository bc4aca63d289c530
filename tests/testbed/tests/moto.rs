//! The bed's moto server answers the AWS SDK (ring-only client), registers source images,
//! resets, and is gone after drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use imgbake_testbed::{Moto, MotoOptions, pid_alive};

const REGION: &str = "eu-west-1";

#[tokio::test]
async fn sdk_calls_work_and_reset_clears_state() {
    let started = std::time::Instant::now();
    let moto = Moto::start().await.expect("start moto");
    eprintln!("timing: Moto::start: {:.2?}", started.elapsed());
    let ec2 = moto.ec2_client(REGION).await;

    let regions = ec2.describe_regions().send().await.expect("DescribeRegions");
    let names: Vec<&str> = regions.regions().iter().filter_map(|r| r.region_name()).collect();
    assert!(names.contains(&REGION), "regions: {names:?}");

    // Default AMIs are off: the only image is the one we register.
    let ami = moto
        .register_image(REGION, "testbed-source", &[("role", "base"), ("os", "linux")])
        .await
        .expect("register image");
    let images = ec2.describe_images().owners("self").send().await.expect("DescribeImages");
    assert_eq!(images.images().len(), 1, "{images:?}");
    let image = &images.images()[0];
    assert_eq!(image.image_id(), Some(ami.as_str()));
    assert_eq!(image.name(), Some("testbed-source"));
    let mut tags: Vec<(String, String)> = image
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect();
    tags.sort();
    assert_eq!(tags, vec![("os".to_owned(), "linux".to_owned()), ("role".to_owned(), "base".to_owned())]);

    let run = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    let id = run.instances()[0].instance_id().expect("instance id").to_owned();
    let described = ec2.describe_instances().instance_ids(&id).send().await.expect("DescribeInstances");
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(instance.image_id(), Some(ami.as_str()));

    moto.reset().await.expect("reset");
    let after = ec2.describe_instances().send().await.expect("DescribeInstances after reset");
    assert!(after.reservations().is_empty(), "{after:?}");
    let images = ec2.describe_images().owners("self").send().await.expect("DescribeImages after reset");
    assert!(images.images().is_empty(), "{images:?}");
    assert!(moto.log().contains("RunInstances") || moto.log().contains("POST /"));
}

#[tokio::test]
async fn default_amis_can_be_loaded() {
    let moto =
        Moto::start_with(MotoOptions { load_default_amis: true, ..MotoOptions::default() }).await.expect("start moto");
    let ec2 = moto.ec2_client("us-east-1").await;
    let images =
        ec2.describe_images().image_ids("ami-03cf127a").send().await.expect("DescribeImages of a built-in AMI");
    assert_eq!(images.images().len(), 1, "{images:?}");
}

#[tokio::test]
async fn two_servers_are_independent_and_drop_kills() {
    let a = Moto::start().await.expect("start a");
    let b = Moto::start().await.expect("start b");
    assert_ne!(a.port(), b.port());
    a.register_image(REGION, "only-in-a", &[]).await.expect("register");
    let in_b = b.ec2_client(REGION).await.describe_images().owners("self").send().await.expect("DescribeImages b");
    assert!(in_b.images().is_empty());

    let (pid, port) = (a.pid(), a.port());
    drop(a);
    assert!(!pid_alive(pid), "moto {pid} still alive after drop");
    let refused = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let refused = tokio::time::timeout(Duration::from_secs(5), refused).await.expect("connect should fail fast");
    assert!(refused.is_err(), "port {port} still accepts after drop");
}
