//! Translation: catalog + discovered endpoints → the Envoy resources of one proxy.
//!
//! Everything here is a pure function of its inputs, and the output is deterministic: the same
//! catalog and endpoints give byte-identical resources, which is what makes versions content
//! hashes. (Protobuf maps are encoded in hash-map order, so every map written here holds at most
//! one entry.)

mod access_log;
mod cluster;
mod grpc;
mod listener;
mod route;
pub mod tls;

pub use grpc::in_wildcard;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};

use crate::catalog::{Catalog, EndpointMap, ListenerProtocol, ProxyName, UpstreamName, Zone};

/// How many resource types there are.
pub const TYPES: usize = 5;

/// The resource types a proxy receives, in ADS push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS, over ADS only).
    Secret,
}

impl ResourceType {
    /// All types, in the order ADS pushes them: clusters, endpoints, listeners, routes,
    /// secrets (which the proxy asks for by name once a listener or cluster names them).
    pub const ALL: [ResourceType; TYPES] = [
        Self::Cluster,
        Self::Endpoint,
        Self::Listener,
        Self::Route,
        Self::Secret,
    ];

    /// The v3 type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Self::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    /// The type for a type URL, if it is one of ours.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs, metrics and the admin pages: `cds`, `eds`, `lds`, `rds`, `sds`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::Endpoint => "eds",
            Self::Listener => "lds",
            Self::Route => "rds",
            Self::Secret => "sds",
        }
    }

    /// Position in [`ResourceType::ALL`], for per-type arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether an empty SotW request means "everything" (LDS and CDS) rather than "nothing".
    pub fn wildcard_by_default(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }
}

/// One proxy's resources: per type, resource name → packed resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    /// Indexed by [`ResourceType::index`].
    pub by_type: [BTreeMap<String, Any>; TYPES],
}

impl ProxyResources {
    /// The resources of one type.
    pub fn of(&self, t: ResourceType) -> &BTreeMap<String, Any> {
        &self.by_type[t.index()]
    }

    /// Adds or replaces one resource.
    pub fn insert(&mut self, t: ResourceType, name: String, any: Any) {
        self.by_type[t.index()].insert(name, any);
    }
}

/// What translates alike for every proxy of one build, translated once: the cluster of an
/// upstream with nothing of the proxy's own in it (no upstream TLS, whose certificate is the
/// proxy's), and each load assignment. An upstream that ten proxies use is translated once
/// per build, not ten times. Good for one catalog and one endpoint map only.
#[derive(Default)]
pub struct Memo {
    clusters: HashMap<UpstreamName, Any>,
    /// By upstream and, for a zone-aware one, the caller's zone.
    assignments: HashMap<(UpstreamName, Option<Zone>), Any>,
}

/// Builds the resources of `proxy`; a proxy the catalog does not name gets none.
pub fn translate(catalog: &Catalog, proxy: &ProxyName, endpoints: &EndpointMap) -> ProxyResources {
    translate_in(catalog, proxy, endpoints, &mut Memo::default())
}

/// [`translate`], reusing and adding to what `memo` holds of the same catalog and endpoints.
pub fn translate_in(
    catalog: &Catalog,
    proxy: &ProxyName,
    endpoints: &EndpointMap,
    memo: &mut Memo,
) -> ProxyResources {
    let mut out = ProxyResources::default();
    let Some(p) = catalog.proxies.get(proxy) else {
        return out;
    };
    for l in &p.listeners {
        out.insert(
            ResourceType::Listener,
            l.name.clone(),
            listener::listener(catalog, proxy, l),
        );
        if l.protocol == ListenerProtocol::Http {
            out.insert(
                ResourceType::Route,
                l.name.clone(),
                route::route_configuration(catalog, l),
            );
        }
    }
    for s in &p.grpc_services {
        out.insert(ResourceType::Listener, s.name.clone(), grpc::listener(s));
        out.insert(
            ResourceType::Route,
            s.name.clone(),
            grpc::route_configuration(catalog, p, s),
        );
    }
    for (name, u) in listener_upstreams(p)
        .into_iter()
        .filter_map(|name| Some((name, catalog.upstreams.get(name)?)))
    {
        let cluster = match u.tls {
            Some(_) => cluster::cluster(catalog, proxy, name, u),
            None => memo
                .clusters
                .entry(name.clone())
                .or_insert_with(|| cluster::cluster(catalog, proxy, name, u))
                .clone(),
        };
        out.insert(ResourceType::Cluster, name.0.clone(), cluster);
    }
    if p.listeners.iter().any(|l| l.passthrough) {
        out.insert(
            ResourceType::Cluster,
            crate::catalog::PASSTHROUGH_CLUSTER.to_string(),
            cluster::passthrough(catalog),
        );
    }
    for (name, cluster) in grpc::clusters(catalog, proxy, p) {
        out.insert(ResourceType::Cluster, name, cluster);
    }
    out.by_type[ResourceType::Endpoint.index()] =
        endpoints_in(catalog, proxy, endpoints, None, memo);
    out
}

