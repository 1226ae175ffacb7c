//! The catalog: the declarative description of every proxy and upstream (catalog v1).
//!
//! A catalog is read from YAML or JSON, checked field by field against the format (unknown fields
//! are errors) and then validated as a whole: references, ports, weights, endpoint sources. Any
//! problem rejects the whole catalog; [`CatalogErrors`] carries every problem found, each with the
//! field path it concerns. The fragments of a directory or S3 prefix merge into one catalog
//! ([`fragments`]): references cross fragments, and a bad fragment is refused alone.

mod duration;
mod endpoint;
pub mod fragments;
mod grpc;
mod iam;
mod located;
pub mod re2;
mod routing;
mod suggest;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::Duration;
pub use endpoint::{Endpoint, EndpointEntry, EndpointParseError, Zone, ZonedEntry, normalize};
pub use fragments::merge;
pub use grpc::{GRPC_RETRY_ON, GrpcService};

/// The discovered endpoints of each upstream, sorted and free of duplicates; an upstream whose
/// source has not answered yet is absent. Discovery makes it, translation reads it.
pub type EndpointMap = BTreeMap<UpstreamName, std::sync::Arc<Vec<Endpoint>>>;
pub use iam::IamRole;
pub use routing::{
    AccessLog, Fault, FaultAbort, FaultDelay, GrpcMatch, HashOn, HeaderChanges, HostRewrite,
    LoadBalancing, LogFormat, Methods, Mirror, Rewrite, ValueMatch, VirtualHost,
};

/// The name of a proxy role; Envoy selects it with `node.cluster`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct ProxyName(pub String);

/// The name of an upstream; it is also the Envoy cluster name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct UpstreamName(pub String);

impl fmt::Display for ProxyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole catalog document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Settings that apply where a route or upstream sets nothing.
    #[serde(default)]
    pub defaults: Defaults,
    /// Mesh-wide settings: the trust domain of proxy identities.
    pub mesh: Option<Mesh>,
    /// One entry per Envoy role.
    #[serde(default)]
    pub proxies: BTreeMap<ProxyName, Proxy>,
    /// Everything routes and TCP listeners can send traffic to.
    #[serde(default)]
    pub upstreams: BTreeMap<UpstreamName, Upstream>,
}

/// Catalog-wide defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Upstream connection timeout (Envoy's default is 5s).
    pub connect_timeout: Option<Duration>,
    /// Route timeout, gRPC routes included (Envoy's default is 15s; gRPC routes have none).
    pub route_timeout: Option<Duration>,
    /// Retry policy for routes that set none.
    pub retries: Option<Retries>,
}

/// `mesh`: what every proxy's identity shares.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    /// The SPIFFE trust domain of proxy identities (`spiffe://TRUST_DOMAIN/proxy/NAME`); it
    /// must be the control plane's `--trust-domain` (default `mesh.local`).
    pub trust_domain: Option<String>,
}

/// Where a TLS certificate and its key come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CertificateSource {
    /// The proxy's own mesh identity, `spiffe://TRUST_DOMAIN/proxy/NAME`, issued and renewed by
    /// the control plane's CA.
    Mesh,
    /// PEM files the control plane reads (relative to the catalog) and reads again when they
    /// change.
    File(CertificateFiles),
    /// A Secrets Manager secret `{"certificate": PEM chain, "private_key": PEM}`, read again
    /// every `--secret-interval`.
    SecretsManager(SecretRef),
    /// An ACM private certificate (issued by AWS Private CA), exported with its key; read again
    /// every `--secret-interval`, so a renewal by ACM reaches the proxies.
    Acm(AcmRef),
}

/// `{ acm: { arn: ARN } }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmRef {
    /// The certificate's ARN, `arn:aws:acm:REGION:ACCOUNT:certificate/ID`.
    pub arn: String,
}

/// `{ secrets_manager: { secret: NAME-OR-ARN } }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name or ARN.
    pub secret: String,
}

/// `certificate: { file: { chain, key } }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, PEM, leaf first.
    pub chain: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// Which CA certificates a TLS peer's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TrustSource {
    /// The control plane's CA (and the next one while it rotates).
    Mesh,
    /// The public roots of the system Envoy runs on (upstreams only).
    System,
    /// A PEM bundle the control plane reads (relative to the catalog) and reads again when it
    /// changes.
    File(PathBuf),
    /// A Secrets Manager secret `{"certificate": PEM bundle}`, read again every
    /// `--secret-interval`.
    SecretsManager(SecretRef),
    /// The CA certificates of AWS Private CAs, by ARN (with the chains above them).
    AcmPca(Vec<String>),
}

