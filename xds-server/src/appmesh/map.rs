//! The mapping from App Mesh resources to catalog fragments, as pure functions: a mesh in, one
//! fragment per virtual node and per virtual gateway out, and a report of every field.
//!
//! What the catalog runs is what App Mesh's Envoys ran: a virtual node's proxy takes inbound
//! traffic on 15000 and hands it to the app on `127.0.0.1:PORT`, and sends the app's outbound
//! traffic (15001) by Host to one virtual host per backend virtual service, whose routes are the
//! service's router's routes. Health checks and outlier detection of a virtual node are
//! enforced by its callers, so they are on the upstream callers use. A virtual gateway's
//! gateway routes rewrite as App Mesh did by default and hand the request to the target
//! virtual service's routes, on a listener of the gateway's own on loopback. TLS (module `tls`):
//! a listener's becomes the listener's `tls`; a caller's client policy becomes the `tls` of
//! the upstreams it reaches, which are one for all callers.

use std::collections::BTreeMap;

use aws_sdk_appmesh::types::{
    Duration, GatewayRouteData, HttpGatewayRoute, HttpRetryPolicy, HttpRoute, Listener,
    PortProtocol, RouteData, RouteSpec, VirtualGatewayData, VirtualNodeData, VirtualRouterData,
    VirtualServiceData,
};
use serde_json::{Map, Value, json};

use super::report::{Field, Report, Resource};
use super::{ImportError, Mesh};

mod tls;

/// The inbound port of a virtual node's proxy, as App Mesh's `proxyConfiguration` sets it.
pub const INGRESS_PORT: u16 = 15000;
/// The outbound port, likewise.
pub const EGRESS_PORT: u16 = 15001;
/// App Mesh's per-request timeout where a route or listener sets none.
pub const APP_MESH_TIMEOUT: &str = "15s";

/// What an import may choose.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxies' inbound port (`ProxyIngressPort` of the task's `proxyConfiguration`).
    pub ingress_port: u16,
    /// The proxies' outbound port (`ProxyEgressPort`).
    pub egress_port: u16,
    /// The address the proxies' listeners bind; `None`: every interface of the task.
    pub address: Option<String>,
    /// Whether the mesh had App Mesh's default retry policy (every mesh of an account created
    /// after 2020-07-29): routes without a retry policy of their own get it.
    pub default_retries: bool,
    /// The trust domain written as the fragments' `mesh.trust_domain`.
    pub trust_domain: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_port: INGRESS_PORT,
            egress_port: EGRESS_PORT,
            address: None,
            default_retries: false,
            trust_domain: None,
        }
    }
}

/// The fragments (file name → document) and the report of a mesh.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// One document per virtual node and per virtual gateway, by file name.
    pub fragments: BTreeMap<String, Value>,
    /// What became of every field.
    pub report: Report,
}

/// A name as the catalog takes it: letters, digits, `-`, `_`, `.`; anything else becomes `-`.
pub fn catalog_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// App Mesh's circuit-breaker limit where a listener's `connectionPool` sets none (accounts
/// from 2020-07-29 on): `max_requests`, `max_pending_requests` and `max_connections` each.
pub const APP_MESH_CIRCUIT_BREAKER: i64 = 2_147_483_647;

/// The gateway hop's timeout: none (`0s`), so that the target service's own route, behind the
/// gateway's `mesh` listener, times the request as it did in App Mesh.
pub const GATEWAY_HOP_TIMEOUT: &str = "0s";

/// How specific a route's path match is, most specific first: within one priority (or
/// without one), routes are ordered by it, as App Mesh matches a request to the route with the
/// longest prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    /// An exact path (or a gRPC method).
    Exact,
    /// A prefix; the longer, the earlier (`Reverse` order of the length).
    Prefix(std::cmp::Reverse<usize>),
    /// A regex.
    Regex,
    /// No path match.
    Any,
}

fn specificity(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> Specificity {
    match (exact, prefix, regex) {
        (Some(_), _, _) => Specificity::Exact,
        (_, Some(p), _) => Specificity::Prefix(std::cmp::Reverse(p.len())),
        (_, _, Some(_)) => Specificity::Regex,
        _ => Specificity::Any,
    }
}

/// Most retries the catalog takes.
const MAX_RETRIES: i64 = 100;

/// Why Envoy's RE2 would refuse `re` (the catalog checks the same), if it would.
fn regex_refusal(re: &str) -> Option<String> {
    if let Err(e) = regex::Regex::new(re) {
        return Some(format!("regex {re:?} is invalid: {e}"));
    }
    crate::catalog::re2::refusal(re).map(|why| format!("regex {re:?}: {why}"))
}

/// Adds one header, metadata or query condition of a route's match. The catalog has one
/// condition per name, and keeping either of two on one name would widen the route: a
/// repeated name is reported not mapped and `false` returned (the route is left out).
fn add_condition(
    conditions: &mut Map<String, Value>,
    name: String,
    condition: Value,
    field: String,
    what: &str,
    r: &mut Resource,
) -> bool {
    if conditions.contains_key(&name) {
        r.not_mapped(
            field,
            format!("a second condition on {what} {name:?}: the catalog takes one per name, and keeping either would match more than App Mesh did; the route is left out"),
        );
        return false;
    }
    conditions.insert(name, condition);
    let to = if what == "query parameter" {
        "match.query"
    } else {
        "match.headers"
    };
    r.mapped(field, to);
    true
}

/// An App Mesh duration as a catalog duration (`250ms`, `15s`); `None` when it has no value.
pub fn duration(d: &Duration) -> Option<String> {
    let value = d.value()?;
    let unit = match d.unit().map(|u| u.as_str()) {
        Some("ms") => "ms",
        _ => "s",
    };
    Some(format!("{value}{unit}"))
}

/// App Mesh retry events as Envoy `retry_on` conditions. `server-error` and `gateway-error`
/// include Envoy's `reset`, as App Mesh documents; `client-error` is HTTP 409, Envoy's
/// `retriable-4xx`; `stream-error` is a refused stream.
pub fn retry_on<'a>(
    http: impl IntoIterator<Item = &'a str>,
    tcp: impl IntoIterator<Item = &'a str>,
    grpc: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let mut on: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !on.iter().any(|o| o == c) {
            on.push(c.to_string());
        }
    };
    for e in http {
        match e {
            "server-error" => {
                add("5xx");
                add("reset");
            }
            "gateway-error" => {
                add("gateway-error");
                add("reset");
            }
            "client-error" => add("retriable-4xx"),
            "stream-error" => add("refused-stream"),
            other => return Err(format!("unknown HTTP retry event {other:?}")),
        }
    }
    for e in tcp {
        match e {
            "connection-error" => add("connect-failure"),
            other => return Err(format!("unknown TCP retry event {other:?}")),
        }
    }
    for e in grpc {
        match e {
            "cancelled" | "deadline-exceeded" | "internal" | "resource-exhausted"
            | "unavailable" => add(e),
            other => return Err(format!("unknown gRPC retry event {other:?}")),
        }
    }
    Ok(on)
}

/// A header, metadata or query condition App Mesh may write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
    Range(i64, i64),
    Present,
}

macro_rules! cond_of {
    ($m:expr, $ty:ident) => {
        match $m {
            None => Some(Cond::Present),
            Some(aws_sdk_appmesh::types::$ty::Exact(v)) => Some(Cond::Exact(v.clone())),
            Some(aws_sdk_appmesh::types::$ty::Prefix(v)) => Some(Cond::Prefix(v.clone())),
            Some(aws_sdk_appmesh::types::$ty::Suffix(v)) => Some(Cond::Suffix(v.clone())),
            Some(aws_sdk_appmesh::types::$ty::Regex(v)) => Some(Cond::Regex(v.clone())),
            Some(aws_sdk_appmesh::types::$ty::Range(r)) => Some(Cond::Range(r.start(), r.end())),
            Some(_) => None,
        }
    };
}

/// A header condition as the catalog writes it; `Err` says why it cannot be.
fn value_match(cond: Option<Cond>, invert: bool) -> Result<Value, String> {
    let Some(cond) = cond else {
        return Err("a match kind this importer does not know".into());
    };
    let m = match cond {
        Cond::Present if invert => return Ok(json!({ "absent": true })),
        Cond::Present => json!({ "present": true }),
        Cond::Exact(v) => json!(v),
        Cond::Prefix(v) => json!({ "prefix": v }),
        Cond::Suffix(v) => json!({ "suffix": v }),
        Cond::Regex(v) => {
            if let Some(why) = regex_refusal(&v) {
                return Err(why);
            }
            json!({ "regex": v })
        }
        Cond::Range(start, end) if start >= end => {
            return Err(format!(
                "range {start}..{end} is empty (its start must be below its end)"
            ));
        }
        Cond::Range(start, end) => json!({ "range": { "start": start, "end": end } }),
    };
    Ok(if invert { json!({ "not": m }) } else { m })
}

/// One catalog route being made, with what the report says of it.
struct RouteOut {
    route: Map<String, Value>,
}

/// The mapper's view of the mesh: resources by name.
struct Ctx<'a> {
    mesh: &'a Mesh,
    options: &'a Options,
    nodes: BTreeMap<&'a str, &'a VirtualNodeData>,
    services: BTreeMap<&'a str, &'a VirtualServiceData>,
    routers: BTreeMap<&'a str, (&'a VirtualRouterData, &'a [RouteData])>,
    /// The `tls` of each virtual node's upstream (node, port), from its callers' client
    /// policies.
    upstream_tls: BTreeMap<(String, i32), Value>,
    /// What became of each caller's client policies, by `KIND NAME` of the caller.
    tls_notes: BTreeMap<String, Vec<Field>>,
    report: Report,
}

/// Maps a whole mesh.
pub fn map(mesh: &Mesh, options: &Options) -> Result<Mapped, ImportError> {
    let mut ctx = Ctx {
        mesh,
        options,
        nodes: mesh
            .nodes
            .iter()
            .map(|n| (n.virtual_node_name(), n))
            .collect(),
        services: mesh
            .services
            .iter()
            .map(|s| (s.virtual_service_name(), s))
            .collect(),
        routers: mesh
            .routers
            .iter()
            .map(|(r, routes)| (r.virtual_router_name(), (r, routes.as_slice())))
            .collect(),
        upstream_tls: BTreeMap::new(),
        tls_notes: BTreeMap::new(),
        report: Report {
            mesh: mesh.data.mesh_name().to_string(),
            skipped: mesh.skipped.clone(),
            ..Default::default()
        },
    };
    let mut fragments = BTreeMap::new();
    // Catalog name (a proxy's or an upstream's) → the App Mesh resource it was made from: two
    // resources whose names map to one would overwrite each other's fragment or upstream.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |what: String, proxy: &str, doc: &Value| -> Result<(), ImportError> {
        let proxies = doc["proxies"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys());
        let upstreams = doc["upstreams"]
            .as_object()
            .into_iter()
            .flat_map(|u| u.keys());
        for (kind, name) in proxies
            .map(|n| ("proxy", n))
            .chain(upstreams.map(|n| ("upstream", n)))
        {
            let key = format!("{kind} {name}");
            let who = format!("{what}{}", built_role(proxy, kind, name));
            if let Some(first) = owners.insert(key, who.clone()) {
                return Err(ImportError::Collision {
                    name: format!("{kind} {name:?}"),
                    first,
                    second: who,
                });
            }
        }
        Ok(())
    };
    ctx.mesh_settings();
    ctx.client_policies();
    for node in &mesh.nodes {
        let (file, doc) = ctx.node_fragment(node);
        claim(
            format!("virtual node {:?}", node.virtual_node_name()),
            &catalog_name(node.virtual_node_name()),
            &doc,
        )?;
        fragments.insert(file, doc);
    }
    for (gateway, routes) in &mesh.gateways {
        let (file, doc) = ctx.gateway_fragment(gateway, routes);
        claim(
            format!("virtual gateway {:?}", gateway.virtual_gateway_name()),
            &catalog_name(gateway.virtual_gateway_name()),
            &doc,
        )?;
        fragments.insert(file, doc);
    }
    ctx.report_routes();
    ctx.report.fragments = fragments.keys().cloned().collect();
    Ok(Mapped {
        fragments,
        report: ctx.report,
    })
}

/// What a catalog name the importer built for a resource (proxy name `proxy`) stands for, as
/// a collision error names it: empty for the resource's own name.
fn built_role(proxy: &str, kind: &str, name: &str) -> String {
    let Some(rest) = name.strip_prefix(proxy).and_then(|r| r.strip_prefix('-')) else {
        return String::new();
    };
    if kind != "upstream" {
        return String::new();
    }
    match rest {
        "local" => " (the upstream of its app on loopback)".into(),
        "mesh" | "mesh-h2" => " (its hop to the mesh's routes)".into(),
        r if r.starts_with("local-") => format!(
            " (the upstream of its app's port {} on loopback)",
            &r["local-".len()..]
        ),
        r if r.parse::<u16>().is_ok() => format!(" (the upstream of its listener on {r})"),
        _ => String::new(),
    }
}

/// The names an App Mesh Envoy presents as `node.cluster` (and `node.id`) for a resource: its
/// ARN (`APPMESH_RESOURCE_ARN`) and its resource name `mesh/MESH/KIND/NAME` (the form older
/// images take in `APPMESH_VIRTUAL_NODE_NAME`, and `APPMESH_RESOURCE_NAME`), as App Mesh's
/// Envoy bootstrap agent writes them.
fn aliases(arn: &str, kind: &str, mesh: &str, name: &str, r: &mut Resource) -> Vec<String> {
    let resource = format!("mesh/{mesh}/{kind}/{name}");
    let mut out = Vec::new();
    if !arn.is_empty() {
        out.push(arn.to_string());
    }
    out.push(resource.clone());
    r.mapped(
        "metadata.arn",
        format!("aliases [ARN, {resource}]: an App Mesh Envoy presents APPMESH_RESOURCE_ARN (or APPMESH_VIRTUAL_NODE_NAME, the resource name) as node.cluster and gets this proxy; one started with APPMESH_RESOURCE_CLUSTER presents that instead: add it to the aliases"),
    );
    out
}

