//! `proxies.NAME.grpc_services`: services that proxyless gRPC clients dial as `xds:///NAME`
//! (gRFC A27, A28, A44), routed with the route syntax of HTTP listeners.
//!
//! A gRPC client is its own data plane and implements only part of what Envoy does. What it
//! does not implement is refused here with the field it concerns, never dropped: a catalog that
//! validates routes gRPC clients exactly as it reads.

use serde::Deserialize;

use super::validate::{Target, Validator};
use super::{Catalog, LoadBalancing, Proxy, ProxyName, Retries, Route, Upstream, UpstreamName};

/// `proxies.NAME.grpc_services[]`: one `xds:///NAME` target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    /// The target's authority, `xds:///NAME` (e.g. `connector.prism-test.atala.local:50051`);
    /// also the name of its LDS and RDS resources.
    pub name: String,
    /// Its routes, first match wins, over the calls' paths (`/package.Service/Method`).
    pub routes: Vec<Route>,
    /// Refused: listener settings gRPC clients have no use for, named so that the error can
    /// say why (rather than "unknown field").
    #[serde(default)]
    pub port: Option<serde_json::Value>,
    /// Refused (see `port`).
    #[serde(default)]
    pub cors: Option<serde_json::Value>,
    /// Refused (see `port`).
    #[serde(default)]
    pub grpc_web: Option<serde_json::Value>,
    /// Refused (see `port`).
    #[serde(default)]
    pub access_log: Option<serde_json::Value>,
    /// Refused (see `port`).
    #[serde(default)]
    pub tls: Option<serde_json::Value>,
    /// Refused (see `port`).
    #[serde(default)]
    pub virtual_hosts: Option<serde_json::Value>,
}

/// The retry conditions gRPC clients honour (gRFC A44): status codes only. They retry a call
/// that never reached a server (a connection failure, a refused stream) by themselves.
pub const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Why each listener-only field is refused on a gRPC service.
const LISTENER_ONLY: &[(&str, &str)] = &[
    (
        "port",
        "a gRPC client listens on nothing: it dials `xds:///NAME` and sends each call to an endpoint itself",
    ),
    (
        "cors",
        "gRPC clients do not speak CORS (browsers do): serve them through a proxy listener with `grpc_web` and `cors`",
    ),
    (
        "grpc_web",
        "gRPC clients speak gRPC itself: gRPC-Web is for browsers, through a proxy listener",
    ),
    (
        "access_log",
        "gRPC clients write no access log from xDS: log in the client or the server",
    ),
    (
        "tls",
        "a gRPC client's TLS comes from its bootstrap (`xds-server bootstrap --grpc --identity-dir`) and, to backends, from the upstream's `tls: { mesh: NAME }`",
    ),
    (
        "virtual_hosts",
        "a gRPC service is one virtual host (its name): give `routes`",
    ),
];

/// Why each route field is refused on a gRPC service (paths below the route).
const ROUTE_REFUSED: &[(&str, &str)] = &[
    (
        "rewrite",
        "gRPC clients do not rewrite paths or authorities",
    ),
    (
        "request_headers",
        "gRPC clients do not change request headers from xDS: set metadata in the client",
    ),
    (
        "response_headers",
        "gRPC clients do not change response headers from xDS",
    ),
    ("mirror", "gRPC clients do not mirror calls"),
    (
        "fault",
        "gRPC services get the router filter only: fault injection needs a proxy listener",
    ),
    (
        "match.method",
        "every gRPC call is a POST: match the call's path (`grpc: { service, method }`)",
    ),
];

/// The fields that an object at `path` (as errors name it) may not set because it is part of
/// a gRPC service, so that "did you mean" never proposes them; none elsewhere.
pub(super) fn refused_fields(path: &str) -> Vec<&'static str> {
    let Some((_, below)) = path.split_once("grpc_services[") else {
        return Vec::new();
    };
    // The steps from the service to the object, without list indexes (the last step is the
    // unknown field itself): none, "routes", "routes.match", ...
    let mut below: Vec<&str> = below
        .split('.')
        .skip(1)
        .map(|step| step.split('[').next().unwrap_or(step))
        .collect();
    below.pop();
    match below.as_slice() {
        [] => LISTENER_ONLY.iter().map(|(f, _)| *f).collect(),
        ["routes"] => ROUTE_REFUSED
            .iter()
            .map(|(f, _)| *f)
            .filter(|f| !f.contains('.'))
            .collect(),
        ["routes", "match"] => ROUTE_REFUSED
            .iter()
            .filter_map(|(f, _)| f.strip_prefix("match."))
            .chain(["query"])
            .collect(),
        ["routes", "retries"] => vec!["per_try_timeout"],
        _ => Vec::new(),
    }
}

