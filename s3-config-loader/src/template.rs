//! Templates: objects whose key ends in `.tmpl` are rendered before they are written (without
//! the suffix). `${NAME}` is replaced by the environment variable NAME; `${ecs.FIELD}` by a field
//! of the ECS task metadata (endpoint v4): [`ECS_FIELDS`]. `$${` writes a literal `${`. A name
//! without a value is an error, never an empty string, and a template that cannot be rendered
//! names every name it lacks at once.
//!
//! Whoever can write to the bucket can write a template, so templates read only the
//! environment variables an [`EnvPolicy`] allows (a prefix, `S3CL_` by default, and names
//! given one by one), never the loader's whole environment with its AWS credentials.

use std::collections::BTreeMap;

use crate::http;

/// The suffix that marks a template.
pub const SUFFIX: &str = ".tmpl";

/// The `${ecs.FIELD}` names: `Cluster` is the cluster's name and `ClusterArn` its ARN (the
/// metadata endpoint gives either in its `Cluster` field), the others as the endpoint gives them.
pub const ECS_FIELDS: [&str; 7] = [
    "TaskARN",
    "Cluster",
    "ClusterArn",
    "Family",
    "Revision",
    "AvailabilityZone",
    "IPv4Address",
];

/// Which environment variables templates may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Names starting with this are readable; empty: none by prefix.
    pub prefix: String,
    /// Names readable without the prefix.
    pub allow: Vec<String>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            prefix: "S3CL_".into(),
            allow: Vec::new(),
        }
    }
}

impl EnvPolicy {
    /// Whether a template may read the environment variable `name`.
    pub fn allows(&self, name: &str) -> bool {
        (!self.prefix.is_empty() && name.starts_with(&self.prefix))
            || self.allow.iter().any(|a| a == name)
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Names the template uses that have no value or may not be read: all of them, so that one
    /// attempt tells what to fix.
    #[error("{}", describe_unresolved(.0))]
    Unresolved(Unresolved),
    /// `${` without a closing `}`.
    #[error("unclosed `${{` at byte {0}")]
    Unclosed(usize),
    /// The template is not UTF-8 text.
    #[error("the template is not UTF-8 text")]
    NotText,
    /// The ECS task metadata endpoint could not be read.
    #[error("ECS task metadata: {0}")]
    Metadata(String),
}

/// Every name a template could not be given a value for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// Names without a value (environment variables that are not set, `ecs.*` fields the task
    /// metadata lacks or could not be read for), in order of first use.
    pub missing: Vec<String>,
    /// Environment variables the [`EnvPolicy`] does not let templates read.
    pub refused: Vec<String>,
    /// The prefix in force, for the message about refused names.
    pub prefix: String,
    /// Why the ECS task metadata could not be read, when the template needed it.
    pub metadata: Option<String>,
}

fn describe_unresolved(u: &Unresolved) -> String {
    let list = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("${{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !u.missing.is_empty() {
        let mut text = format!("no value for {}", list(&u.missing));
        let ecs_fields = u.missing.iter().filter_map(|n| n.strip_prefix("ecs."));
        let (known, unknown): (Vec<&str>, Vec<&str>) =
            ecs_fields.partition(|f| ECS_FIELDS.contains(f));
        let mut why = Vec::new();
        if let Some(error) = u.metadata.as_ref().filter(|_| !known.is_empty()) {
            why.push(format!("ECS task metadata: {error}"));
        }
        if !unknown.is_empty() {
            why.push(format!("the ecs.* names are {}", ECS_FIELDS.join(", ")));
        }
        if !why.is_empty() {
            text.push_str(&format!(" ({})", why.join("; ")));
        }
        parts.push(text);
    }
    if !u.refused.is_empty() {
        let allowed = if u.prefix.is_empty() {
            "named with --template-env-prefix (none set)".to_string()
        } else {
            format!("starting with {}", u.prefix)
        };
        parts.push(format!(
            "not allowed to read {}: templates read only environment variables {allowed} and those named with --template-env",
            list(&u.refused)
        ));
    }
    parts.join("; ")
}