/// The upstream of a virtual node, as its callers reach it.
fn node_upstream(node: &str) -> String {
    catalog_name(node)
}

/// The upstream callers reach listener `i` of a virtual node by: `NODE` for the first, `NODE-PORT`
/// for the others.
fn node_port_upstream(node: &str, listeners: &[Listener], i: usize) -> String {
    match (i, listeners.get(i).and_then(|l| l.port_mapping())) {
        (0, _) | (_, None) => node_upstream(node),
        (_, Some(p)) => format!("{}-{}", node_upstream(node), p.port()),
    }
}

/// The upstream of a virtual node's own app, on loopback.
fn local_upstream(node: &str) -> String {
    format!("{}-local", catalog_name(node))
}

/// One listener's own TLS, for [`served_tls`].
struct OwnTls {
    port: i32,
    /// The catalog `tls` it maps to alone; `None` when plaintext or not mapped.
    tls: Option<Value>,
    /// App Mesh's mode (`STRICT`, `PERMISSIVE`, `DISABLED`, …); `None` without a `tls`.
    mode: Option<String>,
}

impl OwnTls {
    fn of(l: &Listener, tls: Option<Value>) -> OwnTls {
        OwnTls {
            port: port_of(l),
            tls,
            mode: l.tls().map(|t| t.mode().as_str().to_string()),
        }
    }

    /// TLS in App Mesh, but with a mode or certificate kind this importer does not map.
    fn unmapped(&self) -> bool {
        self.tls.is_none() && self.mode.as_deref().is_some_and(|m| m != "DISABLED")
    }
}

/// The one `tls` an ingress serves on every port, from its listeners' own, and what each
/// listener loses by it.
struct Served {
    tls: Option<Value>,
    /// (listener index, why) for each listener not served as App Mesh served it.
    losses: Vec<(usize, String)>,
    /// The listeners whose certificate, trust and allowed SANs are the ones served (their
    /// report lines stand, but for `mode` where it changed).
    served_as_own: Vec<usize>,
}

/// How strict a listener's catalog `tls` is: client validation first, then mode `strict`.
fn strictness(t: &Value) -> u8 {
    2 * u8::from(t.get("client_certificate").is_some()) + u8::from(t["mode"] == json!("strict"))
}

/// ECS redirects every app port to the one ingress listener, which has one `tls` (the catalog
/// has no tls per port of `ports`): the strictest listener's (the first with client
/// validation, else the first strict, else the first with TLS) gives it, in mode `strict`
/// only when every listener was STRICT, else `permissive`, so that the ports that took
/// plaintext in App Mesh still take it and the ones that required TLS still get it from
/// the callers that speak it. What differs from a listener's own tls is reported on that
/// listener, loudly where a port takes plaintext or callers App Mesh refused.
fn served_tls(own: &[OwnTls]) -> Served {
    let mut k = None;
    for (i, o) in own.iter().enumerate() {
        if let Some(t) = &o.tls
            && k.is_none_or(|k: usize| strictness(t) > strictness(own[k].tls.as_ref().unwrap()))
        {
            k = Some(i);
        }
    }
    let Some(k) = k else {
        return Served {
            tls: None,
            losses: Vec::new(),
            served_as_own: Vec::new(),
        };
    };
    let from_port = own[k].port;
    let mut tls = own[k].tls.clone().unwrap_or_default();
    let all_strict = own
        .iter()
        .all(|o| o.tls.as_ref().is_some_and(|t| t["mode"] == json!("strict")));
    let plaintext_port = own
        .iter()
        .find(|o| o.tls.as_ref().is_none_or(|t| t["mode"] != json!("strict")))
        .map(|o| o.port)
        .unwrap_or_default();
    if !all_strict {
        tls["mode"] = json!("permissive");
    }
    let mode = tls["mode"].as_str().unwrap_or_default().to_string();
    let strict_lost = |port: i32| {
        format!(
            "STRICT served as permissive: the one ingress listener has one tls, and port {plaintext_port} takes plaintext, so plaintext callers get in on port {port} too"
        )
    };
    let mut losses = Vec::new();
    let mut served_as_own = Vec::new();
    for (i, o) in own.iter().enumerate() {
        let port = o.port;
        let Some(t) = &o.tls else {
            if o.unmapped() {
                let mut why = vec![format!(
                    "not mapped here (see its other lines), but the one ingress listener (ECS redirects every app port to it) has one tls, listener[{k}]'s (port {from_port}), served on port {port} too in mode {mode}"
                )];
                if o.mode.as_deref() == Some("STRICT") && mode != "strict" {
                    why.push(strict_lost(port));
                }
                losses.push((i, why.join("; ")));
            } else {
                losses.push((i, format!(
                    "plaintext here in App Mesh, but the one ingress listener (ECS redirects every app port to it) has one tls, listener[{k}]'s (port {from_port}), served on port {port} too in mode {mode}: plaintext callers still get in, TLS callers get listener[{k}]'s certificate"
                )));
            }
            continue;
        };
        if *t == tls {
            served_as_own.push(i);
            continue;
        }
        let mut why = Vec::new();
        if t["mode"] == json!("strict") && mode != "strict" {
            why.push(strict_lost(port));
        }
        if let Some(c) = t.get("client_certificate")
            && tls.get("client_certificate") != Some(c)
        {
            why.push(format!(
                "CLIENT VALIDATION NOT AS IN APP MESH: the one ingress listener has one tls, listener[{k}]'s (port {from_port}), whose client validation is served on port {port} too: callers this listener refused (a certificate from another CA, or a SAN it did not allow) get in on port {port}, and some it took may fail"
            ));
        }
        let same_but_mode = {
            let mut t = t.clone();
            t["mode"] = tls["mode"].clone();
            t == tls
        };
        let same_certificate = t["certificate"] == tls["certificate"];
        if same_but_mode {
            served_as_own.push(i);
        } else if same_certificate
            && t.get("client_certificate").is_none()
            && tls.get("client_certificate").is_some()
        {
            why.push(format!(
                "client certificates asked: the one ingress listener has one tls, listener[{k}]'s (port {from_port}), served on port {port} too in mode {mode}, which checks client certificates: TLS callers on port {port} without one its trust accepts (and allows) fail there"
            ));
        } else {
            why.push(format!(
                "not applied: the one ingress listener has one tls, listener[{k}]'s (port {from_port}), served on port {port} too in mode {mode}: this listener's own certificate, client trust and allowed SANs are not used, and callers that check for them fail"
            ));
        }
        losses.push((i, why.join("; ")));
    }
    Served {
        tls: Some(tls),
        losses,
        served_as_own,
    }
}

/// Makes the virtual host names of one listener unique: a name the importer built (`NAME-PORT`
/// of a node's second port) yields to a service's own name, which keeps it, and a name taken
/// twice gets `-2`, `-3`, … (Envoy's stats name the virtual host; the routes do not).
fn unique_host_names(hosts: &mut [Value], services: &[&str]) {
    let own: std::collections::BTreeSet<String> =
        services.iter().map(|s| catalog_name(s)).collect();
    let mut taken = std::collections::BTreeSet::new();
    // Services' own names first, so that they keep them.
    for pass in [true, false] {
        for h in hosts.iter_mut() {
            let name = h["name"].as_str().unwrap_or_default().to_string();
            let is_own = own.contains(&name) && !h.get("built").is_some_and(|b| b == &json!(true));
            if is_own != pass {
                continue;
            }
            let mut unique = name.clone();
            let mut n = 2;
            while taken.contains(&unique) || (!is_own && own.contains(&unique)) {
                unique = format!("{name}-{n}");
                n += 1;
            }
            taken.insert(unique.clone());
            h["name"] = json!(unique);
        }
    }
    for h in hosts.iter_mut() {
        if let Some(o) = h.as_object_mut() {
            o.remove("built");
        }
    }
}

/// A listener's port (App Mesh requires one; 80 where it is missing).
fn port_of(l: &Listener) -> i32 {
    l.port_mapping().map(|p| p.port()).unwrap_or(80)
}

/// The address of the egress listener: 127.0.0.1, where ECS's REDIRECT of the task's own
/// outbound connections delivers them (so it is no way into the upstreams for anyone else),
/// or `--listen-address` when that is a loopback address too; any other address would not
/// take the redirected connections.
fn egress_address(options: &Options) -> String {
    options
        .address
        .as_deref()
        .filter(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        })
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// Takes `port` for `service`'s connections to `upstream` in the egress listener's TCP
/// chains, unless another service's connections (TCP, or HTTP beside: `beside_http`) are
/// dialled on it too, which is reported at `at`; whether it took it.
fn claim_port(
    ports: &mut BTreeMap<i32, (String, String)>,
    beside_http: Option<&BTreeMap<i32, String>>,
    port: i32,
    service: &str,
    upstream: &str,
    at: &str,
    r: &mut Resource,
) -> bool {
    if let Some(other) = beside_http.and_then(|h| h.get(&port)) {
        r.not_mapped(
            at,
            format!("port {port} is also HTTP virtual service {other}'s: the egress listener takes a port as TCP or as HTTP by Host, not both, so it stays HTTP"),
        );
        return false;
    }
    if let Some((other, _)) = ports.get(&port) {
        r.not_mapped(
            at,
            format!("port {port} is also virtual service {other}'s: TCP chains choose by the port dialled, not by name"),
        );
        return false;
    }
    ports.insert(port, (service.to_string(), upstream.to_string()));
    true
}

/// Whether a listener speaks tcp.
fn is_tcp(l: &Listener) -> bool {
    l.port_mapping()
        .is_some_and(|p| *p.protocol() == PortProtocol::Tcp)
}

/// The catalog protocol of an App Mesh listener protocol.
fn upstream_protocol(p: &PortProtocol) -> &'static str {
    match p.as_str() {
        "http2" => "http2",
        "grpc" => "grpc",
        "tcp" => "tcp",
        _ => "http1",
    }
}

