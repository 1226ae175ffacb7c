//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): per connected Envoy, what this
//! server sent it and what it acknowledged or rejected, per resource, so standard tools can ask.
//!
//! It is answered on the xDS port with the xDS streams' own authentication: with
//! `--require-identity` a caller must present a certificate from the CA and hears only about
//! Envoys of the proxies that certificate names, as an xDS stream would get only those proxies'
//! resources. Secrets (SDS) are listed by name and version, never with their contents.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::Timestamp;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::nodes::{NodeStatus, SyncState, TypeStatus};
use super::{ResponseStream, Shared, XdsServer};
use crate::identity::Refusal;
use crate::tls::Peer;
use crate::translate::ResourceType;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for XdsServer {
    type StreamClientStatusStream = ResponseStream<ClientStatusResponse>;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let shared = self.shared.clone();
        // Refused before the first message, like an xDS stream without a certificate.
        readable(&shared, peer.as_ref())?;
        let answers = request
            .into_inner()
            .map(move |req| req.and_then(|req| answer(&shared, peer.as_ref(), &req)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        answer(&self.shared, peer.as_ref(), request.get_ref()).map(Response::new)
    }
}

/// Which proxies `peer` may hear about: `None` for all (no `--require-identity`).
fn readable(shared: &Shared, peer: Option<&Peer>) -> Result<Option<Vec<String>>, Status> {
    if !shared.auth.require_identity {
        return Ok(None);
    }
    let have = peer
        .map(|p| crate::identity::proxies_of(p, &shared.auth.trust_domain))
        .unwrap_or_default();
    if have.is_empty() {
        let refusal = Refusal::NoCertificate;
        shared
            .metrics
            .identity_refusals
            .with_label_values(&[refusal.reason()])
            .inc();
        tracing::warn!(peer = ?peer.and_then(|p| p.remote), "CSDS request refused: {refusal}");
        return Err(Status::unauthenticated(refusal.to_string()));
    }
    Ok(Some(have.into_iter().map(|p| p.0).collect()))
}

fn answer(
    shared: &Shared,
    peer: Option<&Peer>,
    req: &ClientStatusRequest,
) -> Result<ClientStatusResponse, Status> {
    let allowed = readable(shared, peer)?;
    let matchers = req
        .node_matchers
        .iter()
        .map(Matcher::new)
        .collect::<Result<Vec<_>, _>>()?;
    let config = shared
        .nodes
        .list()
        .into_iter()
        .filter(|n| allowed.as_ref().is_none_or(|a| a.contains(&n.proxy)))
        .filter(|n| matchers.is_empty() || matchers.iter().any(|m| m.matches(&n.id)))
        .map(|n| client_config(&n, !req.exclude_resource_contents))
        .collect();
    Ok(ClientStatusResponse { config })
}

/// A `NodeMatcher` on `node.id` (metadata matchers are refused: nodes are told apart by id).
enum Matcher {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(regex::Regex),
    Any,
}

impl Matcher {
    fn new(m: &NodeMatcher) -> Result<Matcher, Status> {
        if !m.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(
                "node_matchers[].node_metadatas is not supported: match on node_id",
            ));
        }
        let Some(StringMatcher {
            ignore_case,
            match_pattern: Some(p),
        }) = &m.node_id
        else {
            return Ok(Matcher::Any);
        };
        let fold = |s: &str| {
            if *ignore_case {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        Ok(match p {
            MatchPattern::Exact(s) => Matcher::Exact(fold(s), *ignore_case),
            MatchPattern::Prefix(s) => Matcher::Prefix(fold(s), *ignore_case),
            MatchPattern::Suffix(s) => Matcher::Suffix(fold(s), *ignore_case),
            MatchPattern::Contains(s) => Matcher::Contains(fold(s), *ignore_case),
            MatchPattern::SafeRegex(r) => Matcher::Regex(
                regex::Regex::new(&format!("^(?:{})$", r.regex)).map_err(|e| {
                    Status::invalid_argument(format!("node_matchers[].node_id.safe_regex: {e}"))
                })?,
            ),
            MatchPattern::Custom(_) => {
                return Err(Status::invalid_argument(
                    "node_matchers[].node_id.custom is not supported",
                ));
            }
        })
    }

    fn matches(&self, id: &str) -> bool {
        let fold = |ic: bool| {
            if ic {
                id.to_lowercase()
            } else {
                id.to_string()
            }
        };
        match self {
            Matcher::Exact(s, ic) => fold(*ic) == *s,
            Matcher::Prefix(s, ic) => fold(*ic).starts_with(s.as_str()),
            Matcher::Suffix(s, ic) => fold(*ic).ends_with(s.as_str()),
            Matcher::Contains(s, ic) => fold(*ic).contains(s.as_str()),
            Matcher::Regex(r) => r.is_match(id),
            Matcher::Any => true,
        }
    }
}

fn timestamp(secs: Option<u64>) -> Option<Timestamp> {
    secs.map(|s| Timestamp {
        seconds: s as i64,
        nanos: 0,
    })
}

/// One node's resources as CSDS reports them.
fn client_config(n: &NodeStatus, contents: bool) -> ClientConfig {
    let mut generic_xds_configs = Vec::new();
    for t in ResourceType::ALL {
        if let Some(st) = n.types.get(t.short()) {
            generic_xds_configs.extend(type_configs(t, st, contents && t != ResourceType::Secret));
        }
    }
    ClientConfig {
        node: n.node.as_deref().cloned(),
        generic_xds_configs,
        ..Default::default()
    }
}

/// The resources of one type on one stream: what the proxy acknowledged, and what was sent
/// since and is unanswered (STALE) or rejected (ERROR).
pub(crate) fn type_configs(
    t: ResourceType,
    st: &TypeStatus,
    contents: bool,
) -> Vec<GenericXdsConfig> {
    let mut out: BTreeMap<&str, GenericXdsConfig> = BTreeMap::new();
    let entry = |name: &str, version: String, body: &envoy_types::pb::google::protobuf::Any| {
        GenericXdsConfig {
            type_url: t.type_url().to_string(),
            name: name.to_string(),
            version_info: version,
            xds_config: contents.then(|| body.clone()),
            ..Default::default()
        }
    };
    let mut acked_content = BTreeMap::new();
    if let Some(acked) = &st.acked_set {
        for (name, version, r) in acked.resources() {
            let mut c = entry(name, version.to_string(), r.body());
            c.last_updated = timestamp(st.acked_at);
            c.config_status = ConfigStatus::Synced as i32;
            c.client_status = ClientResourceStatus::Acked as i32;
            acked_content.insert(name, r.version);
            out.insert(name, c);
        }
    }
    if matches!(st.state, SyncState::Stale | SyncState::Nacked)
        && let Some(sent) = &st.sent_set
    {
        for (name, version, r) in sent.resources() {
            if acked_content.get(name) == Some(&r.version) {
                continue;
            }
            if st.state == SyncState::Nacked {
                // Envoy kept what it had: that resource (or none) is what it runs, and the
                // rejected version is only named in the error, as Envoy's own config dump and
                // gRPC's CSDS (A40) show it.
                let mut c = out.remove(name).unwrap_or_else(|| GenericXdsConfig {
                    type_url: t.type_url().to_string(),
                    name: name.to_string(),
                    ..Default::default()
                });
                c.config_status = ConfigStatus::Error as i32;
                c.client_status = ClientResourceStatus::Nacked as i32;
                c.error_state = Some(UpdateFailureState {
                    details: st.last_nack.clone().unwrap_or_default(),
                    version_info: st.nacked.clone().unwrap_or_default(),
                    last_update_attempt: timestamp(st.nacked_at),
                    failed_configuration: None,
                });
                out.insert(name, c);
            } else {
                let mut c = entry(name, version.to_string(), r.body());
                c.config_status = ConfigStatus::Stale as i32;
                c.client_status = ClientResourceStatus::Requested as i32;
                c.last_updated = timestamp(st.sent_at);
                out.insert(name, c);
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use envoy_types::pb::google::protobuf::Any;

    use super::*;
    use crate::cache::{Snapshot, TypeSnapshot, Version, VersionedResource};
    use crate::server::nodes::{ResourceSet, SetSource, SetVersion};

    fn snapshot(clusters: &[(&str, u8)]) -> Arc<Snapshot> {
        let resources: BTreeMap<String, VersionedResource> = clusters
            .iter()
            .map(|(name, byte)| {
                let body = Any {
                    type_url: ResourceType::Cluster.type_url().into(),
                    value: vec![*byte],
                };
                (name.to_string(), VersionedResource::new(body))
            })
            .collect();
        let mut snap = Snapshot::default();
        snap.types[ResourceType::Cluster.index()] = TypeSnapshot::new(resources);
        Arc::new(snap)
    }

    fn set(snap: &Arc<Snapshot>, version: SetVersion) -> ResourceSet {
        ResourceSet {
            from: SetSource::Snapshot(snap.clone(), ResourceType::Cluster),
            names: None,
            version,
        }
    }

    fn summary(configs: &[GenericXdsConfig]) -> Vec<(String, String, i32)> {
        configs
            .iter()
            .map(|c| (c.name.clone(), c.version_info.clone(), c.config_status))
            .collect()
    }

    #[test]
    fn a_named_set_holds_exactly_the_subscribed_resources_the_snapshot_has() {
        let snap = snapshot(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        let named = |names: &[&str]| {
            let set = ResourceSet {
                names: Some(Arc::new(names.iter().map(|n| n.to_string()).collect())),
                ..set(&snap, SetVersion::PerResource)
            };
            set.resources()
                .map(|(n, _, _)| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(named(&["b", "d", "z"]), ["b", "d"]);
        assert_eq!(named(&["0", "a", "c", "cc"]), ["a", "c"]);
        assert_eq!(named(&[]), Vec::<String>::new());
        assert_eq!(named(&["a", "b", "c", "d"]), ["a", "b", "c", "d"]);
    }

    #[test]
    fn acked_resources_are_synced_with_the_version_envoy_shows() {
        let old = snapshot(&[("a", 1), ("b", 2)]);
        let mut st = TypeStatus {
            state: SyncState::Synced,
            acked_set: Some(set(&old, SetVersion::Response(Version(7)))),
            ..Default::default()
        };
        st.sent_set = st.acked_set.clone();
        let v7 = Version(7).to_string();
        assert_eq!(
            summary(&type_configs(ResourceType::Cluster, &st, true)),
            [
                ("a".into(), v7.clone(), ConfigStatus::Synced as i32),
                ("b".into(), v7.clone(), ConfigStatus::Synced as i32)
            ]
        );
        // Delta: each resource's own version.
        st.acked_set = Some(set(&old, SetVersion::PerResource));
        let own = type_configs(ResourceType::Cluster, &st, false);
        assert_eq!(
            own[0].version_info,
            old.of(ResourceType::Cluster).resources["a"]
                .version
                .to_string()
        );
        assert!(own[0].xds_config.is_none(), "no contents when excluded");
    }

    #[test]
    fn sotw_resources_a_response_left_unchanged_keep_the_version_envoy_took_them_under() {
        let old = snapshot(&[("a", 1), ("b", 2)]);
        let new = snapshot(&[("a", 1), ("b", 3), ("c", 4)]);
        let taken = set(&new, SetVersion::Response(Version(8)))
            .taken_after(Some(&set(&old, SetVersion::Response(Version(7)))));
        let st = TypeStatus {
            state: SyncState::Synced,
            acked_set: Some(taken.clone()),
            sent_set: Some(taken.clone()),
            ..Default::default()
        };
        let (v7, v8) = (Version(7).to_string(), Version(8).to_string());
        let synced = ConfigStatus::Synced as i32;
        assert_eq!(
            summary(&type_configs(ResourceType::Cluster, &st, false)),
            [
                ("a".into(), v7.clone(), synced),
                ("b".into(), v8.clone(), synced),
                ("c".into(), v8.clone(), synced)
            ]
        );
        // The next response that changes only c: a still at 7, b at 8.
        let newer = snapshot(&[("a", 1), ("b", 3), ("c", 5)]);
        let again = set(&newer, SetVersion::Response(Version(9))).taken_after(Some(&taken));
        let shown: Vec<_> = again.resources().map(|(n, v, _)| (n, v)).collect();
        assert_eq!(
            shown,
            [("a", Version(7)), ("b", Version(8)), ("c", Version(9))]
        );
        // A whole change, or delta: nothing carried.
        let other = snapshot(&[("d", 6)]);
        let whole = set(&other, SetVersion::Response(Version(10))).taken_after(Some(&again));
        assert!(matches!(whole.version, SetVersion::Response(Version(10))));
        let delta = set(&newer, SetVersion::PerResource).taken_after(Some(&taken));
        assert!(matches!(delta.version, SetVersion::PerResource));
    }

    #[test]
    fn a_rejected_change_is_an_error_beside_what_envoy_kept() {
        let old = snapshot(&[("a", 1), ("b", 2)]);
        let new = snapshot(&[("a", 1), ("b", 3), ("c", 4)]);
        let st = TypeStatus {
            state: SyncState::Nacked,
            acked_set: Some(set(&old, SetVersion::Response(Version(7)))),
            sent_set: Some(set(&new, SetVersion::Response(Version(8)))),
            nacked: Some(Version(8).to_string()),
            last_nack: Some("b: bad".into()),
            ..Default::default()
        };
        let configs = type_configs(ResourceType::Cluster, &st, true);
        let (v7, v8) = (Version(7).to_string(), Version(8).to_string());
        // b: Envoy runs the version it kept, with the rejected one named in the error; c: it
        // runs nothing.
        assert_eq!(
            summary(&configs),
            [
                ("a".into(), v7.clone(), ConfigStatus::Synced as i32),
                ("b".into(), v7, ConfigStatus::Error as i32),
                ("c".into(), String::new(), ConfigStatus::Error as i32)
            ]
        );
        let kept = old.of(ResourceType::Cluster).resources["b"].body().clone();
        assert_eq!(configs[1].xds_config, Some(kept), "the kept body");
        assert!(configs[2].xds_config.is_none(), "nothing kept");
        for c in &configs[1..] {
            assert_eq!(c.client_status, ClientResourceStatus::Nacked as i32);
            let e = c.error_state.as_ref().unwrap();
            assert_eq!(
                (e.details.as_str(), e.version_info.as_str()),
                ("b: bad", v8.as_str())
            );
        }
        assert!(configs[0].error_state.is_none(), "a was taken");
        // Unanswered instead: stale.
        let stale = TypeStatus {
            state: SyncState::Stale,
            ..st
        };
        let configs = type_configs(ResourceType::Cluster, &stale, true);
        assert_eq!(configs[2].config_status, ConfigStatus::Stale as i32);
        assert!(configs[2].error_state.is_none());
    }

    #[test]
    fn node_ids_match_as_envoy_matchers_do() {
        let m = |p: MatchPattern, ignore_case: bool| {
            Matcher::new(&NodeMatcher {
                node_id: Some(StringMatcher {
                    ignore_case,
                    match_pattern: Some(p),
                }),
                node_metadatas: vec![],
            })
            .unwrap()
        };
        assert!(m(MatchPattern::Exact("web-1".into()), false).matches("web-1"));
        assert!(!m(MatchPattern::Exact("web-1".into()), false).matches("WEB-1"));
        assert!(m(MatchPattern::Exact("web-1".into()), true).matches("WEB-1"));
        assert!(m(MatchPattern::Prefix("web".into()), false).matches("web-1"));
        assert!(m(MatchPattern::Suffix("-1".into()), false).matches("web-1"));
        assert!(m(MatchPattern::Contains("b-".into()), false).matches("web-1"));
        let re = envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
            regex: "web-[0-9]".into(),
            ..Default::default()
        };
        let re = m(MatchPattern::SafeRegex(re), false);
        assert!(re.matches("web-1") && !re.matches("web-12"), "whole id");
    }
}
