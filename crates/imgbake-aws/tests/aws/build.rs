//! A whole build, end to end, and what it leaves behind: the AMI with its tags, copies and launch
//! permissions — and nothing else.

use std::time::Duration;

use imgbake_core::builder::Builder;
use imgbake_moto_proxy::Delays;

use imgbake_testbed::SshTarget;

use crate::support::*;

#[tokio::test]
async fn full_build_leaves_only_the_tagged_shared_copied_image() {
    let bed = Bed::start().await;
    bed.proxy.set_delays(Delays::all(Duration::from_millis(800)));
    let builder = bed.builder();
    let tree = bed.tree(
        r#"copy_regions = ["us-east-1"]
ami_tags = { release = "2024.1" }
snapshot_tags = { backup = "no" }
share = { accounts = ["111122223333"] }"#,
        "[images.base.publish]\nssm_parameter = \"/images/base/latest\"",
    );
    let remote = bed.sshd.home_dir().join("imgbake-uploaded.txt");
    let steps = Steps::with_upload(
        &["test \"$(id -u)\" = 0", "echo provisioned"],
        b"hello from imgbake\n",
        remote.to_str().unwrap(),
    );
    let (job, log) = bed.job(&builder, &tree, "base", steps.clone()).await;
    let imds = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_imds = imds.clone();
    bed.proxy.on_call(move |call| {
        if call.action == "ModifyImageAttribute"
            && let Some(v) = call.param("ImdsSupport.Value")
        {
            let ami = call.param("ImageId").unwrap_or_default().to_string();
            seen_imds.lock().unwrap().push((call.region.clone(), ami, v.to_string()));
        }
    });

    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("build failed: {}", e.chain()));
    bed.unwind(&builder, &job).await;

    // Provisioning ran over SSH, with the pinned host key (the proxy installed it, like cloud-init).
    assert_eq!(std::fs::read(&remote).unwrap(), b"hello from imgbake\n");
    let seen = steps.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].as_deref().unwrap().starts_with("EC2 RebootInstances i-"), "{seen:?}");

    // The artifact: the AMI in the build region and its copy, with everything about it.
    assert_eq!(artifact.builder, "aws");
    assert_eq!(artifact.locations.len(), 2);
    assert_eq!(artifact.locations[REGION], artifact.id);
    assert_eq!(artifact.source, bed.source);
    assert_eq!(artifact.fingerprint, "fp-0123456789");
    for (region, ami) in &artifact.locations {
        let ec2 = bed.ec2(region).await;
        let img = ec2.describe_images().image_ids(ami).send().await.unwrap().images()[0].clone();
        assert_eq!(img.state().unwrap().as_str(), "available");
        let t = image_tags(&img);
        assert_eq!(t["imgbake:build-id"], artifact.build_id, "{region}");
        assert_eq!(t["imgbake:image"], "base");
        assert_eq!(t["imgbake:tree"], "aws-test");
        assert_eq!(t["imgbake:role"], "artifact");
        assert_eq!(t["imgbake:fingerprint"], "fp-0123456789");
        assert_eq!(t["imgbake:source"], bed.source);
        assert_eq!(t["imgbake:complete"], "true");
        assert_eq!(t["team"], "core");
        assert_eq!(t["release"], "2024.1");
        assert!(t.contains_key("imgbake:created"));
        let perms =
            ec2.describe_image_attribute().image_id(ami).attribute("launchPermission".into()).send().await.unwrap();
        let users: Vec<&str> = perms.launch_permissions().iter().filter_map(|p| p.user_id()).collect();
        assert_eq!(users, vec!["111122223333"], "{region}");
        let snaps = imgbake_aws::image::snapshots(&img);
        assert!(!snaps.is_empty(), "{region}");
        let s = ec2.describe_snapshots().set_snapshot_ids(Some(snaps)).send().await.unwrap();
        for snap in s.snapshots() {
            let t: std::collections::BTreeMap<_, _> =
                snap.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string())).collect();
            assert_eq!(t.get("imgbake:build-id"), Some(&artifact.build_id), "{region} {:?}", snap.snapshot_id());
            assert_eq!(t.get("backup").map(String::as_str), Some("no"));
        }
    }

    // imds_v2 (the default) holds for the AMIs too, in every region (CreateImage does not carry it).
    let mut imds = imds.lock().unwrap().clone();
    imds.sort();
    let mut want: Vec<(String, String, String)> =
        artifact.locations.iter().map(|(r, a)| (r.clone(), a.clone(), "v2.0".to_string())).collect();
    want.sort();
    assert_eq!(imds, want);

    // Nothing else: no machine, key pair, security group, volume, AMI or stray snapshot.
    let keep: Vec<&str> = artifact.locations.values().map(String::as_str).collect();
    assert_eq!(bed.leftovers(&keep).await, Vec::<String>::new());

    // Each state change was noticed promptly (polls every ≤ 300 ms here).
    for t in bed.proxy.transitions() {
        let late = t.lateness().unwrap_or_else(|| panic!("never noticed: {t:?}"));
        assert!(late < Duration::from_millis(1500), "{t:?} noticed {late:?} late");
    }
    // The events tell the story.
    let phases: Vec<String> = log
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            imgbake_core::event::EventKind::Phase { phase } => Some(phase.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        vec!["prepare", "launch", "connect", "provision", "sanitize", "shutdown", "capture", "distribute"]
    );

    // Planning finds it again with one DescribeImages per region.
    bed.proxy.reset();
    let img = tree.image("base").unwrap();
    let found = builder.list_artifacts(&tree, &[img]).await.unwrap();
    assert_eq!(found, vec![artifact.clone()]);
    assert_eq!(bed.proxy.count("DescribeImages"), 2, "{:?}", bed.proxy.calls());

    // Publishing writes the SSM parameter in both regions.
    let written = builder.publish(&tree, img, &artifact, &imgbake_core::event::EventSink::discard()).await.unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    for (region, ami) in &artifact.locations {
        let ssm = aws_sdk_ssm::Client::new(&bed.moto.sdk_config(region).await);
        let p = ssm.get_parameter().name("/images/base/latest").send().await.unwrap();
        assert_eq!(p.parameter().unwrap().value(), Some(ami.as_str()));
    }

    // Deleting the artifact removes the AMIs and their snapshots everywhere.
    builder.delete_artifact(&tree, &artifact, &imgbake_core::event::EventSink::discard()).await.unwrap();
    assert_eq!(bed.leftovers(&[]).await, Vec::<String>::new());
    assert!(builder.list_artifacts(&tree, &[img]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_windows_build_injects_openssh_setup_and_no_key_pair() {
    let bed = Bed::start().await;
    let builder = bed.builder();
    bed.tree("user_data = \"Write-Output 'mine'\"", "");
    let text = std::fs::read_to_string(bed.dir.path().join("tree.toml"))
        .unwrap()
        .replace("username = \"root\",", "username = \"root\", os = \"windows\",");
    std::fs::write(bed.dir.path().join("tree.toml"), text).unwrap();
    let tree =
        imgbake_config::Tree::load(&bed.dir.path().join("tree.toml"), &aws_options()).unwrap_or_else(|d| panic!("{d}"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let keep = seen.clone();
    bed.proxy.on_call(move |c| {
        if c.action == "RunInstances" {
            *keep.lock().unwrap() = c.param("UserData").unwrap_or_default().to_string();
        }
    });
    // No steps: the bed's sshd is not Windows; connecting with the pinned key and the key the user
    // data authorizes is what is tested here.
    let (job, _) = bed.job(&builder, &tree, "base", Steps::new(&[])).await;
    let artifact = builder.build(job.clone()).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    bed.unwind(&builder, &job).await;
    use base64::Engine;
    let ud =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(seen.lock().unwrap().as_str()).unwrap())
            .unwrap();
    assert!(ud.starts_with("<powershell>\n& {\n<#"), "{ud}");
    assert!(ud.contains(&format!("-Port {}", bed.sshd.port())), "{ud}");
    assert!(
        ud.ends_with("# The user's user data:\nWrite-Output 'mine'\n</powershell>\n<persist>false</persist>\n"),
        "{ud}"
    );
    assert_eq!(bed.proxy.count("ImportKeyPair"), 0);
    assert_eq!(bed.leftovers(&[&artifact.id]).await, Vec::<String>::new());
}

#[tokio::test]
async fn platform_reboot_is_reboot_instances() {
    use imgbake_core::reboot::PlatformReboot;
    let bed = Bed::start().await;
    let builder = bed.builder();
    let run =
        bed.ec2(REGION).await.run_instances().image_id(&bed.source).min_count(1).max_count(1).send().await.unwrap();
    let id = run.instances()[0].instance_id().unwrap().to_string();
    let session =
        imgbake_aws::Session { region: REGION.into(), profile: None, endpoint: Some(bed.proxy.endpoint()), role: None };
    let reboot = imgbake_aws::reboot::Ec2Reboot::new(builder.clients(&session).await, &id);
    assert_eq!(reboot.describe(), format!("EC2 RebootInstances {id} (eu-west-1)"));
    reboot.reboot().await.unwrap();
    assert_eq!(bed.proxy.count("RebootInstances"), 1);
    let missing = imgbake_aws::reboot::Ec2Reboot::new(builder.clients(&session).await, "i-0000000000000dead");
    let e = missing.reboot().await.unwrap_err().to_string();
    assert!(e.contains("RebootInstances in eu-west-1 (i-0000000000000dead)"), "{e}");
}