/// The EDS resources of `proxy` for an Envoy in zone `caller` (none: an Envoy that names no
/// zone, which is also what [`translate`] gives).
pub fn endpoints_for(
    catalog: &Catalog,
    proxy: &ProxyName,
    endpoints: &EndpointMap,
    caller: Option<&Zone>,
) -> BTreeMap<String, Any> {
    endpoints_in(catalog, proxy, endpoints, caller, &mut Memo::default())
}

/// [`endpoints_for`], reusing and adding to what `memo` holds.
pub fn endpoints_in(
    catalog: &Catalog,
    proxy: &ProxyName,
    endpoints: &EndpointMap,
    caller: Option<&Zone>,
    memo: &mut Memo,
) -> BTreeMap<String, Any> {
    let mut out = BTreeMap::new();
    let Some(p) = catalog.proxies.get(proxy) else {
        return out;
    };
    for (name, u) in upstreams_of(catalog, p) {
        // No assignment until the source has answered once: an empty one would wipe the
        // endpoints a proxy already has (EDS leaves unsent assignments as they are).
        if let Some(eps) = endpoints.get(name).filter(|_| cluster::uses_eds(u)) {
            let zone = caller.filter(|_| u.zone_aware).cloned();
            let assignment = memo
                .assignments
                .entry((name.clone(), zone))
                .or_insert_with(|| cluster::load_assignment(name, eps, u.zone_aware, caller))
                .clone();
            out.insert(name.0.clone(), assignment);
        }
    }
    out
}

/// The zones whose Envoys of `proxy` get endpoints other than [`translate`] gives: those where
/// endpoints of its zone-aware upstreams run.
pub fn preferring_zones(
    catalog: &Catalog,
    proxy: &ProxyName,
    endpoints: &EndpointMap,
) -> BTreeSet<Zone> {
    let Some(p) = catalog.proxies.get(proxy) else {
        return BTreeSet::new();
    };
    upstreams_of(catalog, p)
        .filter(|(_, u)| u.zone_aware && cluster::uses_eds(u))
        .filter_map(|(name, _)| endpoints.get(name))
        .flat_map(|eps| eps.iter().filter_map(|e| e.zone.clone()))
        .collect()
}

/// For each zone of [`preferring_zones`], the EDS resources an Envoy of `proxy` there gets.
pub fn zoned_endpoints(
    catalog: &Catalog,
    proxy: &ProxyName,
    endpoints: &EndpointMap,
    memo: &mut Memo,
) -> Vec<(Zone, BTreeMap<String, Any>)> {
    preferring_zones(catalog, proxy, endpoints)
        .into_iter()
        .map(|zone| {
            let eds = endpoints_in(catalog, proxy, endpoints, Some(&zone), memo);
            (zone, eds)
        })
        .collect()
}

/// The upstreams a proxy uses, with their definitions.
fn upstreams_of<'a>(
    catalog: &'a Catalog,
    p: &'a crate::catalog::Proxy,
) -> impl Iterator<Item = (&'a UpstreamName, &'a crate::catalog::Upstream)> {
    used_upstreams(p)
        .into_iter()
        // Validation guarantees that each is defined.
        .filter_map(|name| Some((name, catalog.upstreams.get(name)?)))
}

/// The upstreams a proxy's listeners and gRPC services route to, each once, in name order:
/// those that have endpoints to send.
pub(crate) fn used_upstreams(p: &crate::catalog::Proxy) -> Vec<&UpstreamName> {
    let mut used = listener_upstreams(p);
    used.extend(grpc::upstreams(p));
    used.sort();
    used.dedup();
    used
}

/// The upstreams a proxy's listeners route to, each once, in name order: those its Envoys get
/// a cluster (and its secrets) for.
pub(crate) fn listener_upstreams(p: &crate::catalog::Proxy) -> Vec<&UpstreamName> {
    let mut used: Vec<&UpstreamName> = Vec::new();
    for l in &p.listeners {
        match l.protocol {
            ListenerProtocol::Http => {
                for r in l.all_routes() {
                    used.extend(r.to.iter());
                    used.extend(r.split.iter().flat_map(|s| s.keys()));
                    used.extend(r.mirror.iter().map(|m| &m.to));
                }
            }
            ListenerProtocol::Tcp => {
                used.extend(l.to.iter());
                used.extend(l.split.iter().flat_map(|s| s.keys()));
            }
        }
        // TCP chains by port, of tcp and http listeners alike.
        used.extend(l.ports.iter().flat_map(|p| p.values()));
    }
    used.sort();
    used.dedup();
    used
}

/// "Fetch this over the ADS stream", as used by RDS, EDS and SDS references.
fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A catalog percentage (0-100, default 100) as Envoy's fraction, in millionths.
fn fraction(percent: Option<f64>) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent.unwrap_or(100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn pb_duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests;
