//! The proxy against a real moto server, driven by the real AWS SDK.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use imgbake_moto_proxy::{Delays, Fault, FaultRule, ImageOutcome, MotoProxy};
use imgbake_testbed::Moto;

const REGION: &str = "eu-west-1";

async fn bed() -> (Moto, MotoProxy, aws_sdk_ec2::Client) {
    let moto = Moto::start().await.expect("moto server (run tests/bed/install.sh)");
    let proxy = MotoProxy::start(&moto.endpoint()).await.unwrap();
    let conf = moto.sdk_config(REGION).await;
    let ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&conf).endpoint_url(proxy.endpoint()).build(),
    );
    (moto, proxy, ec2)
}

async fn state(ec2: &aws_sdk_ec2::Client, id: &str) -> InstanceStateName {
    let out = ec2.describe_instances().instance_ids(id).send().await.unwrap();
    out.reservations()[0].instances()[0].state().unwrap().name().unwrap().clone()
}

async fn image_state(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let out = ec2.describe_images().image_ids(id).send().await.unwrap();
    out.images()[0].state().unwrap().as_str().to_string()
}

#[tokio::test]
async fn instances_and_images_are_held_in_between_states() {
    let (moto, proxy, ec2) = bed().await;
    let ami = moto.register_image(REGION, "src", &[]).await.unwrap();
    let hold = Duration::from_millis(1500);
    proxy.set_delays(Delays::all(hold));
    let seen_user_data = Arc::new(Mutex::new(None));
    let keep = seen_user_data.clone();
    proxy.on_launch(move |l| *keep.lock().unwrap() = l.user_data.clone());

    let run = ec2
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .user_data("I2Nsb3VkLWNvbmZpZwo=")
        .send()
        .await
        .unwrap();
    let launched = Instant::now();
    let id = run.instances()[0].instance_id().unwrap().to_string();
    assert_eq!(seen_user_data.lock().unwrap().as_deref(), Some("#cloud-config\n"));
    assert_eq!(state(&ec2, &id).await, InstanceStateName::Pending);
    while state(&ec2, &id).await != InstanceStateName::Running {
        assert!(launched.elapsed() < hold + Duration::from_secs(5), "never running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(launched.elapsed() >= hold, "running before the hold ended");

    let stop = ec2.stop_instances().instance_ids(&id).send().await.unwrap();
    assert_eq!(stop.stopping_instances()[0].current_state().unwrap().name(), Some(&InstanceStateName::Stopping));
    assert_eq!(state(&ec2, &id).await, InstanceStateName::Stopping);

    let image = ec2.create_image().instance_id(&id).name("out").send().await.unwrap();
    let image_id = image.image_id().unwrap().to_string();
    assert_eq!(image_state(&ec2, &image_id).await, "pending");

    let term = ec2.terminate_instances().instance_ids(&id).send().await.unwrap();
    assert_eq!(term.terminating_instances()[0].current_state().unwrap().name(), Some(&InstanceStateName::ShuttingDown));
    let start = Instant::now();
    while image_state(&ec2, &image_id).await != "available" {
        assert!(start.elapsed() < hold + Duration::from_secs(5), "image never available");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while state(&ec2, &id).await != InstanceStateName::Terminated {
        assert!(start.elapsed() < hold + Duration::from_secs(5), "never terminated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let t = proxy.transitions();
    let to: Vec<(&str, &str)> = t.iter().map(|t| (t.kind.as_str(), t.to.as_str())).collect();
    for kind_to in
        [("instance", "running"), ("instance", "stopped"), ("image", "available"), ("instance", "terminated")]
    {
        assert!(to.contains(&kind_to), "{kind_to:?} missing from {to:?}");
    }
    // The stop hold is replaced by the terminate hold (same instance): "stopped" is never seen.
    for tr in &t {
        let late = tr.lateness();
        if tr.to == "stopped" {
            assert!(late.is_none(), "{tr:?}");
        } else {
            let late = late.unwrap_or_else(|| panic!("{tr:?} never noticed"));
            assert!(late < Duration::from_millis(600), "polled every 100 ms, noticed {late:?} late: {tr:?}");
        }
    }
    let calls = proxy.calls();
    assert_eq!(calls["RunInstances"], 1);
    assert!(calls["DescribeInstances"] >= 3);
    let log = proxy.call_log();
    let run = log.iter().find(|c| c.action == "RunInstances").unwrap();
    assert_eq!((run.region.as_str(), run.service.as_str(), run.status), (REGION, "ec2", 200));
}

#[tokio::test]
async fn faults_are_answered_then_calls_go_through() {
    let (_moto, proxy, ec2) = bed().await;
    proxy.inject(FaultRule::new("DescribeRegions", Fault::throttle(), 2));
    // The SDK's standard retry (3 attempts) rides out two throttles.
    let out = ec2.describe_regions().send().await.unwrap();
    assert!(!out.regions().is_empty());
    assert_eq!(proxy.injected("DescribeRegions"), 2);
    assert_eq!(proxy.count("DescribeRegions"), 3);

    proxy.inject(FaultRule::new("DescribeVpcs", Fault::error(400, "UnauthorizedOperation", "no"), 1).after(1));
    ec2.describe_vpcs().send().await.unwrap();
    let err = ec2.describe_vpcs().send().await.unwrap_err();
    let text = format!("{:?}", err);
    assert!(text.contains("UnauthorizedOperation"), "{text}");
    ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(proxy.injected("DescribeVpcs"), 1);

    // A lost answer: moto did it, the client saw an error and retried, moto did it again.
    proxy.inject(FaultRule::new("CreateVpc", Fault::server_error().after_forwarding(), 1));
    ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap();
    let vpcs = ec2
        .describe_vpcs()
        .filters(aws_sdk_ec2::types::Filter::builder().name("cidr").values("10.9.0.0/16").build())
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 2);
    assert_eq!(proxy.injected("CreateVpc"), 1);

    proxy.inject(FaultRule::new("DescribeSubnets", Fault::server_error(), 5));
    let err = ec2.describe_subnets().send().await.unwrap_err();
    assert!(format!("{err:?}").contains("InternalError"), "{err:?}");
    assert_eq!(proxy.injected("DescribeSubnets"), 3, "3 attempts by the SDK, all failed");
}

#[tokio::test]
async fn failed_images_and_the_control_endpoint() {
    let (moto, proxy, ec2) = bed().await;
    let ami = moto.register_image(REGION, "src", &[]).await.unwrap();
    proxy.set_image_outcome(ImageOutcome::Failed);
    let run = ec2.run_instances().image_id(&ami).min_count(1).max_count(1).send().await.unwrap();
    let id = run.instances()[0].instance_id().unwrap();
    let img = ec2.create_image().instance_id(id).name("x").send().await.unwrap();
    assert_eq!(image_state(&ec2, img.image_id().unwrap()).await, "failed");

    // The report over HTTP, as the binary serves it.
    let addr = proxy.addr();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /_proxy/report HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.contains("\"RunInstances\": 1"), "{body}");
    assert!(body.contains("\"to\": \"failed\""), "{body}");
}
