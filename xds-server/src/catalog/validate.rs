//! Whole-catalog validation: everything the format alone cannot say.

use std::collections::BTreeMap;

use super::{
    Catalog, CatalogError, CatalogWarning, CertificateSource, Duration, EndpointSources,
    HealthCheck, ListenerProtocol, ListenerTls, ProxyName, Retries, Route, RouteMatch, TrustSource,
    Upstream, UpstreamName, UpstreamProtocol, UpstreamTls, re2,
};

/// Where a catalog's references (routes and TCP listeners to upstreams, TLS settings to
/// proxies) are looked up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope<'a> {
    /// In the catalog itself: a whole catalog in one document.
    Own,
    /// Not yet: a fragment alone, before the set it joins is known.
    Deferred,
    /// In the merged catalog a fragment joins.
    Merged(&'a Catalog),
}

/// What a reference needs from the rest of the catalog: the name it points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Target {
    /// A proxy role (of any fragment).
    Proxy(ProxyName),
    /// An upstream (of any fragment).
    Upstream(UpstreamName),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Upstream(u) => write!(f, "upstreams.{u}"),
            Target::Proxy(p) => write!(f, "proxies.{p}"),
        }
    }
}

/// The references of `fragment` that `merged` (the catalog it joins) does not satisfy, each
/// with the name it points at. The fragment's own checks have passed already.
pub(super) fn references(fragment: &Catalog, merged: &Catalog) -> Vec<(CatalogError, Target)> {
    let v = run(fragment, Scope::Merged(merged));
    v.targets
        .into_iter()
        .map(|(i, target)| (v.errors[i].clone(), target))
        .collect()
}

/// The longest alias: the longest `node.cluster` the server takes.
const MAX_ALIAS: usize = 1024;

/// Envoy `retry_on` conditions accepted in `retries.on` (HTTP and gRPC ones).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Collects every problem of a parsed catalog, its references looked up in `scope`; an empty
/// list means it is valid.
pub(super) fn validate(catalog: &Catalog, scope: Scope<'_>) -> Vec<CatalogError> {
    run(catalog, scope).errors
}

