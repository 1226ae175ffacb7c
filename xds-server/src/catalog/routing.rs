//! The mesh-grade routing parts of listeners, routes and upstreams (catalog growth after
//! version 1): virtual hosts, richer matches (method, header kinds, query, gRPC), rewrites,
//! header changes, access logs, mirroring, fault injection and load balancing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, de::Error as _};

use super::validate::Validator;
use super::{Catalog, Duration, Route, RouteMatch, Upstream, UpstreamName, UpstreamProtocol};

/// `listeners[].virtual_hosts[]`: routes chosen by the request's Host (`:authority`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Unique within the listener; also the Envoy virtual host name.
    pub name: String,
    /// The Host values this virtual host takes: exact names (`web.local`, `web.local:8080`),
    /// `*.suffix` or `prefix*` wildcards, or `*` (any Host no other virtual host takes).
    pub domains: Vec<String>,
    /// Its routes, first match wins.
    pub routes: Vec<Route>,
}

/// How a header or query parameter value must read: a string is an exact match, otherwise one
/// of `{ prefix }`, `{ suffix }`, `{ regex }` (RE2, whole value), `{ present: true }`,
/// `{ absent: true }`, and for headers `{ not: MATCH }` and `{ range: { start, end } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// Anything the inner match does not take, a missing header included (headers only).
    Not(Box<ValueMatch>),
    /// A whole number in `[start, end)` (headers only).
    Range {
        /// The lowest number taken.
        start: i64,
        /// The first number above the range.
        end: i64,
    },
    /// Exactly this value.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// Ends with this.
    Suffix(String),
    /// RE2 regular expression over the whole value.
    Regex(String),
    /// Present, whatever its value.
    Present,
    /// Not present.
    Absent,
}

/// The object form of a [`ValueMatch`], as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueMatchFields {
    prefix: Option<String>,
    suffix: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
    absent: Option<bool>,
    not: Option<serde_json::Value>,
    range: Option<RangeFields>,
}

/// `{ range: { start, end } }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeFields {
    start: i64,
    end: i64,
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if let serde_json::Value::String(s) = value {
            return Ok(Self::Exact(s));
        }
        let f: ValueMatchFields = serde_json::from_value(value).map_err(|e| {
            D::Error::custom(format!(
                "{e}; expected a string (exact) or one of {{ prefix }}, {{ suffix }}, {{ regex }}, {{ present: true }}, {{ absent: true }}, {{ not: MATCH }}, {{ range: {{ start, end }} }}"
            ))
        })?;
        let mut kinds = Vec::new();
        if let Some(inner) = f.not {
            let inner: ValueMatch =
                serde_json::from_value(inner).map_err(|e| D::Error::custom(format!("not: {e}")))?;
            kinds.push(Self::Not(Box::new(inner)));
        }
        if let Some(r) = f.range {
            kinds.push(Self::Range {
                start: r.start,
                end: r.end,
            });
        }
        if let Some(p) = f.prefix {
            kinds.push(Self::Prefix(p));
        }
        if let Some(s) = f.suffix {
            kinds.push(Self::Suffix(s));
        }
        if let Some(r) = f.regex {
            kinds.push(Self::Regex(r));
        }
        match f.present {
            Some(true) => kinds.push(Self::Present),
            Some(false) => {
                return Err(D::Error::custom(
                    "write `absent: true`, not `present: false`",
                ));
            }
            None => {}
        }
        match f.absent {
            Some(true) => kinds.push(Self::Absent),
            Some(false) => {
                return Err(D::Error::custom(
                    "write `present: true`, not `absent: false`",
                ));
            }
            None => {}
        }
        match kinds.len() {
            1 => Ok(kinds.remove(0)),
            n => Err(D::Error::custom(format!(
                "needs exactly one of prefix, suffix, regex, present, absent, not, range ({n} given)"
            ))),
        }
    }
}

impl fmt::Display for ValueMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(v) => f.write_str(v),
            Self::Prefix(v) => write!(f, "{v}*"),
            Self::Suffix(v) => write!(f, "*{v}"),
            Self::Regex(v) => write!(f, "~{v}"),
            Self::Present => f.write_str("(present)"),
            Self::Absent => f.write_str("(absent)"),
            Self::Not(v) => write!(f, "not {v}"),
            Self::Range { start, end } => write!(f, "[{start}, {end})"),
        }
    }
}

/// `match.method`: one HTTP method or a list, any of which matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Methods(pub Vec<String>);

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(Methods(vec![s])),
            v @ serde_json::Value::Array(_) => {
                serde_json::from_value(v).map(Methods).map_err(|e| {
                    D::Error::custom(format!("{e}; expected a method or a list of methods"))
                })
            }
            _ => Err(D::Error::custom(
                "expected a method (GET) or a list ([GET, POST])",
            )),
        }
    }
}