/// The names a template uses, in order of first use.
pub fn names(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    walk(text, |name| {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        Some(String::new())
    })?;
    Ok(out)
}

/// Renders `text`, taking values from `lookup`; reports every missing name at once.
pub fn render(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut missing = Vec::new();
    let out = walk(text, |name| {
        let v = lookup(name);
        if v.is_none() && !missing.iter().any(|m| m == name) {
            missing.push(name.to_string());
        }
        v
    })?;
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(TemplateError::Unresolved(Unresolved {
            missing,
            ..Unresolved::default()
        }))
    }
}

fn walk(
    text: &str,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or(TemplateError::Unclosed(offset + i))?;
        let name = rest[i + 2..i + end].trim();
        if let Some(v) = value(name) {
            out.push_str(&v);
        }
        rest = &rest[i + end + 1..];
        offset += i + end + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// The ECS task metadata fields templates can use, read from `ECS_CONTAINER_METADATA_URI_V4`.
pub async fn ecs_metadata() -> Result<BTreeMap<String, String>, TemplateError> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").map_err(|_| {
        TemplateError::Metadata(
            "ECS_CONTAINER_METADATA_URI_V4 is not set (not running on ECS?)".into(),
        )
    })?;
    let fetch = |url: String| async move {
        let body = http::get(&url)
            .await
            .map_err(|e| TemplateError::Metadata(format!("{url}: {e}")))?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| TemplateError::Metadata(format!("{url}: not JSON: {e}")))
    };
    let task = fetch(format!("{base}/task")).await?;
    let container = fetch(base.clone()).await?;
    let mut out = BTreeMap::new();
    for field in ["TaskARN", "Family", "Revision", "AvailabilityZone"] {
        if let Some(v) = task.get(field).and_then(|v| v.as_str()) {
            out.insert(format!("ecs.{field}"), v.to_string());
        }
    }
    if let Some(cluster) = task.get("Cluster").and_then(|v| v.as_str()) {
        let (name, arn) = cluster_name_and_arn(cluster, out.get("ecs.TaskARN").map(String::as_str));
        out.insert("ecs.Cluster".into(), name);
        if let Some(arn) = arn {
            out.insert("ecs.ClusterArn".into(), arn);
        }
    }
    let ip = container["Networks"].as_array().and_then(|nets| {
        nets.iter()
            .find_map(|n| n["IPv4Addresses"].as_array()?.first()?.as_str())
    });
    if let Some(ip) = ip {
        out.insert("ecs.IPv4Address".into(), ip.to_string());
    }
    Ok(out)
}

/// The cluster's name and ARN from the metadata's `Cluster` field, which holds either (the ARN
/// on current agents and Fargate); a name's ARN is built from the task's ARN, which holds the
/// region and account.
fn cluster_name_and_arn(cluster: &str, task_arn: Option<&str>) -> (String, Option<String>) {
    if cluster.starts_with("arn:") {
        let name = cluster.rsplit_once(":cluster/").map_or(cluster, |(_, n)| n);
        return (name.to_string(), Some(cluster.to_string()));
    }
    let arn = task_arn
        .and_then(|t| t.split_once(":task/"))
        .map(|(account, _)| format!("{account}:cluster/{cluster}"));
    (cluster.to_string(), arn)
}