fn run<'a>(catalog: &'a Catalog, scope: Scope<'a>) -> Validator<'a> {
    let mut v = Validator {
        errors: Vec::new(),
        scope,
        targets: Vec::new(),
        used: Default::default(),
    };
    if catalog.version != 1 {
        v.err(
            "version",
            format!("version {} is not supported (only 1)", catalog.version),
        );
    }
    if let Some(r) = &catalog.defaults.retries {
        v.retries("defaults.retries", r);
    }
    v.envoy_duration("defaults.connect_timeout", catalog.defaults.connect_timeout);
    for (name, proxy) in &catalog.proxies {
        v.name(&format!("proxies.{name}"), &name.0);
        for (i, role) in proxy
            .identity
            .iter()
            .flat_map(|id| &id.iam_roles)
            .enumerate()
        {
            if let Err(e) = super::IamRole::parse(role) {
                v.err(&format!("proxies.{name}.identity.iam_roles[{i}]"), e);
            }
        }
        v.aliases(catalog, name, proxy);
        v.grpc_services(catalog, name, proxy);
        let mut ports: BTreeMap<i64, &str> = BTreeMap::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, l) in proxy.listeners.iter().enumerate() {
            let at = format!("proxies.{name}.listeners[{i}]");
            v.name(&format!("{at}.name"), &l.name);
            if let Some(first) = names.insert(&l.name, i) {
                v.err(
                    &format!("{at}.name"),
                    format!(
                        "listener name {:?} is already used by listeners[{first}]",
                        l.name
                    ),
                );
            }
            if v.port(&format!("{at}.port"), l.port)
                && let Some(other) = ports.insert(l.port, &l.name)
            {
                v.err(
                    &format!("{at}.port"),
                    format!("port {} is already used by listener {other:?}", l.port),
                );
            }
            if let Some(addr) = &l.address
                && addr.parse::<std::net::IpAddr>().is_err()
            {
                v.err(
                    &format!("{at}.address"),
                    format!("{addr:?} is not an IP address"),
                );
            }
            if let Some(tls) = &l.tls {
                v.listener_tls(&format!("{at}.tls"), tls, catalog);
            }
            if let Some(path) = l.access_log.as_ref().and_then(|a| a.path.as_ref())
                && !path.is_absolute()
            {
                v.err(
                    &format!("{at}.access_log.path"),
                    format!("{} must be an absolute path (Envoy's working directory is not the catalog's)", path.display()),
                );
            }
            if l.passthrough {
                v.passthrough(&at, l, catalog);
            }
            // TCP chains by the port dialled: of a tcp listener, or beside an http one's
            // HTTP chain, which takes the other ports.
            if let Some(ports) = &l.ports {
                v.ports(
                    &format!("{at}.ports"),
                    ports,
                    l.original_destination,
                    catalog,
                );
            }
            match l.protocol {
                ListenerProtocol::Tcp => {
                    match (&l.to, &l.split, &l.ports) {
                        // `passthrough` takes what no `ports` entry takes.
                        (None, None, _) if l.passthrough => {}
                        (None, None, None) => v.err(
                            &format!("{at}.to"),
                            "a tcp listener needs `to` (or `split`, or `ports`)".into(),
                        ),
                        // Only `ports`: a connection to any other port is closed.
                        (None, None, Some(_)) => {}
                        _ => v.destination(&at, &l.to, &l.split, catalog, false),
                    }
                    if !l.routes.is_empty() {
                        v.err(
                            &format!("{at}.routes"),
                            "a tcp listener has no routes; use `to`".into(),
                        );
                    }
                    if !l.virtual_hosts.is_empty() {
                        v.err(
                            &format!("{at}.virtual_hosts"),
                            "a tcp listener has no virtual hosts; use `to`".into(),
                        );
                    }
                    if l.grpc_web {
                        v.err(
                            &format!("{at}.grpc_web"),
                            "only http listeners take grpc_web".into(),
                        );
                    }
                    if l.cors.is_some() {
                        v.err(
                            &format!("{at}.cors"),
                            "only http listeners take cors".into(),
                        );
                    }
                }
                ListenerProtocol::Http => {
                    if l.to.is_some() {
                        v.err(
                            &format!("{at}.to"),
                            "an http listener routes with `routes`, not `to`".into(),
                        );
                    }
                    if l.split.is_some() {
                        v.err(
                            &format!("{at}.split"),
                            "an http listener splits in its routes, not with `split`".into(),
                        );
                    }
                    match (l.routes.is_empty(), l.virtual_hosts.is_empty()) {
                        (true, true) => v.err(
                            &format!("{at}.routes"),
                            "an http listener needs at least one route (or `virtual_hosts`)".into(),
                        ),
                        (false, false) => v.err(
                            &format!("{at}.virtual_hosts"),
                            "give `routes` (any Host) or `virtual_hosts`, not both".into(),
                        ),
                        _ => {}
                    }
                    v.virtual_hosts(&at, &l.virtual_hosts);
                    for (list, routes) in l.route_lists() {
                        for (j, r) in routes.iter().enumerate() {
                            v.route(&format!("{at}.{list}[{j}]"), r, catalog);
                        }
                    }
                    if let Some(cors) = &l.cors
                        && cors.allow_origins.is_empty()
                    {
                        v.err(
                            &format!("{at}.cors.allow_origins"),
                            "must list at least one origin".into(),
                        );
                    }
                }
            }
        }
        // A port's chain keeps its TCP stats under `tcp.LISTENER_PORT.` (translate): a listener
        // of that very name would count into the same stats, and neither could be told apart.
        for (i, l) in proxy.listeners.iter().enumerate() {
            for port in l.ports.iter().flat_map(|p| p.keys()) {
                let stats = format!("{}_{port}", l.name);
                if let Some(other) = names.get(stats.as_str()) {
                    v.err(
                        &format!("proxies.{name}.listeners[{i}].ports.{port}"),
                        format!(
                            "its stats (tcp.{stats}.) would be those of listener {stats:?} (listeners[{other}]); rename one of the listeners"
                        ),
                    );
                }
            }
        }
    }
    for (name, u) in &catalog.upstreams {
        v.upstream(&format!("upstreams.{name}"), u);
        if let Some(tls) = &u.tls {
            v.upstream_tls(&format!("upstreams.{name}.tls"), tls, catalog);
        }
    }
    if let Some(td) = catalog
        .mesh
        .as_ref()
        .and_then(|m| m.trust_domain.as_deref())
    {
        let ok = !td.is_empty()
            && td.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            });
        if !ok {
            v.err(
                "mesh.trust_domain",
                format!("{td:?} is not a SPIFFE trust domain (lower-case letters, digits, '-', '.', '_')"),
            );
        }
    }
    v
}