/// `match.grpc`: the calls of one gRPC service, or one method of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatch {
    /// The fully qualified service name, e.g. `io.iohk.atala.prism.protos.ConnectorService`.
    pub service: String,
    /// One method of it, e.g. `GetConnection`.
    pub method: Option<String>,
}

impl GrpcMatch {
    /// The request path (or path prefix) of the calls it matches.
    pub fn path(&self) -> String {
        match &self.method {
            Some(m) => format!("/{}/{m}", self.service),
            None => format!("/{}/", self.service),
        }
    }
}

/// `rewrite`: what the upstream sees instead of what the client sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the matched prefix (or path) of the request path.
    pub prefix: Option<String>,
    /// Replaces the whole path (the query string stays).
    pub path: Option<String>,
    /// Replaces the Host (`:authority`).
    pub host: Option<HostRewrite>,
}

/// `rewrite.host`: a fixed name, or `auto` (the upstream's DNS name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// The DNS name of the upstream host chosen (upstreams with `endpoints.dns` only).
    Auto,
    /// This name.
    Literal(String),
}

impl<'de> Deserialize<'de> for HostRewrite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(if s == "auto" {
            Self::Auto
        } else {
            Self::Literal(s)
        })
    }
}

/// `request_headers` / `response_headers`: headers to add and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderChanges {
    /// Header name to value, appended (a header already there keeps its value too).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Header names removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `listeners[].access_log`: one line per request (HTTP) or connection (TCP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `json` (one JSON object a line) or `text` (Envoy's default format).
    pub format: LogFormat,
    /// A file Envoy appends to (an absolute path); without it, Envoy's stdout.
    pub path: Option<PathBuf>,
}

/// `access_log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Envoy's default text format.
    Text,
}

/// `routes[].mirror`: a share of the route's requests is also sent to another upstream, whose
/// answers are dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The upstream that gets the copies.
    pub to: UpstreamName,
    /// The share of requests copied, 0-100 (default 100).
    pub percent: Option<f64>,
}

/// `routes[].fault`: delays and aborts injected into a share of the route's requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Requests held before they go upstream.
    pub delay: Option<FaultDelay>,
    /// Requests answered by the proxy itself with an error status, never sent upstream.
    pub abort: Option<FaultAbort>,
}

/// `fault.delay`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub fixed: Duration,
    /// The share of requests delayed, 0-100 (default 100).
    pub percent: Option<f64>,
}

/// `fault.abort`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status answered, 200-599.
    pub status: i64,
    /// The share of requests aborted, 0-100 (default 100).
    pub percent: Option<f64>,
}

/// `upstreams.NAME.load_balancing`: how Envoy picks an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// In turn (Envoy's default).
    #[default]
    RoundRobin,
    /// The one of two random picks with fewer requests in flight.
    LeastRequest,
    /// At random.
    Random,
    /// A consistent hash ring over `hash_on`.
    RingHash,
    /// Maglev consistent hashing over `hash_on`.
    Maglev,
}

impl LoadBalancing {
    /// Whether the policy hashes requests (and so needs `hash_on`).
    pub fn hashes(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }
}

/// `upstreams.NAME.hash_on`: what a hashing policy hashes; exactly one of `header`, `cookie`,
/// `source_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    /// A request header's value.
    pub header: Option<String>,
    /// A cookie's value; with `ttl`, Envoy sets the cookie when the request has none.
    pub cookie: Option<String>,
    /// The lifetime of the cookie Envoy sets (with `cookie` only).
    pub ttl: Option<Duration>,
    /// The client's IP address.
    pub source_ip: Option<bool>,
}