/// Renders a template body with the environment variables `env` allows and, when it uses
/// `ecs.*` names, the task metadata. A template that cannot be rendered is refused with every
/// name it lacks: refused, unset, or missing from the metadata.
pub async fn render_with_environment(
    bytes: &[u8],
    env: &EnvPolicy,
) -> Result<Vec<u8>, TemplateError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TemplateError::NotText)?;
    let used = names(text)?;
    let refused: Vec<String> = used
        .iter()
        .filter(|n| !n.starts_with("ecs.") && !env.allows(n))
        .cloned()
        .collect();
    let uses_ecs = used.iter().any(|n| n.starts_with("ecs."));
    let (ecs, metadata) = if uses_ecs {
        match ecs_metadata().await {
            Ok(m) => (m, None),
            Err(TemplateError::Metadata(why)) => (BTreeMap::new(), Some(why)),
            Err(other) => return Err(other),
        }
    } else {
        (BTreeMap::new(), None)
    };
    let value = |name: &str| {
        if name.starts_with("ecs.") {
            ecs.get(name).cloned()
        } else if refused.iter().any(|r| r == name) {
            // Never read: reported as refused, not as missing.
            Some(String::new())
        } else {
            std::env::var(name).ok()
        }
    };
    match render(text, value) {
        Ok(out) if refused.is_empty() => Ok(out.into_bytes()),
        Ok(_) => Err(TemplateError::Unresolved(Unresolved {
            refused,
            prefix: env.prefix.clone(),
            ..Unresolved::default()
        })),
        Err(TemplateError::Unresolved(u)) => Err(TemplateError::Unresolved(Unresolved {
            missing: u.missing,
            refused,
            prefix: env.prefix.clone(),
            metadata,
        })),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".into()),
            "ecs.TaskARN" => Some("arn:aws:ecs:task/x".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(
            render("a=${A} id=${ecs.TaskARN} lit=$${A}", vars).unwrap(),
            "a=1 id=arn:aws:ecs:task/x lit=${A}"
        );
        assert_eq!(render("no vars", vars).unwrap(), "no vars");
    }

    #[test]
    fn the_policy_allows_the_prefix_and_the_list_only() {
        let p = EnvPolicy {
            prefix: "S3CL_".into(),
            allow: vec!["PROXY".into()],
        };
        assert!(p.allows("S3CL_ROLE") && p.allows("PROXY"));
        for name in ["AWS_SECRET_ACCESS_KEY", "HOME", "PROXY2", "S3CL", "s3cl_x"] {
            assert!(!p.allows(name), "{name}");
        }
        let none = EnvPolicy {
            prefix: String::new(),
            allow: vec![],
        };
        assert!(!none.allows("S3CL_ROLE") && !none.allows(""));
    }

    #[tokio::test]
    async fn every_refused_and_missing_name_is_reported_at_once() {
        let e = render_with_environment(
            b"${HOME} ${S3CL_TEST_UNSET_X} ${PATH} ${S3CL_TEST_UNSET_Y}",
            &EnvPolicy::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no value for ${S3CL_TEST_UNSET_X}, ${S3CL_TEST_UNSET_Y}; not allowed to read ${HOME}, ${PATH}: templates read only environment variables starting with S3CL_ and those named with --template-env"
        );
        let only_refused = render_with_environment(b"${HOME}", &EnvPolicy::default())
            .await
            .unwrap_err();
        assert!(
            only_refused
                .to_string()
                .starts_with("not allowed to read ${HOME}:"),
            "{only_refused}"
        );
    }

    #[test]
    fn the_cluster_is_its_name_and_cluster_arn_its_arn() {
        let task = "arn:aws:ecs:us-east-1:123456789012:task/prism-test/abc";
        let arn = "arn:aws:ecs:us-east-1:123456789012:cluster/prism-test";
        let both = ("prism-test".to_string(), Some(arn.to_string()));
        assert_eq!(cluster_name_and_arn(arn, Some(task)), both);
        assert_eq!(cluster_name_and_arn("prism-test", Some(task)), both);
        assert_eq!(
            cluster_name_and_arn("prism-test", None),
            ("prism-test".to_string(), None)
        );
    }

    #[test]
    fn an_unknown_ecs_name_is_told_the_known_ones() {
        let e = render("${ecs.Clustr}", vars).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "no value for ${ecs.Clustr} (the ecs.* names are TaskARN, Cluster, ClusterArn,"
            ),
            "{e}"
        );
    }

    #[test]
    fn names_every_missing_variable() {
        let e = render("${A} ${B} ${C} ${B}", vars).unwrap_err();
        assert_eq!(e.to_string(), "no value for ${B}, ${C}");
        assert_eq!(
            render("x ${A", vars).unwrap_err(),
            TemplateError::Unclosed(2)
        );
    }
}
