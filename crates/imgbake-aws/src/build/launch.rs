//! The `launch` phase: the temporary key pair and security group, then the machine, until it runs.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Tag;
use imgbake_config::Os;
use imgbake_core::error::BuildError;

use super::{AwsBuild, span};
use crate::tags::role;
use crate::timing::Change;
use crate::{keypair, launch, security_group, userdata, waiters};

/// The `launch` phase.
pub(super) async fn launch(build: &mut AwsBuild<'_>) -> Result<(), BuildError> {
    let a = build.ctx.a;
    let temporary = build.ctx.tags.with_role(role::TEMPORARY, &BTreeMap::new());
    let key_name = match (&a.key_pair_name, build.ctx.image.communicator.os.unwrap_or_default()) {
        (Some(k), _) => Some(k.get_ref().clone()),
        // Windows logs in with the key the user data installs; EC2 key pairs there only encrypt the
        // Administrator password.
        (None, Os::Windows) => None,
        (None, Os::Linux) => Some(key_pair(build, &temporary).await?),
    };
    let groups = if a.security_group_ids.is_empty() {
        vec![security_group(build, &temporary).await?]
    } else {
        a.security_group_ids.iter().map(|g| g.get_ref().clone()).collect()
    };
    instance(build, key_name, groups).await
}

/// Import the build's login key as a temporary key pair; returns its name.
async fn key_pair(build: &mut AwsBuild<'_>, temporary: &[Tag]) -> Result<String, BuildError> {
    let (job, c, session) = (build.ctx.job, &build.ctx.c, &build.session);
    let name = keypair::name(&job.build_id, &job.image);
    // The name is known before the call: journal the real entry at once.
    let r = session.resource("key_pair", &name);
    job.record(r.clone())?;
    match keypair::import(c, &name, &build.login_public, temporary).await {
        Ok(()) => {}
        // Someone else's key: not ours to delete when the build unwinds.
        Err(keypair::ImportError::Foreign(e)) => {
            job.release(&r)?;
            return Err(e);
        }
        Err(e) => {
            build.temporaries.push(r);
            return Err(build.ctx.on::<BuildError>("importing the temporary key pair", &build.region)(e.into()));
        }
    }
    build.temporaries.push(r);
    Ok(name)
}

/// Create the temporary security group and open SSH in it; returns its id.
async fn security_group(build: &mut AwsBuild<'_>, temporary: &[Tag]) -> Result<String, BuildError> {
    let (ctx, job, c, net) = (&build.ctx, build.ctx.job, &build.ctx.c, &build.net);
    let (session, region, ssh_port, cidrs) = (&build.session, &build.region, build.ssh_port, &build.cidrs);
    let name = format!("imgbake-{}-{}", job.build_id, job.image);
    let (id, r) = ctx
        .create(session, "security_group", &[], || security_group::create(c, &name, net.vpc_id.as_deref(), temporary))
        .await
        .map_err(ctx.on("creating the temporary security group", region))?;
    let opened = security_group::allow_ssh(c, &id, ssh_port, cidrs)
        .await
        .map_err(ctx.on("opening SSH in the temporary security group", region));
    build.temporaries.push(r);
    opened?;
    Ok(id)
}

/// Launch the machine and wait until it runs; keeps its id and SSH address.
async fn instance(build: &mut AwsBuild<'_>, key_name: Option<String>, groups: Vec<String>) -> Result<(), BuildError> {
    let (ctx, job, a, c, net) = (&build.ctx, build.ctx.job, build.ctx.a, &build.ctx.c, &build.net);
    let (session, region, source_id) = (&build.session, build.region.as_str(), &build.source_id);
    let mut run_tags = a.run_tags.clone();
    run_tags.entry("Name".into()).or_insert_with(|| format!("imgbake {} ({})", job.image, job.build_id));
    let machine_tags = ctx.tags.with_role(role::BUILD_INSTANCE, &run_tags);
    let spec = launch::Launch {
        image_id: source_id.clone(),
        instance_type: ctx.instance_type(),
        key_name,
        security_groups: groups,
        subnet_id: net.subnet_id.clone(),
        associate_public_ip: a.associate_public_ip,
        iam_instance_profile: a.iam_instance_profile.clone(),
        user_data: userdata::encode(&build.user_data),
        imds_v2: a.imds_v2.unwrap_or(true),
        block_devices: launch::block_devices(a, &build.source_ebs_devices),
        instance_tags: machine_tags.clone(),
        volume_tags: machine_tags,
        client_token: format!("imgbake-{}-{}", job.build_id, uuid::Uuid::new_v4().simple()),
    };
    // Terminating it later learns its timing by instance type (and not at all when learning is off).
    let mut extra = vec![(launch::INSTANCE_TYPE, spec.instance_type.clone())];
    if ctx.history_file().is_none() {
        extra.push((launch::LEARN, "off".into()));
    }
    let started = tokio::time::Instant::now();
    let (instance_id, instance_r) = ctx
        .create(session, "instance", &extra, || launch::run(c, &spec))
        .await
        .map_err(|e| e.at(a.instance_type.as_ref().map(span)))
        .map_err(ctx.on("launching the build machine", region))?;
    let running = waiters::instance(
        c,
        &instance_id,
        "running",
        &["shutting-down", "terminated", "stopping", "stopped"],
        Some("pending"),
        &ctx.wait(build.instance_timeout),
        &ctx.watch(region, Change::Running, started),
        &ctx.events,
    )
    .await
    .map_err(ctx.on("waiting for the build machine to run", region));
    // The machine goes once the AMI is made, whether it ever ran or not.
    build.temporaries.push(instance_r);
    build.instance_id = instance_id;
    let running = running?;
    build.address = crate::address::ssh_address(&running, a.ssh_interface.as_ref().map(|i| i.get_ref().as_str()));
    Ok(())
}