/// Whether a TLS listener also takes plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS only.
    #[default]
    Strict,
    /// TLS and plaintext side by side, for turning TLS on before every caller speaks it.
    Permissive,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// `strict` (default) or `permissive`.
    #[serde(default)]
    pub mode: TlsMode,
    /// The certificate the listener presents.
    pub certificate: CertificateSource,
    /// Mutual TLS: clients must present a certificate.
    pub client_certificate: Option<ClientCertificate>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
}

/// The prefix of an `allow` entry that is a DNS SAN as written, never a proxy name
/// (`dns:front`: a single-label name would otherwise read as a proxy).
pub const ALLOW_DNS_PREFIX: &str = "dns:";

/// `tls.client_certificate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    /// What client certificates must chain to.
    pub trust: TrustSource,
    /// Who may connect: proxy names (their mesh identities) or SANs (`spiffe://...`, DNS
    /// names); empty: any client the trust accepts.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `upstreams.NAME.tls`: TLS from the proxy to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Mutual TLS inside the mesh: the upstream is proxy NAME (its certificate must be
    /// `spiffe://TRUST_DOMAIN/proxy/NAME`), and the caller presents its own identity.
    pub mesh: Option<ProxyName>,
    /// The name sent in the TLS handshake (SNI).
    pub sni: Option<String>,
    /// What the upstream's certificate must chain to (required without `mesh`).
    pub trust: Option<TrustSource>,
    /// Names the upstream's certificate must carry (DNS or URI SANs; default: `sni`).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// A client certificate to present.
    pub certificate: Option<CertificateSource>,
}

/// One Envoy role: the listeners it opens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The ports this proxy listens on.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Who may speak for this proxy (`xds-server identity`).
    pub identity: Option<ProxyIdentity>,
    /// Other `node.cluster` values that select this proxy, e.g. the App Mesh virtual node ARN an
    /// Envoy started the App Mesh way presents.
    #[serde(default)]
    pub aliases: Vec<ProxyName>,
    /// The services this proxy's proxyless gRPC clients (`node.cluster` = this proxy) dial as
    /// `xds:///NAME`.
    #[serde(default)]
    pub grpc_services: Vec<GrpcService>,
}

/// The AWS identities whose tasks get this proxy's client certificate.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyIdentity {
    /// IAM role names (in the control plane's own account) or role ARNs: the task roles of
    /// the ECS services this proxy runs in.
    #[serde(default)]
    pub iam_roles: Vec<String>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (gRPC included), routed by the routes.
    Http,
    /// Plain TCP, forwarded to one upstream.
    Tcp,
}

/// One listening port of a proxy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique within the proxy; also the Envoy listener and route configuration name.
    pub name: String,
    /// The port, 1-65535 (kept wide so that 0 or 70000 are reported, not a parse failure).
    pub port: i64,
    /// The IP address to bind (default `0.0.0.0`, every interface of the task).
    pub address: Option<String>,
    /// `http` or `tcp`.
    pub protocol: ListenerProtocol,
    /// Adds the gRPC-Web filter (HTTP only).
    #[serde(default)]
    pub grpc_web: bool,
    /// Adds CORS handling (HTTP only).
    pub cors: Option<Cors>,
    /// HTTP routes, first match wins (one virtual host that takes any Host).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// HTTP virtual hosts chosen by Host, each with its routes (exclusive with `routes`).
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// The upstream of a TCP listener.
    pub to: Option<UpstreamName>,
    /// Weighted upstreams of a TCP listener, per connection (exclusive with `to`).
    pub split: Option<BTreeMap<UpstreamName, i64>>,
    /// TLS on this listener.
    pub tls: Option<ListenerTls>,
    /// HTTP: how long a stream may be idle; TCP: how long a connection may be idle; `0s`: no
    /// limit.
    pub idle_timeout: Option<Duration>,
    /// One log line per request (HTTP) or connection (TCP).
    pub access_log: Option<AccessLog>,
    /// Also takes the connections iptables redirected to this port (ECS `proxyConfiguration`),
    /// which keep the address the app dialled: App Mesh style transparent egress and ingress.
    #[serde(default)]
    pub original_destination: bool,
    /// TCP with `original_destination`: the upstream for each destination port the app
    /// dialled; `to` or `split`, when given, takes the other ports, else they are closed.
    pub ports: Option<BTreeMap<i64, UpstreamName>>,
    /// With `original_destination`: what the catalog does not name goes on to the address the
    /// app dialled (Envoy's ORIGINAL_DST cluster [`PASSTHROUGH_CLUSTER`], as Istio's
    /// `ALLOW_ANY`): a Host no virtual host takes (http), a port no `ports` entry takes (tcp).
    #[serde(default)]
    pub passthrough: bool,
}

