//! Route configurations: one virtual host per HTTP listener, first match wins.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route as EnvoyRoute, RouteAction, RouteConfiguration,
    RouteMatch as EnvoyMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    retry_policy::{RetryHostPredicate, retry_host_predicate},
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use super::listener::CORS_FILTER;
use super::pb_duration;
use crate::catalog::{Catalog, Cors, Listener, Retries, Route, RouteMatch, UpstreamProtocol};

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// Host picks a retry may reject (as already tried) before it takes the host it got: enough to
/// find another host among a few, bounded for an upstream that has only one.
const HOST_SELECTION_ATTEMPTS: i64 = 3;

pub(super) fn route_configuration(catalog: &Catalog, l: &Listener) -> Any {
    let mut typed_per_filter_config = HashMap::new();
    if let Some(cors) = &l.cors {
        typed_per_filter_config.insert(CORS_FILTER.to_string(), pack_any(cors_policy(cors)));
    }
    pack_any(RouteConfiguration {
        name: l.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: l.name.clone(),
            domains: vec!["*".into()],
            routes: l.routes.iter().map(|r| route(catalog, r)).collect(),
            typed_per_filter_config,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn route(catalog: &Catalog, r: &Route) -> EnvoyRoute {
    let cluster_specifier = match (&r.to, &r.split) {
        (Some(to), _) => ClusterSpecifier::Cluster(to.0.clone()),
        (None, split) => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: split
                .iter()
                .flatten()
                .map(|(name, weight)| ClusterWeight {
                    name: name.0.clone(),
                    weight: Some(UInt32Value {
                        value: *weight as u32,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let (timeout, max_stream_duration) = limits(catalog, r);
    let retries = r.retries.as_ref().or(catalog.defaults.retries.as_ref());
    EnvoyRoute {
        r#match: Some(route_match(&r.matcher)),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            timeout,
            max_stream_duration,
            retry_policy: retries.map(retry_policy),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The time limits of a route: its `timeout`, and for gRPC the stream duration.
///
/// A catalog value (the route's, else `defaults.route_timeout`) always applies. Without one, a
/// route whose upstreams all speak gRPC has no limit, where Envoy's default would cut every
/// stream after 15 s. Routes to gRPC upstreams and routes without a limit (`0s`) also honour the
/// client's `grpc-timeout` (capped at the catalog value, if any), so a call's deadline ends it
/// in Envoy too. That takes `max_stream_duration`, and once it is set Envoy ignores the route's
/// `timeout`: the limit goes into both, so that it holds either way and reads the same in a
/// config dump.
fn limits(catalog: &Catalog, r: &Route) -> (Option<PbDuration>, Option<MaxStreamDuration>) {
    let zero = std::time::Duration::ZERO;
    let grpc = is_grpc(catalog, r);
    let limit = r
        .timeout
        .or(catalog.defaults.route_timeout)
        .map(|t| t.get())
        .or(grpc.then_some(zero));
    let stream = (grpc || limit == Some(zero)).then(|| MaxStreamDuration {
        max_stream_duration: limit.map(pb_duration),
        grpc_timeout_header_max: limit.map(pb_duration),
        ..Default::default()
    });
    (limit.map(pb_duration), stream)
}

/// Whether every upstream of a route speaks gRPC.
fn is_grpc(catalog: &Catalog, r: &Route) -> bool {
    let mut names =
        r.to.iter()
            .chain(r.split.iter().flat_map(|s| s.keys()))
            .peekable();
    names.peek().is_some()
        && names.all(|n| {
            catalog
                .upstreams
                .get(n)
                .is_some_and(|u| u.protocol == UpstreamProtocol::Grpc)
        })
}

fn route_match(m: &RouteMatch) -> EnvoyMatch {
    let path_specifier = if let Some(p) = &m.prefix {
        PathSpecifier::Prefix(p.clone())
    } else if let Some(p) = &m.path {
        PathSpecifier::Path(p.clone())
    } else {
        PathSpecifier::SafeRegex(RegexMatcher {
            regex: m.regex.clone().unwrap_or_default(),
            ..Default::default()
        })
    };
    EnvoyMatch {
        path_specifier: Some(path_specifier),
        headers: m
            .headers
            .iter()
            .map(|(name, value)| HeaderMatcher {
                name: name.clone(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(exact(value))),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(value.to_string())),
        ..Default::default()
    }
}

fn retry_policy(r: &Retries) -> RetryPolicy {
    RetryPolicy {
        retry_on: r.retry_on(),
        num_retries: Some(UInt32Value {
            value: r.attempts as u32,
        }),
        per_try_timeout: r.per_try_timeout.map(|t| pb_duration(t.get())),
        // A retry goes to a host not tried yet: the one that just failed is likely to again.
        retry_host_predicate: vec![RetryHostPredicate {
            name: PREVIOUS_HOSTS.into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pack_any(
                PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        ..Default::default()
    }
}

fn cors_policy(c: &Cors) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: c
            .allow_origins
            .iter()
            .map(|o| {
                if o == "*" {
                    StringMatcher {
                        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                            regex: ".*".into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }
                } else {
                    exact(o)
                }
            })
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.get().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.then_some(BoolValue { value: true }),
        ..Default::default()
    }
}
