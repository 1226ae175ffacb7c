//! Route configurations: an HTTP listener's virtual hosts (one that takes any Host, for
//! `routes`), each with its routes, first match wins.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route as EnvoyRoute, RouteAction,
    RouteConfiguration, RouteMatch as EnvoyMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    retry_policy::{RetryHostPredicate, retry_host_predicate},
    route::Action,
    route_action::RequestMirrorPolicy,
    route_action::{ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration},
    route_action::{HashPolicy, hash_policy, hash_policy::PolicySpecifier},
    route_match::{GrpcRouteMatchOptions, PathSpecifier},
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay as CommonFaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use super::listener::{CORS_FILTER, FAULT_FILTER};
use super::{fraction, pb_duration};
use crate::catalog::{
    Catalog, Cors, Fault, HeaderChanges, HostRewrite, Listener, Retries, Route, RouteMatch,
    UpstreamName, UpstreamProtocol, ValueMatch,
};

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// Host picks a retry may reject (as already tried) before it takes the host it got: enough to
/// find another host among a few, bounded for an upstream that has only one.
const HOST_SELECTION_ATTEMPTS: i64 = 3;

pub(super) fn route_configuration(catalog: &Catalog, l: &Listener) -> Any {
    let host = |name: &str, domains: Vec<String>, routes: &[Route]| {
        let mut typed_per_filter_config = HashMap::new();
        if let Some(cors) = &l.cors {
            typed_per_filter_config.insert(CORS_FILTER.to_string(), pack_any(cors_policy(cors)));
        }
        VirtualHost {
            name: name.to_string(),
            domains,
            routes: routes.iter().map(|r| route(catalog, r)).collect(),
            typed_per_filter_config,
            ..Default::default()
        }
    };
    let virtual_hosts = if l.virtual_hosts.is_empty() {
        vec![host(&l.name, vec!["*".into()], &l.routes)]
    } else {
        // A Host no virtual host takes gets Envoy's 404.
        let mut hosts: Vec<VirtualHost> = l
            .virtual_hosts
            .iter()
            .map(|h| host(&h.name, h.domains.clone(), &h.routes))
            .collect();
        if l.passthrough {
            hosts.push(passthrough_host());
        }
        hosts
    };
    pack_any(RouteConfiguration {
        name: l.name.clone(),
        virtual_hosts,
        ..Default::default()
    })
}

/// `passthrough`: every Host no virtual host takes goes on to the address the app dialled, as
/// Istio's `allow_any` virtual host (no timeout: the catalog knows nothing of that service).
fn passthrough_host() -> VirtualHost {
    VirtualHost {
        name: "passthrough".into(),
        domains: vec!["*".into()],
        routes: vec![EnvoyRoute {
            r#match: Some(EnvoyMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(
                    crate::catalog::PASSTHROUGH_CLUSTER.into(),
                )),
                timeout: Some(super::pb_duration(std::time::Duration::ZERO)),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn route(catalog: &Catalog, r: &Route) -> EnvoyRoute {
    let cluster_specifier = cluster_specifier(r, |n| n.0.clone());
    let (timeout, max_stream_duration) = limits(catalog, r);
    let retries = r.retries.as_ref().or(catalog.defaults.retries.as_ref());
    let rewrite = r.rewrite.clone().unwrap_or_default();
    let (request_add, request_remove) = header_changes(r.request_headers.as_ref());
    let (response_add, response_remove) = header_changes(r.response_headers.as_ref());
    EnvoyRoute {
        r#match: Some(route_match(&r.matcher)),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            timeout,
            max_stream_duration,
            retry_policy: retries.map(retry_policy),
            prefix_rewrite: rewrite.prefix.unwrap_or_default(),
            // The whole path (Envoy matches the path without its query string, which stays).
            regex_rewrite: rewrite.path.map(|path| RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: "^.*$".into(),
                    ..Default::default()
                }),
                substitution: path,
            }),
            hash_policy: hash_policy(catalog, r),
            request_mirror_policies: r
                .mirror
                .iter()
                .map(|m| RequestMirrorPolicy {
                    cluster: m.to.0.clone(),
                    runtime_fraction: Some(RuntimeFractionalPercent {
                        default_value: Some(fraction(m.percent)),
                        runtime_key: String::new(),
                    }),
                    ..Default::default()
                })
                .collect(),
            host_rewrite_specifier: rewrite.host.map(|h| match h {
                HostRewrite::Auto => {
                    HostRewriteSpecifier::AutoHostRewrite(BoolValue { value: true })
                }
                HostRewrite::Literal(name) => HostRewriteSpecifier::HostRewriteLiteral(name),
            }),
            ..Default::default()
        })),
        typed_per_filter_config: r
            .fault
            .as_ref()
            .map(|f| (FAULT_FILTER.to_string(), pack_any(fault(f))))
            .into_iter()
            .collect(),
        request_headers_to_add: request_add,
        request_headers_to_remove: request_remove,
        response_headers_to_add: response_add,
        response_headers_to_remove: response_remove,
        ..Default::default()
    }
}