/// The Envoy cluster of `passthrough` listeners: ORIGINAL_DST, named as Istio names its own,
/// so that dashboards made for Istio's `cluster.PassthroughCluster.*` stats apply.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

impl Listener {
    /// The route lists of an HTTP listener with their field paths below the listener:
    /// `routes`, or each `virtual_hosts[K].routes`.
    pub fn route_lists(&self) -> Vec<(String, &[Route])> {
        if self.virtual_hosts.is_empty() {
            return vec![("routes".into(), self.routes.as_slice())];
        }
        self.virtual_hosts
            .iter()
            .enumerate()
            .map(|(k, h)| (format!("virtual_hosts[{k}].routes"), h.routes.as_slice()))
            .collect()
    }

    /// Every route of the listener, of every virtual host.
    pub fn all_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .chain(self.virtual_hosts.iter().flat_map(|h| &h.routes))
    }
}

/// CORS policy of an HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed, exactly as browsers send them; `*` allows any.
    pub allow_origins: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// One HTTP route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The single upstream (exclusive with `split`).
    pub to: Option<UpstreamName>,
    /// Weighted upstreams (exclusive with `to`).
    pub split: Option<BTreeMap<UpstreamName, i64>>,
    /// Whole-request timeout, `0s` for none; overrides `defaults.route_timeout`.
    pub timeout: Option<Duration>,
    /// Retry policy; overrides `defaults.retries`.
    pub retries: Option<Retries>,
    /// The path and Host the upstream sees.
    pub rewrite: Option<Rewrite>,
    /// Headers added to and removed from the request before it goes upstream.
    pub request_headers: Option<HeaderChanges>,
    /// Headers added to and removed from the response before it goes to the client.
    pub response_headers: Option<HeaderChanges>,
    /// A share of the requests also goes to another upstream (answers dropped).
    pub mirror: Option<Mirror>,
    /// Delays and aborts injected into a share of the requests.
    pub fault: Option<Fault>,
}

/// Request matching: exactly one of `prefix`, `path`, `regex`, `grpc`, plus optional method,
/// header and query conditions (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix, starting with `/`.
    pub prefix: Option<String>,
    /// Exact path, starting with `/`.
    pub path: Option<String>,
    /// RE2 regular expression over the whole path.
    pub regex: Option<String>,
    /// The calls of one gRPC service (or one method of it), gRPC requests only.
    pub grpc: Option<GrpcMatch>,
    /// The request's method is this one, or one of these.
    pub method: Option<Methods>,
    /// Header name to value match; all must match.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Query parameter name to value match; all must match.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Number of retries after the first attempt.
    pub attempts: i64,
    /// Envoy `retry_on` conditions, e.g. `connect-failure`, `unavailable`; when absent,
    /// [`Retries::DEFAULT_ON`].
    pub on: Option<Vec<String>>,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<Duration>,
}

impl Retries {
    /// The conditions retried when `on` is absent: failures before the upstream saw the
    /// request, so retrying is safe for any method (`reset` is not: the upstream may have
    /// acted on it).
    pub const DEFAULT_ON: &[&str] = &["connect-failure", "refused-stream"];

    /// The conditions retried, as Envoy's `retry_on` lists them.
    pub fn retry_on(&self) -> String {
        match &self.on {
            Some(on) => on.join(","),
            None => Self::DEFAULT_ON.join(","),
        }
    }
}

/// What an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (`http` is taken too, as listeners write it).
    #[serde(alias = "http")]
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Plain TCP.
    Tcp,
}

impl UpstreamProtocol {
    /// Whether Envoy must speak HTTP/2 to it.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }
}

