//! The status page at `/` on the debug listener: one server-rendered HTML page, with no
//! script and no external asset, that refreshes itself. It says what an operator asks first in
//! an incident: is the catalog loaded, is every Envoy in sync (and what did one reject), where
//! does traffic go (endpoints per source), and when do certificates expire.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::admin::AdminState;
use crate::discovery::SourceKey;
use crate::server::nodes::{NodeStatus, SyncState};
use crate::status::age;
use crate::translate::ResourceType;

/// Seconds between refreshes.
const REFRESH_S: u32 = 5;

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(secs: Option<u64>, now: u64) -> String {
    match secs {
        Some(s) => format!("{} ago", age(Duration::from_secs(now.saturating_sub(s)))),
        None => "never".into(),
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.SYNCED{background:#dfd}.STALE{background:#ffd}.NACKED{background:#fdd}\
.err{color:#a00}pre{white-space:pre-wrap;margin:.2em 0}";

/// The page, as of now.
pub fn render(s: &AdminState) -> String {
    let now = common::duration::since_epoch().as_secs();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>xds-server status</title><style>{STYLE}</style></head><body>\
         <h1>xds-server status</h1>\
         <p>Refreshes every {REFRESH_S}s. JSON: <a href=\"/debug/nodes\">/debug/nodes</a>, \
         <a href=\"/debug/config\">/debug/config</a>, <a href=\"/debug/endpoints\">/debug/endpoints</a>.</p>"
    );
    catalog_section(&mut h, s, now);
    proxies_section(&mut h, s, now);
    upstreams_section(&mut h, s, now);
    certificates_section(&mut h, s, now);
    h.push_str("</body></html>\n");
    h
}

fn catalog_section(h: &mut String, s: &AdminState, now: u64) {
    let st = s.catalog.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let _ = write!(
        h,
        "<h2 id=\"catalog\">Catalog</h2><table><tr><th>location</th><td>{}</td></tr>\
         <tr><th>last loaded</th><td>{}</td></tr>",
        esc(&st.location),
        ago(st.last_success, now)
    );
    if let Some(e) = &st.last_error {
        let _ = write!(
            h,
            "<tr><th>last error</th><td class=\"err\"><pre>{}</pre>the last good catalog is still served</td></tr>",
            esc(e)
        );
    }
    if !st.upstreams_without_endpoints.is_empty() {
        let _ = write!(
            h,
            "<tr><th>upstreams without endpoints</th><td class=\"err\">{}</td></tr>",
            esc(&st.upstreams_without_endpoints.join(", "))
        );
    }
    h.push_str("</table>");
}

fn cell(n: &NodeStatus, t: ResourceType) -> String {
    let Some(st) = n.types.get(t.short()) else {
        return "<td>-</td>".into();
    };
    let word = st.state.as_str();
    let detail = match st.state {
        SyncState::Stale => format!(
            " for {}",
            age(Duration::from_secs(st.stale_for_s.unwrap_or_default()))
        ),
        _ => String::new(),
    };
    let version = st.acked.as_deref().or(st.sent.as_deref()).unwrap_or("");
    format!(
        "<td class=\"{word}\" title=\"version {}\">{word}{}</td>",
        esc(version),
        esc(&detail)
    )
}

fn proxies_section(h: &mut String, s: &AdminState, now: u64) {
    let snapshots = s.cache.current();
    let nodes = s.nodes.list();
    let mut proxies: Vec<(String, &'static str)> = snapshots
        .proxies
        .keys()
        .map(|p| (p.0.clone(), ""))
        .chain(snapshots.orphans.keys().map(|p| {
            (
                p.0.clone(),
                " (removed from the catalog; its Envoys keep the last config)",
            )
        }))
        .collect();
    for n in &nodes {
        if !proxies.iter().any(|(p, _)| *p == n.proxy) {
            proxies.push((
                n.proxy.clone(),
                " (not in the catalog: served an empty config)",
            ));
        }
    }
    proxies.sort();
    let _ = write!(h, "<h2 id=\"proxies\">Proxies and their Envoys</h2>");
    if proxies.is_empty() {
        h.push_str("<p>No proxies.</p>");
    }
    for (proxy, note) in proxies {
        let mine: Vec<&NodeStatus> = nodes.iter().filter(|n| n.proxy == proxy).collect();
        let _ = write!(h, "<h3>{}{}</h3>", esc(&proxy), esc(note));
        if mine.is_empty() {
            h.push_str("<p>No Envoy connected.</p>");
            continue;
        }
        h.push_str(
            "<table><tr><th>node</th><th>variant</th><th>connected</th>\
             <th>CDS</th><th>EDS</th><th>LDS</th><th>RDS</th><th>SDS</th></tr>",
        );
        for n in &mine {
            let variant = if n.service == "ads" {
                n.variant.to_string()
            } else {
                format!("{} ({})", n.variant, n.service)
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                esc(&n.id),
                esc(&variant),
                esc(&ago(Some(n.connected_at), now))
            );
            for t in [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener,
                ResourceType::Route,
                ResourceType::Secret,
            ] {
                h.push_str(&cell(n, t));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        for n in &mine {
            for (t, st) in n.types.iter() {
                if let (SyncState::Nacked, Some(text)) = (st.state, &st.last_nack) {
                    let _ = write!(
                        h,
                        "<p class=\"err\">{} rejected {} version {} {}:</p><pre class=\"nack\">{}</pre>",
                        esc(&n.id),
                        esc(&t.to_uppercase()),
                        esc(st.nacked.as_deref().unwrap_or("")),
                        esc(&ago(st.nacked_at, now)),
                        esc(text)
                    );
                }
            }
        }
    }
}

fn upstreams_section(h: &mut String, s: &AdminState, now: u64) {
    let _ = write!(h, "<h2 id=\"upstreams\">Upstreams</h2>");
    let Some(loaded) = s.loaded.borrow().clone() else {
        h.push_str("<p>No catalog loaded yet.</p>");
        return;
    };
    let status = s.discovery.status();
    h.push_str(
        "<table><tr><th>upstream</th><th>source</th><th>endpoints</th>\
         <th>last answer</th><th>last error</th></tr>",
    );
    for (name, u) in &loaded.catalog.upstreams {
        let key = SourceKey::of(&loaded, u);
        let (source, count, last, error) = match &key {
            None => (
                "dns (Envoy resolves it)".to_string(),
                "-".to_string(),
                String::new(),
                String::new(),
            ),
            Some(k) => {
                let st = status.iter().find(|(sk, _)| sk == k).map(|(_, st)| st);
                let count = match st.and_then(|st| st.endpoints.as_ref()) {
                    Some(eps) => {
                        let held = if st.is_some_and(|st| st.empty_held) {
                            " (an empty answer is held back)"
                        } else {
                            ""
                        };
                        format!("{}{held}", eps.len())
                    }
                    None => "none yet".into(),
                };
                (
                    k.describe(),
                    count,
                    ago(st.and_then(|st| st.last_success).map(epoch_secs), now),
                    st.and_then(|st| st.last_error.clone()).unwrap_or_default(),
                )
            }
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"endpoints\">{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            esc(&name.0),
            esc(&source),
            esc(&count),
            esc(&last),
            esc(&error)
        );
    }
    h.push_str("</table>");
}

fn certificates_section(h: &mut String, s: &AdminState, now: u64) {
    let _ = write!(h, "<h2 id=\"certificates\">Certificates</h2>");
    let material = s.secrets.borrow().clone();
    let certs: Vec<(&str, Option<SystemTime>)> = material
        .names()
        .filter(|n| material.get(n).is_some_and(|p| p.key.is_some()))
        .map(|n| (n, material.expiry(n)))
        .collect();
    if certs.is_empty() && material.missing.is_empty() {
        h.push_str("<p>No certificates served.</p>");
        return;
    }
    h.push_str("<table><tr><th>secret</th><th>expires</th></tr>");
    for (name, end) in certs {
        let when = match end {
            Some(end) => {
                let end = epoch_secs(end);
                if end > now {
                    format!("in {}", age(Duration::from_secs(end - now)))
                } else {
                    format!("EXPIRED {} ago", age(Duration::from_secs(now - end)))
                }
            }
            None => "unknown".into(),
        };
        let warn = material.expiring.iter().any(|(n, _)| n == name);
        let _ = write!(
            h,
            "<tr><td>{}</td><td{}>{}{}</td></tr>",
            esc(name),
            if warn { " class=\"err\"" } else { "" },
            esc(&when),
            if warn { " (will not be renewed)" } else { "" }
        );
    }
    for name in &material.missing {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"err\">never obtained</td></tr>",
            esc(name)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}

#[cfg(test)]
mod page_tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::catalog::ProxyName;
    use crate::metrics::Metrics;
    use crate::server::nodes::Nodes;

    #[test]
    fn nack_texts_and_names_are_escaped() {
        let metrics = Metrics::new();
        let nodes = Nodes::default();
        let node = envoy_types::pb::envoy::config::core::v3::Node {
            id: "<b>node</b>".into(),
            cluster: "web".into(),
            ..Default::default()
        };
        let guard = nodes.register(&node, &ProxyName("web".into()), "ads", "sotw");
        guard.update(ResourceType::Route, |s| {
            s.state = SyncState::Nacked;
            s.sent = Some("1".into());
            s.nacked = Some("1".into());
            s.last_nack = Some("<script>alert('x')</script> & more".into());
        });
        let (_, stopping) = tokio::sync::watch::channel(false);
        let (_, secrets) = tokio::sync::watch::channel(Arc::default());
        let (_, loaded) = tokio::sync::watch::channel(None);
        let state = AdminState {
            metrics: metrics.clone(),
            cache: crate::cache::Cache::new(),
            nodes,
            discovery: crate::discovery::Discovery::new(Default::default(), metrics),
            catalog: Arc::new(Mutex::new(Default::default())),
            stopping,
            secrets,
            loaded,
        };
        let page = render(&state);
        assert!(!page.contains("<script") && !page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
            "{page}"
        );
        assert!(
            page.contains("&lt;b&gt;node&lt;/b&gt; rejected RDS"),
            "{page}"
        );
        assert!(page.contains("<td class=\"NACKED\""), "{page}");
        assert!(page.contains("not in the catalog"), "{page}");
    }
}
