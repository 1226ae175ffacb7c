//! The resources of `grpc_services`, in the shape proxyless gRPC clients accept (gRFC A27, A28,
//! A31, A44): an API listener named as the target, whose connection manager takes its routes
//! over RDS (ADS) and has the router filter only, and the route configuration.
//!
//! Endpoint assignments are the proxy's own (see `cluster`). So is a cluster when an Envoy
//! listener of the proxy routes to the upstream too and it has no TLS: the same resource serves
//! an Envoy and a gRPC client, each reading the part it implements. Otherwise gRPC clients get
//! a cluster `grpc/NAME` of their own, which no Envoy is sent.

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener as EnvoyListener};
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route as EnvoyRoute, RouteAction, RouteConfiguration, VirtualHost, route::Action,
    route_action::MaxStreamDuration,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;
use prost::Message;

use super::listener::{ROUTER_FILTER, http_filter};
use super::{ads_config_source, pb_duration, route};
use crate::catalog::{Catalog, GrpcService, Proxy, ProxyName, Route, UpstreamName};

/// The prefix of the clusters made for proxyless gRPC clients only (upstream names cannot
/// hold a `/`).
const CLUSTER_PREFIX: &str = "grpc/";

/// Whether resource `name` goes to wildcard subscribers (an Envoy's LDS and CDS). What is made
/// for proxyless gRPC clients only does not: they always subscribe by name (the target, then
/// the clusters its routes name), while an Envoy takes at most one API listener (it warns
/// about every other) and has none of the certificate providers of a gRPC client's cluster.
pub fn in_wildcard(name: &str, body: &Any) -> bool {
    use super::ResourceType::{Cluster, Listener};
    if body.type_url == Cluster.type_url() {
        !name.starts_with(CLUSTER_PREFIX)
    } else if body.type_url == Listener.type_url() {
        EnvoyListener::decode(body.value.as_slice()).map_or(true, |l| l.api_listener.is_none())
    } else {
        true
    }
}

/// The upstreams proxy `p`'s gRPC services route to, each once, in name order.
pub(super) fn upstreams(p: &Proxy) -> Vec<&UpstreamName> {
    let mut names: Vec<&UpstreamName> = p
        .grpc_services
        .iter()
        .flat_map(|s| &s.routes)
        .flat_map(|r| r.to.iter().chain(r.split.iter().flat_map(|s| s.keys())))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The cluster gRPC clients of proxy `p` call upstream `name` through: the cluster its Envoys
/// have, when they have one and it has no mesh TLS (whose SDS secrets gRPC clients cannot
/// take); otherwise one of their own (see [`clusters`]), so that Envoys neither get nor warm a
/// cluster they never route to.
/// `envoys` is the proxy's [`super::listener_upstreams`].
fn cluster_name(catalog: &Catalog, envoys: &[&UpstreamName], name: &UpstreamName) -> String {
    let tls = catalog.upstreams.get(name).is_some_and(|u| u.tls.is_some());
    match tls || envoys.binary_search(&name).is_err() {
        true => format!("{CLUSTER_PREFIX}{name}"),
        false => name.0.clone(),
    }
}

/// The clusters made for the gRPC clients of proxy `p` (named `grpc/NAME`, see
/// [`cluster_name`]): the proxy's cluster of the upstream, with the TLS of gRFC A29
/// (certificate provider instances) for a mesh TLS upstream, taking the upstream's endpoints.
pub(super) fn clusters(catalog: &Catalog, proxy: &ProxyName, p: &Proxy) -> Vec<(String, Any)> {
    let envoys = super::listener_upstreams(p);
    upstreams(p)
        .into_iter()
        .filter_map(|name| {
            let c_name = cluster_name(catalog, &envoys, name);
            if c_name == name.0 {
                return None;
            }
            let u = catalog.upstreams.get(name)?;
            let mut c = super::cluster::envoy_cluster(catalog, proxy, name, u);
            c.name = c_name;
            // Validation allows only mesh TLS here.
            if let Some(server) = u.tls.as_ref().and_then(|t| t.mesh.as_ref()) {
                c.transport_socket = Some(super::tls::grpc_upstream(catalog, server));
            }
            if let Some(eds) = c.eds_cluster_config.as_mut() {
                eds.service_name = name.0.clone();
            }
            Some((c.name.clone(), pack_any(c)))
        })
        .collect()
}

/// The LDS resource of a gRPC service: an API listener, named as the `xds:///` target.
pub(super) fn listener(s: &GrpcService) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: s.name.clone(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: s.name.clone(),
        })),
        // gRPC clients require the router filter, last; the others they have are not used.
        http_filters: vec![http_filter(ROUTER_FILTER, pack_any(Router::default()))],
        ..Default::default()
    };
    pack_any(EnvoyListener {
        name: s.name.clone(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    })
}

/// The RDS resource of a gRPC service: one virtual host that takes any authority (the client
/// picks it by the target, which the listener's name already is).
pub(super) fn route_configuration(catalog: &Catalog, p: &Proxy, s: &GrpcService) -> Any {
    let envoys = super::listener_upstreams(p);
    pack_any(RouteConfiguration {
        name: s.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: s.name.clone(),
            domains: vec!["*".into()],
            routes: s
                .routes
                .iter()
                .map(|r| grpc_route(catalog, &envoys, r))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn grpc_route(catalog: &Catalog, envoys: &[&UpstreamName], r: &Route) -> EnvoyRoute {
    let mut matcher = route::route_match(&r.matcher);
    // Every call to a gRPC client's target is gRPC: the content-type condition adds nothing.
    matcher.grpc = None;
    EnvoyRoute {
        r#match: Some(matcher),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(route::cluster_specifier(r, |n| {
                cluster_name(catalog, envoys, n)
            })),
            max_stream_duration: stream_limit(catalog, r),
            retry_policy: r.retries.as_ref().map(|retries| RetryPolicy {
                retry_on: retries.retry_on(),
                num_retries: Some(UInt32Value {
                    value: retries.attempts as u32,
                }),
                ..Default::default()
            }),
            hash_policy: route::hash_policy(catalog, r),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The route's `timeout` as gRPC clients read it (gRFC A31): a cap on the call's deadline,
/// `grpc_timeout_header_max` (`max_stream_duration` too, for readers of the older field). A
/// client ignores a route's `timeout` field; `0s` (no limit) sets nothing.
fn stream_limit(catalog: &Catalog, r: &Route) -> Option<MaxStreamDuration> {
    let limit = r
        .timeout
        .or(catalog.defaults.route_timeout)
        .map(|t| t.get())
        .filter(|t| !t.is_zero())?;
    Some(MaxStreamDuration {
        max_stream_duration: Some(pb_duration(limit)),
        grpc_timeout_header_max: Some(pb_duration(limit)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