/// One upstream service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http1`, `http2`, `grpc` or `tcp`.
    pub protocol: UpstreamProtocol,
    /// The port for discovered endpoints that carry none.
    pub port: Option<i64>,
    /// Where the endpoints come from: exactly one source.
    pub endpoints: EndpointSources,
    /// Overrides `defaults.connect_timeout`.
    pub connect_timeout: Option<Duration>,
    /// Active health checking.
    pub health_check: Option<HealthCheck>,
    /// Passive health checking (ejection of failing hosts).
    pub outlier_detection: Option<OutlierDetection>,
    /// Circuit breaker: maximum concurrent requests.
    pub max_requests: Option<i64>,
    /// Circuit breaker: maximum connections to the upstream's hosts.
    pub max_connections: Option<i64>,
    /// Circuit breaker: maximum requests waiting for a connection.
    pub max_pending_requests: Option<i64>,
    /// How Envoy picks an endpoint (default `round_robin`).
    pub load_balancing: Option<LoadBalancing>,
    /// What `ring_hash` and `maglev` hash.
    pub hash_on: Option<HashOn>,
    /// TLS to the upstream.
    pub tls: Option<UpstreamTls>,
    /// Prefer endpoints in the calling Envoy's availability zone; the other zones take over
    /// when too few of those are healthy.
    #[serde(default)]
    pub zone_aware: bool,
}

/// The endpoint sources as written; validation checks that exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSources {
    /// Fixed `ip:port` list (an entry may carry its zone: `{ address, zone }`).
    #[serde(rename = "static")]
    pub static_: Option<Vec<EndpointEntry>>,
    /// A JSON file holding `["ip:port", ...]` (entries as in `static`), re-read when it changes;
    /// relative to the catalog.
    pub file: Option<PathBuf>,
    /// AWS Cloud Map service instances.
    pub cloud_map: Option<CloudMapSource>,
    /// Running tasks of an ECS service.
    pub ecs: Option<EcsSource>,
    /// A DNS name that Envoy resolves itself.
    pub dns: Option<DnsSource>,
}

/// `endpoints.cloud_map`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudMapSource {
    /// The namespace name, e.g. `prism-test.atala.local`.
    pub namespace: String,
    /// The service name within the namespace.
    pub service: String,
    /// `healthy` (default) or `all`.
    pub health: Option<String>,
    /// Custom attributes an instance must carry.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `endpoints.ecs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsSource {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name.
    pub service: String,
    /// The container whose port is used.
    pub container: Option<String>,
    /// The port, when not taken from the task definition.
    pub port: Option<i64>,
}

/// `endpoints.dns`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSource {
    /// The name Envoy resolves.
    pub host: String,
    /// The port, or the upstream's `port`.
    pub port: Option<i64>,
    /// How Envoy uses the answers: `strict` (default), every address is an endpoint; `logical`,
    /// one connection target re-resolved as it goes (App Mesh's `responseType: LOADBALANCER`).
    #[serde(default)]
    pub resolve: DnsResolve,
}

/// `endpoints.dns.resolve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsResolve {
    /// Every address the name resolves to is an endpoint (Envoy's `STRICT_DNS`).
    #[default]
    Strict,
    /// New connections go to the first address of the latest answer (Envoy's `LOGICAL_DNS`):
    /// for names behind a load balancer, which answer many changing addresses.
    Logical,
}

/// Active health check settings: exactly one of `grpc`, `http`, `tcp`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// gRPC health checking protocol.
    pub grpc: Option<GrpcHealthCheck>,
    /// HTTP GET on a path.
    pub http: Option<HttpHealthCheck>,
    /// TCP connect.
    pub tcp: Option<TcpHealthCheck>,
    /// Time between checks (default 5s).
    pub interval: Option<Duration>,
    /// Time a check may take (default 1s).
    pub timeout: Option<Duration>,
    /// Failures before a host is unhealthy (default 3).
    pub unhealthy_threshold: Option<i64>,
    /// Successes before a host is healthy again (default 2).
    pub healthy_threshold: Option<i64>,
}

/// `health_check.grpc`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service name sent in the check; empty checks the server as a whole.
    #[serde(default)]
    pub service: String,
}

/// `health_check.http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// The path requested, e.g. `/health`.
    pub path: String,
}

/// `health_check.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {}

/// Passive health checking.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or connection failures) before ejection.
    pub consecutive_5xx: Option<i64>,
    /// Time between ejection sweeps.
    pub interval: Option<Duration>,
    /// Base time a host stays ejected.
    pub base_ejection_time: Option<Duration>,
    /// Upper bound of ejected hosts, in percent.
    pub max_ejection_percent: Option<i64>,
}

/// One problem found in a catalog: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// Field path, e.g. `upstreams.web-v1.endpoints.static[1]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
    /// Where the path is in a YAML document: line and column (from 1).
    pub position: Option<(u64, u64)>,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl CatalogError {
    /// As lists of errors show it: with the line and column when known.
    pub fn located(&self) -> String {
        match (self.path.is_empty(), self.position) {
            (false, Some((line, column))) => {
                format!(
                    "{} (line {line}, column {column}): {}",
                    self.path, self.message
                )
            }
            _ => self.to_string(),
        }
    }
}

