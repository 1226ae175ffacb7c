//! `xds-server status`: every connected Envoy and where each resource type stands, read from
//! the `/debug/nodes` page of one or more replicas and merged into one table, like
//! `istioctl proxy-status`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::server::nodes::SyncState;
use crate::translate::ResourceType;

/// One Envoy stream as a replica's `/debug/nodes` lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NodeRow {
    /// The replica that holds the stream (the `--debug` URL it was read from).
    #[serde(default)]
    pub replica: String,
    /// Envoy's `node.id`.
    pub id: String,
    /// Envoy's `node.cluster`.
    pub proxy: String,
    /// `sotw` or `delta`.
    pub variant: String,
    /// `ads` or one standalone service.
    #[serde(default)]
    pub service: String,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Whether the catalog names the proxy.
    #[serde(default)]
    pub known_proxy: bool,
    /// Per type (`cds`, `eds`, `lds`, `rds`, `sds`).
    #[serde(default)]
    pub types: BTreeMap<String, TypeRow>,
}

/// One resource type of one stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TypeRow {
    /// Where it stands.
    pub state: SyncState,
    /// The version last sent.
    #[serde(default)]
    pub sent: Option<String>,
    /// The version last acknowledged.
    #[serde(default)]
    pub acked: Option<String>,
    /// For how long the response last sent has been waiting for its answer.
    #[serde(default)]
    pub stale_for_s: Option<u64>,
    /// Envoy's text for the last rejection.
    #[serde(default)]
    pub last_nack: Option<String>,
}

/// The columns of the table, in order.
const TYPES: [ResourceType; 5] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
    ResourceType::Secret,
];

/// How long a cell's NACK text may be without `--wide`.
const SHORT_NACK: usize = 60;

impl TypeRow {
    /// Whether this type fails a deploy check: rejected, or unanswered for longer than
    /// `stale_after`.
    pub fn failing(&self, stale_after: Duration) -> bool {
        match self.state {
            SyncState::Nacked => true,
            SyncState::Stale => self.stale_for_s.unwrap_or_default() > stale_after.as_secs(),
            SyncState::Synced | SyncState::Requested => false,
        }
    }

    fn cell(&self, wide: bool) -> String {
        match self.state {
            SyncState::Stale => format!(
                "STALE ({})",
                age(Duration::from_secs(self.stale_for_s.unwrap_or_default()))
            ),
            SyncState::Nacked => {
                let text = self.last_nack.as_deref().unwrap_or_default();
                let text = one_line(text);
                if wide || text.chars().count() <= SHORT_NACK {
                    format!("NACKED: {text}")
                } else {
                    let cut: String = text.chars().take(SHORT_NACK).collect();
                    format!("NACKED: {cut}…")
                }
            }
            s => s.as_str().to_string(),
        }
    }
}

impl NodeRow {
    /// Whether this stream fails a deploy check: any type does, or it names a proxy the
    /// catalog does not have (a `node.cluster` typo gets an empty configuration, all SYNCED).
    pub fn failing(&self, stale_after: Duration) -> bool {
        !self.known_proxy || self.types.values().any(|t| t.failing(stale_after))
    }