impl GrpcService {
    /// The listener-only fields this entry sets, each with why it is refused.
    fn listener_only(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        let set = [
            self.port.is_some(),
            self.cors.is_some(),
            self.grpc_web.is_some(),
            self.access_log.is_some(),
            self.tls.is_some(),
            self.virtual_hosts.is_some(),
        ];
        LISTENER_ONLY
            .iter()
            .zip(set)
            .filter(|(_, set)| *set)
            .map(|((field, why), _)| (*field, *why))
    }
}

/// Whether `name` can be the authority of an `xds:///NAME` target: a host name, optionally with
/// a port.
fn is_authority(name: &str) -> bool {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

impl<'a> Validator<'a> {
    /// A proxy's `grpc_services`: names that are target authorities, unique among themselves
    /// and the proxy's listeners (they share the LDS and RDS names), routes in the part of the
    /// route syntax gRPC clients implement, to upstreams they can reach.
    pub(super) fn grpc_services(&mut self, catalog: &'a Catalog, proxy: &ProxyName, p: &Proxy) {
        for (i, s) in p.grpc_services.iter().enumerate() {
            let at = format!("proxies.{proxy}.grpc_services[{i}]");
            if !is_authority(&s.name) {
                self.err(
                    &format!("{at}.name"),
                    format!(
                        "{:?} is not the authority of an xds:/// target (HOST or HOST:PORT)",
                        s.name
                    ),
                );
            }
            if let Some(first) = p.grpc_services[..i].iter().position(|o| o.name == s.name) {
                self.err(
                    &format!("{at}.name"),
                    format!("{:?} is already grpc_services[{first}]", s.name),
                );
            }
            if let Some(k) = p.listeners.iter().position(|l| l.name == s.name) {
                self.err(
                    &format!("{at}.name"),
                    format!(
                        "{:?} is also the name of listeners[{k}]: they share the LDS and RDS names of this proxy",
                        s.name
                    ),
                );
            }
            for (field, why) in s.listener_only() {
                self.err(&format!("{at}.{field}"), why.to_string());
            }
            if s.routes.is_empty() {
                self.err(
                    &format!("{at}.routes"),
                    "a gRPC service needs at least one route".into(),
                );
            }
            for (j, r) in s.routes.iter().enumerate() {
                let at = format!("{at}.routes[{j}]");
                self.route(&at, r, catalog);
                self.grpc_route(&at, r, catalog);
            }
        }
    }

    /// What a route of a gRPC service may not use, beyond the checks of every route.
    fn grpc_route(&mut self, at: &str, r: &Route, catalog: &'a Catalog) {
        let set = [
            r.rewrite.is_some(),
            r.request_headers.is_some(),
            r.response_headers.is_some(),
            r.mirror.is_some(),
            r.fault.is_some(),
            r.matcher.method.is_some(),
        ];
        for ((field, why), set) in ROUTE_REFUSED.iter().zip(set) {
            if set {
                self.err(&format!("{at}.{field}"), why.to_string());
            }
        }
        if !r.matcher.query.is_empty() {
            self.err(
                &format!("{at}.match.query"),
                "gRPC calls have no query string (gRPC clients skip such routes)".into(),
            );
        }
        for name in r.matcher.headers.keys() {
            if let Some(why) = unmatched_metadata(name) {
                self.err(&format!("{at}.match.headers.{name}"), why.into());
            }
        }
        if let Some(retries) = &r.retries {
            self.grpc_retries(&format!("{at}.retries"), retries);
        }
        let named = r.to.iter().chain(r.split.iter().flat_map(|s| s.keys()));
        for name in named {
            let path = match &r.to {
                Some(_) => format!("{at}.to"),
                None => format!("{at}.split.{name}"),
            };
            self.grpc_upstream(&path, name, catalog);
        }
    }

    /// A retry policy in the shape gRPC clients accept (gRFC A44).
    fn grpc_retries(&mut self, at: &str, r: &Retries) {
        if r.attempts == 0 {
            self.err(
                &format!("{at}.attempts"),
                "gRPC clients refuse a retry policy of 0 retries: leave `retries` out".into(),
            );
        }
        if r.attempts > GRPC_MAX_RETRIES {
            self.err(
                &format!("{at}.attempts"),
                format!("gRPC clients make at most {} attempts, so at most {GRPC_MAX_RETRIES} retries (they cap a larger number silently)", GRPC_MAX_RETRIES + 1),
            );
        }
        if r.per_try_timeout.is_some() {
            self.err(
                &format!("{at}.per_try_timeout"),
                "gRPC clients have no per-try timeout: the call's deadline (or the route's `timeout`) bounds all attempts".into(),
            );
        }
        match &r.on {
            None => self.err(
                &format!("{at}.on"),
                format!(
                    "required for a gRPC service: the status codes to retry, of {} (gRPC clients retry connection failures by themselves)",
                    GRPC_RETRY_ON.join(", ")
                ),
            ),
            Some(on) => {
                for (i, c) in on.iter().enumerate() {
                    if !GRPC_RETRY_ON.contains(&c.as_str()) {
                        self.err(
                            &format!("{at}.on[{i}]"),
                            format!(
                                "gRPC clients retry on status codes only ({}), not on {c:?}",
                                GRPC_RETRY_ON.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }

    /// An upstream a gRPC service sends calls to: gRPC clients reach its endpoints directly.
    fn grpc_upstream(&mut self, path: &str, name: &UpstreamName, catalog: &'a Catalog) {
        let Some(u) = self.lookup_upstream(catalog, name) else {
            return;
        };
        // A reference: in a catalog of fragments, the upstream may be another fragment's.
        for why in grpc_upstream_refusals(u) {
            self.ref_err(
                path,
                format!("upstream \"{name}\" {why}"),
                Target::Upstream(name.clone()),
            );
        }
    }
}

/// What gRPC clients ignore, or do otherwise than Envoy, of upstream `u`'s settings: warnings,
/// since the proxies that route to the same upstream still apply them.
pub(super) fn ignored_by_grpc_clients(u: &Upstream) -> Vec<&'static str> {
    let mut out = Vec::new();
    if u.health_check.is_some() {
        out.push("has a health_check, which gRPC clients do not run: they skip endpoints they cannot connect to (Envoys that route to it still check)");
    }
    if u.outlier_detection.is_some() {
        out.push("has outlier_detection, of which gRPC clients ignore consecutive_5xx: they eject on success rate only (gRFC A50, with Envoy's defaults, which need 5 endpoints of 100 calls each per interval), taking its interval, base_ejection_time and max_ejection_percent");
    }
    if u.max_connections.is_some() || u.max_pending_requests.is_some() {
        out.push("sets max_connections or max_pending_requests, which gRPC clients ignore: of the circuit breakers they honour max_requests only");
    }
    if u.connect_timeout.is_some() {
        out.push(
            "sets connect_timeout, which gRPC clients ignore: they connect with their own backoff",
        );
    }
    if u.zone_aware {
        out.push("is zone_aware: gRPC clients send to the other zones only when no endpoint of their own zone is reachable, not when too few are healthy as Envoy does");
    }
    out
}

/// The most retries gRPC clients make (gRFC A44: at most 5 attempts in all).
const GRPC_MAX_RETRIES: i64 = 4;

/// Why a header match on `name` can never work as written for gRPC clients, which match
/// their call's metadata only: no pseudo-headers, no host, no binary values.
fn unmatched_metadata(name: &str) -> Option<&'static str> {
    if name.ends_with("-bin") {
        Some("gRPC clients never match binary (`-bin`) metadata")
    } else if name.starts_with(':') || name == "host" {
        Some(
            "gRPC clients match their call's metadata only, which has no pseudo-headers or host: match the service and method with `prefix` or `path`",
        )
    } else {
        None
    }
}

/// Why gRPC clients cannot use upstream `u` as it is configured, if they cannot.
fn grpc_upstream_refusals(u: &Upstream) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !u.protocol.is_http2() {
        out.push("must have protocol grpc (or http2): gRPC clients call its endpoints directly");
    }
    if u.endpoints.dns.is_some() {
        out.push("takes its endpoints from `dns`, which Envoy resolves itself: gRPC clients need endpoints the control plane discovers (static, file, cloud_map, ecs)");
    }
    if let Some(tls) = &u.tls
        && (tls.mesh.is_none()
            || tls.sni.is_some()
            || tls.trust.is_some()
            || tls.certificate.is_some()
            || !tls.subject_alt_names.is_empty())
    {
        out.push("has `tls` other than `{ mesh: NAME }`: gRPC clients take their certificate and trust from the certificate provider of their bootstrap (`xds-server bootstrap --grpc --identity-dir`), which holds their mesh identity only");
    }
    match u.load_balancing.unwrap_or_default() {
        LoadBalancing::RoundRobin | LoadBalancing::RingHash => {}
        // grpcio (1.85) NACKs a cluster whose `lb_policy` is LEAST_REQUEST.
        LoadBalancing::LeastRequest | LoadBalancing::Random | LoadBalancing::Maglev => out.push(
            "has a load_balancing policy gRPC clients do not take from a cluster (they take round_robin and ring_hash)",
        ),
    }
    if u.hash_on
        .as_ref()
        .is_some_and(|h| h.cookie.is_some() || h.source_ip == Some(true))
    {
        out.push(
            "hashes on a cookie or the source IP, which gRPC clients cannot: hash on a `header`",
        );
    }
    if u.hash_on
        .as_ref()
        .and_then(|h| h.header.as_deref())
        .is_some_and(|name| unmatched_metadata(name).is_some())
    {
        out.push("hashes on a header gRPC clients never have (a pseudo-header, host, or `-bin` metadata): hash on plain metadata");
    }
    out
}

#[cfg(test)]
mod tests;