/// Methods Envoy knows; a route method outside this list most likely is a typo.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl<'a> Validator<'a> {
    /// Virtual host names unique per listener; domains that are Host values, with `*` only
    /// first or last, each taken by one virtual host of the listener (Envoy compares them in
    /// lower case).
    pub(super) fn virtual_hosts(&mut self, at: &str, hosts: &[VirtualHost]) {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut domains: BTreeMap<String, usize> = BTreeMap::new();
        for (k, h) in hosts.iter().enumerate() {
            let at = format!("{at}.virtual_hosts[{k}]");
            self.name(&format!("{at}.name"), &h.name);
            if let Some(first) = names.insert(&h.name, k) {
                self.err(
                    &format!("{at}.name"),
                    format!(
                        "virtual host name {:?} is already used by virtual_hosts[{first}]",
                        h.name
                    ),
                );
            }
            if h.domains.is_empty() {
                self.err(
                    &format!("{at}.domains"),
                    "needs at least one domain (`*` takes any Host)".into(),
                );
            }
            for (j, d) in h.domains.iter().enumerate() {
                let path = format!("{at}.domains[{j}]");
                if !self.domain(&path, d) {
                    continue;
                }
                if let Some(first) = domains.insert(d.to_ascii_lowercase(), k) {
                    self.err(
                        &path,
                        format!("domain {d:?} is already taken by virtual_hosts[{first}] of this listener"),
                    );
                }
            }
            if h.routes.is_empty() {
                self.err(
                    &format!("{at}.routes"),
                    "a virtual host needs at least one route".into(),
                );
            }
        }
    }

    fn domain(&mut self, path: &str, d: &str) -> bool {
        if d.is_empty() || d.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(path, format!("{d:?} is not a Host value"));
            return false;
        }
        let stars = d.matches('*').count();
        let placed = d == "*" || (stars == 1 && (d.starts_with('*') || d.ends_with('*')));
        if stars > 0 && !placed {
            self.err(
                path,
                format!("{d:?}: a wildcard `*` stands once, first (`*.example.com`) or last (`example.*`), or alone"),
            );
            return false;
        }
        true
    }

    /// `match.grpc`, `method`, `headers` and `query` at `at` (the route's `match`).
    pub(super) fn match_conditions(&mut self, at: &str, m: &RouteMatch) {
        if let Some(g) = &m.grpc {
            let ident = |s: &str, dots: bool| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dots && c == '.'))
            };
            if !ident(&g.service, true) {
                self.err(
                    &format!("{at}.grpc.service"),
                    format!(
                        "{:?} is not a gRPC service name (package.Service)",
                        g.service
                    ),
                );
            }
            if let Some(method) = g.method.as_deref().filter(|m| !ident(m, false)) {
                self.err(
                    &format!("{at}.grpc.method"),
                    format!("{method:?} is not a gRPC method name"),
                );
            }
        }
        if let Some(methods) = &m.method {
            if methods.0.is_empty() {
                self.err(&format!("{at}.method"), "lists no method".into());
            }
            for (i, method) in methods.0.iter().enumerate() {
                if !METHODS.contains(&method.as_str()) {
                    self.err(
                        &format!("{at}.method[{i}]"),
                        format!("{method:?} is not an HTTP method ({})", METHODS.join(", ")),
                    );
                }
            }
        }
        for (name, v) in &m.headers {
            let path = format!("{at}.headers.{name}");
            if self.header_name(&path, name) {
                self.value_match(&path, v);
            }
        }
        for (name, v) in &m.query {
            let path = format!("{at}.query.{name}");
            if name.is_empty() {
                self.err(&path, "a query parameter needs a name".into());
            }
            if *v == ValueMatch::Absent {
                self.err(
                    &path,
                    "Envoy cannot match a missing query parameter; match what is there instead"
                        .into(),
                );
            }
            if matches!(v, ValueMatch::Not(_) | ValueMatch::Range { .. }) {
                self.err(
                    &path,
                    "`not` and `range` match headers only (Envoy's query matches have neither)"
                        .into(),
                );
            }
            self.value_match(&path, v);
        }
    }

    /// `load_balancing` with `hash_on` (needed by, and only allowed with, the hashing
    /// policies), `max_connections` and `max_pending_requests` of the upstream at `at`.
    pub(super) fn load_balancing(&mut self, at: &str, u: &Upstream) {
        let policy = u.load_balancing.unwrap_or_default();
        if policy.hashes() && u.protocol == UpstreamProtocol::Tcp {
            self.err(
                &format!("{at}.load_balancing"),
                "ring_hash and maglev take HTTP upstreams here (the hash policy is a route's)"
                    .into(),
            );
            return;
        }
        match &u.hash_on {
            None if policy.hashes() => self.err(
                &format!("{at}.hash_on"),
                "ring_hash and maglev need `hash_on`: { header: NAME }, { cookie: NAME, ttl? } or { source_ip: true }".into(),
            ),
            Some(_) if !policy.hashes() => self.err(
                &format!("{at}.hash_on"),
                "only ring_hash and maglev hash: set `load_balancing` to one of them, or leave `hash_on` out".into(),
            ),
            Some(h) => {
                let at = format!("{at}.hash_on");
                let kinds = [h.header.is_some(), h.cookie.is_some(), h.source_ip == Some(true)]
                    .iter()
                    .filter(|x| **x)
                    .count();
                if kinds != 1 || h.source_ip == Some(false) {
                    self.err(
                        &at,
                        "needs exactly one of `header`, `cookie`, `source_ip: true`".into(),
                    );
                }
                if let Some(name) = &h.header {
                    self.header_name(&format!("{at}.header"), name);
                }
                if h.cookie.as_deref() == Some("") {
                    self.err(&format!("{at}.cookie"), "must name a cookie".into());
                }
                if h.ttl.is_some() && h.cookie.is_none() {
                    self.err(&format!("{at}.ttl"), "`ttl` is the lifetime of a `cookie`".into());
                }
            }
            None => {}
        }
        for (field, n) in [
            ("max_connections", u.max_connections),
            ("max_pending_requests", u.max_pending_requests),
        ] {
            if let Some(n) = n {
                self.positive(&format!("{at}.{field}"), n);
            }
        }
    }

    fn percent(&mut self, path: &str, p: Option<f64>) {
        if let Some(p) = p
            && !(0.0..=100.0).contains(&p)
        {
            self.err(path, format!("{p} is not a percentage (0-100)"));
        }
    }

    fn value_match(&mut self, path: &str, v: &ValueMatch) {
        match v {
            ValueMatch::Regex(re) => self.re2(&format!("{path}.regex"), re),
            ValueMatch::Prefix(s) | ValueMatch::Suffix(s) if s.is_empty() => self.err(
                path,
                "an empty prefix or suffix matches anything: use `present: true`".into(),
            ),
            ValueMatch::Not(inner) => self.value_match(&format!("{path}.not"), inner),
            ValueMatch::Range { start, end } if start >= end => self.err(
                &format!("{path}.range"),
                format!("start {start} is not below end {end}: the range takes nothing"),
            ),
            _ => {}
        }
    }

    /// `rewrite`, `request_headers` and `response_headers` of the route at `at`.
    pub(super) fn route_changes(&mut self, at: &str, r: &Route, catalog: &'a Catalog) {
        if let Some(rw) = &r.rewrite {
            let at = format!("{at}.rewrite");
            match (&rw.prefix, &rw.path) {
                (None, None) if rw.host.is_none() => {
                    self.err(&at, "sets nothing: give `prefix`, `path` or `host`".into())
                }
                (Some(_), Some(_)) => self.err(&at, "give `prefix` or `path`, not both".into()),
                _ => {}
            }
            if let Some(p) = &rw.prefix {
                if !p.starts_with('/') {
                    self.err(
                        &format!("{at}.prefix"),
                        format!("{p:?} must start with '/'"),
                    );
                }
                if r.matcher.regex.is_some() {
                    self.err(
                        &format!("{at}.prefix"),
                        "a regex match has no prefix to replace: use `rewrite.path`".into(),
                    );
                }
            }
            if let Some(p) = &rw.path
                && (!p.starts_with('/') || p.contains(['?', '\\', '#']))
            {
                self.err(
                    &format!("{at}.path"),
                    format!("{p:?} must start with '/' and hold no '?', '#' or '\\'"),
                );
            }
            match &rw.host {
                Some(HostRewrite::Literal(h))
                    if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/') =>
                {
                    self.err(&format!("{at}.host"), format!("{h:?} is not a Host value"));
                }
                Some(HostRewrite::Auto) => {
                    let named = r.to.iter().chain(r.split.iter().flat_map(|s| s.keys()));
                    for name in named {
                        if catalog
                            .upstreams
                            .get(name)
                            .is_some_and(|u| u.endpoints.dns.is_none())
                        {
                            self.err(
                                &format!("{at}.host"),
                                format!("`auto` takes the upstream's DNS name, and upstream \"{name}\" has no `endpoints.dns`: give the name instead"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = &r.mirror {
            self.upstream_ref(&format!("{at}.mirror.to"), &m.to, catalog, true);
            self.percent(&format!("{at}.mirror.percent"), m.percent);
        }
        if let Some(f) = &r.fault {
            let at = format!("{at}.fault");
            if f.delay.is_none() && f.abort.is_none() {
                self.err(&at, "sets nothing: give `delay`, `abort` or both".into());
            }
            if let Some(d) = &f.delay {
                self.envoy_duration(&format!("{at}.delay.fixed"), Some(d.fixed));
                self.percent(&format!("{at}.delay.percent"), d.percent);
            }
            if let Some(a) = &f.abort {
                if !(200..=599).contains(&a.status) {
                    self.err(
                        &format!("{at}.abort.status"),
                        format!(
                            "{} is not an HTTP status Envoy answers with (200-599)",
                            a.status
                        ),
                    );
                }
                self.percent(&format!("{at}.abort.percent"), a.percent);
            }
        }
        for (field, changes) in [
            ("request_headers", &r.request_headers),
            ("response_headers", &r.response_headers),
        ] {
            let Some(changes) = changes else { continue };
            let at = format!("{at}.{field}");
            let names = changes
                .add
                .keys()
                .map(|n| (format!("{at}.add.{n}"), n))
                .chain(
                    changes
                        .remove
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("{at}.remove[{i}]"), n)),
                );
            for (path, name) in names {
                if self.header_name(&path, name) && (name.starts_with(':') || name == "host") {
                    self.err(
                        &path,
                        format!("{name:?} cannot be changed here (the Host: `rewrite.host`)"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