/// What is valid but most likely a mistake: routes that can never match, because an earlier
/// route of the same listener takes every request they would.
pub(super) fn warnings(catalog: &Catalog) -> Vec<CatalogWarning> {
    let mut out = Vec::new();
    let used = run(catalog, Scope::Own).used;
    for name in catalog.upstreams.keys().filter(|u| !used.contains(*u)) {
        out.push(CatalogWarning {
            path: format!("upstreams.{name}"),
            message: "no route, split, mirror or TCP listener uses it (fine if another fragment of the catalog does)".into(),
        });
    }
    for (name, u) in &catalog.upstreams {
        let zoneless = |list: &Vec<super::EndpointEntry>| {
            list.iter()
                .all(|e| e.endpoint().is_ok_and(|e| e.zone.is_none()))
        };
        if u.zone_aware && u.endpoints.static_.as_ref().is_some_and(zoneless) {
            out.push(CatalogWarning {
                path: format!("upstreams.{name}.zone_aware"),
                message: "no static endpoint names its zone (`{ address, zone }`), so every zone is preferred alike".into(),
            });
        }
    }
    for (name, proxy) in &catalog.proxies {
        for (i, l) in proxy.listeners.iter().enumerate() {
            if let Some(tls) = &l.tls
                && tls.mode == super::TlsMode::Permissive
                && tls
                    .client_certificate
                    .as_ref()
                    .is_some_and(|c| !c.allow.is_empty())
            {
                out.push(CatalogWarning {
                    path: format!("proxies.{name}.listeners[{i}].tls.mode"),
                    message: "permissive: plaintext callers get in whatever `allow` says (they name nobody); switch to strict once every caller speaks TLS".into(),
                });
            }
            // A Host of a port a TCP chain takes is never read.
            for (k, h) in l.virtual_hosts.iter().enumerate() {
                for (j, d) in h.domains.iter().enumerate() {
                    let port = d.rsplit_once(':').and_then(|(_, p)| p.parse::<i64>().ok());
                    if let Some(p) =
                        port.filter(|p| l.ports.as_ref().is_some_and(|m| m.contains_key(p)))
                    {
                        out.push(CatalogWarning {
                            path: format!("proxies.{name}.listeners[{i}].virtual_hosts[{k}].domains[{j}]"),
                            message: format!("never reached: `ports` takes connections to port {p} as TCP before any Host is read"),
                        });
                    }
                }
            }
            for (list, routes) in l.route_lists() {
                route_warnings(
                    &format!("proxies.{name}.listeners[{i}].{list}"),
                    routes,
                    &mut out,
                );
            }
        }
        for (i, s) in proxy.grpc_services.iter().enumerate() {
            let at = format!("proxies.{name}.grpc_services[{i}]");
            route_warnings(&format!("{at}.routes"), &s.routes, &mut out);
            for (j, r) in s.routes.iter().enumerate() {
                let named = r.to.iter().chain(r.split.iter().flat_map(|s| s.keys()));
                for (name, u) in named.filter_map(|n| Some((n, catalog.upstreams.get(n)?))) {
                    for ignored in super::grpc::ignored_by_grpc_clients(u) {
                        out.push(CatalogWarning {
                            path: format!("{at}.routes[{j}]"),
                            message: format!("upstream \"{name}\" {ignored}"),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The warnings of one route list (a listener's `routes`, or a virtual host's) at `at`.
fn route_warnings(at: &str, routes: &[Route], out: &mut Vec<CatalogWarning>) {
    for (k, r) in routes.iter().enumerate() {
        if let Some(size) = r.matcher.regex.as_deref().and_then(re2::may_be_too_big) {
            out.push(CatalogWarning {
                path: format!("{at}[{k}].match.regex"),
                message: format!(
                    "may compile to more RE2 instructions than Envoy's limit of {} (estimated {size}); `validate --envoy` tells for sure",
                    re2::MAX_PROGRAM_SIZE
                ),
            });
        }
    }
    for (k, later) in routes.iter().enumerate() {
        let Some(j) = routes[..k]
            .iter()
            .position(|earlier| shadows(&earlier.matcher, &later.matcher))
        else {
            continue;
        };
        out.push(CatalogWarning {
            path: format!("{at}[{k}]"),
            message: format!(
                "never matches: routes[{j}] ({}) comes first and takes every request this route would",
                describe_match(&routes[j].matcher)
            ),
        });
    }
}

/// Whether every request `later` matches is matched by `earlier` (so `earlier`, coming first,
/// takes them all). Conservative: `false` when it cannot tell (regexes, other than the same one).
pub(super) fn shadows(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    // The earlier route's conditions must all be conditions of the later route too.
    let conditions = earlier
        .headers
        .iter()
        .all(|(name, value)| later.headers.get(name) == Some(value))
        && earlier
            .query
            .iter()
            .all(|(name, value)| later.query.get(name) == Some(value))
        && earlier.method.as_ref().is_none_or(|m| {
            later
                .method
                .as_ref()
                .is_some_and(|l| l.0.iter().all(|x| m.0.contains(x)))
        })
        // A gRPC match also asks for a gRPC content type.
        && (earlier.grpc.is_none() || later.grpc.is_some());
    if !conditions {
        return false;
    }
    match (path_of(earlier), path_of(later)) {
        (PathOf::Prefix(p), PathOf::Prefix(q) | PathOf::Exact(q)) => q.starts_with(p.as_str()),
        // Every path starts with '/'.
        (PathOf::Prefix(p), PathOf::Regex(_)) => p == "/",
        (PathOf::Exact(p), PathOf::Exact(q)) => p == q,
        (PathOf::Regex(r), PathOf::Regex(q)) => r == q,
        _ => false,
    }
}

/// The path condition of a match, a gRPC one as the path it stands for.
enum PathOf<'a> {
    Prefix(String),
    Exact(String),
    Regex(&'a str),
    None,
}

fn path_of(m: &RouteMatch) -> PathOf<'_> {
    match (&m.prefix, &m.path, &m.regex, &m.grpc) {
        (Some(p), _, _, _) => PathOf::Prefix(p.clone()),
        (None, Some(p), _, _) => PathOf::Exact(p.clone()),
        (None, None, Some(r), _) => PathOf::Regex(r),
        (None, None, None, Some(g)) if g.method.is_some() => PathOf::Exact(g.path()),
        (None, None, None, Some(g)) => PathOf::Prefix(g.path()),
        (None, None, None, None) => PathOf::None,
    }
}

fn describe_match(m: &RouteMatch) -> String {
    let mut what = match (&m.prefix, &m.path, &m.regex, &m.grpc) {
        (Some(p), _, _, _) => format!("prefix {p}"),
        (None, Some(p), _, _) => format!("path {p}"),
        (None, None, Some(r), _) => format!("regex {r}"),
        (None, None, None, Some(g)) => format!("grpc {}", g.path()),
        (None, None, None, None) => "no match".into(),
    };
    if let Some(methods) = &m.method {
        what.push_str(&format!(", method {}", methods.0.join("|")));
    }
    if !m.query.is_empty() {
        let query: Vec<String> = m.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        what.push_str(&format!(", query {}", query.join("&")));
    }
    if m.headers.is_empty() {
        format!("{what}, any headers")
    } else {
        let headers: Vec<String> = m.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{what}, headers {}", headers.join(", "))
    }
}

pub(super) struct Validator<'a> {
    pub(super) errors: Vec<CatalogError>,
    /// Where references are looked up.
    scope: Scope<'a>,
    /// The errors that are unsatisfied references (by index), with the name each points at.
    targets: Vec<(usize, Target)>,
    /// Every upstream a route, a split, a mirror or a TCP listener names.
    used: std::collections::BTreeSet<UpstreamName>,
}

impl<'a> Validator<'a> {
    pub(super) fn err(&mut self, path: &str, message: String) {
        self.errors.push(CatalogError {
            path: path.to_string(),
            message,
            position: None,
        });
    }

    /// An unsatisfied reference: an error that another fragment could fix.
    pub(super) fn ref_err(&mut self, path: &str, message: String, target: Target) {
        self.targets.push((self.errors.len(), target));
        self.err(path, message);
    }

    /// Upstream `name` where references are looked up, if it is there.
    pub(super) fn lookup_upstream(
        &self,
        own: &'a Catalog,
        name: &UpstreamName,
    ) -> Option<&'a Upstream> {
        self.lookup(own)?.upstreams.get(name)
    }

    /// The catalog references are looked up in, `None` while they are deferred.
    fn lookup(&self, own: &'a Catalog) -> Option<&'a Catalog> {
        match self.scope {
            Scope::Own => Some(own),
            Scope::Deferred => None,
            Scope::Merged(merged) => Some(merged),
        }
    }

    /// `passthrough`: a redirected connection's original destination is what it goes on to, so
    /// it needs `original_destination`; it takes what nothing else does, so an http listener
    /// names its Hosts (`virtual_hosts`, none `*`) and a tcp one has no `to` or `split`; it
    /// sends plaintext on as it came, so no `tls`; and its Envoy cluster's name is its own.
    fn passthrough(&mut self, at: &str, l: &super::Listener, catalog: &Catalog) {
        let field = format!("{at}.passthrough");
        if !l.original_destination {
            self.err(
                &field,
                "passes connections on to the address the app dialled, which only a listener with `original_destination: true` knows".into(),
            );
        }
        if l.tls.is_some() {
            self.err(
                &field,
                "not with `tls`: passed-through connections go on as they came".into(),
            );
        }
        match l.protocol {
            ListenerProtocol::Http => {
                if l.virtual_hosts.is_empty() {
                    self.err(
                        &field,
                        "an http listener's passthrough takes the Hosts no virtual host takes: give `virtual_hosts` (`routes` take every Host)".into(),
                    );
                }
                for (k, h) in l.virtual_hosts.iter().enumerate() {
                    if h.domains.iter().any(|d| d == "*") {
                        self.err(
                            &format!("{at}.virtual_hosts[{k}].domains"),
                            "\"*\" takes every Host, so nothing would reach the listener's passthrough".into(),
                        );
                    }
                }
            }
            ListenerProtocol::Tcp => {
                if l.to.is_some() || l.split.is_some() {
                    self.err(
                        &field,
                        "a tcp listener's passthrough takes the ports `ports` does not: not with `to` or `split`".into(),
                    );
                }
            }
        }
        let reserved = UpstreamName(super::PASSTHROUGH_CLUSTER.into());
        if catalog.upstreams.contains_key(&reserved) {
            self.err(
                &field,
                format!(
                    "upstream {:?} would share the passthrough's Envoy cluster name: rename it",
                    super::PASSTHROUGH_CLUSTER
                ),
            );
        }
    }

    /// A listener's TLS: a version Envoy knows, client trust that is not the public roots,
    /// `allow` entries that name proxies or SANs.
    fn listener_tls(&mut self, at: &str, tls: &ListenerTls, catalog: &'a Catalog) {
        self.certificate(&format!("{at}.certificate"), &tls.certificate);
        if let Some(c) = &tls.client_certificate {
            self.trust(&format!("{at}.client_certificate.trust"), &c.trust);
        }
        if let Some(v) = &tls.min_version
            && !matches!(v.as_str(), "1.2" | "1.3")
        {
            self.err(
                &format!("{at}.min_version"),
                format!("{v:?} is not a TLS version this proxy accepts (\"1.2\" or \"1.3\")"),
            );
        }
        let Some(client) = &tls.client_certificate else {
            return;
        };
        if client.trust == TrustSource::System {
            self.err(
                &format!("{at}.client_certificate.trust"),
                "client certificates chain to `mesh` or a `file` bundle, not to the system's public roots".into(),
            );
        }
        // `dns:NAME`: a DNS SAN as written, never a proxy (a single label needs it). Checked
        // whatever the scope: it names nothing of the catalog.
        for (i, who) in client.allow.iter().enumerate() {
            let at = format!("{at}.client_certificate.allow[{i}]");
            if let Some(name) = who.strip_prefix(super::ALLOW_DNS_PREFIX) {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'))
                {
                    self.err(
                        &at,
                        format!("{who:?}: {name:?} is no DNS name (letters, digits, '-', '.')"),
                    );
                } else if client.trust == TrustSource::Mesh {
                    self.err(
                        &at,
                        format!("{who:?}: mesh certificates carry no DNS names, only their spiffe:// identity"),
                    );
                }
            }
        }
        let Some(catalog) = self.lookup(catalog) else {
            return;
        };
        for (i, who) in client.allow.iter().enumerate() {
            let at = format!("{at}.client_certificate.allow[{i}]");
            if who.starts_with(super::ALLOW_DNS_PREFIX) {
                continue;
            }
            let proxy = catalog.proxies.contains_key(&ProxyName(who.clone()));
            let uri = who.contains("://");
            let dns = !uri && who.contains('.');
            if !proxy && !uri && !dns {
                self.ref_err(
                    &at,
                    format!("{who:?} names no proxy of the catalog, and is no SAN (spiffe://..., a DNS name; a single-label one as dns:{who})"),
                    Target::Proxy(ProxyName(who.clone())),
                );
            } else if !proxy && dns && client.trust == TrustSource::Mesh {
                // Mesh certificates carry only their spiffe:// identity: a DNS name never
                // matches one, so this is a proxy name misspelt.
                self.ref_err(
                    &at,
                    format!("{who:?} names no proxy of the catalog, and mesh certificates carry no DNS names"),
                    Target::Proxy(ProxyName(who.clone())),
                );
            }
        }
    }

    fn upstream_tls(&mut self, at: &str, tls: &UpstreamTls, catalog: &'a Catalog) {
        if let Some(c) = &tls.certificate {
            self.certificate(&format!("{at}.certificate"), c);
        }
        if let Some(t) = &tls.trust {
            self.trust(&format!("{at}.trust"), t);
        }
        match &tls.mesh {
            Some(server) => {
                let others = tls.sni.is_some()
                    || tls.trust.is_some()
                    || !tls.subject_alt_names.is_empty()
                    || tls.certificate.is_some();
                if others {
                    self.err(
                        at,
                        "`mesh` sets everything itself: no sni, trust, subject_alt_names or certificate beside it".into(),
                    );
                }
                let serves_mesh = |catalog: &Catalog| {
                    catalog.proxies.get(server).is_some_and(|p| {
                        p.listeners.iter().any(|l| {
                            l.tls
                                .as_ref()
                                .is_some_and(|t| t.certificate == CertificateSource::Mesh)
                        })
                    })
                };
                if self.lookup(catalog).is_some_and(|c| !serves_mesh(c)) {
                    self.ref_err(
                        &format!("{at}.mesh"),
                        format!("proxy \"{server}\" has no listener with `tls.certificate: mesh`"),
                        Target::Proxy(server.clone()),
                    );
                }
            }
            None if tls.trust.is_none() => self.err(
                &format!("{at}.trust"),
                "required (mesh, system, { file: PATH }, { secrets_manager: { secret } } or { acm_pca: [ARN] }): a TLS connection always checks its peer".into(),
            ),
            None if tls.trust == Some(TrustSource::Mesh)
                && !tls.subject_alt_names.iter().any(|s| s.starts_with("spiffe://")) =>
            {
                self.err(
                    &format!("{at}.subject_alt_names"),
                    "mesh certificates carry only spiffe:// names: use `mesh: PROXY`, or list the spiffe:// identity here".into(),
                );
            }
            None => {
                if tls.sni.is_none() && tls.subject_alt_names.is_empty() {
                    self.err(
                        &format!("{at}.sni"),
                        "give `sni` or `subject_alt_names`: the names the upstream's certificate must carry".into(),
                    );
                }
            }
        }
    }

    /// A certificate source's AWS references are ARNs of the right kind.
    fn certificate(&mut self, at: &str, source: &CertificateSource) {
        if let CertificateSource::Acm(r) = source
            && !is_arn(&r.arn, "acm", "certificate/")
        {
            self.err(
                &format!("{at}.acm.arn"),
                format!("{:?} is not an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)", r.arn),
            );
        }
    }

    /// A trust source's AWS references are ARNs of the right kind.
    fn trust(&mut self, at: &str, source: &TrustSource) {
        let TrustSource::AcmPca(arns) = source else {
            return;
        };
        if arns.is_empty() {
            self.err(
                &format!("{at}.acm_pca"),
                "list at least one AWS Private CA ARN".into(),
            );
        }
        for (i, arn) in arns.iter().enumerate() {
            if !is_arn(arn, "acm-pca", "certificate-authority/") {
                self.err(
                    &format!("{at}.acm_pca[{i}]"),
                    format!("{arn:?} is not an AWS Private CA ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)"),
                );
            }
        }
    }

    /// Names end up in Envoy resource names and metrics: keep them to a safe alphabet.
    pub(super) fn name(&mut self, path: &str, name: &str) {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.err(
                path,
                format!("{name:?} is not a valid name (letters, digits, '-', '_', '.')"),
            );
        }
    }

    /// A proxy's `aliases`: each selects exactly one proxy, so none may be a proxy's name or
    /// another alias.
    fn aliases(&mut self, catalog: &Catalog, name: &ProxyName, proxy: &super::Proxy) {
        for (i, alias) in proxy.aliases.iter().enumerate() {
            let at = format!("proxies.{name}.aliases[{i}]");
            let ok = !alias.0.is_empty()
                && alias.0.len() <= MAX_ALIAS
                && alias.0.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                self.err(
                    &at,
                    format!(
                        "{:?} is not a valid alias (1-{MAX_ALIAS} printable characters, no spaces)",
                        alias.0
                    ),
                );
                continue;
            }
            if catalog.proxies.contains_key(alias) {
                self.err(
                    &at,
                    format!("{:?} is the name of proxy {:?}", alias.0, alias.0),
                );
            }
            if let Some(first) = proxy.aliases[..i].iter().position(|a| a == alias) {
                self.err(&at, format!("{:?} is already aliases[{first}]", alias.0));
            }
            let other = catalog
                .proxies
                .iter()
                .find(|(n, p)| *n < name && p.aliases.contains(alias));
            if let Some((other, _)) = other {
                self.err(
                    &at,
                    format!("{:?} is already an alias of proxy {:?}", alias.0, other.0),
                );
            }
        }
    }

    fn port(&mut self, path: &str, port: i64) -> bool {
        let ok = (1..=65535).contains(&port);
        if !ok {
            self.err(path, format!("port {port} is out of range (1-65535)"));
        }
        ok
    }

    /// Durations Envoy requires to be more than zero, and counts in milliseconds: a zero or
    /// sub-millisecond one is NACKed or becomes zero.
    pub(super) fn envoy_duration(&mut self, path: &str, d: Option<Duration>) {
        if let Some(d) = d
            && d.get() < std::time::Duration::from_millis(1)
        {
            self.err(
                path,
                format!("{d} is too short: Envoy needs at least 1ms here"),
            );
        }
    }

    pub(super) fn positive(&mut self, path: &str, n: i64) {
        if n <= 0 || n > i64::from(u32::MAX) {
            self.err(path, format!("{n} must be a positive whole number"));
        }
    }

    /// A reference to an upstream, of this catalog or (for a fragment) of any fragment.
    pub(super) fn upstream_ref(
        &mut self,
        path: &str,
        to: &UpstreamName,
        catalog: &'a Catalog,
        http: bool,
    ) {
        self.used.insert(to.clone());
        let Some(catalog) = self.lookup(catalog) else {
            return;
        };
        let target = Target::Upstream(to.clone());
        match catalog.upstreams.get(to) {
            None => self.ref_err(
                path,
                format!("upstream \"{to}\" is not defined in `upstreams`"),
                target,
            ),
            Some(u) if http && u.protocol == UpstreamProtocol::Tcp => self.ref_err(
                path,
                format!(
                    "upstream \"{to}\" has protocol tcp; HTTP routes need http1, http2 or grpc"
                ),
                target,
            ),
            Some(_) => {}
        }
    }

    pub(super) fn route(&mut self, at: &str, r: &Route, catalog: &'a Catalog) {
        let m = &r.matcher;
        let kinds = [
            m.prefix.is_some(),
            m.path.is_some(),
            m.regex.is_some(),
            m.grpc.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if kinds != 1 {
            self.err(
                &format!("{at}.match"),
                "needs exactly one of `prefix`, `path`, `regex`, `grpc`".into(),
            );
        }
        for (field, value) in [("prefix", &m.prefix), ("path", &m.path)] {
            if let Some(p) = value
                && !p.starts_with('/')
            {
                self.err(
                    &format!("{at}.match.{field}"),
                    format!("{p:?} must start with '/'"),
                );
            }
        }
        if let Some(re) = &m.regex {
            self.re2(&format!("{at}.match.regex"), re);
        }
        self.match_conditions(&format!("{at}.match"), m);
        self.route_changes(at, r, catalog);
        self.destination(at, &r.to, &r.split, catalog, true);
        if let Some(retries) = &r.retries {
            self.retries(&format!("{at}.retries"), retries);
        }
    }

    /// A TCP listener's upstream per destination port: ports chosen by the address the app
    /// dialled, so only with `original_destination`.
    fn ports(
        &mut self,
        at: &str,
        ports: &BTreeMap<i64, UpstreamName>,
        original_destination: bool,
        catalog: &'a Catalog,
    ) {
        if !original_destination {
            self.err(
                at,
                "`ports` chooses by the port the app dialled, which only a listener with `original_destination: true` knows".into(),
            );
        }
        if ports.is_empty() {
            self.err(at, "needs at least one port".into());
        }
        for (port, to) in ports {
            let p = format!("{at}.{port}");
            self.port(&p, *port);
            self.upstream_ref(&p, to, catalog, false);
        }
    }

    /// Where a route or TCP listener sends traffic: exactly one of `to` and `split`; a split's
    /// weights 0 or more (0 parks an upstream, a canary at rest, as App Mesh and Envoy allow),
    /// at least one above 0, adding up to what Envoy counts in.
    pub(super) fn destination(
        &mut self,
        at: &str,
        to: &Option<UpstreamName>,
        split: &Option<BTreeMap<UpstreamName, i64>>,
        catalog: &'a Catalog,
        http: bool,
    ) {
        match (to, split) {
            (Some(to), None) => self.upstream_ref(&format!("{at}.to"), to, catalog, http),
            (None, Some(split)) => {
                if split.is_empty() {
                    self.err(&format!("{at}.split"), "needs at least one upstream".into());
                }
                for (to, w) in split {
                    let p = format!("{at}.split.{to}");
                    self.upstream_ref(&p, to, catalog, http);
                    if *w < 0 || *w > i64::from(u32::MAX) {
                        self.err(&p, format!("weight {w} is not 0-{}", u32::MAX));
                    }
                }
                let total: i64 = split
                    .values()
                    .map(|w| (*w).clamp(0, i64::from(u32::MAX)))
                    .sum();
                if !split.is_empty() && total == 0 {
                    self.err(
                        &format!("{at}.split"),
                        "at least one weight must be greater than 0".into(),
                    );
                } else if total > i64::from(u32::MAX) {
                    self.err(
                        &format!("{at}.split"),
                        format!(
                            "the weights add up to {total}, more than Envoy's {}",
                            u32::MAX
                        ),
                    );
                }
            }
            _ => self.err(at, "needs exactly one of `to` and `split`".into()),
        }
    }

    /// A regular expression Envoy's RE2 compiles.
    pub(super) fn re2(&mut self, path: &str, re: &str) {
        match regex::Regex::new(re) {
            Err(e) => self.err(path, format!("invalid regular expression: {e}")),
            Ok(_) => {
                if let Some(refusal) = re2::refusal(re) {
                    self.err(path, refusal.to_string());
                }
            }
        }
    }

    /// A header name in a match or a header change: lower case, no spaces.
    pub(super) fn header_name(&mut self, path: &str, name: &str) -> bool {
        let ok = !name.is_empty()
            && !name
                .chars()
                .any(|c| c.is_ascii_uppercase() || c.is_whitespace());
        if !ok {
            self.err(
                path,
                "header names must be non-empty lower case without spaces".into(),
            );
        }
        ok
    }

    fn retries(&mut self, at: &str, r: &Retries) {
        if r.attempts < 0 || r.attempts > 100 {
            self.err(
                &format!("{at}.attempts"),
                format!("{} is not 0-100", r.attempts),
            );
        }
        let on = r.on.as_deref().unwrap_or_default();
        if r.on.is_some() && on.is_empty() {
            self.err(
                &format!("{at}.on"),
                format!(
                    "lists no retry conditions, so nothing would be retried: name at least one, or leave `on` out for {}",
                    Retries::DEFAULT_ON.join(", ")
                ),
            );
        }
        for (i, on) in on.iter().enumerate() {
            if !RETRY_ON.contains(&on.as_str()) {
                self.err(
                    &format!("{at}.on[{i}]"),
                    format!(
                        "unknown retry condition {on:?} (known: {})",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
    }

    fn upstream(&mut self, at: &str, u: &Upstream) {
        if let Some(name) = at.strip_prefix("upstreams.") {
            self.name(at, name);
        }
        if let Some(p) = u.port {
            self.port(&format!("{at}.port"), p);
        }
        if let Some(n) = u.max_requests {
            self.positive(&format!("{at}.max_requests"), n);
        }
        self.load_balancing(at, u);
        self.envoy_duration(&format!("{at}.connect_timeout"), u.connect_timeout);
        self.sources(&format!("{at}.endpoints"), &u.endpoints, u.port.is_some());
        if u.zone_aware && u.endpoints.dns.is_some() {
            // Envoy resolves the name itself: its addresses come with no zone to prefer.
            self.err(
                &format!("{at}.zone_aware"),
                "needs endpoints that carry their zone (static, file, cloud_map or ecs); `dns` names resolve to bare addresses".into(),
            );
        }
        if let Some(hc) = &u.health_check {
            self.health_check(&format!("{at}.health_check"), hc, u.protocol);
        }
        if let Some(od) = &u.outlier_detection {
            let at = format!("{at}.outlier_detection");
            self.envoy_duration(&format!("{at}.interval"), od.interval);
            self.envoy_duration(&format!("{at}.base_ejection_time"), od.base_ejection_time);
            if let Some(n) = od.consecutive_5xx {
                self.positive(&format!("{at}.consecutive_5xx"), n);
            }
            if let Some(p) = od.max_ejection_percent
                && !(0..=100).contains(&p)
            {
                self.err(
                    &format!("{at}.max_ejection_percent"),
                    format!("{p} is not 0-100"),
                );
            }
        }
    }

    fn sources(&mut self, at: &str, s: &EndpointSources, has_port: bool) {
        let set = [
            s.static_.is_some(),
            s.file.is_some(),
            s.cloud_map.is_some(),
            s.ecs.is_some(),
            s.dns.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set != 1 {
            self.err(
                at,
                format!(
                    "needs exactly one source of static, file, cloud_map, ecs, dns ({set} given)"
                ),
            );
        }
        if let Some(list) = &s.static_ {
            for (i, e) in list.iter().enumerate() {
                if let Err(err) = e.endpoint() {
                    self.err(&format!("{at}.static[{i}]"), err.to_string());
                }
            }
        }
        if let Some(f) = &s.file
            && f.as_os_str().is_empty()
        {
            self.err(&format!("{at}.file"), "must name a file".into());
        }
        if let Some(dns) = &s.dns {
            if dns.host.is_empty() {
                self.err(&format!("{at}.dns.host"), "must name a host".into());
            }
            match dns.port {
                Some(p) => {
                    self.port(&format!("{at}.dns.port"), p);
                }
                None if !has_port => self.err(
                    &format!("{at}.dns.port"),
                    "needs a port here or in the upstream's `port`".into(),
                ),
                None => {}
            }
        }
        if let Some(c) = &s.cloud_map {
            if c.namespace.is_empty() || c.service.is_empty() {
                self.err(
                    &format!("{at}.cloud_map"),
                    "needs `namespace` and `service`".into(),
                );
            }
            if let Some(h) = c
                .health
                .as_deref()
                .filter(|h| !matches!(*h, "healthy" | "all"))
            {
                self.err(
                    &format!("{at}.cloud_map.health"),
                    format!("{h:?} is not `healthy` or `all`"),
                );
            }
        }
        if let Some(e) = &s.ecs {
            if e.cluster.is_empty() || e.service.is_empty() {
                self.err(&format!("{at}.ecs"), "needs `cluster` and `service`".into());
            }
            if let Some(p) = e.port {
                self.port(&format!("{at}.ecs.port"), p);
            }
        }
    }

    fn health_check(&mut self, at: &str, hc: &HealthCheck, protocol: UpstreamProtocol) {
        let kinds = [hc.grpc.is_some(), hc.http.is_some(), hc.tcp.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if kinds != 1 {
            self.err(at, "needs exactly one of `grpc`, `http`, `tcp`".into());
        }
        if hc.grpc.is_some() && !protocol.is_http2() {
            self.err(
                &format!("{at}.grpc"),
                "gRPC health checks need an upstream with protocol grpc or http2".into(),
            );
        }
        self.envoy_duration(&format!("{at}.interval"), hc.interval);
        self.envoy_duration(&format!("{at}.timeout"), hc.timeout);
        if let Some(http) = &hc.http
            && !http.path.starts_with('/')
        {
            self.err(
                &format!("{at}.http.path"),
                format!("{:?} must start with '/'", http.path),
            );
        }
        for (field, n) in [
            ("unhealthy_threshold", hc.unhealthy_threshold),
            ("healthy_threshold", hc.healthy_threshold),
        ] {
            if let Some(n) = n {
                self.positive(&format!("{at}.{field}"), n);
            }
        }
    }
}

/// Whether `arn` is an ARN of `service` whose resource starts with `resource` (and goes on).
fn is_arn(arn: &str, service: &str, resource: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(),
        ["arn", partition, svc, region, account, res]
            if !partition.is_empty()
                && *svc == service
                && !region.is_empty()
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && res.len() > resource.len()
                && res.starts_with(resource))
}
