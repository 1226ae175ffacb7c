//! `xds-server diff`: what a catalog change does to every proxy, as a diff of the resources
//! each would get (rendered like `xds-server render`, private keys redacted, as YAML).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::catalog::{LoadedCatalog, ProxyName};
use crate::render::{self, RenderError};

/// One resource that differs between the two catalogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `lds`, `rds`, `cds`, `eds`, or `eds.not_resolved` / `sds.needed` for what only a
    /// running server resolves.
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// Its YAML before (`None`: added).
    pub old: Option<String>,
    /// Its YAML after (`None`: removed).
    pub new: Option<String>,
}

/// The changes of one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDiff {
    /// The proxy.
    pub proxy: String,
    /// Whether the proxy is new, gone, or in both catalogs.
    pub presence: Presence,
    /// Its changed resources, in type order, then by name.
    pub changes: Vec<Change>,
}

/// Whether a proxy is in both catalogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// In both.
    Both,
    /// Only in the new one.
    Added,
    /// Only in the old one.
    Removed,
}

/// The lists compared, in the order Envoy takes them: what each resource is named by.
const KINDS: [(&str, &str, &str); 7] = [
    ("lds", "resources", "name"),
    ("rds", "resources", "name"),
    ("cds", "resources", "name"),
    ("eds", "resources", "cluster_name"),
    ("eds", "by_zone", "name"),
    ("eds", "not_resolved", "upstream"),
    ("sds", "needed", "name"),
];

/// Every proxy's changes (only `only`'s when given); proxies without changes are left out.
pub async fn diff(
    old: &LoadedCatalog,
    new: &LoadedCatalog,
    only: Option<&ProxyName>,
) -> Result<Vec<ProxyDiff>, RenderError> {
    let proxies: BTreeSet<&ProxyName> = old
        .catalog
        .proxies
        .keys()
        .chain(new.catalog.proxies.keys())
        .filter(|p| only.is_none_or(|o| o == *p))
        .collect();
    let mut out = Vec::new();
    for proxy in proxies {
        let (before, after) = (rendered(old, proxy).await?, rendered(new, proxy).await?);
        let presence = match (&before, &after) {
            (None, Some(_)) => Presence::Added,
            (Some(_), None) => Presence::Removed,
            _ => Presence::Both,
        };
        let changes = compare(before.as_ref(), after.as_ref());
        if !changes.is_empty() || presence != Presence::Both {
            out.push(ProxyDiff {
                proxy: proxy.0.clone(),
                presence,
                changes,
            });
        }
    }
    Ok(out)
}

/// What `proxy` gets from `catalog` (`None`: the catalog has no such proxy).
async fn rendered(
    catalog: &LoadedCatalog,
    proxy: &ProxyName,
) -> Result<Option<Value>, RenderError> {
    if !catalog.catalog.proxies.contains_key(proxy) {
        return Ok(None);
    }
    render::render_proxy(catalog, proxy, false).await.map(Some)
}

/// The resources of one list of a rendered proxy, by name, as YAML.
fn named(rendered: Option<&Value>, t: &str, list: &str, key: &str) -> BTreeMap<String, String> {
    let items = rendered
        .and_then(|r| r[t][list].as_array())
        .cloned()
        .unwrap_or_default();
    items
        .into_iter()
        .map(|item| {
            let name = item[key].as_str().unwrap_or_default().to_string();
            let yaml = serde_saphyr::to_string(&item).unwrap_or_else(|e| format!("# {e}\n"));
            (name, yaml)
        })
        .collect()
}

fn compare(before: Option<&Value>, after: Option<&Value>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (t, list, key) in KINDS {
        let kind = if list == "resources" {
            t.to_string()
        } else {
            format!("{t}.{list}")
        };
        let (old, new) = (named(before, t, list, key), named(after, t, list, key));
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for name in names {
            let (o, n) = (old.get(name), new.get(name));
            if o != n {
                changes.push(Change {
                    kind: kind.clone(),
                    name: name.clone(),
                    old: o.cloned(),
                    new: n.cloned(),
                });
            }
        }
    }
    changes
}

/// The diff as people read it: per proxy, each changed resource with a unified diff of its
/// YAML (`-` before, `+` after).
pub fn text(diffs: &[ProxyDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let what = match d.presence {
            Presence::Both => "",
            Presence::Added => " (new proxy)",
            Presence::Removed => " (proxy removed)",
        };
        out.push_str(&format!("proxy {}{what}:\n", d.proxy));
        for c in &d.changes {
            let verb = match (&c.old, &c.new) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "modified",
            };
            out.push_str(&format!("  {} {} {verb}\n", c.kind, c.name));
            let (old, new) = (
                c.old.as_deref().unwrap_or_default(),
                c.new.as_deref().unwrap_or_default(),
            );
            let diff = similar::TextDiff::from_lines(old, new);
            for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
                for line in hunk.to_string().lines() {
                    out.push_str("    ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let resources: usize = diffs.iter().map(|d| d.changes.len()).sum();
    if diffs.is_empty() {
        out.push_str("no changes\n");
    } else {
        out.push_str(&format!(
            "{} {} changed, {resources} {}\n",
            diffs.len(),
            if diffs.len() == 1 { "proxy" } else { "proxies" },
            if resources == 1 {
                "resource"
            } else {
                "resources"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn loaded(text: &str) -> LoadedCatalog {
        LoadedCatalog {
            catalog: catalog::parse("c.yaml", text).unwrap(),
            base_dir: ".".into(),
        }
    }

    const OLD: &str = r#"
version: 1
proxies:
  p:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: api } ] }
upstreams:
  api: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] } }
"#;

    #[tokio::test]
    async fn only_what_changed_shows() {
        let old = loaded(OLD);
        assert!(diff(&old, &old, None).await.unwrap().is_empty());
        assert_eq!(text(&[]), "no changes\n");
        let new = loaded(&OLD.replace("10.0.0.1:80", "10.0.0.2:80"));
        let d = diff(&old, &new, None).await.unwrap();
        assert_eq!(d.len(), 1);
        let kinds: Vec<(&str, &str)> = d[0]
            .changes
            .iter()
            .map(|c| (c.kind.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(kinds, [("eds", "api")]);
        let t = text(&d);
        assert!(
            t.contains("-") && t.contains("10.0.0.1") && t.contains("10.0.0.2"),
            "{t}"
        );
        assert!(t.contains("    -") && t.contains("    +"), "{t}");
        let other = ProxyName("q".into());
        assert!(diff(&old, &new, Some(&other)).await.unwrap().is_empty());
    }

    /// Turning `zone_aware` on gives an Envoy without a zone the endpoints' zones (its
    /// localities, all at priority 0), and Envoys in those zones their priorities: the diff says
    /// both.
    #[tokio::test]
    async fn turning_zone_aware_on_shows_per_caller_zone() {
        let zoned = OLD.replace(
            r#"static: ["10.0.0.1:80"]"#,
            r#"static: [ { address: "10.0.0.1:80", zone: us-east-1a }, { address: "10.0.0.2:80", zone: us-east-1b } ]"#,
        );
        let old = loaded(&zoned);
        let new = loaded(&zoned.replace("protocol: http1,", "protocol: http1, zone_aware: true,"));
        let d = diff(&old, &new, None).await.unwrap();
        let kinds: Vec<(&str, &str)> = d[0]
            .changes
            .iter()
            .map(|c| (c.kind.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("eds", "api"),
                ("eds.by_zone", "us-east-1a/api"),
                ("eds.by_zone", "us-east-1b/api")
            ]
        );
        let t = text(&d);
        assert!(t.contains("priority: 1"), "{t}");
    }
}