impl Ctx<'_> {
    fn mesh_settings(&mut self) {
        let mut r = Resource::new("mesh", self.mesh.data.mesh_name());
        let spec = self.mesh.data.spec();
        match spec
            .and_then(|s| s.egress_filter())
            .map(|f| f.r#type().as_str())
        {
            Some("ALLOW_ALL") => r.lossy(
                "spec.egressFilter.type",
                "ALLOW_ALL: `passthrough: true` on every egress listener: an HTTP request whose Host no virtual host takes, or a connection of a node without backends, goes on to the address dialled (Envoy's PassthroughCluster). The loss: an HTTP egress listener parses everything redirected to it as HTTP, so non-HTTP traffic to outside the mesh (TLS on 443, a database) does not pass: leave its ports out of the redirect (EgressIgnoredPorts)",
            ),
            _ => r.mapped(
                "spec.egressFilter.type",
                "DROP_ALL: the egress listener answers only the backends' virtual hosts",
            ),
        }
        if spec.and_then(|s| s.service_discovery()).is_some() {
            r.lossy(
                "spec.serviceDiscovery.ipPreference",
                "Envoy prefers IPv4 for `dns` sources; Cloud Map gives IPv4 addresses",
            );
        }
        if self.options.default_retries {
            r.lossy(
                "(App Mesh's default retry policy)",
                "routes without a retry policy retry twice on connect-failure, refused-stream, gRPC unavailable and gateway-error (App Mesh retried HTTP 503 only; gateway-error also retries 502 and 504)",
            );
        } else {
            r.mapped(
                "(App Mesh's default retry policy)",
                "off (--no-default-retries): routes without a retry policy do not retry",
            );
        }
        self.report.resources.push(r);
    }

    /// The virtual nodes a virtual service sends to: its provider node, or every target of
    /// its router's routes.
    fn service_targets(&self, service: &str) -> Vec<String> {
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        let provider = self
            .services
            .get(service)
            .and_then(|s| s.spec())
            .and_then(|s| s.provider());
        let mut out: Vec<String> = Vec::new();
        match provider {
            Some(P::VirtualNode(n)) => out.push(n.virtual_node_name().to_string()),
            Some(P::VirtualRouter(vr)) => {
                let routes = self
                    .routers
                    .get(vr.virtual_router_name())
                    .map(|(_, routes)| *routes)
                    .unwrap_or_default();
                for spec in routes.iter().filter_map(|r| r.spec()) {
                    let targets = spec
                        .http_route()
                        .or(spec.http2_route())
                        .and_then(|h| h.action())
                        .map(|a| a.weighted_targets())
                        .or_else(|| {
                            spec.grpc_route()
                                .and_then(|g| g.action())
                                .map(|a| a.weighted_targets())
                        })
                        .or_else(|| {
                            spec.tcp_route()
                                .and_then(|t| t.action())
                                .map(|a| a.weighted_targets())
                        })
                        .unwrap_or_default();
                    for t in targets {
                        if !out.iter().any(|o| o == t.virtual_node()) {
                            out.push(t.virtual_node().to_string());
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// A virtual node's service discovery name: the SAN App Mesh checks a server certificate
    /// for when a client policy names none (DNS: the hostname; Cloud Map: SERVICE.NAMESPACE).
    fn discovery_name(&self, node: &str) -> Option<String> {
        use aws_sdk_appmesh::types::ServiceDiscovery as S;
        match self
            .nodes
            .get(node)
            .and_then(|n| n.spec())
            .and_then(|s| s.service_discovery())
        {
            Some(S::Dns(d)) => Some(d.hostname().to_string()),
            Some(S::AwsCloudMap(c)) => Some(format!("{}.{}", c.service_name(), c.namespace_name())),
            _ => None,
        }
    }

    /// The `tls` a virtual node's ingress serves (on every port), as its fragment has it.
    fn node_served_tls(&self, node: &str) -> Option<Value> {
        let own: Vec<OwnTls> = self
            .listeners(node)
            .iter()
            .map(|l| {
                let mut scratch = Resource::new("", "");
                let t = l
                    .tls()
                    .and_then(|t| tls::listener(&tls::ListenerTls::of_node(t), "", &mut scratch));
                OwnTls::of(l, t)
            })
            .collect();
        served_tls(&own).tls
    }

    /// The client policies of every caller (virtual nodes' backends and backend defaults,
    /// virtual gateways' backend defaults) as the `tls` of the upstreams they reach. An
    /// upstream is one for all its callers: where their policies differ, the first caller's
    /// (by name) is taken and the others report the loss.
    fn client_policies(&mut self) {
        // (caller kind and name, backend field, service, policy) in caller order.
        let mut uses: Vec<(String, String, String, Option<tls::ClientTls>)> = Vec::new();
        let mut nodes: Vec<&VirtualNodeData> = self.mesh.nodes.iter().collect();
        nodes.sort_by_key(|n| n.virtual_node_name());
        for n in nodes {
            let caller = format!("virtual node {}", n.virtual_node_name());
            let spec = n.spec();
            let defaults = spec
                .and_then(|s| s.backend_defaults())
                .and_then(|d| d.client_policy())
                .and_then(|p| p.tls());
            for (i, b) in spec
                .map(|s| s.backends())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let Ok(vs) = b.as_virtual_service() else {
                    continue;
                };
                let own = vs.client_policy().and_then(|p| p.tls());
                let (field, policy) = match (own, defaults) {
                    (Some(p), _) => (
                        format!("spec.backends[{i}].virtualService.clientPolicy.tls"),
                        Some(p),
                    ),
                    (None, Some(p)) => {
                        ("spec.backendDefaults.clientPolicy.tls".to_string(), Some(p))
                    }
                    (None, None) => (format!("spec.backends[{i}]"), None),
                };
                uses.push((
                    caller.clone(),
                    field,
                    vs.virtual_service_name().to_string(),
                    policy.map(tls::ClientTls::of_node),
                ));
            }
        }
        let mut gateways: Vec<_> = self.mesh.gateways.iter().collect();
        gateways.sort_by_key(|(g, _)| g.virtual_gateway_name());
        for (g, routes) in gateways {
            let caller = format!("virtual gateway {}", g.virtual_gateway_name());
            let policy = g
                .spec()
                .and_then(|s| s.backend_defaults())
                .and_then(|d| d.client_policy())
                .and_then(|p| p.tls())
                .map(tls::ClientTls::of_gateway);
            let mut targets: Vec<String> = Vec::new();
            for spec in routes.iter().filter_map(|r| r.spec()) {
                let target = spec
                    .http_route()
                    .or(spec.http2_route())
                    .and_then(|h| h.action())
                    .and_then(|a| a.target())
                    .and_then(|t| t.virtual_service())
                    .map(|v| v.virtual_service_name())
                    .or_else(|| {
                        spec.grpc_route()
                            .and_then(|g| g.action())
                            .and_then(|a| a.target())
                            .and_then(|t| t.virtual_service())
                            .map(|v| v.virtual_service_name())
                    });
                if let Some(t) = target
                    && !targets.iter().any(|x| x == t)
                {
                    targets.push(t.to_string());
                }
            }
            for t in targets {
                let field = if policy.is_some() {
                    "spec.backendDefaults.clientPolicy.tls".to_string()
                } else {
                    format!("target {t}")
                };
                uses.push((caller.clone(), field, t, policy.clone()));
            }
        }
        // First pass: the policies, first caller wins; one upstream per node and port.
        let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
        let mut plaintext: Vec<(String, String, (String, i32))> = Vec::new();
        for (caller, field, service, policy) in &uses {
            let mut r = Resource::new("", "");
            for node in self.service_targets(service) {
                let proxy = catalog_name(&node);
                let listeners = self
                    .nodes
                    .get(node.as_str())
                    .and_then(|n| n.spec())
                    .map(|s| s.listeners())
                    .unwrap_or_default();
                for (i, l) in listeners.iter().enumerate() {
                    let port = l.port_mapping().map(|p| p.port()).unwrap_or(80);
                    let key = (node.clone(), port);
                    let upstream = node_port_upstream(&node, listeners, i);
                    let Some(policy) = policy else {
                        plaintext.push((caller.clone(), field.clone(), key));
                        continue;
                    };
                    let served = self.node_served_tls(&node);
                    let server = tls::Server {
                        proxy: &proxy,
                        discovery_name: self.discovery_name(&node),
                        port,
                        serves_mesh: served
                            .as_ref()
                            .is_some_and(|t| t["certificate"] == json!("mesh")),
                    };
                    let mapped = format!("tls of upstream {upstream} (service {service})");
                    let asked = tls::client(policy, &server, field, &mut r);
                    // Never TLS to a port that serves plaintext.
                    let asked = match (asked, &served) {
                        (Ok(Some(_)), None) => {
                            r.lossy(
                                field.clone(),
                                format!("TLS to virtual node {node} (port {port}) in App Mesh, but its ingress serves plaintext (its listeners' tls is DISABLED or not mapped): upstream {upstream} is plaintext, as the server is"),
                            );
                            Ok(None)
                        }
                        (Ok(Some(value)), Some(t))
                            if t.get("client_certificate").is_some()
                                && value.get("certificate").is_none()
                                && value.get("mesh").is_none() =>
                        {
                            r.lossy(
                                field.clone(),
                                format!("virtual node {node}'s ingress asks for a client certificate (mutual TLS) on port {port}, and this policy presents none: its TLS connections are refused there; add `certificate` to upstream {upstream}'s tls"),
                            );
                            Ok(Some(value))
                        }
                        (asked, _) => asked,
                    };
                    match asked {
                        Ok(Some(value)) => match self.upstream_tls.get(&key) {
                            None => {
                                self.upstream_tls.insert(key.clone(), value);
                                owner.insert(key, caller.clone());
                                r.mapped(field.clone(), mapped);
                            }
                            Some(v) if *v == value => r.mapped(field.clone(), mapped),
                            Some(_) => r.lossy(
                                field.clone(),
                                format!("upstream {upstream} is one for all its callers and has the tls of {}'s policy, which differs from this one", owner[&key]),
                            ),
                        },
                        Ok(None) => plaintext.push((caller.clone(), field.clone(), key)),
                        Err(why) => {
                            r.not_mapped(field.clone(), format!("to virtual node {node}: {why}"))
                        }
                    }
                }
            }
            let notes = self.tls_notes.entry(caller.clone()).or_default();
            for f in r.fields {
                if !notes.contains(&f) {
                    notes.push(f);
                }
            }
        }
        // Callers asking for plaintext to a node another caller reaches with TLS.
        for (caller, field, key) in plaintext {
            if let Some(first) = owner.get(&key) {
                let f = Field {
                    field,
                    outcome: super::report::Outcome::Lossy(format!(
                        "plaintext to virtual node {} (port {}) in App Mesh, but its upstream is one for all its callers and has the tls of {first}'s policy: this caller's connections use TLS too",
                        key.0, key.1
                    )),
                };
                let notes = self.tls_notes.entry(caller).or_default();
                if !notes.contains(&f) {
                    notes.push(f);
                }
            }
        }
    }

    /// Every route and virtual service is reported where it was used; a route no virtual
    /// service reaches is reported here.
    fn report_routes(&mut self) {
        for (name, (_, routes)) in &self.routers {
            let used = self.mesh.services.iter().any(|s| {
                s.spec()
                    .and_then(|s| s.provider())
                    .and_then(|p| p.as_virtual_router().ok())
                    .is_some_and(|p| p.virtual_router_name() == *name)
            });
            if !used {
                let mut r = Resource::new("virtual router", *name);
                r.not_mapped(
                    "",
                    format!(
                        "no virtual service has it as provider: its {} routes are not used",
                        routes.len()
                    ),
                );
                self.report.resources.push(r);
            }
        }
    }

    fn node_fragment(&mut self, node: &VirtualNodeData) -> (String, Value) {
        let name = node.virtual_node_name();
        let proxy = catalog_name(name);
        let mut r = Resource::new("virtual node", name);
        let mut upstreams = Map::new();
        let mut listeners: Vec<Value> = Vec::new();
        let spec = node.spec();
        let app_listeners = spec.map(|s| s.listeners()).unwrap_or_default();
        let access_log = self.access_log(
            spec.and_then(|s| s.logging())
                .and_then(|l| l.access_log())
                .and_then(|a| a.as_file().ok())
                .map(|f| (f.path(), f.format())),
            &mut r,
        );
        if let [first] = app_listeners {
            let (listener, local) = self.ingress(name, first, 0, &mut r);
            let mut listener = listener;
            if let Some(log) = &access_log {
                listener.insert("access_log".into(), log.clone());
            }
            listeners.push(Value::Object(listener));
            upstreams.insert(local_upstream(name), local);
            if let Some(u) = self.node_upstream_def(node, first, 0, &mut r) {
                upstreams.insert(node_upstream(name), u);
            }
        } else if !app_listeners.is_empty() {
            let mut listener = self.multi_ingress(name, app_listeners, &mut upstreams, &mut r);
            if let Some(log) = &access_log {
                listener.insert("access_log".into(), log.clone());
            }
            listeners.push(Value::Object(listener));
            for (i, l) in app_listeners.iter().enumerate() {
                if let Some(u) = self.node_upstream_def(node, l, i, &mut r) {
                    upstreams.insert(node_port_upstream(name, app_listeners, i), u);
                }
            }
        } else {
            r.mapped(
                "spec.listeners",
                "none: the proxy has no ingress listener (a client-only node)",
            );
        }
        let backends = spec.map(|s| s.backends()).unwrap_or_default();
        // ECS redirects all of a task's egress to one port: a tcp listener by the port
        // dialled when every backend is tcp, else an http one by Host, with the tcp
        // backends' ports as TCP chains beside its HTTP chain.
        let is_tcp = |b: &aws_sdk_appmesh::types::Backend| {
            b.as_virtual_service()
                .is_ok_and(|vs| self.service_is_tcp(vs.virtual_service_name()))
        };
        let tcp_only = !backends.is_empty() && backends.iter().all(is_tcp);
        let (hosts, tcp) = if tcp_only {
            (Vec::new(), self.tcp_egress(backends, None, &mut r))
        } else {
            let hosts = self.egress_hosts(backends, "spec.backends", &mut r);
            // Beside an HTTP chain, when any HTTP backend could be mapped.
            let http_ports = self.http_backend_ports(backends);
            let beside = (!hosts.is_empty()).then_some(&http_ports);
            (hosts, self.tcp_egress(backends, beside, &mut r))
        };
        if let Some(notes) = self.tls_notes.remove(&format!("virtual node {name}")) {
            r.fields.extend(notes);
        }
        let allow_all = self.allow_all();
        if !hosts.is_empty() || tcp.is_some() || allow_all {
            let mut egress = Map::new();
            egress.insert("name".into(), json!("egress"));
            egress.insert("address".into(), json!(egress_address(self.options)));
            egress.insert("port".into(), json!(self.options.egress_port));
            // ECS redirects the app's outbound connections here; Envoy routes them by Host.
            egress.insert("original_destination".into(), json!(true));
            let mut passthrough = allow_all;
            if let (Some(tcp), false) = (&tcp, hosts.is_empty()) {
                // TCP ports beside the HTTP chain.
                egress.insert("protocol".into(), json!("http"));
                egress.extend(tcp.clone());
                egress.insert("virtual_hosts".into(), Value::Array(hosts));
            } else if let Some(tcp) = tcp {
                egress.insert("protocol".into(), json!("tcp"));
                if tcp.contains_key("split") && allow_all {
                    passthrough = false;
                    r.lossy(
                        "(mesh egressFilter ALLOW_ALL)",
                        "the egress listener splits every port between the tcp route's targets, so nothing is left to pass on",
                    );
                }
                egress.extend(tcp);
            } else if hosts.is_empty() {
                // ALLOW_ALL without backends: every connection goes on as it came.
                egress.insert("protocol".into(), json!("tcp"));
            } else {
                egress.insert("protocol".into(), json!("http"));
                egress.insert("virtual_hosts".into(), Value::Array(hosts));
            }
            if passthrough {
                egress.insert("passthrough".into(), json!(true));
                r.mapped(
                    "(mesh egressFilter ALLOW_ALL)",
                    "passthrough on listener `egress`: what no backend names goes on to the address dialled",
                );
                // App Mesh matched a tcp backend by address and port; a TCP chain by port
                // alone.
                if let Some(Value::Object(ports)) = egress.get("ports") {
                    let taken: Vec<&String> = ports.keys().collect();
                    r.lossy(
                        "(mesh egressFilter ALLOW_ALL)",
                        format!("connections to ports {taken:?} go to the tcp backends' upstreams whatever address was dialled: a service outside the mesh on one of those ports is not passed on (leave its address out of the redirect with EgressIgnoredIPs)"),
                    );
                }
            }
            if let Some(log) = &access_log {
                egress.insert("access_log".into(), log.clone());
            }
            listeners.push(Value::Object(egress));
        }
        if !upstreams.is_empty() {
            r.mapped(
                "circuit breakers",
                format!("App Mesh's defaults ({APP_MESH_CIRCUIT_BREAKER} requests, pending requests and connections) where the listener's connectionPool sets none"),
            );
        }
        let arn = node.metadata().map(|m| m.arn()).unwrap_or_default();
        let mut proxy_doc = Map::new();
        proxy_doc.insert(
            "aliases".into(),
            json!(aliases(
                arn,
                "virtualNode",
                node.mesh_name(),
                node.virtual_node_name(),
                &mut r
            )),
        );
        proxy_doc.insert("listeners".into(), Value::Array(listeners));
        let doc = self.document(&proxy, proxy_doc, upstreams);
        self.report.resources.push(r);
        (format!("{proxy}.yaml"), doc)
    }

    /// Whether the mesh passes what no virtual service names on to its destination.
    fn allow_all(&self) -> bool {
        self.mesh
            .data
            .spec()
            .and_then(|s| s.egress_filter())
            .is_some_and(|f| f.r#type().as_str() == "ALLOW_ALL")
    }

    /// Sets the listener's address, when the import names one.
    fn bind(&self, listener: &mut Map<String, Value>) {
        if let Some(a) = &self.options.address {
            listener.insert("address".into(), json!(a));
        }
    }

    /// A fragment document with the import's settings.
    fn document(
        &self,
        proxy: &str,
        proxy_doc: Map<String, Value>,
        upstreams: Map<String, Value>,
    ) -> Value {
        let mut doc = Map::new();
        doc.insert("version".into(), json!(1));
        if let Some(td) = &self.options.trust_domain {
            doc.insert("mesh".into(), json!({ "trust_domain": td }));
        }
        let mut proxies = Map::new();
        proxies.insert(proxy.to_string(), Value::Object(proxy_doc));
        doc.insert("proxies".into(), Value::Object(proxies));
        let mut upstreams = upstreams;
        // Envoy's default of 1024 each would cap what App Mesh let through.
        for u in upstreams.values_mut().filter_map(Value::as_object_mut) {
            for limit in ["max_requests", "max_pending_requests", "max_connections"] {
                u.entry(limit).or_insert(json!(APP_MESH_CIRCUIT_BREAKER));
            }
        }
        if !upstreams.is_empty() {
            doc.insert("upstreams".into(), Value::Object(upstreams));
        }
        Value::Object(doc)
    }

    fn access_log(
        &self,
        file: Option<(&str, Option<&aws_sdk_appmesh::types::LoggingFormat>)>,
        r: &mut Resource,
    ) -> Option<Value> {
        let (path, format) = file?;
        let mut log = Map::new();
        match format {
            Some(aws_sdk_appmesh::types::LoggingFormat::Json(_)) => {
                log.insert("format".into(), json!("json"));
                r.lossy(
                    "spec.logging.accessLog.file.format.json",
                    "the catalog's JSON line has its own fields, not the ones App Mesh listed",
                );
            }
            Some(aws_sdk_appmesh::types::LoggingFormat::Text(_)) => {
                log.insert("format".into(), json!("text"));
                r.lossy(
                    "spec.logging.accessLog.file.format.text",
                    "Envoy's default text format, not App Mesh's custom one",
                );
            }
            _ => {
                log.insert("format".into(), json!("text"));
            }
        }
        if path == "/dev/stdout" {
            r.mapped(
                "spec.logging.accessLog.file.path",
                "access_log on the listeners, to Envoy's stdout",
            );
        } else {
            log.insert("path".into(), json!(path));
            r.mapped(
                "spec.logging.accessLog.file.path",
                format!("access_log on the listeners, to {path}"),
            );
        }
        Some(Value::Object(log))
    }

    /// The ingress listener (15000 → the app) and the app's upstream.
    fn ingress(
        &self,
        node: &str,
        l: &Listener,
        i: usize,
        r: &mut Resource,
    ) -> (Map<String, Value>, Value) {
        let at = &format!("spec.listeners[{i}]");
        let (port, protocol) = l
            .port_mapping()
            .map(|p| (p.port(), upstream_protocol(p.protocol())))
            .unwrap_or((80, "http1"));
        r.mapped(
            format!("{at}.portMapping"),
            format!(
                "listener `ingress` on {} to upstream {} at 127.0.0.1:{port} ({protocol})",
                self.options.ingress_port,
                local_upstream(node)
            ),
        );
        let mut listener = Map::new();
        listener.insert("name".into(), json!("ingress"));
        self.bind(&mut listener);
        listener.insert("port".into(), json!(self.options.ingress_port));
        // ECS redirects the app ports' inbound connections here (proxyConfiguration).
        listener.insert("original_destination".into(), json!(true));
        let mut local = Map::new();
        local.insert("protocol".into(), json!(protocol));
        local.insert(
            "endpoints".into(),
            json!({ "static": [format!("127.0.0.1:{port}")] }),
        );
        if protocol == "tcp" {
            listener.insert("protocol".into(), json!("tcp"));
            listener.insert("to".into(), json!(local_upstream(node)));
            if let Some(idle) = l
                .timeout()
                .and_then(|t| t.as_tcp().ok())
                .and_then(|t| t.idle())
                .and_then(duration)
            {
                listener.insert("idle_timeout".into(), json!(idle));
                r.mapped(
                    format!("{at}.timeout.tcp.idle"),
                    "the listener's idle_timeout",
                );
            }
        } else {
            listener.insert("protocol".into(), json!("http"));
            let mut route = Map::new();
            route.insert("match".into(), json!({ "prefix": "/" }));
            route.insert("to".into(), json!(local_upstream(node)));
            let timeout = l.timeout().and_then(|t| match t {
                aws_sdk_appmesh::types::ListenerTimeout::Http(h)
                | aws_sdk_appmesh::types::ListenerTimeout::Http2(h) => Some((
                    h.per_request().and_then(duration),
                    h.idle().and_then(duration),
                )),
                aws_sdk_appmesh::types::ListenerTimeout::Grpc(g) => Some((
                    g.per_request().and_then(duration),
                    g.idle().and_then(duration),
                )),
                _ => None,
            });
            let (per_request, idle) = timeout.unwrap_or((None, None));
            match per_request {
                Some(t) => {
                    r.mapped(
                        format!("{at}.timeout.perRequest"),
                        "the ingress route's timeout",
                    );
                    route.insert("timeout".into(), json!(t));
                }
                None => {
                    route.insert("timeout".into(), json!(APP_MESH_TIMEOUT));
                }
            }
            if let Some(idle) = idle {
                r.mapped(
                    format!("{at}.timeout.idle"),
                    "the ingress listener's idle_timeout",
                );
                listener.insert("idle_timeout".into(), json!(idle));
            }
            listener.insert("routes".into(), json!([Value::Object(route)]));
        }
        if let Some(pool) = l.connection_pool() {
            use aws_sdk_appmesh::types::VirtualNodeConnectionPool as P;
            match pool {
                P::Http(h) => {
                    local.insert("max_connections".into(), json!(h.max_connections()));
                    if let Some(p) = h.max_pending_requests() {
                        local.insert("max_pending_requests".into(), json!(p));
                    }
                }
                P::Http2(h) => {
                    local.insert("max_requests".into(), json!(h.max_requests()));
                }
                P::Grpc(g) => {
                    local.insert("max_requests".into(), json!(g.max_requests()));
                }
                P::Tcp(t) => {
                    local.insert("max_connections".into(), json!(t.max_connections()));
                }
                _ => {}
            }
            r.mapped(
                format!("{at}.connectionPool"),
                format!("circuit breakers of upstream {}", local_upstream(node)),
            );
        }
        if let Some(t) = l.tls()
            && let Some(tls) = tls::listener(&tls::ListenerTls::of_node(t), &format!("{at}.tls"), r)
        {
            listener.insert("tls".into(), tls);
        }
        (listener, Value::Object(local))
    }

    /// The ingress of a node with several listeners: ECS redirects every app port to the one
    /// ingress port, so a tcp listener chooses the app port by the port the caller dialled
    /// (`ports`), each to an upstream of its own on loopback.
    fn multi_ingress(
        &self,
        node: &str,
        app: &[Listener],
        upstreams: &mut Map<String, Value>,
        r: &mut Resource,
    ) -> Map<String, Value> {
        let mut ports = Map::new();
        // Each listener's own tls (by port) and the report lines of its mapping.
        let mut own_tls: Vec<OwnTls> = Vec::new();
        let mut tls_lines: Vec<(usize, Field)> = Vec::new();
        for (i, l) in app.iter().enumerate() {
            let at = format!("spec.listeners[{i}]");
            // The listener as it would be alone, for its app upstream and TLS; its report is
            // this one's.
            let mut alone = Resource::new("", "");
            let (listener, local) = self.ingress(node, l, i, &mut alone);
            let port = l.port_mapping().map(|p| p.port()).unwrap_or(80);
            let name = if i == 0 {
                local_upstream(node)
            } else {
                format!("{}-{port}", local_upstream(node))
            };
            let protocol = l
                .port_mapping()
                .map(|p| upstream_protocol(p.protocol()))
                .unwrap_or("http1");
            r.mapped(
                format!("{at}.portMapping"),
                format!(
                    "ports.{port} of the tcp listener `ingress` on {}, to upstream {name} at 127.0.0.1:{port} ({protocol})",
                    self.options.ingress_port
                ),
            );
            if protocol != "tcp" {
                r.lossy(
                    format!("{at}.portMapping.protocol"),
                    "the ingress chooses the app port by the port dialled, so it is a tcp listener: the connections reach the app as they came (no HTTP-level timeout or stats on the ingress; the callers' routes keep theirs)",
                );
            }
            for f in alone.fields {
                if f.field.ends_with(".connectionPool") {
                    r.mapped(f.field, format!("circuit breakers of upstream {name}"));
                } else if f.field.contains(".tls") {
                    tls_lines.push((i, f));
                }
            }
            if l.timeout().is_some() {
                r.lossy(
                    format!("{at}.timeout"),
                    "not applied: the one tcp ingress takes every port, and its idle_timeout would be every listener's (Envoy's defaults apply)",
                );
            }
            own_tls.push(OwnTls::of(l, listener.get("tls").cloned()));
            ports.insert(port.to_string(), json!(name));
            upstreams.insert(name, local);
        }
        let served = served_tls(&own_tls);
        // A listener's own lines stand where its certificate, trust and allowed SANs are the
        // ones served (but `mode`, where it changed) or where they were not mapped; the others
        // get the loss.
        for (i, f) in tls_lines {
            let lost = served.losses.iter().any(|(k, _)| *k == i);
            let keep = !lost
                || own_tls[i].unmapped()
                || (served.served_as_own.contains(&i) && !f.field.ends_with(".tls.mode"));
            if keep {
                r.fields.push(f);
            }
        }
        for (i, why) in served.losses {
            r.lossy(format!("spec.listeners[{i}].tls"), why);
        }
        let tls = served.tls;
        let mut listener = Map::new();
        listener.insert("name".into(), json!("ingress"));
        self.bind(&mut listener);
        listener.insert("port".into(), json!(self.options.ingress_port));
        listener.insert("original_destination".into(), json!(true));
        listener.insert("protocol".into(), json!("tcp"));
        listener.insert("ports".into(), Value::Object(ports));
        if let Some(t) = tls {
            listener.insert("tls".into(), t);
        }
        listener
    }

    /// The upstream callers use to reach a virtual node: its service discovery, with the
    /// listener's health check and outlier detection (App Mesh enforced them at the callers).
    fn node_upstream_def(
        &self,
        node: &VirtualNodeData,
        l: &Listener,
        i: usize,
        r: &mut Resource,
    ) -> Option<Value> {
        let name = node.virtual_node_name();
        let at = format!("spec.listeners[{i}]");
        // The upstream of this listener, as callers name it.
        let upstream = node_port_upstream(name, self.listeners(name), i);
        let (port, protocol) = l
            .port_mapping()
            .map(|p| (p.port(), upstream_protocol(p.protocol())))
            .unwrap_or((80, "http1"));
        let mut u = Map::new();
        u.insert("protocol".into(), json!(protocol));
        u.insert("port".into(), json!(port));
        let discovery = node.spec().and_then(|s| s.service_discovery());
        use aws_sdk_appmesh::types::ServiceDiscovery as S;
        match discovery {
            Some(S::AwsCloudMap(c)) => {
                let attributes: Map<String, Value> = c
                    .attributes()
                    .iter()
                    .map(|a| (a.key().to_string(), json!(a.value())))
                    .collect();
                let mut source = Map::new();
                source.insert("namespace".into(), json!(c.namespace_name()));
                source.insert("service".into(), json!(c.service_name()));
                if !attributes.is_empty() {
                    source.insert("attributes".into(), Value::Object(attributes));
                }
                u.insert("endpoints".into(), json!({ "cloud_map": source }));
                if c.ip_preference().is_some() {
                    r.lossy(
                        "spec.serviceDiscovery.awsCloudMap.ipPreference",
                        "the catalog takes the addresses Cloud Map registers (IPv4 for ECS tasks)",
                    );
                }
                r.mapped(
                    "spec.serviceDiscovery.awsCloudMap",
                    format!(
                        "upstream {} from cloud_map (namespace, service, attributes)",
                        upstream
                    ),
                );
            }
            Some(S::Dns(d)) => {
                let mut source = Map::new();
                source.insert("host".into(), json!(d.hostname()));
                source.insert("port".into(), json!(port));
                if d.response_type().map(|t| t.as_str()) == Some("LOADBALANCER") {
                    source.insert("resolve".into(), json!("logical"));
                }
                u.insert("endpoints".into(), json!({ "dns": source }));
                if d.ip_preference().is_some() {
                    r.lossy(
                        "spec.serviceDiscovery.dns.ipPreference",
                        "Envoy's DNS lookup family applies (it prefers IPv4)",
                    );
                }
                r.mapped(
                    "spec.serviceDiscovery.dns",
                    format!(
                        "upstream {} from dns (responseType LOADBALANCER: resolve logical; ENDPOINTS: strict)",
                        upstream
                    ),
                );
            }
            _ => {
                r.not_mapped(
                    "spec.serviceDiscovery",
                    "none: callers cannot reach this node; routes to it are left out",
                );
                return None;
            }
        }
        if let Some(h) = l.health_check() {
            let mut check = Map::new();
            match h.protocol().as_str() {
                "tcp" => {
                    check.insert("tcp".into(), json!({}));
                }
                "grpc" => {
                    check.insert("grpc".into(), json!({}));
                }
                _ => {
                    check.insert("http".into(), json!({ "path": h.path().unwrap_or("/") }));
                }
            }
            check.insert(
                "interval".into(),
                json!(format!("{}ms", h.interval_millis())),
            );
            check.insert("timeout".into(), json!(format!("{}ms", h.timeout_millis())));
            check.insert("healthy_threshold".into(), json!(h.healthy_threshold()));
            check.insert("unhealthy_threshold".into(), json!(h.unhealthy_threshold()));
            u.insert("health_check".into(), Value::Object(check));
            r.mapped(
                format!("{at}.healthCheck"),
                format!(
                    "health_check of upstream {}, run by the callers' proxies",
                    upstream
                ),
            );
            if h.port().is_some_and(|p| p != port) {
                r.lossy(
                    format!("{at}.healthCheck.port"),
                    "checks go to the listener's port, not another one",
                );
            }
        }
        if let Some(t) = self.upstream_tls.get(&(name.to_string(), port)) {
            u.insert("tls".into(), t.clone());
        }
        if let Some(o) = l.outlier_detection() {
            let mut od = Map::new();
            od.insert("consecutive_5xx".into(), json!(o.max_server_errors()));
            if let Some(i) = o.interval().and_then(duration) {
                od.insert("interval".into(), json!(i));
            }
            if let Some(b) = o.base_ejection_duration().and_then(duration) {
                od.insert("base_ejection_time".into(), json!(b));
            }
            od.insert(
                "max_ejection_percent".into(),
                json!(o.max_ejection_percent()),
            );
            u.insert("outlier_detection".into(), Value::Object(od));
            r.mapped(
                format!("{at}.outlierDetection"),
                format!("outlier_detection of upstream {}, at the callers", upstream),
            );
        }
        Some(Value::Object(u))
    }

    /// The ports a virtual service answers on: its router's or node's listeners, in order.
    fn service_ports(&self, service: &VirtualServiceData) -> Vec<i32> {
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        let ports = |listeners: Vec<Option<&aws_sdk_appmesh::types::PortMapping>>| {
            let mut out: Vec<i32> = Vec::new();
            for p in listeners.into_iter().flatten() {
                if !out.contains(&p.port()) {
                    out.push(p.port());
                }
            }
            out
        };
        let provider = service.spec().and_then(|s| s.provider());
        match provider {
            Some(P::VirtualRouter(r)) => self
                .routers
                .get(r.virtual_router_name())
                .and_then(|(router, _)| router.spec())
                .map(|s| ports(s.listeners().iter().map(|l| l.port_mapping()).collect()))
                .unwrap_or_default(),
            Some(P::VirtualNode(n)) => self
                .nodes
                .get(n.virtual_node_name())
                .and_then(|node| node.spec())
                .map(|s| ports(s.listeners().iter().map(|l| l.port_mapping()).collect()))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Whether a virtual service speaks tcp: every listener of its provider node, or of its
    /// provider router.
    fn service_is_tcp(&self, service: &str) -> bool {
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        match self
            .services
            .get(service)
            .and_then(|s| s.spec())
            .and_then(|s| s.provider())
        {
            Some(P::VirtualNode(n)) => self.speaks_tcp(n.virtual_node_name()),
            Some(P::VirtualRouter(vr)) => self
                .routers
                .get(vr.virtual_router_name())
                .and_then(|(router, _)| router.spec())
                .is_some_and(|s| {
                    !s.listeners().is_empty()
                        && s.listeners().iter().all(|l| {
                            l.port_mapping()
                                .is_some_and(|p| *p.protocol() == PortProtocol::Tcp)
                        })
                }),
            _ => false,
        }
    }

    /// The upstream a tcp connection to `node` on `port` takes (its listener on that port, or
    /// its first).
    fn node_upstream_on(&self, node: &str, port: i32) -> String {
        let listeners = self
            .nodes
            .get(node)
            .and_then(|n| n.spec())
            .map(|s| s.listeners())
            .unwrap_or_default();
        match listeners
            .iter()
            .position(|l| l.port_mapping().is_some_and(|p| p.port() == port))
        {
            Some(k) => node_port_upstream(node, listeners, k),
            None => node_upstream(node),
        }
    }

    /// The ports HTTP backends are dialled on, with their services: every port of a service
    /// that is not tcp, but for the tcp listeners of a provider node that has HTTP ones too.
    fn http_backend_ports(
        &self,
        backends: &[aws_sdk_appmesh::types::Backend],
    ) -> BTreeMap<i32, String> {
        let mut out = BTreeMap::new();
        for vs in backends.iter().filter_map(|b| b.as_virtual_service().ok()) {
            let name = vs.virtual_service_name();
            let Some(service) = self.services.get(name).copied() else {
                continue;
            };
            if self.service_is_tcp(name) {
                continue;
            }
            let tcp = self.node_tcp_listeners(service);
            for port in self.service_ports(service) {
                if !tcp.iter().any(|(p, _)| *p == port) {
                    out.entry(port).or_insert_with(|| name.to_string());
                }
            }
        }
        out
    }

    /// The tcp listeners of a virtual service's provider node that also has HTTP ones: each
    /// port with the upstream a connection to it takes.
    fn node_tcp_listeners(&self, service: &VirtualServiceData) -> Vec<(i32, String)> {
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        let Some(P::VirtualNode(n)) = service.spec().and_then(|s| s.provider()) else {
            return Vec::new();
        };
        let node = n.virtual_node_name();
        let listeners = self.listeners(node);
        if self.speaks_tcp(node) {
            return Vec::new();
        }
        (0..listeners.len())
            .filter(|&k| is_tcp(&listeners[k]))
            .map(|k| {
                (
                    port_of(&listeners[k]),
                    node_port_upstream(node, listeners, k),
                )
            })
            .collect()
    }

    /// The tcp egress of a node's tcp backends: `ports`, each port of a service to its node's
    /// upstream (a router's first tcp route by priority), or, when every backend is tcp
    /// (`beside_http` is `None`), `split` when there is one port and its route has several
    /// targets. Beside an HTTP chain (`beside_http`: the ports its backends are dialled on,
    /// with their services), a port of both is left to HTTP. `None` when nothing could be
    /// mapped.
    fn tcp_egress(
        &mut self,
        backends: &[aws_sdk_appmesh::types::Backend],
        beside_http: Option<&BTreeMap<i32, String>>,
        r: &mut Resource,
    ) -> Option<Map<String, Value>> {
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        let mut ports: BTreeMap<i32, (String, String)> = BTreeMap::new();
        let mut splits: Vec<(String, Map<String, Value>)> = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let Ok(vs) = b.as_virtual_service() else {
                continue;
            };
            let at = format!("spec.backends[{i}].virtualService");
            let name = vs.virtual_service_name();
            if !self.service_is_tcp(name) {
                // A provider node's tcp listeners beside its HTTP ones: a port chain each.
                let Some(service) = self.services.get(name).copied() else {
                    continue;
                };
                let node = match service.spec().and_then(|s| s.provider()) {
                    Some(P::VirtualNode(n)) if self.reachable(n.virtual_node_name()) => {
                        n.virtual_node_name().to_string()
                    }
                    _ => continue,
                };
                for (port, upstream) in self.node_tcp_listeners(service) {
                    if claim_port(&mut ports, beside_http, port, name, &upstream, &at, r) {
                        r.mapped(
                            &at,
                            format!("port {port} (tcp) of its provider, virtual node {node}: ports.{port} of the egress listener, to upstream {upstream}"),
                        );
                    }
                }
                continue;
            }
            let Some(service) = self.services.get(name).copied() else {
                r.not_mapped(
                    &at,
                    format!("virtual service {name} is not in the mesh (or not ACTIVE)"),
                );
                continue;
            };
            let service_ports = self.service_ports(service);
            // The upstreams a connection to each port goes to, by weight.
            let mut targets: Vec<(String, i64)> = Vec::new();
            match service.spec().and_then(|s| s.provider()) {
                Some(P::VirtualNode(n)) => {
                    let node = n.virtual_node_name();
                    if !self.reachable(node) {
                        r.not_mapped(
                            &at,
                            format!("its provider, virtual node {node}, has no service discovery"),
                        );
                        continue;
                    }
                    targets.push((node.to_string(), 1));
                }
                Some(P::VirtualRouter(vr)) => {
                    let router = vr.virtual_router_name();
                    let routes = self
                        .routers
                        .get(router)
                        .map(|(_, routes)| *routes)
                        .unwrap_or_default();
                    let mut tcp: Vec<&RouteData> = routes
                        .iter()
                        .filter(|rt| rt.spec().is_some_and(|s| s.tcp_route().is_some()))
                        .collect();
                    tcp.sort_by_key(|rt| {
                        (
                            rt.spec().and_then(|s| s.priority()).unwrap_or(i32::MAX),
                            rt.route_name().to_string(),
                        )
                    });
                    for (k, rt) in tcp.iter().enumerate() {
                        let mut rr =
                            Resource::new("route", format!("{router}/{}", rt.route_name()));
                        let spec = rt.spec().and_then(|s| s.tcp_route());
                        if k > 0 {
                            rr.not_mapped(
                                "spec.tcpRoute",
                                format!("a tcp listener chooses by the port dialled only: route {} (first by priority) takes the service's ports", tcp[0].route_name()),
                            );
                        } else if let Some(t) = spec {
                            for (j, wt) in t
                                .action()
                                .map(|a| a.weighted_targets())
                                .unwrap_or_default()
                                .iter()
                                .enumerate()
                            {
                                if !self.reachable(wt.virtual_node()) {
                                    rr.not_mapped(
                                        format!("spec.tcpRoute.action.weightedTargets[{j}]"),
                                        format!("virtual node {} is not in the mesh or has no service discovery", wt.virtual_node()),
                                    );
                                    continue;
                                }
                                targets
                                    .push((wt.virtual_node().to_string(), i64::from(wt.weight())));
                            }
                            if t.r#match().and_then(|m| m.port()).is_some() {
                                rr.lossy(
                                    "spec.tcpRoute.match.port",
                                    "the route takes every port of the service",
                                );
                            }
                            if t.timeout().and_then(|t| t.idle()).is_some() {
                                rr.lossy(
                                    "spec.tcpRoute.timeout.idle",
                                    "the catalog has idle timeouts per listener: Envoy's default (1 h) applies",
                                );
                            }
                            // The ports no other backend of the caller takes (those are
                            // reported on the caller).
                            let free: Vec<i32> = service_ports
                                .iter()
                                .copied()
                                .filter(|p| {
                                    !ports.contains_key(p)
                                        && !beside_http.is_some_and(|h| h.contains_key(p))
                                })
                                .collect();
                            if free.is_empty() {
                                rr.not_mapped(
                                    "spec.tcpRoute",
                                    format!("its ports {service_ports:?} are the caller's other backends' (see the caller's spec.backends)"),
                                );
                            } else {
                                rr.mapped(
                                    "spec.tcpRoute",
                                    format!("the egress listener's TCP chains, by the port dialled ({free:?})"),
                                );
                            }
                        }
                        self.record(rr);
                    }
                }
                _ => {
                    r.not_mapped(&at, format!("virtual service {name} has no provider"));
                    continue;
                }
            }
            targets.retain(|(_, w)| *w > 0);
            match targets.as_slice() {
                [] => r.not_mapped(
                    &at,
                    "no tcp route with a target above weight 0 could be mapped",
                ),
                [(node, _)] => {
                    let mut claimed = Vec::new();
                    for port in &service_ports {
                        let upstream = self.node_upstream_on(node, *port);
                        if claim_port(&mut ports, beside_http, *port, name, &upstream, &at, r) {
                            claimed.push(*port);
                        }
                    }
                    if !claimed.is_empty() {
                        r.mapped(
                            &at,
                            format!("ports {claimed:?} of the egress listener (TCP, by the port dialled), to virtual node {node}"),
                        );
                    }
                }
                several => {
                    let split: Map<String, Value> = several
                        .iter()
                        .map(|(node, w)| {
                            let port = service_ports.first().copied().unwrap_or(0);
                            (self.node_upstream_on(node, port), json!(w))
                        })
                        .collect();
                    splits.push((name.to_string(), split));
                    r.lossy(
                        &at,
                        "weighted targets: the tcp egress listener's `split` (a port maps to one upstream, so the split takes every port dialled); mapped only when it is the node's one tcp backend",
                    );
                }
            }
        }
        let mut out = Map::new();
        match (splits.len(), ports.is_empty(), beside_http) {
            (0, _, _) => {}
            (1, true, None) => {
                out.insert("split".into(), Value::Object(splits.remove(0).1));
            }
            _ => {
                for (name, _) in &splits {
                    r.not_mapped(
                        "spec.backends",
                        format!("virtual service {name}: its weighted tcp route needs the listener's `split`, which takes every port, beside other backends"),
                    );
                }
            }
        }
        if !ports.is_empty() {
            let ports: Map<String, Value> = ports
                .into_iter()
                .map(|(p, (_, upstream))| (p.to_string(), json!(upstream)))
                .collect();
            out.insert("ports".into(), Value::Object(ports));
        }
        (!out.is_empty()).then_some(out)
    }

    /// One virtual host per backend virtual service, with the service's routes.
    fn egress_hosts(
        &mut self,
        backends: &[aws_sdk_appmesh::types::Backend],
        at: &str,
        r: &mut Resource,
    ) -> Vec<Value> {
        let mut hosts = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let Ok(vs) = b.as_virtual_service() else {
                r.not_mapped(
                    format!("{at}[{i}]"),
                    "a backend kind this importer does not know",
                );
                continue;
            };
            let name = vs.virtual_service_name();
            // Mapped by port beside the HTTP chain instead.
            if self.service_is_tcp(name) {
                continue;
            }
            hosts.extend(self.service_host(name, &format!("{at}[{i}]"), true, r));
        }
        let services: Vec<&str> = backends
            .iter()
            .filter_map(|b| b.as_virtual_service().ok())
            .map(|vs| vs.virtual_service_name())
            .collect();
        unique_host_names(&mut hosts, &services);
        hosts
    }

    /// The virtual hosts of one virtual service (one, or one per port of a provider node);
    /// none when nothing of it can be routed.
    /// With `tcp_beside`, a provider node's tcp listeners are left to the egress listener's
    /// TCP chains ([`Mapper::tcp_egress`]), which report them.
    fn service_host(
        &mut self,
        name: &str,
        at: &str,
        tcp_beside: bool,
        r: &mut Resource,
    ) -> Vec<Value> {
        let Some(service) = self.services.get(name).copied() else {
            r.not_mapped(
                format!("{at}.virtualService"),
                format!("virtual service {name} is not in the mesh (or not ACTIVE)"),
            );
            return Vec::new();
        };
        // The app dials the name with any of its ports (routes that differ by port are
        // reported where the routes are mapped).
        let mut domains = vec![json!(name)];
        let ports = self.service_ports(service);
        if ports.is_empty() {
            domains.push(json!(format!("{name}:*")));
        }
        domains.extend(ports.iter().map(|p| json!(format!("{name}:{p}"))));
        use aws_sdk_appmesh::types::VirtualServiceProvider as P;
        let routes: Vec<Value> = match service.spec().and_then(|s| s.provider()) {
            Some(P::VirtualNode(n)) => {
                let target = n.virtual_node_name();
                if !self.reachable(target) {
                    r.not_mapped(
                        format!("{at}.virtualService"),
                        format!("its provider, virtual node {target}, has no service discovery"),
                    );
                    return Vec::new();
                }
                return self.node_hosts(name, target, at, tcp_beside, r);
            }
            Some(P::VirtualRouter(vr)) => {
                let router = vr.virtual_router_name();
                let Some((_, routes)) = self.routers.get(router).copied() else {
                    r.not_mapped(
                        format!("{at}.virtualService"),
                        format!("its provider, virtual router {router}, is not in the mesh"),
                    );
                    return Vec::new();
                };
                let mapped = self.router_routes(router, routes);
                if mapped.is_empty() {
                    r.not_mapped(
                        format!("{at}.virtualService"),
                        format!("no route of virtual router {router} could be mapped"),
                    );
                    return Vec::new();
                }
                r.mapped(
                    format!("{at}.virtualService"),
                    format!(
                        "virtual host {} with the {} routes of virtual router {router}, by priority",
                        catalog_name(name),
                        mapped.len()
                    ),
                );
                mapped
            }
            _ => {
                r.not_mapped(
                    format!("{at}.virtualService"),
                    format!("virtual service {name} has no provider"),
                );
                return Vec::new();
            }
        };
        vec![json!({
            "name": catalog_name(name),
            "domains": domains,
            "routes": routes,
        })]
    }

    /// The virtual hosts of a virtual service whose provider is virtual node `node`: one per
    /// HTTP listener, by the port in the Host, each to that listener's upstream. The Host
    /// without a port (port 80 by the scheme) takes the listener on 80, else the first HTTP
    /// one. A tcp listener cannot be reached through the HTTP egress: reported.
    fn node_hosts(
        &self,
        name: &str,
        node: &str,
        at: &str,
        tcp_beside: bool,
        r: &mut Resource,
    ) -> Vec<Value> {
        let field = format!("{at}.virtualService");
        let listeners = self.listeners(node);
        let http: Vec<usize> = (0..listeners.len())
            .filter(|&k| !is_tcp(&listeners[k]))
            .collect();
        if http.is_empty() {
            r.not_mapped(
                field,
                format!("its provider, virtual node {node}, speaks tcp: the egress listener routes HTTP by Host (TCP egress needs a tcp listener with `ports` on a port of its own)"),
            );
            return Vec::new();
        }
        let bare = http
            .iter()
            .copied()
            .find(|&k| port_of(&listeners[k]) == 80)
            .unwrap_or(http[0]);
        let mut hosts = Vec::new();
        for (k, l) in listeners.iter().enumerate() {
            let port = port_of(l);
            if is_tcp(l) && tcp_beside {
                continue;
            }
            if is_tcp(l) {
                r.not_mapped(
                    field.clone(),
                    format!("port {port} of its provider, virtual node {node}, speaks tcp: the egress listener routes HTTP by Host, so {name}:{port} is not routed (TCP egress needs a tcp listener with `ports`)"),
                );
                continue;
            }
            let upstream = node_port_upstream(node, listeners, k);
            let mut route = Map::new();
            route.insert("match".into(), json!({ "prefix": "/" }));
            route.insert("to".into(), json!(upstream));
            route.insert("timeout".into(), json!(APP_MESH_TIMEOUT));
            if let Some(retries) = self.default_retries() {
                route.insert("retries".into(), retries);
            }
            let (host, domains) = if k == bare {
                (
                    catalog_name(name),
                    vec![name.to_string(), format!("{name}:{port}")],
                )
            } else {
                (
                    format!("{}-{port}", catalog_name(name)),
                    vec![format!("{name}:{port}")],
                )
            };
            r.mapped(
                field.clone(),
                format!(
                    "virtual host {host} ({}) to upstream {upstream}",
                    domains.join(", ")
                ),
            );
            hosts.push(json!({
                "name": host,
                "domains": domains,
                "routes": [Value::Object(route)],
                // A name of the importer's (removed by `unique_host_names`).
                "built": k != bare,
            }));
        }
        hosts
    }

    /// A virtual node's listeners (none when it is not in the mesh).
    fn listeners(&self, node: &str) -> &[Listener] {
        self.nodes
            .get(node)
            .and_then(|n| n.spec())
            .map(|s| s.listeners())
            .unwrap_or_default()
    }

    /// Whether every listener of the node speaks tcp (so no HTTP route can send to it).
    fn speaks_tcp(&self, node: &str) -> bool {
        let listeners = self.listeners(node);
        !listeners.is_empty() && listeners.iter().all(is_tcp)
    }

    /// Whether a virtual node can be reached by its callers (it has service discovery).
    fn reachable(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .and_then(|n| n.spec())
            .and_then(|s| s.service_discovery())
            .is_some()
            && self
                .nodes
                .get(node)
                .and_then(|n| n.spec())
                .is_some_and(|s| !s.listeners().is_empty())
    }

    fn default_retries(&self) -> Option<Value> {
        self.options.default_retries.then(|| {
            json!({
                "attempts": 2,
                "on": ["connect-failure", "refused-stream", "unavailable", "gateway-error"],
                "per_try_timeout": APP_MESH_TIMEOUT,
            })
        })
    }

    /// The routes of a router, by priority (App Mesh: lowest first; routes without one last),
    /// then by [`Specificity`], then those with more conditions (headers, query parameters,
    /// method, gRPC metadata) first, then by name, mapped. Each route's report is its own resource.
    fn router_routes(&mut self, router: &str, routes: &[RouteData]) -> Vec<Value> {
        let mut sorted: Vec<&RouteData> = routes.iter().collect();
        sorted.sort_by_key(|r| {
            let spec = r.spec();
            let http = spec.and_then(|s| s.http_route().or(s.http2_route()));
            let m = http.and_then(|h| h.r#match());
            let specific = match spec.and_then(|s| s.grpc_route()).and_then(|g| g.r#match()) {
                Some(g) if g.method_name().is_some() => Specificity::Exact,
                // A service is a path prefix longer than any of its methods' paths.
                Some(g) if g.service_name().is_some() => {
                    Specificity::Prefix(std::cmp::Reverse(usize::MAX))
                }
                _ => specificity(
                    m.and_then(|m| m.path()).and_then(|p| p.exact()),
                    m.and_then(|m| m.prefix()),
                    m.and_then(|m| m.path()).and_then(|p| p.regex()),
                ),
            };
            // More conditions first: a route whose conditions are a superset of another's
            // (same path) would otherwise be taken by it, as Gateway API orders matches.
            let conditions = match spec.and_then(|s| s.grpc_route()).and_then(|g| g.r#match()) {
                Some(g) => g.metadata().len(),
                None => m.map_or(0, |m| {
                    m.headers().len()
                        + m.query_parameters().len()
                        + usize::from(m.method().is_some())
                }),
            };
            (
                spec.and_then(|s| s.priority()).unwrap_or(i32::MAX),
                specific,
                std::cmp::Reverse(conditions),
                r.route_name().to_string(),
            )
        });
        let mut out = Vec::new();
        for route in sorted {
            let mut r = Resource::new("route", format!("{router}/{}", route.route_name()));
            if let Some(spec) = route.spec()
                && let Some(mapped) = self.route(spec, &mut r)
            {
                out.push(Value::Object(mapped.route));
            }
            self.record(r);
        }
        out
    }

    /// Adds a route's report, once: a route used by several callers (a router behind several
    /// virtual services, or callers of HTTP and TCP egress) keeps one entry, with what each use
    /// added.
    fn record(&mut self, r: Resource) {
        match self
            .report
            .resources
            .iter_mut()
            .find(|x| x.kind == r.kind && x.name == r.name)
        {
            Some(existing) => {
                for f in r.fields {
                    if !existing.fields.contains(&f) {
                        existing.fields.push(f);
                    }
                }
            }
            None => self.report.resources.push(r),
        }
    }

    /// One App Mesh route; `None` when it cannot be mapped (the report says why).
    fn route(&self, spec: &RouteSpec, r: &mut Resource) -> Option<RouteOut> {
        if let Some(p) = spec.priority() {
            r.mapped(
                "spec.priority",
                format!("the route's place in its virtual host ({p})"),
            );
        }
        if spec.tcp_route().is_some() {
            r.not_mapped(
                "spec.tcpRoute",
                "a tcp route: an HTTP virtual host (of the egress listener or a gateway) cannot send to it; a tcp route is imported for a caller's virtual service whose router listens on tcp only (TCP chains of the egress listener, by the port dialled)",
            );
            return None;
        }
        if let Some(h) = spec.http_route() {
            return self.http_route(h, "spec.httpRoute", r);
        }
        if let Some(h) = spec.http2_route() {
            return self.http_route(h, "spec.http2Route", r);
        }
        if let Some(g) = spec.grpc_route() {
            let at = "spec.grpcRoute";
            let mut m = Map::new();
            let mut headers = Map::new();
            if let Some(gm) = g.r#match() {
                match (gm.service_name(), gm.method_name()) {
                    (Some(service), method) => {
                        let mut grpc = Map::new();
                        grpc.insert("service".into(), json!(service));
                        if let Some(method) = method {
                            grpc.insert("method".into(), json!(method));
                        }
                        m.insert("grpc".into(), Value::Object(grpc));
                        r.mapped(format!("{at}.match.serviceName"), "match.grpc");
                    }
                    (None, _) => {
                        m.insert("prefix".into(), json!("/"));
                    }
                }
                for (i, md) in gm.metadata().iter().enumerate() {
                    let cond = cond_of!(md.r#match(), GrpcRouteMetadataMatchMethod);
                    match value_match(cond, md.invert().unwrap_or(false)) {
                        Ok(v) => {
                            let field = format!("{at}.match.metadata[{i}]");
                            let name = md.name().to_ascii_lowercase();
                            if !add_condition(&mut headers, name, v, field, "metadata", r) {
                                return None;
                            }
                        }
                        Err(why) => {
                            r.not_mapped(
                                format!("{at}.match.metadata[{i}]"),
                                format!("{why}; the route is left out"),
                            );
                            return None;
                        }
                    }
                }
                if gm.port().is_some() {
                    r.lossy(
                        format!("{at}.match.port"),
                        "routes match on any port of the service",
                    );
                }
            } else {
                m.insert("prefix".into(), json!("/"));
            }
            if !headers.is_empty() {
                m.insert("headers".into(), Value::Object(headers));
            }
            let mut route = Map::new();
            route.insert("match".into(), Value::Object(m));
            let targets = g.action().map(|a| a.weighted_targets()).unwrap_or_default();
            if !self.targets(targets, &format!("{at}.action"), &mut route, r) {
                return None;
            }
            let (timeout, idle) = g
                .timeout()
                .map(|t| (t.per_request().and_then(duration), t.idle()))
                .unwrap_or((None, None));
            self.timeout(&mut route, timeout, idle.is_some(), at, r);
            match g.retry_policy() {
                Some(p) => {
                    let events = retry_on(
                        p.http_retry_events().iter().map(String::as_str),
                        p.tcp_retry_events().iter().map(|e| e.as_str()),
                        p.grpc_retry_events().iter().map(|e| e.as_str()),
                    );
                    self.retries(
                        &mut route,
                        p.max_retries(),
                        events,
                        p.per_retry_timeout(),
                        at,
                        r,
                    );
                }
                None => {
                    if let Some(d) = self.default_retries() {
                        route.insert("retries".into(), d);
                    }
                }
            }
            return Some(RouteOut { route });
        }
        r.not_mapped("spec", "a route kind this importer does not know");
        None
    }

    fn http_route(&self, h: &HttpRoute, at: &str, r: &mut Resource) -> Option<RouteOut> {
        let mut m = Map::new();
        let hm = h.r#match();
        if let Some(hm) = hm {
            if let Some(prefix) = hm.prefix() {
                m.insert("prefix".into(), json!(prefix));
                r.mapped(format!("{at}.match.prefix"), "match.prefix");
            } else if let Some(path) = hm.path() {
                if let Some(exact) = path.exact() {
                    m.insert("path".into(), json!(exact));
                    r.mapped(format!("{at}.match.path.exact"), "match.path");
                } else if let Some(regex) = path.regex() {
                    if let Some(why) = regex_refusal(regex) {
                        r.not_mapped(
                            format!("{at}.match.path.regex"),
                            format!("{why}; the route is left out"),
                        );
                        return None;
                    }
                    m.insert("regex".into(), json!(regex));
                    r.mapped(format!("{at}.match.path.regex"), "match.regex");
                }
            }
            if !m.contains_key("prefix") && !m.contains_key("path") && !m.contains_key("regex") {
                m.insert("prefix".into(), json!("/"));
            }
            let mut headers = Map::new();
            for (i, hd) in hm.headers().iter().enumerate() {
                let cond = cond_of!(hd.r#match(), HeaderMatchMethod);
                match value_match(cond, hd.invert().unwrap_or(false)) {
                    Ok(v) => {
                        let field = format!("{at}.match.headers[{i}]");
                        let name = hd.name().to_ascii_lowercase();
                        if !add_condition(&mut headers, name, v, field, "header", r) {
                            return None;
                        }
                    }
                    Err(why) => {
                        r.not_mapped(
                            format!("{at}.match.headers[{i}]"),
                            format!("{why}; the route is left out"),
                        );
                        return None;
                    }
                }
            }
            if !headers.is_empty() {
                m.insert("headers".into(), Value::Object(headers));
            }
            if let Some(method) = hm.method() {
                m.insert("method".into(), json!(method.as_str()));
                r.mapped(format!("{at}.match.method"), "match.method");
            }
            let mut query = Map::new();
            for (i, q) in hm.query_parameters().iter().enumerate() {
                let v = match q.r#match().and_then(|m| m.exact()) {
                    Some(exact) => json!(exact),
                    None => json!({ "present": true }),
                };
                let field = format!("{at}.match.queryParameters[{i}]");
                if !add_condition(
                    &mut query,
                    q.name().to_string(),
                    v,
                    field,
                    "query parameter",
                    r,
                ) {
                    return None;
                }
            }
            if !query.is_empty() {
                m.insert("query".into(), Value::Object(query));
            }
            if let Some(scheme) = hm.scheme() {
                r.not_mapped(
                    format!("{at}.match.scheme"),
                    format!(
                        "{}: the catalog does not match on the scheme; the route is left out",
                        scheme.as_str()
                    ),
                );
                return None;
            }
            if hm.port().is_some() {
                r.lossy(
                    format!("{at}.match.port"),
                    "routes match on any port of the service",
                );
            }
        } else {
            m.insert("prefix".into(), json!("/"));
        }
        let mut route = Map::new();
        route.insert("match".into(), Value::Object(m));
        let targets = h.action().map(|a| a.weighted_targets()).unwrap_or_default();
        if !self.targets(targets, &format!("{at}.action"), &mut route, r) {
            return None;
        }
        let (timeout, idle) = h
            .timeout()
            .map(|t| (t.per_request().and_then(duration), t.idle()))
            .unwrap_or((None, None));
        self.timeout(&mut route, timeout, idle.is_some(), at, r);
        match h.retry_policy() {
            Some(p) => self.http_retries(&mut route, p, at, r),
            None => {
                if let Some(d) = self.default_retries() {
                    route.insert("retries".into(), d);
                }
            }
        }
        Some(RouteOut { route })
    }

    fn http_retries(
        &self,
        route: &mut Map<String, Value>,
        p: &HttpRetryPolicy,
        at: &str,
        r: &mut Resource,
    ) {
        let events = retry_on(
            p.http_retry_events().iter().map(String::as_str),
            p.tcp_retry_events().iter().map(|e| e.as_str()),
            [],
        );
        self.retries(route, p.max_retries(), events, p.per_retry_timeout(), at, r);
    }

    fn retries(
        &self,
        route: &mut Map<String, Value>,
        max: i64,
        events: Result<Vec<String>, String>,
        per_try: Option<&Duration>,
        at: &str,
        r: &mut Resource,
    ) {
        let on = match events {
            Ok(on) if !on.is_empty() => on,
            Ok(_) => {
                r.not_mapped(
                    format!("{at}.retryPolicy"),
                    "no retry events: nothing is retried",
                );
                return;
            }
            Err(why) => {
                r.not_mapped(
                    format!("{at}.retryPolicy"),
                    format!("{why}: nothing is retried"),
                );
                return;
            }
        };
        // The catalog (like Envoy's sane range) takes at most 100; App Mesh took more.
        if max > MAX_RETRIES {
            r.lossy(
                format!("{at}.retryPolicy.maxRetries"),
                format!("{max} retries: the catalog takes at most {MAX_RETRIES}, which is what the route gets"),
            );
        }
        let max = max.clamp(0, MAX_RETRIES);
        let mut retries = Map::new();
        retries.insert("attempts".into(), json!(max));
        retries.insert("on".into(), json!(on));
        if let Some(t) = per_try.and_then(duration) {
            retries.insert("per_try_timeout".into(), json!(t));
        }
        route.insert("retries".into(), Value::Object(retries));
        r.mapped(
            format!("{at}.retryPolicy"),
            format!("retries: {max} attempts on {}", on.join(", ")),
        );
    }

    fn timeout(
        &self,
        route: &mut Map<String, Value>,
        per_request: Option<String>,
        idle: bool,
        at: &str,
        r: &mut Resource,
    ) {
        match per_request {
            Some(t) => {
                route.insert("timeout".into(), json!(t));
                r.mapped(format!("{at}.timeout.perRequest"), "the route's timeout");
            }
            None => {
                route.insert("timeout".into(), json!(APP_MESH_TIMEOUT));
            }
        }
        if idle {
            r.lossy(
                format!("{at}.timeout.idle"),
                "the catalog has idle timeouts per listener, not per route: Envoy's default (5 m) applies",
            );
        }
    }

    /// `to` or `split` from weighted targets; false when none of them can be reached.
    fn targets(
        &self,
        targets: &[aws_sdk_appmesh::types::WeightedTarget],
        at: &str,
        route: &mut Map<String, Value>,
        r: &mut Resource,
    ) -> bool {
        let mut split = Map::new();
        for (i, t) in targets.iter().enumerate() {
            let node = t.virtual_node();
            if !self.reachable(node) {
                r.not_mapped(
                    format!("{at}.weightedTargets[{i}]"),
                    format!("virtual node {node} is not in the mesh or has no service discovery"),
                );
                continue;
            }
            let listeners = self.listeners(node);
            // The listener the target reaches: the one on its port, else the first.
            let mut k = 0;
            let mut port_note = None;
            if let Some(port) = t.port() {
                match listeners.iter().position(|l| port_of(l) == port) {
                    Some(at_port) => k = at_port,
                    None => {
                        port_note = Some(format!(
                            "virtual node {node} has no listener on {port}: its first listener's port is used"
                        ));
                    }
                }
            }
            if is_tcp(&listeners[k]) {
                r.not_mapped(
                    format!("{at}.weightedTargets[{i}]"),
                    format!(
                        "virtual node {node} speaks tcp on port {}: an HTTP route cannot send to it",
                        port_of(&listeners[k])
                    ),
                );
                continue;
            }
            let upstream = node_port_upstream(node, listeners, k);
            if t.port().is_some() {
                match port_note {
                    None => r.mapped(
                        format!("{at}.weightedTargets[{i}].port"),
                        format!("upstream {upstream}"),
                    ),
                    Some(why) => r.lossy(format!("{at}.weightedTargets[{i}].port"), why),
                }
            }
            split.insert(upstream, json!(t.weight()));
        }
        let positive = split
            .values()
            .filter(|w| w.as_i64().unwrap_or(0) > 0)
            .count();
        if positive == 0 {
            r.not_mapped(
                format!("{at}.weightedTargets"),
                "no target with a weight above 0 can be reached; the route is left out",
            );
            return false;
        }
        if split.len() == 1 {
            let (to, _) = split.into_iter().next().unwrap_or_default();
            route.insert("to".into(), json!(to));
            r.mapped(format!("{at}.weightedTargets"), "to");
        } else {
            route.insert("split".into(), Value::Object(split));
            r.mapped(
                format!("{at}.weightedTargets"),
                "split (weights as given, 0 included)",
            );
        }
        true
    }

    fn gateway_fragment(
        &mut self,
        gateway: &VirtualGatewayData,
        routes: &[GatewayRouteData],
    ) -> (String, Value) {
        let name = gateway.virtual_gateway_name();
        let proxy = catalog_name(name);
        let mut r = Resource::new("virtual gateway", name);
        let spec = gateway.spec();
        let listener = spec.and_then(|s| s.listeners().first());
        let port = listener
            .and_then(|l| l.port_mapping())
            .map(|p| p.port())
            .unwrap_or(8080);
        r.mapped(
            "spec.listeners[0].portMapping",
            format!("listener `gateway` on {port}"),
        );
        let listener_tls = listener.and_then(|l| l.tls()).and_then(|t| {
            tls::listener(
                &tls::ListenerTls::of_gateway(t),
                "spec.listeners[0].tls",
                &mut r,
            )
        });
        if listener.is_some_and(|l| l.connection_pool().is_some()) {
            r.not_mapped(
                "spec.listeners[0].connectionPool",
                "the gateway's listener takes App Mesh's default limits (set max_* on its upstreams by hand)",
            );
        }
        if let Some(notes) = self.tls_notes.remove(&format!("virtual gateway {name}")) {
            r.fields.extend(notes);
        }
        for (i, _) in spec
            .map(|s| s.listeners())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .skip(1)
        {
            r.not_mapped(
                format!("spec.listeners[{i}]"),
                "the gateway listens on its first listener's port only",
            );
        }
        if listener.is_some_and(|l| l.health_check().is_some()) {
            r.not_mapped(
                "spec.listeners[0].healthCheck",
                "a gateway's health check is its load balancer's target group health check (Envoy's /ready)",
            );
        }
        let mesh_upstream = format!("{proxy}-mesh");
        let mesh_upstream_h2 = format!("{proxy}-mesh-h2");
        let mut sorted: Vec<&GatewayRouteData> = routes.iter().collect();
        sorted.sort_by_key(|g| {
            let spec = g.spec();
            let http = spec.and_then(|s| s.http_route().or(s.http2_route()));
            let m = http.and_then(|h| h.r#match());
            let specific = match spec.and_then(|s| s.grpc_route()).and_then(|g| g.r#match()) {
                Some(g) if g.service_name().is_some() => Specificity::Exact,
                _ => specificity(
                    m.and_then(|m| m.path()).and_then(|p| p.exact()),
                    m.and_then(|m| m.prefix()),
                    m.and_then(|m| m.path()).and_then(|p| p.regex()),
                ),
            };
            let conditions = match spec.and_then(|s| s.grpc_route()).and_then(|g| g.r#match()) {
                Some(g) => g.metadata().len() + usize::from(g.hostname().is_some()),
                None => m.map_or(0, |m| {
                    m.headers().len()
                        + m.query_parameters().len()
                        + usize::from(m.method().is_some())
                        + usize::from(m.hostname().is_some())
                }),
            };
            (
                spec.and_then(|s| s.priority()).unwrap_or(i32::MAX),
                specific,
                std::cmp::Reverse(conditions),
                g.gateway_route_name().to_string(),
            )
        });
        let mut gateway_routes = Vec::new();
        let mut targets: Vec<String> = Vec::new();
        let mut needs_h2 = false;
        let mut needs_h1 = false;
        for g in sorted {
            let mut gr = Resource::new(
                "gateway route",
                format!("{name}/{}", g.gateway_route_name()),
            );
            let Some(spec) = g.spec() else { continue };
            if let Some(p) = spec.priority() {
                gr.mapped(
                    "spec.priority",
                    format!("the route's place on the gateway ({p})"),
                );
            }
            let mapped = if let Some(h) = spec.http_route() {
                self.gateway_http_route(h, "spec.httpRoute", &mesh_upstream, &mut gr)
                    .inspect(|_| needs_h1 = true)
            } else if let Some(h) = spec.http2_route() {
                self.gateway_http_route(h, "spec.http2Route", &mesh_upstream_h2, &mut gr)
                    .inspect(|_| needs_h2 = true)
            } else if let Some(g) = spec.grpc_route() {
                self.gateway_grpc_route(g, &mesh_upstream_h2, &mut gr)
                    .inspect(|_| needs_h2 = true)
            } else {
                gr.not_mapped("spec", "a gateway route kind this importer does not know");
                None
            };
            if let Some((route, target)) = mapped {
                gr.mapped(
                    "timeout",
                    "none on the gateway hop (0s): the target service's route times the request, as in App Mesh",
                );
                gateway_routes.push((route, target.clone()));
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
            self.report.resources.push(gr);
        }
        // The targets' virtual hosts: the gateway hands each request to its service's routes.
        let mut hosts = Vec::new();
        let mut reached = Vec::new();
        for t in &targets {
            let mut tr = Resource::new("virtual gateway", format!("{name} → {t}"));
            let service_hosts = self.service_host(t, "target", false, &mut tr);
            if !service_hosts.is_empty() {
                hosts.extend(service_hosts);
                reached.push(t.clone());
            }
            r.fields.extend(tr.fields);
        }
        let services: Vec<&str> = targets.iter().map(String::as_str).collect();
        unique_host_names(&mut hosts, &services);
        // Routes to a service that cannot be routed would fail on the gateway's own listener.
        let gateway_routes: Vec<Value> = gateway_routes
            .into_iter()
            .filter(|(_, target)| reached.contains(target))
            .map(|(route, _)| route)
            .collect();
        let mut listeners = Vec::new();
        let access_log = self.access_log(
            spec.and_then(|s| s.logging())
                .and_then(|l| l.access_log())
                .and_then(|a| a.as_file().ok())
                .map(|f| (f.path(), f.format())),
            &mut r,
        );
        let mut upstreams = Map::new();
        if !gateway_routes.is_empty() {
            let mut l = Map::new();
            l.insert("name".into(), json!("gateway"));
            self.bind(&mut l);
            l.insert("port".into(), json!(port));
            l.insert("protocol".into(), json!("http"));
            l.insert("routes".into(), Value::Array(gateway_routes));
            if let Some(tls) = listener_tls {
                l.insert("tls".into(), tls);
            }
            if let Some(log) = &access_log {
                l.insert("access_log".into(), log.clone());
            }
            listeners.push(Value::Object(l));
            listeners.push(json!({
                "name": "mesh",
                "address": "127.0.0.1",
                "port": self.options.egress_port,
                "protocol": "http",
                "virtual_hosts": hosts,
            }));
            if needs_h1 {
                upstreams.insert(
                    mesh_upstream.clone(),
                    json!({ "protocol": "http1", "endpoints": { "static": [format!("127.0.0.1:{}", self.options.egress_port)] } }),
                );
            }
            if needs_h2 {
                upstreams.insert(
                    mesh_upstream_h2.clone(),
                    json!({ "protocol": "http2", "endpoints": { "static": [format!("127.0.0.1:{}", self.options.egress_port)] } }),
                );
            }
        } else {
            r.not_mapped(
                "gatewayRoutes",
                "no gateway route could be mapped: the gateway has no listener",
            );
        }
        if !upstreams.is_empty() {
            r.mapped(
                "circuit breakers",
                format!("App Mesh's defaults ({APP_MESH_CIRCUIT_BREAKER} requests, pending requests and connections) on the upstreams to the `mesh` listener"),
            );
        }
        let arn = gateway.metadata().map(|m| m.arn()).unwrap_or_default();
        let mut proxy_doc = Map::new();
        proxy_doc.insert(
            "aliases".into(),
            json!(aliases(
                arn,
                "virtualGateway",
                gateway.mesh_name(),
                gateway.virtual_gateway_name(),
                &mut r
            )),
        );
        proxy_doc.insert("listeners".into(), Value::Array(listeners));
        let doc = self.document(&proxy, proxy_doc, upstreams);
        self.report.resources.push(r);
        (format!("{proxy}.yaml"), doc)
    }

    /// An HTTP gateway route: its match, App Mesh's rewrites, and the target service's name as
    /// Host, to the gateway's own listener of the mesh's virtual hosts.
    fn gateway_http_route(
        &self,
        h: &HttpGatewayRoute,
        at: &str,
        upstream: &str,
        r: &mut Resource,
    ) -> Option<(Value, String)> {
        let target = h
            .action()
            .and_then(|a| a.target())
            .and_then(|t| t.virtual_service())
            .map(|v| v.virtual_service_name().to_string());
        let Some(target) = target else {
            r.not_mapped(format!("{at}.action.target"), "no virtual service target");
            return None;
        };
        let mut m = Map::new();
        let hm = h.r#match();
        let prefix = hm.and_then(|m| m.prefix());
        if let Some(p) = prefix {
            m.insert("prefix".into(), json!(p));
            r.mapped(format!("{at}.match.prefix"), "match.prefix");
        } else if let Some(path) = hm.and_then(|m| m.path()) {
            if let Some(exact) = path.exact() {
                m.insert("path".into(), json!(exact));
                r.mapped(format!("{at}.match.path.exact"), "match.path");
            } else if let Some(regex) = path.regex() {
                if let Some(why) = regex_refusal(regex) {
                    r.not_mapped(
                        format!("{at}.match.path.regex"),
                        format!("{why}; the gateway route is left out"),
                    );
                    return None;
                }
                m.insert("regex".into(), json!(regex));
                r.mapped(format!("{at}.match.path.regex"), "match.regex");
            }
        }
        if m.is_empty() {
            m.insert("prefix".into(), json!("/"));
        }
        if let Some(hm) = hm {
            let mut headers = Map::new();
            for (i, hd) in hm.headers().iter().enumerate() {
                let cond = cond_of!(hd.r#match(), HeaderMatchMethod);
                match value_match(cond, hd.invert().unwrap_or(false)) {
                    Ok(v) => {
                        let field = format!("{at}.match.headers[{i}]");
                        let name = hd.name().to_ascii_lowercase();
                        if !add_condition(&mut headers, name, v, field, "header", r) {
                            return None;
                        }
                    }
                    Err(why) => {
                        r.not_mapped(
                            format!("{at}.match.headers[{i}]"),
                            format!("{why}; the gateway route is left out"),
                        );
                        return None;
                    }
                }
            }
            if let Some(host) = hm.hostname() {
                let cond = match (host.exact(), host.suffix()) {
                    (Some(e), _) => json!(e),
                    (None, Some(s)) => json!({ "suffix": s }),
                    _ => json!({ "present": true }),
                };
                // The Host header is `:authority` in HTTP/2: Envoy matches both as `host`.
                headers.insert(":authority".into(), cond);
                r.mapped(format!("{at}.match.hostname"), "match.headers[:authority]");
            }
            if !headers.is_empty() {
                m.insert("headers".into(), Value::Object(headers));
            }
            if let Some(method) = hm.method() {
                m.insert("method".into(), json!(method.as_str()));
                r.mapped(format!("{at}.match.method"), "match.method");
            }
            let mut query = Map::new();
            for (i, q) in hm.query_parameters().iter().enumerate() {
                let v = match q.r#match().and_then(|m| m.exact()) {
                    Some(exact) => json!(exact),
                    None => json!({ "present": true }),
                };
                let field = format!("{at}.match.queryParameters[{i}]");
                if !add_condition(
                    &mut query,
                    q.name().to_string(),
                    v,
                    field,
                    "query parameter",
                    r,
                ) {
                    return None;
                }
            }
            if !query.is_empty() {
                m.insert("query".into(), Value::Object(query));
            }
            if hm.port().is_some() {
                r.lossy(
                    format!("{at}.match.port"),
                    "the gateway's one listener port is used",
                );
            }
        }
        let rewrite = h.action().and_then(|a| a.rewrite());
        let mut rw = Map::new();
        let prefix_rewrite = rewrite.and_then(|w| w.prefix());
        match (prefix, prefix_rewrite) {
            (Some(_), Some(p)) if p.value().is_some() => {
                rw.insert("prefix".into(), json!(p.value()));
                r.mapped(
                    format!("{at}.action.rewrite.prefix.value"),
                    "rewrite.prefix",
                );
            }
            (Some(_), Some(p)) if p.default_prefix().map(|d| d.as_str()) == Some("DISABLED") => {
                r.mapped(
                    format!("{at}.action.rewrite.prefix.defaultPrefix"),
                    "DISABLED: the path reaches the service as sent",
                );
            }
            (Some(p), _) if p != "/" => {
                // App Mesh's default: the matched prefix becomes `/`.
                rw.insert("prefix".into(), json!("/"));
                r.mapped(
                    format!("{at}.action.rewrite.prefix"),
                    "App Mesh's default: the matched prefix is rewritten to /",
                );
            }
            _ => {}
        }
        if let Some(path) = rewrite.and_then(|w| w.path()).and_then(|p| p.exact()) {
            rw.remove("prefix");
            rw.insert("path".into(), json!(path));
            r.mapped(format!("{at}.action.rewrite.path.exact"), "rewrite.path");
        }
        if rewrite
            .and_then(|w| w.hostname())
            .and_then(|h| h.default_target_hostname())
            .map(|d| d.as_str())
            == Some("DISABLED")
        {
            r.lossy(
                format!("{at}.action.rewrite.hostname"),
                "DISABLED: the Host is still rewritten to the target service's name, as the gateway reaches the service's routes by it",
            );
        } else {
            r.mapped(
                format!("{at}.action.rewrite.hostname"),
                "App Mesh's default: the Host becomes the target service's name",
            );
        }
        let port = h.action().and_then(|a| a.target()).and_then(|t| t.port());
        rw.insert(
            "host".into(),
            json!(self.gateway_target_host(&target, port, at, r)),
        );
        r.mapped(
            format!("{at}.action.target.virtualService"),
            format!("the routes of virtual service {target} (the gateway's `mesh` listener)"),
        );
        Some((
            json!({
                "match": Value::Object(m),
                "to": upstream,
                "timeout": GATEWAY_HOP_TIMEOUT,
                "rewrite": Value::Object(rw),
            }),
            target,
        ))
    }

    /// The Host a gateway route sends to virtual service `target`: its name, which the
    /// gateway's `mesh` listener routes as the app's own calls; `NAME:PORT` with
    /// `action.target.port`, so the service's virtual host of that port takes it.
    fn gateway_target_host(
        &self,
        target: &str,
        port: Option<i32>,
        at: &str,
        r: &mut Resource,
    ) -> String {
        let Some(port) = port else {
            return target.to_string();
        };
        let field = format!("{at}.action.target.port");
        let ports = self
            .services
            .get(target)
            .map(|service| self.service_ports(service))
            .unwrap_or_default();
        if ports.contains(&port) {
            r.mapped(field, format!("the Host becomes {target}:{port}"));
            format!("{target}:{port}")
        } else {
            r.lossy(
                field,
                format!("virtual service {target} has no listener on {port}: the Host is its name, which takes its first port"),
            );
            target.to_string()
        }
    }

    fn gateway_grpc_route(
        &self,
        g: &aws_sdk_appmesh::types::GrpcGatewayRoute,
        upstream: &str,
        r: &mut Resource,
    ) -> Option<(Value, String)> {
        let at = "spec.grpcRoute";
        let target = g
            .action()
            .and_then(|a| a.target())
            .and_then(|t| t.virtual_service())
            .map(|v| v.virtual_service_name().to_string());
        let Some(target) = target else {
            r.not_mapped(format!("{at}.action.target"), "no virtual service target");
            return None;
        };
        let mut m = Map::new();
        let gm = g.r#match();
        match gm.and_then(|m| m.service_name()) {
            Some(s) => {
                m.insert("grpc".into(), json!({ "service": s }));
                r.mapped(format!("{at}.match.serviceName"), "match.grpc.service");
            }
            None => {
                m.insert("prefix".into(), json!("/"));
            }
        }
        let mut headers = Map::new();
        for (i, md) in gm
            .map(|m| m.metadata())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let cond = cond_of!(md.r#match(), GrpcMetadataMatchMethod);
            match value_match(cond, md.invert().unwrap_or(false)) {
                Ok(v) => {
                    let field = format!("{at}.match.metadata[{i}]");
                    let name = md.name().to_ascii_lowercase();
                    if !add_condition(&mut headers, name, v, field, "metadata", r) {
                        return None;
                    }
                }
                Err(why) => {
                    r.not_mapped(
                        format!("{at}.match.metadata[{i}]"),
                        format!("{why}; the gateway route is left out"),
                    );
                    return None;
                }
            }
        }
        if let Some(host) = gm.and_then(|m| m.hostname()) {
            let cond = match (host.exact(), host.suffix()) {
                (Some(e), _) => json!(e),
                (None, Some(s)) => json!({ "suffix": s }),
                _ => json!({ "present": true }),
            };
            headers.insert(":authority".into(), cond);
            r.mapped(format!("{at}.match.hostname"), "match.headers[:authority]");
        }
        if gm.and_then(|m| m.port()).is_some() {
            r.lossy(
                format!("{at}.match.port"),
                "the gateway's one listener port is used",
            );
        }
        if g.action()
            .and_then(|a| a.rewrite())
            .and_then(|w| w.hostname())
            .and_then(|h| h.default_target_hostname())
            .map(|d| d.as_str())
            == Some("DISABLED")
        {
            r.lossy(
                format!("{at}.action.rewrite.hostname"),
                "DISABLED: the Host is still rewritten to the target service's name, as the gateway reaches the service's routes by it",
            );
        }
        let port = g.action().and_then(|a| a.target()).and_then(|t| t.port());
        let host = self.gateway_target_host(&target, port, at, r);
        if !headers.is_empty() {
            m.insert("headers".into(), Value::Object(headers));
        }
        r.mapped(
            format!("{at}.action.target.virtualService"),
            format!("the routes of virtual service {target}, the Host rewritten to its name"),
        );
        Some((
            json!({
                "match": Value::Object(m),
                "to": upstream,
                "timeout": GATEWAY_HOP_TIMEOUT,
                "rewrite": { "host": host },
            }),
            target,
        ))
    }
}

#[cfg(test)]
mod tests;
