//! The tags imgbake puts on everything it creates in EC2, and the filters that find them again.
//!
//! Every resource carries `imgbake:build-id`, `imgbake:image`, `imgbake:tree`, `imgbake:tree-id`,
//! `imgbake:created` and `imgbake:role`, set at creation (TagSpecifications) so nothing exists untagged even for a moment.
//! AMIs also carry `imgbake:fingerprint`, `imgbake:source`, `imgbake:parent`, the image's `tags` and
//! `ami_tags`, and — only once the whole build (copies, sharing) succeeded — [`COMPLETE`].

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use imgbake_core::artifact::tags;

pub use imgbake_core::artifact::tags::COMPLETE;

/// Values of [`tags::ROLE`].
pub mod role {
    /// The image and its snapshots.
    pub const ARTIFACT: &str = "artifact";
    /// The build machine and its volumes.
    pub const BUILD_INSTANCE: &str = "build-instance";
    /// Key pairs and security groups made for one build.
    pub const TEMPORARY: &str = "temporary";
    /// Every role: what `plan`, `prune` and `clean` may ever find.
    pub const ALL: &[&str] = &[ARTIFACT, BUILD_INSTANCE, TEMPORARY];
}

/// The filters that find tree `tree_id`'s resources of `roles`, and nothing else: the tree id (never
/// the name, which two trees may share) and imgbake's role tag.
pub fn scope(tree_id: &str, roles: &[&str]) -> Vec<Filter> {
    vec![
        filter(tags::TREE_ID, tree_id),
        Filter::builder()
            .name(format!("tag:{}", tags::ROLE))
            .set_values(Some(roles.iter().map(|r| r.to_string()).collect()))
            .build(),
    ]
}

/// The tags of one build, before the role is chosen.
#[derive(Clone, Debug)]
pub struct BuildTags {
    /// build id, image, tree, created.
    base: BTreeMap<String, String>,
}

impl BuildTags {
    /// The tags every resource of build `build_id` of `image` in tree `tree` (id `tree_id`) gets.
    pub fn new(build_id: &str, image: &str, tree: &str, tree_id: &str, created: chrono::DateTime<chrono::Utc>) -> Self {
        let mut base = BTreeMap::new();
        base.insert(tags::TREE_ID.to_string(), tree_id.to_string());
        base.insert(tags::BUILD_ID.to_string(), build_id.to_string());
        base.insert(tags::IMAGE.to_string(), image.to_string());
        base.insert(tags::TREE.to_string(), tree.to_string());
        base.insert(tags::CREATED.to_string(), created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        BuildTags { base }
    }

    /// The build id.
    pub fn build_id(&self) -> &str {
        self.base.get(tags::BUILD_ID).map(String::as_str).unwrap_or_default()
    }

    /// Base tags plus the role, plus `extra` (user tags first, so imgbake's own keys win; user tags
    /// in imgbake's `imgbake:` namespace are dropped — they could fake a test result or completion).
    pub fn with_role(&self, role: &str, extra: &BTreeMap<String, String>) -> Vec<Tag> {
        let mut all: BTreeMap<String, String> =
            extra.iter().filter(|(k, _)| !k.starts_with("imgbake:")).map(|(k, v)| (k.clone(), v.clone())).collect();
        all.extend(self.base.clone());
        all.insert(tags::ROLE.to_string(), role.to_string());
        to_tags(&all)
    }
}

/// EC2 tags from a map.
pub fn to_tags(m: &BTreeMap<String, String>) -> Vec<Tag> {
    m.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// A map from EC2 tags.
pub fn to_map(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

/// A TagSpecification for `kind`.
pub fn spec(kind: ResourceType, tags: &[Tag]) -> TagSpecification {
    TagSpecification::builder().resource_type(kind).set_tags(Some(tags.to_vec())).build()
}

/// A `tag:KEY = VALUE` filter.
pub fn filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

/// A filter on a named attribute.
pub fn attr(name: &str, values: &[&str]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imgbake_keys_win_over_user_tags() {
        let t = BuildTags::new("b-1", "web", "tree", "tree-0001", chrono::DateTime::UNIX_EPOCH);
        let mut user = BTreeMap::new();
        user.insert("imgbake:build-id".to_string(), "forged".to_string());
        user.insert("team".to_string(), "core".to_string());
        let m = to_map(&t.with_role(role::ARTIFACT, &user));
        assert_eq!(m["imgbake:build-id"], "b-1");
        assert_eq!(m["team"], "core");
        assert_eq!(m["imgbake:role"], "artifact");
        assert_eq!(m["imgbake:created"], "1970-01-01T00:00:00.000Z");
        assert_eq!(m["imgbake:tree-id"], "tree-0001");
        assert_eq!(m.len(), 7);
    }
}
