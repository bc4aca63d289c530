//! Announcing an image's newest AMI: an SSM parameter (type String, data type `aws:ec2:image`) in
//! every region the AMI is in, holding that region's AMI id.

use aws_sdk_ssm::types::ParameterType;
use imgbake_config::{Image, Span};
use imgbake_core::artifact::Artifact;
use imgbake_core::error::BuildError;

use crate::clients::{ClientCache, Session};
use crate::error::SdkResultExt;

/// Write the image's `publish.ssm_parameter` for `artifact`; returns what was written, for people.
pub async fn publish(clients: &ClientCache, image: &Image, artifact: &Artifact) -> Result<Vec<String>, BuildError> {
    let Some(p) = crate::validate::ssm_parameter(image) else { return Ok(Vec::new()) };
    let Some(a) = crate::settings::of(image) else { return Ok(Vec::new()) };
    let name = p.get_ref();
    let mut written = Vec::new();
    for (region, ami) in &artifact.locations {
        let c = clients.get(&Session::of(a, region)).await;
        c.ssm
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .description(format!("imgbake: newest AMI of image `{}` (build {})", image.name, artifact.build_id))
            .send()
            .await
            .api("PutParameter", region, Some(name.clone()))
            .map_err(|e| BuildError::from(e).at(Span::new(p.span())))?;
        written.push(format!("SSM parameter {name} = {ami} ({region})"));
    }
    Ok(written)
}

/// The AMI ids the image's `publish.ssm_parameter` holds now, in every region the image is built or
/// copied to (a parameter that does not exist yet holds nothing).
pub async fn published(clients: &ClientCache, image: &Image) -> Result<Vec<String>, BuildError> {
    let Some(p) = crate::validate::ssm_parameter(image) else { return Ok(Vec::new()) };
    let Some(a) = crate::settings::of(image) else { return Ok(Vec::new()) };
    let name = p.get_ref();
    let mut ids = Vec::new();
    for region in a.region.iter().chain(&a.copy_regions) {
        let c = clients.get(&Session::of(a, region.get_ref())).await;
        match c.ssm.get_parameter().name(name).send().await.api("GetParameter", region.get_ref(), Some(name.clone())) {
            Ok(out) => ids.extend(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e) if e.code_is("ParameterNotFound") => {}
            Err(e) => return Err(BuildError::from(e).at(Span::new(p.span()))),
        }
    }
    Ok(ids)
}

/// Does the image's `publish.ssm_parameter` hold `artifact`'s AMI in every region it is in? `None`
/// when the image publishes no parameter (nothing to redo).
pub async fn is_published(
    clients: &ClientCache,
    image: &Image,
    artifact: &Artifact,
) -> Result<Option<bool>, BuildError> {
    if crate::validate::ssm_parameter(image).is_none() {
        return Ok(None);
    }
    let held = published(clients, image).await?;
    Ok(Some(artifact.locations.values().all(|ami| held.contains(ami))))
}
