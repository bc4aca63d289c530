//! The `prepare` phase: everything that can fail before anything exists, and the build's keys.

use std::sync::Arc;

use imgbake_config::Os;
use imgbake_core::builder::BuildJob;
use imgbake_core::error::{BuildError, ErrorKind};

use super::{AwsBuild, Ctx, clean_name, span};
use crate::clients::{Clients, Session};
use crate::error::{SdkResultExt, config};
use crate::userdata::HostKey;
use crate::{AwsBuilder, preflight, userdata};

/// The `prepare` phase of a build of `job`.
pub(crate) async fn prepare<'a>(b: &'a AwsBuilder, job: &'a BuildJob) -> Result<AwsBuild<'a>, BuildError> {
    let (ctx, session, created) = Ctx::start(b, job).await?;
    let (image, a, c) = (ctx.image, ctx.a, ctx.c.clone());
    let region_v = crate::region(image)?;
    let region = session.region.clone();

    c.check_credentials().await?;
    b.check_regions(&c, a, region_v).await?;
    c.identity().await.map_err(ctx.on("checking the AWS credentials", &region))?;
    let source_id = job.source.id_in(&region);
    let source_span = image.source.as_ref().map(span);
    let source_ebs_devices = crate::source::build_ebs_devices(&c, &job.source, &source_id)
        .await
        .map_err(|e| e.at(source_span))
        .map_err(ctx.on("checking the source AMI", &region))?;
    let temp_group = a.security_group_ids.is_empty();
    let private_ssh = a.ssh_interface.as_ref().is_some_and(|i| i.get_ref().starts_with("private"));
    let net = preflight::network(&c, a, temp_group && private_ssh && a.ssh_cidrs.is_empty())
        .await
        .map_err(ctx.on("checking the network settings", &region))?;
    preflight::check_reachable(a, &net, image.communicator.host.is_some())
        .map_err(ctx.on("checking the network settings", &region))?;
    let cidrs = if temp_group { preflight::ssh_cidrs(a, &net, &b.options().public_ip_url).await? } else { Vec::new() };
    let ssh_port = image.communicator.port.unwrap_or(22);
    let ami_name = match &a.ami_name {
        Some(n) => n.get_ref().clone(),
        None => clean_name(&format!("{}-{}", job.image, created.timestamp())),
    };
    let replaced = same_name(&ctx, &session, &ami_name).await?;

    let host_key = HostKey::generate(&format!("imgbake-{}", job.build_id)).map_err(config)?;
    let (login_key, login_public) = login_key(&ctx)?;
    let user_data = user_data(&ctx, &host_key, &login_public, ssh_port)?;
    Ok(AwsBuild {
        ctx,
        session,
        region,
        created,
        source_id,
        source_ebs_devices,
        net,
        cidrs,
        ssh_port,
        ami_name,
        replaced,
        host_key,
        login_key,
        login_public,
        user_data,
        temporaries: Vec::new(),
        instance_id: String::new(),
        instance_timeout: a.instance_timeout.map(|d| d.get()).unwrap_or(super::DEFAULT_INSTANCE_TIMEOUT),
        address: None,
        captured: None,
    })
}

type LoginKey = (Option<Arc<imgbake_ssh::PrivateKey>>, String);

/// The key imgbake logs in with: the user's `communicator.private_key_file`, else a new one (written
/// to the job's key file for `ssh -i`, when it has one).
fn login_key(ctx: &Ctx<'_>) -> Result<LoginKey, BuildError> {
    let (job, image) = (ctx.job, ctx.image);
    let (login_key, login_public) = match &image.communicator.private_key_file {
        Some(f) => {
            let path = job.tree.path(f);
            let key = russh::keys::load_secret_key(&path, None).map_err(|e| {
                config(format!("cannot read communicator.private_key_file {}: {e}", path.display())).at(span(f))
            })?;
            let public = key.public_key().to_openssh().map_err(|e| config(format!("{}: {e}", path.display())))?;
            (None, public)
        }
        None => {
            let (k, public) = imgbake_ssh::generate_ed25519(&format!("imgbake-{}", job.build_id))?;
            (Some(k), public)
        }
    };
    if let Some(k) = &login_key
        && job.key_file.is_some()
    {
        let text = k
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| BuildError::new(ErrorKind::Local, format!("cannot encode the login key: {e}")))?;
        if let Some(path) = job.write_key_file(&text)? {
            ctx.events.info(format!(
                "the build machine's login key is in {} (ssh -i {} ...)",
                path.display(),
                path.display()
            ));
        }
    }
    Ok((login_key, login_public))
}

/// The user data: the build's host key (and on Windows, OpenSSH and the login key), then the user's.
fn user_data(ctx: &Ctx<'_>, host_key: &HostKey, login_public: &str, ssh_port: u16) -> Result<String, BuildError> {
    let (b, job, image, a) = (ctx.b, ctx.job, ctx.image, ctx.a);
    let user_extra =
        match (&a.user_data, &a.user_data_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                let path = job.tree.path(f);
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    config(format!("cannot read aws.user_data_file {}: {e}", path.display())).at(span(f))
                })?)
            }
            (None, None) => None,
        };
    match image.communicator.os.unwrap_or_default() {
        Os::Linux => userdata::linux(host_key, user_extra.as_deref()),
        Os::Windows => userdata::windows(
            host_key,
            login_public,
            a.windows_openssh_url.as_deref().or(b.options().windows_openssh_url.as_deref()),
            ssh_port,
            user_extra.as_deref(),
        ),
    }
    .map_err(|e| config(format!("image `{}`: {e}", image.name)).at(a.user_data_file.as_ref().map(span)))
}

/// AMIs of this account named `name` in the build region and every copy region. Without
/// `force_deregister` one is a preflight error (EC2 would refuse the name after the whole build);
/// with it, they are returned, to be deregistered once the new AMI is ready.
pub(super) async fn same_name(
    ctx: &Ctx<'_>,
    session: &Session,
    name: &str,
) -> Result<Vec<(Arc<Clients>, aws_sdk_ec2::types::Image)>, BuildError> {
    let a = ctx.a;
    let mut out = Vec::new();
    let regions = std::iter::once(session.region.clone()).chain(a.copy_regions.iter().map(|r| r.get_ref().clone()));
    for region in regions {
        let c = ctx.b.clients(&session.in_region(&region)).await;
        let found = c
            .ec2
            .describe_images()
            .owners("self")
            .filters(crate::tags::attr("name", &[name]))
            .send()
            .await
            .api("DescribeImages", &region, None)
            .map_err(|e| ctx.doing("checking that the AMI name is free", e))?;
        for img in found.images() {
            if a.force_deregister != Some(true) {
                return Err(config(format!(
                    "an AMI named `{name}` already exists in {region} ({}): choose another aws.ami_name (e.g. with {{{{timestamp}}}}), or set aws.force_deregister = true to replace it once the new AMI is ready",
                    img.image_id().unwrap_or_default()
                ))
                .at(a.ami_name.as_ref().map(span)));
            }
            out.push((c.clone(), img.clone()));
        }
    }
    Ok(out)
}
