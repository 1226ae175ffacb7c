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
            let mut c = entry(name, version.to_string(), &r.body);
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
            let mut c = entry(name, version.to_string(), &r.body);
            if st.state == SyncState::Nacked {
                c.config_status = ConfigStatus::Error as i32;
                c.client_status = ClientResourceStatus::Nacked as i32;
                c.last_updated = timestamp(st.nacked_at);
                c.error_state = Some(UpdateFailureState {
                    details: st.last_nack.clone().unwrap_or_default(),
                    version_info: st.nacked.clone().unwrap_or_default(),
                    last_update_attempt: timestamp(st.nacked_at),
                    failed_configuration: None,
                });
            } else {
                c.config_status = ConfigStatus::Stale as i32;
                c.client_status = ClientResourceStatus::Requested as i32;
                c.last_updated = timestamp(st.sent_at);
            }
            out.insert(name, c);
        }
    }
    out.into_values().collect()
}
