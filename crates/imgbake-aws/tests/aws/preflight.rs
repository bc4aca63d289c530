//! Preflight, before anything is created: an AMI name already taken, encrypted sharing without a
//! customer-managed key.

use imgbake_core::builder::Builder;
use imgbake_core::error::ErrorKind;

use crate::support::*;

#[tokio::test]
async fn an_ami_name_that_exists_fails_before_anything_is_created() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("ami_name = \"fixed-name\"", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let first = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;

    bed.proxy.reset();
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let e = builder.build(job.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{}", e.chain());
    assert!(
        e.message.starts_with(&format!("an AMI named `fixed-name` already exists in {REGION} ({})", first.id)),
        "{}",
        e.message
    );
    assert!(e.message.contains("aws.force_deregister = true"), "{}", e.message);
    let at = tree.locate(e.span.unwrap());
    assert!(at.ends_with("tree.toml:17:12"), "{at}");
    assert_eq!(bed.creating_calls(), Vec::<String>::new());
    assert!(job.journal.pending().is_empty());
}

#[tokio::test]
async fn force_deregister_replaces_the_old_ami_once_the_new_one_is_ready() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    let tree = bed.tree("ami_name = \"fixed-name\"\nforce_deregister = true", "");
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let old = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&["true"])).await;
    let new = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    assert_ne!(old.id, new.id);
    // The old AMI and its snapshots are gone; the new one stays.
    assert_eq!(bed.leftovers(&[&new.id]).await, Vec::<String>::new());
    let ec2 = bed.ec2(REGION).await;
    let named = ec2
        .describe_images()
        .owners("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name("name").values("fixed-name").build())
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = named.images().iter().filter_map(|i| i.image_id()).collect();
    assert_eq!(ids, vec![new.id.as_str()]);
    // Deregistering came after the new AMI was complete.
    let log = bed.proxy.call_log();
    let deregister = log.iter().rposition(|c| c.action == "DeregisterImage").unwrap();
    let completed = log.iter().rposition(|c| c.action == "CreateTags").unwrap();
    assert!(completed < deregister, "{log:?}");
}

#[tokio::test]
async fn encrypted_sharing_without_a_customer_managed_key_is_refused_offline() {
    let bed = Bed::start().await;
    bed.tree("", "");
    let path = bed.dir.path().join("tree.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "image_timeout",
        "encrypt = true\ncopy_regions = [\"us-east-1\"]\nshare = { accounts = [\"111122223333\"] }\nimage_timeout",
    );
    std::fs::write(&path, &text).unwrap();
    let opts = imgbake_config::LoadOptions {
        env: Default::default(),
        schemas: imgbake_config::Schemas::new().with(imgbake_aws::AwsSchema::arc()),
        ..Default::default()
    };
    let e = imgbake_config::Tree::load(&path, &opts).unwrap_err().to_string();
    assert!(e.contains("needs a customer-managed KMS key: set aws.kms_key_id (for eu-west-1) and aws.region_kms_key_ids.us-east-1 (a copy region)"), "{e}");
    assert!(e.contains("tree.toml:"), "{e}");
    // With the keys it is accepted.
    let text = text.replace(
        "encrypt = true",
        "encrypt = true\nkms_key_id = \"alias/images\"\nregion_kms_key_ids = { us-east-1 = \"alias/images\" }",
    );
    std::fs::write(&path, &text).unwrap();
    imgbake_config::Tree::load(&path, &opts).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(bed.proxy.report().total_calls, 0);
}
