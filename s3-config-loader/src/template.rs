//! Templates: objects whose key ends in `.tmpl` are rendered before they are written (without
//! the suffix). `${NAME}` is replaced by the environment variable NAME; `${ecs.FIELD}` by a field
//! of the ECS task metadata (endpoint v4): `TaskARN`, `Cluster`, `Family`, `Revision`,
//! `AvailabilityZone`, `IPv4Address`. `$${` writes a literal `${`. A name without a value is an
//! error, never an empty string.
//!
//! Whoever can write to the bucket can write a template, so templates read only the
//! environment variables an [`EnvPolicy`] allows (a prefix, `S3CL_` by default, and names
//! given one by one), never the loader's whole environment with its AWS credentials.

use std::collections::BTreeMap;

use crate::http;

/// The suffix that marks a template.
pub const SUFFIX: &str = ".tmpl";

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
    /// Names without a value.
    #[error("no value for {}", .0.iter().map(|n| format!("${{{n}}}")).collect::<Vec<_>>().join(", "))]
    Missing(Vec<String>),
    /// Environment variables the [`EnvPolicy`] does not let templates read.
    #[error(
        "not allowed to read {}: templates read only environment variables {} and those named with --template-env",
        .names.iter().map(|n| format!("${{{n}}}")).collect::<Vec<_>>().join(", "),
        if .prefix.is_empty() { "named with --template-env-prefix (none set)".to_string() } else { format!("starting with {}", .prefix) }
    )]
    NotAllowed {
        /// The names refused.
        names: Vec<String>,
        /// The prefix in force.
        prefix: String,
    },
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
        Err(TemplateError::Missing(missing))
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
    for field in [
        "TaskARN",
        "Cluster",
        "Family",
        "Revision",
        "AvailabilityZone",
    ] {
        if let Some(v) = task.get(field).and_then(|v| v.as_str()) {
            out.insert(format!("ecs.{field}"), v.to_string());
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

/// Renders a template body with the environment variables `env` allows and, when it uses
/// `ecs.*` names, the task metadata.
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
    if !refused.is_empty() {
        return Err(TemplateError::NotAllowed {
            names: refused,
            prefix: env.prefix.clone(),
        });
    }
    let uses_ecs = used.iter().any(|n| n.starts_with("ecs."));
    let ecs = if uses_ecs {
        ecs_metadata().await?
    } else {
        BTreeMap::new()
    };
    render(text, |name| {
        if name.starts_with("ecs.") {
            ecs.get(name).cloned()
        } else {
            std::env::var(name).ok()
        }
    })
    .map(String::into_bytes)
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
    async fn refused_names_are_all_reported_before_anything_is_read() {
        let e = render_with_environment(b"${HOME} ${S3CL_X} ${PATH}", &EnvPolicy::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not allowed to read ${HOME}, ${PATH}: templates read only environment variables starting with S3CL_ and those named with --template-env"
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