/// Where a route sends its requests: its `to`, or its `split` by weight.
/// The clusters of the route's `to` or `split`, each upstream's cluster named by `cluster`.
pub(super) fn cluster_specifier(
    r: &Route,
    cluster: impl Fn(&UpstreamName) -> String,
) -> ClusterSpecifier {
    match (&r.to, &r.split) {
        (Some(to), _) => ClusterSpecifier::Cluster(cluster(to)),
        (None, split) => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: split
                .iter()
                .flatten()
                .map(|(name, weight)| ClusterWeight {
                    name: cluster(name),
                    weight: Some(UInt32Value {
                        value: *weight as u32,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// What the route's hashing upstreams (`ring_hash`, `maglev`) hash, each policy once.
pub(super) fn hash_policy(catalog: &Catalog, r: &Route) -> Vec<HashPolicy> {
    let mut out: Vec<HashPolicy> = Vec::new();
    let upstreams = r.to.iter().chain(r.split.iter().flat_map(|s| s.keys()));
    for h in upstreams.filter_map(|n| catalog.upstreams.get(n)?.hash_on.as_ref()) {
        let specifier = if let Some(header) = &h.header {
            PolicySpecifier::Header(hash_policy::Header {
                header_name: header.clone(),
                ..Default::default()
            })
        } else if let Some(cookie) = &h.cookie {
            PolicySpecifier::Cookie(hash_policy::Cookie {
                name: cookie.clone(),
                ttl: h.ttl.map(|d| pb_duration(d.get())),
                ..Default::default()
            })
        } else {
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: true,
            })
        };
        let policy = HashPolicy {
            policy_specifier: Some(specifier),
            ..Default::default()
        };
        if !out.contains(&policy) {
            out.push(policy);
        }
    }
    out
}

/// The fault filter's settings for one route (the filter itself injects nothing).
fn fault(f: &Fault) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| CommonFaultDelay {
            percentage: Some(fraction(d.percent)),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(pb_duration(d.fixed.get()))),
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            percentage: Some(fraction(a.percent)),
            error_type: Some(ErrorType::HttpStatus(a.status as u32)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Headers to add (appended to any already there) and to remove.
fn header_changes(c: Option<&HeaderChanges>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(c) = c else {
        return (Vec::new(), Vec::new());
    };
    let add = c
        .add
        .iter()
        .map(|(key, value)| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();
    (add, c.remove.clone())
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

pub(super) fn route_match(m: &RouteMatch) -> EnvoyMatch {
    let path_specifier = match (&m.prefix, &m.path, &m.regex, &m.grpc) {
        (Some(p), _, _, _) => PathSpecifier::Prefix(p.clone()),
        (None, Some(p), _, _) => PathSpecifier::Path(p.clone()),
        (None, None, None, Some(g)) if g.method.is_some() => PathSpecifier::Path(g.path()),
        (None, None, None, Some(g)) => PathSpecifier::Prefix(g.path()),
        (None, None, regex, _) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: regex.clone().unwrap_or_default(),
            ..Default::default()
        }),
    };
    let method = m.method.as_ref().map(|methods| HeaderMatcher {
        name: ":method".into(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(
            match methods.0.as_slice() {
                [one] => exact(one),
                many => regex(&many.join("|")),
            },
        )),
        ..Default::default()
    });
    let headers = m.headers.iter().map(|(name, value)| {
        let (specifier, invert_match) = header_match(value);
        HeaderMatcher {
            name: name.clone(),
            header_match_specifier: Some(specifier),
            invert_match,
            ..Default::default()
        }
    });
    EnvoyMatch {
        path_specifier: Some(path_specifier),
        headers: method.into_iter().chain(headers).collect(),
        query_parameters: m
            .query
            .iter()
            .map(|(name, value)| QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(match value {
                    // Validation refuses `absent` here.
                    ValueMatch::Present | ValueMatch::Absent => {
                        QueryParameterMatchSpecifier::PresentMatch(true)
                    }
                    other => QueryParameterMatchSpecifier::StringMatch(string_match(other)),
                }),
            })
            .collect(),
        grpc: m.grpc.as_ref().map(|_| GrpcRouteMatchOptions {}),
        ..Default::default()
    }
}

/// A header's value match as Envoy's specifier, and whether it is inverted.
fn header_match(value: &ValueMatch) -> (HeaderMatchSpecifier, bool) {
    match value {
        ValueMatch::Present => (HeaderMatchSpecifier::PresentMatch(true), false),
        ValueMatch::Absent => (HeaderMatchSpecifier::PresentMatch(true), true),
        ValueMatch::Not(inner) => {
            let (specifier, invert) = header_match(inner);
            (specifier, !invert)
        }
        ValueMatch::Range { start, end } => (
            HeaderMatchSpecifier::RangeMatch(Int64Range {
                start: *start,
                end: *end,
            }),
            false,
        ),
        other => (
            HeaderMatchSpecifier::StringMatch(string_match(other)),
            false,
        ),
    }
}

/// The string matcher of an exact, prefix, suffix or regex value match.
fn string_match(v: &ValueMatch) -> StringMatcher {
    let pattern = match v {
        ValueMatch::Prefix(p) => MatchPattern::Prefix(p.clone()),
        ValueMatch::Suffix(s) => MatchPattern::Suffix(s.clone()),
        ValueMatch::Regex(r) => return regex(r),
        ValueMatch::Exact(e) => MatchPattern::Exact(e.clone()),
        // Validation allows these in headers only, which do not come here.
        ValueMatch::Present
        | ValueMatch::Absent
        | ValueMatch::Not(_)
        | ValueMatch::Range { .. } => MatchPattern::Exact(String::new()),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// An RE2 match of the whole value.
fn regex(re: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
            regex: re.to_string(),
            ..Default::default()
        })),
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
            .map(|o| if o == "*" { regex(".*") } else { exact(o) })
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
