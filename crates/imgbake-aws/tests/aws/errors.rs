//! Errors a user can act on: no credentials, a missing profile, a closed endpoint each end in one
//! line naming the cause and the fix, within 3 s.

use std::time::{Duration, Instant};

use imgbake_aws::{AwsBuilder, AwsOptions, ClientOptions, Environment};
use imgbake_core::builder::Builder;
use imgbake_core::error::ErrorKind;

use crate::support::*;

/// The bed's tree with `from` replaced by `to` in its text.
fn edited(bed: &Bed, from: &str, to: &str) -> imgbake_config::Tree {
    bed.tree("", "");
    let path = bed.dir.path().join("tree.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    let opts = imgbake_config::LoadOptions {
        env: Default::default(),
        schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
        ..Default::default()
    };
    imgbake_config::Tree::load(&path, &opts).unwrap_or_else(|d| panic!("{d}"))
}

/// A builder with no credentials at all (nothing from this process's environment either).
fn no_credentials() -> AwsBuilder {
    AwsBuilder::new(AwsOptions {
        client: ClientOptions { environment: Environment::Isolated, ..ClientOptions::default() },
        ..AwsOptions::default()
    })
}

#[tokio::test]
async fn a_closed_endpoint_is_one_line_within_3_seconds() {
    let bed = Bed::start().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{closed}");
    let tree = edited(&bed, &bed.proxy.endpoint(), &endpoint);
    let builder = bed.builder();
    let start = Instant::now();
    let e = builder.resolve_source(&tree, tree.image("base").unwrap()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let text = e.chain();
    assert!(text.starts_with(&format!("cannot reach AWS at {endpoint} (DescribeRegions: cannot connect: ")), "{text}");
    assert!(text.contains("check aws.endpoint"), "{text}");
    assert!(!text.contains('\n') && !text.contains("DispatchFailure"), "{text}");
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.span.is_some(), "points at aws.endpoint");
}

#[tokio::test]
async fn no_credentials_is_one_line_naming_the_fix() {
    let bed = Bed::start().await;
    let tree = bed.tree("", "");
    let start = Instant::now();
    let e = no_credentials().resolve_source(&tree, tree.image("base").unwrap()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let text = e.chain();
    assert!(text.starts_with("no AWS credentials found; set AWS_ACCESS_KEY_ID"), "{text}");
    assert!(text.contains("AWS_ACCESS_KEY_ID") && text.contains("aws.profile"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(bed.proxy.report().total_calls, 0);
}

#[tokio::test]
async fn a_missing_profile_is_one_line_naming_it() {
    let bed = Bed::start().await;
    let tree = bed.tree("profile = \"no-such-profile\"", "");
    let start = Instant::now();
    let e = no_credentials().resolve_source(&tree, tree.image("base").unwrap()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let text = e.chain();
    assert!(text.starts_with("AWS profile `no-such-profile` does not exist"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(text.len() < 400, "one line, not an SDK dump: {text}");
    assert_eq!(bed.proxy.report().total_calls, 0);
}

#[tokio::test]
async fn an_aws_error_names_the_image_and_what_imgbake_was_doing() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("", "");
    bed.proxy.inject(imgbake_moto_proxy::FaultRule::new(
        "RunInstances",
        imgbake_moto_proxy::Fault::error(400, "UnauthorizedOperation", "not allowed (injected)"),
        1,
    ));
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert!(
        e.message.starts_with("launching the build machine for image base in eu-west-1: RunInstances in eu-west-1"),
        "{}",
        e.message
    );
    assert!(e.message.contains("UnauthorizedOperation"), "{}", e.message);
    // EC2 refused the call: nothing to look for, no intent left to wait on.
    assert!(job.journal.pending().iter().all(|r| r.id != "*"), "{:?}", job.journal.pending());
    let start = Instant::now();
    bed.unwind(&builder, &job).await;
    assert!(start.elapsed() < Duration::from_secs(5), "unwinding took {:?}", start.elapsed());
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
}