    /// The proxy as the table shows it: marked when the catalog does not name it.
    fn proxy_cell(&self) -> String {
        if self.known_proxy {
            self.proxy.clone()
        } else {
            format!("{} (not in the catalog)", self.proxy)
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `3s`, `5m12s`, `2h3m`, `4d2h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// The rows sorted by proxy, node and replica, keeping only `proxy`'s when given.
pub fn select(mut rows: Vec<NodeRow>, proxy: Option<&str>) -> Vec<NodeRow> {
    rows.retain(|r| proxy.is_none_or(|p| r.proxy == p));
    rows.sort_by(|a, b| {
        (&a.proxy, &a.id, &a.replica, a.connected_at).cmp(&(
            &b.proxy,
            &b.id,
            &b.replica,
            b.connected_at,
        ))
    });
    rows
}

/// The table: one line per stream, with a replica column when `replicas` is set. `now` is
/// seconds since the Unix epoch, for "connected since".
pub fn table(rows: &[NodeRow], replicas: bool, wide: bool, now: u64) -> String {
    let mut head = vec!["NODE", "PROXY"];
    if replicas {
        head.push("REPLICA");
    }
    head.extend(["VARIANT", "CONNECTED"]);
    head.extend(TYPES.map(|t| match t {
        ResourceType::Cluster => "CDS",
        ResourceType::Endpoint => "EDS",
        ResourceType::Listener => "LDS",
        ResourceType::Route => "RDS",
        ResourceType::Secret => "SDS",
    }));
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let mut line = vec![r.id.clone(), r.proxy_cell()];
        if replicas {
            line.push(r.replica.clone());
        }
        let variant = if r.service.is_empty() || r.service == "ads" {
            r.variant.clone()
        } else {
            format!("{} ({})", r.variant, r.service)
        };
        line.push(variant);
        line.push(age(Duration::from_secs(now.saturating_sub(r.connected_at))));
        for t in TYPES {
            line.push(
                r.types
                    .get(t.short())
                    .map(|s| s.cell(wide))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        lines.push(line);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let mut text = String::new();
        for (c, cell) in l.iter().enumerate() {
            if c + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Why a replica could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Not an `http://HOST[:PORT]` URL.
    #[error("--debug {0:?}: expected http://HOST[:PORT]")]
    Url(String),
    /// The name did not resolve.
    #[error("{url}: cannot resolve {host}: {why}")]
    Resolve {
        /// The URL given.
        url: String,
        /// Its host.
        host: String,
        /// Why.
        why: String,
    },
    /// The page could not be fetched.
    #[error("{0}/debug/nodes: {1}")]
    Fetch(String, String),
    /// The page is not the list expected.
    #[error("{0}/debug/nodes: not a node list: {1}")]
    Parse(String, String),
}

/// The replicas behind `url`: the URL itself, or, when its host is a name with several
/// addresses (one per replica, e.g. a headless service), each address.
pub async fn replicas(url: &str) -> Result<Vec<String>, StatusError> {
    let base = url.trim_end_matches('/');
    let uri: http::Uri = base
        .parse()
        .map_err(|_| StatusError::Url(url.to_string()))?;
    let (Some("http"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(StatusError::Url(url.to_string()));
    };
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Ok(vec![base.to_string()]);
    }
    let port = uri.port_u16().unwrap_or(80);
    let addrs: std::collections::BTreeSet<std::net::SocketAddr> =
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| StatusError::Resolve {
                url: url.to_string(),
                host: host.to_string(),
                why: e.to_string(),
            })?
            .collect();
    // `localhost` (127.0.0.1 and ::1) is one machine; replicas behind one name are told apart
    // by their IPv4 addresses where they have them.
    let v4: Vec<_> = addrs.iter().filter(|a| a.is_ipv4()).collect();
    let picked: Vec<_> = if v4.is_empty() {
        addrs.iter().collect()
    } else {
        v4
    };
    if picked.len() <= 1 || addrs.iter().any(|a| a.ip().is_loopback()) {
        return Ok(vec![base.to_string()]);
    }
    Ok(picked.into_iter().map(|a| format!("http://{a}")).collect())
}

/// The largest `/debug/nodes` page read (about 5,000 streams per MiB).
const MAX_PAGE: usize = 64 * 1024 * 1024;

/// One replica's streams, each marked with `replica`.
pub async fn fetch(replica: &str) -> Result<Vec<NodeRow>, StatusError> {
    let body = s3_config_loader::http::get_up_to(&format!("{replica}/debug/nodes"), MAX_PAGE)
        .await
        .map_err(|e| StatusError::Fetch(replica.to_string(), e.to_string()))?;
    let mut rows: Vec<NodeRow> = serde_json::from_slice(&body)
        .map_err(|e| StatusError::Parse(replica.to_string(), e.to_string()))?;
    for r in &mut rows {
        r.replica = replica.to_string();
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, types: &[(&str, SyncState, Option<u64>, Option<&str>)]) -> NodeRow {
        NodeRow {
            replica: "http://10.0.0.1:18002".into(),
            id: id.into(),
            proxy: "web".into(),
            variant: "sotw".into(),
            service: "ads".into(),
            connected_at: 1000,
            known_proxy: true,
            types: types
                .iter()
                .map(|(t, state, stale, nack)| {
                    (
                        t.to_string(),
                        TypeRow {
                            state: *state,
                            sent: Some("a".into()),
                            acked: None,
                            stale_for_s: *stale,
                            last_nack: nack.map(String::from),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn stale_fails_only_past_the_limit_and_nacked_always() {
        let limit = Duration::from_secs(30);
        let fresh = row("a", &[("cds", SyncState::Stale, Some(5), None)]);
        let old = row("b", &[("cds", SyncState::Stale, Some(31), None)]);
        let nacked = row("c", &[("rds", SyncState::Nacked, None, Some("bad regex"))]);
        let synced = row("d", &[("lds", SyncState::Synced, None, None)]);
        assert!(!fresh.failing(limit));
        assert!(old.failing(limit));
        assert!(nacked.failing(limit));
        assert!(!synced.failing(limit));
        // A node.cluster the catalog does not name: an empty configuration, all SYNCED.
        let mut typo = row("e", &[("lds", SyncState::Synced, None, None)]);
        typo.known_proxy = false;
        assert!(typo.failing(limit));
        assert_eq!(typo.proxy_cell(), "web (not in the catalog)");
    }

    #[test]
    fn the_table_shortens_nack_texts_unless_wide() {
        let long = "x".repeat(100);
        let rows = vec![row(
            "envoy-1",
            &[
                ("cds", SyncState::Synced, None, None),
                ("rds", SyncState::Nacked, None, Some(&long)),
                ("eds", SyncState::Stale, Some(75), None),
            ],
        )];
        let t = table(&rows, true, false, 1000 + 3 * 60 + 4);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{t}");
        assert!(lines[0].contains("REPLICA"), "{t}");
        assert!(lines[1].contains("SYNCED"), "{t}");
        assert!(lines[1].contains("STALE (1m15s)"), "{t}");
        assert!(lines[1].contains("3m4s"), "{t}");
        assert!(lines[1].contains(&format!("NACKED: {}…", "x".repeat(SHORT_NACK))));
        assert!(!lines[1].contains(&long));
        assert!(table(&rows, false, true, 1000).contains(&long));
        assert!(!table(&rows, false, true, 1000).contains("REPLICA"));
    }

    #[tokio::test]
    async fn localhost_is_one_replica_and_addresses_are_kept() {
        assert_eq!(
            replicas("http://localhost:18002/").await.unwrap(),
            ["http://localhost:18002"]
        );
        assert_eq!(
            replicas("http://10.0.0.5:18002").await.unwrap(),
            ["http://10.0.0.5:18002"]
        );
        assert!(matches!(
            replicas("https://x:1").await,
            Err(StatusError::Url(_))
        ));
    }

    #[test]
    fn ages_read_like_durations() {
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(3601)), "1h0m");
        assert_eq!(age(Duration::from_secs(90000)), "1d1h");
    }
}