/// `errors` with every private key taken out of their texts ([`crate::secrets::private_key_in`]):
/// a key pasted where a path or another value belongs would otherwise be quoted by the error
/// ("cannot read PATH", "invalid type: string ...") into `/readyz`, the log and `validate`'s
/// output. The error keeps its field path and says what was found there. Every error of
/// catalog loading passes here before it leaves the catalog's parsing and checks.
pub fn redacted(errors: Vec<CatalogError>) -> Vec<CatalogError> {
    errors
        .into_iter()
        .map(|mut e| {
            // Quoted by serde, the key's line breaks are `\n`.
            let key_in = |text: &str| {
                crate::secrets::private_key_in(text).or_else(|| {
                    crate::secrets::private_key_in(&text.replace("\\n", "\n").replace("\\r", ""))
                })
            };
            let found = key_in(&e.message).or_else(|| key_in(&e.path));
            if let Some(what) = found {
                if key_in(&e.path).is_some() {
                    e.path = "(a field whose name holds a private key)".into();
                }
                e.message = format!(
                    "the value of this field holds a private key ({what}), not shown here; \
                     name the file that holds it instead"
                );
            }
            e
        })
        .collect()
}

/// Something in a valid catalog that is most likely a mistake (it does not stop the catalog):
/// where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogWarning {
    /// Field path, e.g. `proxies.edge.listeners[0].routes[2]`.
    pub path: String,
    /// What looks wrong there.
    pub message: String,
}

impl fmt::Display for CatalogWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The warnings of a catalog that parsed and validated (for a merged catalog, of the merge):
/// routes that can never match because an earlier route of their listener takes all their
/// requests. `xds-server validate` prints them; `serve` logs them once per catalog load.
pub fn warnings(catalog: &Catalog) -> Vec<CatalogWarning> {
    validate::warnings(catalog)
}

/// Every problem found in one catalog, named by its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogErrors {
    /// The file (or S3 URL) the catalog came from.
    pub source_name: String,
    /// The problems, in document order.
    pub errors: Vec<CatalogError>,
}

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {} error{}",
            self.source_name,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}", e.located())?;
        }
        Ok(())
    }
}

/// A catalog that parsed and validated, with the directory its relative paths are resolved from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedCatalog {
    /// The catalog itself.
    pub catalog: Catalog,
    /// Base for relative `endpoints.file` paths: the catalog file's directory.
    pub base_dir: PathBuf,
}

impl LoadedCatalog {
    /// Resolves an `endpoints.file` path against the catalog's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// The document syntax; JSON when the name ends in `.json`, YAML otherwise.
fn is_json(source_name: &str) -> bool {
    source_name.to_ascii_lowercase().ends_with(".json")
}

/// Deserializes `value` as `T`; an error carries its field path below `at`.
fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> Result<T, Vec<CatalogError>> {
    match deserialize_parts(value, at) {
        (Some(t), errors) if errors.is_empty() => Ok(t),
        (_, errors) => Err(errors),
    }
}

/// [`deserialize_at`], also giving what is left once the values in error are taken out (when
/// that leaves every list as written, so the checks of its values name the right items).
fn deserialize_parts<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> (Option<T>, Vec<CatalogError>) {
    use located::Step;
    // Each error's value is taken out and the rest tried again, so one entry with several
    // mistakes shows them all; paths stay those of the document as written.
    let mut value = value;
    let mut errors = Vec::new();
    let mut taken: Vec<Vec<Step>> = Vec::new();
    for _ in 0..MAX_FORMAT_ERRORS_PER_ENTRY {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => {
                let lists_as_written = !taken
                    .iter()
                    .any(|t| matches!(t.last(), Some(Step::Index(_))));
                return (lists_as_written.then_some(t), errors);
            }
            Err(e) => e,
        };
        let steps: Option<Vec<Step>> = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                _ => None,
            })
            .collect();
        let inner = match &steps {
            Some(steps) => located::display(&as_written(steps, &taken)),
            None => e.path().to_string(),
        };
        let path = match (at.is_empty(), inner.as_str()) {
            (_, "." | "") => at.to_string(),
            (true, _) => inner,
            (false, _) if inner.starts_with('[') => format!("{at}{inner}"),
            (false, _) => format!("{at}.{inner}"),
        };
        let message =
            suggest::with_suggestion(&e.into_inner().to_string(), &grpc::refused_fields(&path));
        let written = steps.as_ref().map(|s| as_written(s, &taken));
        // A field missing because an earlier error's value was taken out is no mistake of its
        // own: the object that lacks it is taken out instead (the entry's other objects are
        // still checked), unless it is the entry itself.
        if message.starts_with("missing field")
            && written.as_ref().is_some_and(|p| {
                taken
                    .iter()
                    .any(|t| t.len() == p.len() + 1 && t.starts_with(p))
            })
        {
            match (steps, written) {
                (Some(steps), Some(written)) if !steps.is_empty() && take(&mut value, &steps) => {
                    taken.push(written);
                    continue;
                }
                _ => break,
            }
        }
        errors.push(CatalogError {
            path,
            message,
            position: None,
        });
        match (steps, written) {
            (Some(steps), Some(written)) if !steps.is_empty() && take(&mut value, &steps) => {
                taken.push(written);
            }
            _ => break,
        }
    }
    (None, errors)
}

/// How many format errors one proxy or upstream reports at most.
const MAX_FORMAT_ERRORS_PER_ENTRY: usize = 20;

/// Removes the value at `steps` from `value`; whether there was one.
fn take(value: &mut serde_json::Value, steps: &[located::Step]) -> bool {
    use located::Step;
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match (at, step) {
            (serde_json::Value::Object(m), Step::Key(k)) => m.get_mut(k),
            (serde_json::Value::Array(a), Step::Index(i)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    match (at, last) {
        (serde_json::Value::Object(m), Step::Key(k)) => m.remove(k).is_some(),
        (serde_json::Value::Array(a), Step::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// A path into the value after the items in `taken` were removed, as the document wrote it:
/// list indices count the removed items again.
fn as_written(steps: &[located::Step], taken: &[Vec<located::Step>]) -> Vec<located::Step> {
    use located::Step;
    let mut out: Vec<Step> = Vec::new();
    for step in steps {
        match step {
            Step::Key(k) => out.push(Step::Key(k.clone())),
            Step::Index(i) => {
                let mut removed: Vec<usize> = taken
                    .iter()
                    .filter(|t| t.len() == out.len() + 1 && t.starts_with(&out))
                    .filter_map(|t| match t.last() {
                        Some(Step::Index(r)) => Some(*r),
                        _ => None,
                    })
                    .collect();
                removed.sort_unstable();
                let mut index = *i;
                for r in removed {
                    if r <= index {
                        index += 1;
                    }
                }
                out.push(Step::Index(index));
            }
        }
    }
    out
}

/// Deserializes each entry of `kind` (`proxies`, `upstreams`) on its own; collects the errors.
fn deserialize_entries<K: Ord, T: serde::de::DeserializeOwned>(
    values: BTreeMap<String, serde_json::Value>,
    kind: &str,
    key: impl Fn(String) -> K,
    errors: &mut Vec<CatalogError>,
) -> BTreeMap<K, T> {
    let mut out = BTreeMap::new();
    for (name, v) in values {
        // With errors, an entry that is left once they are taken out still has its values
        // checked (the catalog is refused either way).
        let (entry, e) = deserialize_parts(v, &format!("{kind}.{name}"));
        errors.extend(e);
        if let Some(entry) = entry {
            out.insert(key(name), entry);
        }
    }
    out
}

/// Deserializes a catalog document entry by entry: a format error (an unknown field, a bad
/// duration) stops only the proxy or upstream it is in, so every entry's first such error is
/// reported at once.
fn deserialize(value: serde_json::Value) -> Result<Catalog, (Vec<CatalogError>, Box<Catalog>)> {
    let serde_json::Value::Object(mut top) = value else {
        return deserialize_at(value, "").map_err(|e| (e, Box::new(Catalog::empty())));
    };
    let proxy_values = top.remove("proxies");
    let upstream_values = top.remove("upstreams");
    let mut errors = Vec::new();
    // The rest (version, defaults, unknown top-level fields) first, as the document has it.
    let rest: Option<Catalog> = deserialize_at(serde_json::Value::Object(top), "")
        .map_err(|e| errors.extend(e))
        .ok();
    let mut entries = |value: Option<serde_json::Value>, key: &str| match value {
        None => BTreeMap::new(),
        Some(v) => {
            deserialize_at::<BTreeMap<String, serde_json::Value>>(v, key).unwrap_or_else(|e| {
                errors.extend(e);
                BTreeMap::new()
            })
        }
    };
    let proxy_values = entries(proxy_values, "proxies");
    let upstream_values = entries(upstream_values, "upstreams");
    let proxies = deserialize_entries(proxy_values, "proxies", ProxyName, &mut errors);
    let upstreams = deserialize_entries(upstream_values, "upstreams", UpstreamName, &mut errors);
    match rest {
        Some(mut catalog) if errors.is_empty() => {
            catalog.proxies = proxies;
            catalog.upstreams = upstreams;
            Ok(catalog)
        }
        _ => {
            // The entries that did parse, for the checks of their own values.
            let parsed = Catalog {
                proxies,
                upstreams,
                ..Catalog::empty()
            };
            Err((errors, Box::new(parsed)))
        }
    }
}

/// Parses and validates a catalog document. `source_name` names it in errors and picks the syntax.
pub fn parse(source_name: &str, text: &str) -> Result<Catalog, CatalogErrors> {
    parse_in(source_name, text, validate::Scope::Own)
}

/// A catalog document as a generic value, before its fields are read: JSON for a `.json`
/// name, else YAML. A key given twice in one object is an error in both (JSON readers
/// otherwise keep the last one silently).
pub fn parse_value(source_name: &str, text: &str) -> Result<serde_json::Value, String> {
    if is_json(source_name) {
        serde_json::from_str::<UniqueKeys>(text)
            .map(|v| v.0)
            .map_err(|e| format!("invalid JSON: {e}"))
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("invalid YAML: {e}"))
    }
}

/// A JSON value whose objects give each key once.
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        use serde_json::Value;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: Error>(self, b: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Bool(b)))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(n.into()))
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(n.into()))
            }
            fn visit_f64<E: Error>(self, n: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(n.into()))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(s.into())))
            }
            fn visit_unit<E: Error>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
                let mut out = Vec::new();
                while let Some(UniqueKeys(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(UniqueKeys(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let UniqueKeys(v) = map.next_value()?;
                    if out.insert(key.clone(), v).is_some() {
                        return Err(A::Error::custom(format!("duplicate key {key:?}")));
                    }
                }
                Ok(UniqueKeys(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses and validates a document, its references looked up in `scope`.
fn parse_in(
    source_name: &str,
    text: &str,
    scope: validate::Scope<'_>,
) -> Result<Catalog, CatalogErrors> {
    let fail = |path: String, message: String| CatalogErrors {
        source_name: source_name.to_string(),
        errors: redacted(vec![CatalogError {
            path,
            message,
            position: None,
        }]),
    };
    // Going through a generic value gives YAML and JSON the same field-path errors.
    let value = parse_value(source_name, text).map_err(|e| fail(String::new(), e))?;
    if value.is_null() {
        return Err(fail(String::new(), "the document is empty".into()));
    }
    let errors = match deserialize(value) {
        Ok(catalog) => {
            let errors = validate::validate(&catalog, scope);
            if errors.is_empty() {
                return Ok(catalog);
            }
            errors
        }
        // The entries that parsed are checked too (their references are not: they may name
        // an entry that did not parse), so one run shows every mistake it can.
        Err((mut errors, parsed)) => {
            errors.extend(validate::validate(&parsed, validate::Scope::Deferred));
            errors
        }
    };
    Err(CatalogErrors {
        source_name: source_name.to_string(),
        errors: redacted(with_positions(source_name, text, errors)),
    })
}

/// Gives each error of a YAML document the line and column of its path.
fn with_positions(
    source_name: &str,
    text: &str,
    mut errors: Vec<CatalogError>,
) -> Vec<CatalogError> {
    if is_json(source_name) {
        return errors;
    }
    let Some(tree) = located::Tree::of(text) else {
        return errors;
    };
    for e in &mut errors {
        // `PATH.to` of a route, `PATH (…)`: the field path is the part before any space.
        let path = e.path.split(' ').next().unwrap_or_default();
        e.position = located::Tree::position(&tree, &located::steps_in(&tree, path));
    }
    errors
}

/// Parses and validates a catalog document given as bytes (it must be UTF-8 text).
pub fn parse_bytes(source_name: &str, bytes: &[u8]) -> Result<Catalog, CatalogErrors> {
    parse_text(source_name, bytes, validate::Scope::Own)
}

/// [`parse_in`] of bytes that must be UTF-8 text.
fn parse_text(
    source_name: &str,
    bytes: &[u8],
    scope: validate::Scope<'_>,
) -> Result<Catalog, CatalogErrors> {
    let text = std::str::from_utf8(bytes).map_err(|_| CatalogErrors {
        source_name: source_name.to_string(),
        errors: vec![CatalogError {
            path: String::new(),
            message: "the catalog is not UTF-8 text".into(),
            position: None,
        }],
    })?;
    parse_in(source_name, text, scope)
}

/// Whether a file or object name is a catalog fragment of a directory or S3 prefix: YAML or JSON.
pub fn is_fragment_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

impl Catalog {
    /// The proxy a `node.cluster` (or `xds-server identity --proxy`) value selects: the proxy
    /// it names, or the one it is an alias of; itself when it is neither.
    pub fn selected_by<'a>(&'a self, name: &'a str) -> &'a str {
        if self.proxies.keys().any(|p| p.0 == name) {
            return name;
        }
        self.proxies
            .iter()
            .find(|(_, p)| p.aliases.iter().any(|a| a.0 == name))
            .map_or(name, |(proxy, _)| proxy.0.as_str())
    }

    /// A catalog of version 1 with nothing in it.
    pub fn empty() -> Catalog {
        Catalog {
            version: 1,
            defaults: Defaults::default(),
            mesh: None,
            proxies: BTreeMap::new(),
            upstreams: BTreeMap::new(),
        }
    }

    /// Writes `defaults` into every route and upstream that sets nothing of its own, and clears
    /// them: the catalog translates to the same resources, now without needing its defaults.
    fn apply_defaults(&mut self) {
        let defaults = std::mem::take(&mut self.defaults);
        for listener in self.proxies.values_mut().flat_map(|p| &mut p.listeners) {
            let hosts = listener
                .virtual_hosts
                .iter_mut()
                .flat_map(|h| &mut h.routes);
            for route in listener.routes.iter_mut().chain(hosts) {
                if route.timeout.is_none() {
                    route.timeout = defaults.route_timeout;
                }
                if route.retries.is_none() {
                    route.retries = defaults.retries.clone();
                }
            }
        }
        // A gRPC service takes the route timeout, not the retries: the default conditions are a
        // proxy's (connection failures), which gRPC clients retry by themselves.
        let services = self.proxies.values_mut().flat_map(|p| &mut p.grpc_services);
        for route in services.flat_map(|s| &mut s.routes) {
            if route.timeout.is_none() {
                route.timeout = defaults.route_timeout;
            }
        }
        for upstream in self.upstreams.values_mut() {
            if upstream.connect_timeout.is_none() {
                upstream.connect_timeout = defaults.connect_timeout;
            }
        }
    }
}

/// The fragments of a catalog directory: its YAML and JSON files (not hidden ones, not
/// subdirectories), in name order, each with its modification time. A file that cannot be
/// read (a dangling symlink, no permission) is a [`fragments::Document::unreadable`] one:
/// it is refused on its own, the others are read. Only a directory that cannot be listed is
/// an error.
pub fn read_dir_fragments(dir: &Path) -> std::io::Result<Vec<fragments::Document>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') || !is_fragment_name(&file_name) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = match std::fs::read(&p) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = format!("cannot read {}: {e}", p.display());
                    return Ok(fragments::Document::unreadable(
                        p.display().to_string(),
                        why,
                    ));
                }
            };
            // The later of its mtime and its ctime: a version put back with its old mtime
            // (`mv a.yaml.bak a.yaml`, `cp -p`) is still the one changed last.
            let source = std::fs::metadata(&p)
                .ok()
                .and_then(|m| {
                    use std::os::unix::fs::MetadataExt;
                    let ctime = u64::try_from(m.ctime()).ok().map(|s| {
                        std::time::UNIX_EPOCH
                            + std::time::Duration::new(
                                s,
                                u32::try_from(m.ctime_nsec()).unwrap_or(0),
                            )
                    });
                    m.modified().ok().max(ctime)
                })
                .and_then(fragments::stamp)
                .map(|t| format!("changed {t}"));
            Ok(fragments::Document {
                source,
                ..fragments::Document::new(p.display().to_string(), bytes)
            })
        })
        .collect()
}

/// Reads, parses and validates a catalog: a file, or a directory whose fragments are merged.
pub fn load_path(path: &Path) -> Result<LoadedCatalog, CatalogErrors> {
    let name = path.display().to_string();
    let unreadable = |e: std::io::Error| CatalogErrors {
        source_name: name.clone(),
        errors: vec![CatalogError {
            path: String::new(),
            message: format!("cannot read: {e}"),
            position: None,
        }],
    };
    if path.is_dir() {
        let fragments = read_dir_fragments(path).map_err(unreadable)?;
        return Ok(LoadedCatalog {
            catalog: merge(&name, &fragments)?,
            base_dir: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let catalog = parse_bytes(&name, &bytes)?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(LoadedCatalog { catalog, base_dir })
}

#[cfg(test)]
mod tests;
