//! The identity endpoint on the xDS port, `POST /identity/v1/certificate`: a proxy proves its
//! task role with a signed `sts:GetCallerIdentity` request ([`super::sts`]), and gets a
//! short-lived client certificate for its proxy, signed from the key of its CSR.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::rate::TokenBucket;

use axum::extract::{DefaultBodyLimit, Extension, Json};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, watch};

use super::sts::{self, AttestError, Caller, SignedRequest, Sts};
use crate::ca::{CaSet, Leaf};
use crate::catalog::{IamRole, LoadedCatalog, ProxyName};
use crate::metrics::Metrics;
use crate::tls::Peer;

/// Where the endpoint answers.
pub const PATH: &str = "/identity/v1/certificate";

/// What `xds-server identity` posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The signed STS request that says who is asking.
    pub sts: SignedRequest,
    /// A PKCS#10 certificate signing request (PEM) for the key the proxy made and keeps.
    pub csr: String,
    /// The proxy it wants to be (the bootstrap's `--proxy`); may be left out when its role is
    /// the identity of one proxy only.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// The answer: a client certificate for one proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The proxy it is for.
    pub proxy: String,
    /// Its URI SAN, `spiffe://TRUST_DOMAIN/proxy/NAME`.
    pub spiffe_id: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// The CA certificates to trust (the signing one, and the next one when rotating), PEM.
    pub trust_bundle: String,
    /// When the certificate expires, seconds since the Unix epoch.
    pub not_after: u64,
}

/// The body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
}

/// How the endpoint is set up.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The ids proxies may sign into `X-Xds-Server-Id` (`--identity-server-id`, or else every
    /// `--xds-tls-name`); the first is the one this control plane signs its own request with.
    pub server_ids: Vec<String>,
    /// How long a certificate is valid.
    pub ttl: Duration,
    /// Requests each source address may make per minute (in a burst; then one every
    /// 60/N seconds); 0: no limit.
    pub per_ip_per_minute: u32,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
}

/// Where STS is: the region (from the environment, as the SDK finds it) and its endpoint.
#[derive(Debug)]
struct StsPlace {
    region: String,
    endpoint: String,
}

/// Why a request got no certificate: the HTTP status and the words.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl From<AttestError> for Refused {
    fn from(e: AttestError) -> Refused {
        let status = match e {
            AttestError::Malformed(_) => StatusCode::BAD_REQUEST,
            AttestError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            AttestError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        Refused::new(status, e.reason(), e.to_string())
    }
}

/// A token bucket ([`common::rate::TokenBucket`]) per source address.
#[derive(Debug, Default)]
struct PerIp {
    buckets: HashMap<IpAddr, TokenBucket>,
    swept: Option<Instant>,
}

/// Above this many addresses, full buckets are forgotten (at most every [`SWEEP_EVERY`]).
const MAX_TRACKED: usize = 10_000;
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl PerIp {
    /// Takes one token for `ip`; false when its bucket is empty. `per_minute` 0 is no limit.
    fn take(&mut self, ip: IpAddr, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        let burst = f64::from(per_minute);
        let rate = burst / 60.0;
        if self.buckets.len() > MAX_TRACKED
            && self
                .swept
                .is_none_or(|t| now.duration_since(t) > SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(burst, now))
            .try_take(rate, burst, now)
    }
}

/// The most STS calls in flight at once; more requests are answered 503.
const MAX_STS_CALLS: usize = 64;
/// How long a request body may take to arrive.
const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// A CA with less time left than this signs nothing.
const MIN_CA_LEFT: Duration = Duration::from_secs(10 * 60);

/// Issues proxy certificates.
pub struct Issuer {
    config: IssuerConfig,
    cas: Arc<CaSet>,
    catalog: watch::Receiver<Option<Arc<LoadedCatalog>>>,
    /// Made at the first request (it reads the system's root certificates).
    sts: OnceCell<Sts>,
    sts_calls: tokio::sync::Semaphore,
    /// Found at the first request: the SDK may ask the instance metadata for the region.
    place: OnceCell<StsPlace>,
    home_account: OnceCell<String>,
    limiter: Mutex<PerIp>,
    metrics: Metrics,
}

/// The proxies whose `identity.iam_roles` name `caller`'s role; `home` is the control plane's
/// own account (for bare role names), asked only when a bare name could match.
async fn proxies_of_role<F, Fut>(
    catalog: &crate::catalog::Catalog,
    caller: &Caller,
    home: F,
) -> Result<Vec<ProxyName>, Refused>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, Refused>>,
{
    let roles = |p: &crate::catalog::Proxy| -> Vec<IamRole> {
        p.identity
            .iter()
            .flat_map(|id| &id.iam_roles)
            .filter_map(|r| IamRole::parse(r).ok())
            .collect()
    };
    let needs_home = catalog
        .proxies
        .values()
        .flat_map(roles)
        .any(|r| matches!(&r, IamRole::Name(n) if n.eq_ignore_ascii_case(&caller.role)));
    let home = if needs_home {
        Some(home().await?)
    } else {
        None
    };
    Ok(catalog
        .proxies
        .iter()
        .filter(|(_, p)| {
            roles(p).iter().any(|r| {
                r.matches(
                    &caller.partition,
                    &caller.account,
                    &caller.role,
                    home.as_deref(),
                )
            })
        })
        .map(|(name, _)| name.clone())
        .collect())
}

/// Which of `proxies` (those of the caller's role) a request for `asked` gets; `caller` names
/// the caller in refusals.
fn choose(
    caller: &Caller,
    proxies: &[ProxyName],
    asked: Option<&str>,
) -> Result<ProxyName, Refused> {
    let role = caller.role.as_str();
    let list = || {
        proxies
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (asked, proxies) {
        (_, []) => Err(Refused::new(
            StatusCode::FORBIDDEN,
            "unknown_role",
            format!(
                "role {role:?} ({}) is no proxy's identity: the catalog lists roles in proxies.NAME.identity.iam_roles, by ARN, or by name for roles of the control plane's own account",
                caller.arn
            ),
        )),
        (Some(asked), _) => proxies
            .iter()
            .find(|p| p.0 == asked)
            .cloned()
            .ok_or_else(|| {
                Refused::new(
                    StatusCode::FORBIDDEN,
                    "wrong_proxy",
                    format!(
                        "role {role:?} is not an identity of proxy {asked:?} (it is of: {})",
                        list()
                    ),
                )
            }),
        (None, [one]) => Ok(one.clone()),
        (None, _) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "ambiguous",
            format!(
                "role {role:?} is the identity of proxies {}: name one (--proxy)",
                list()
            ),
        )),
    }
}

impl Issuer {
    /// An issuer signing with `cas.current`, mapping roles through the catalogs of `catalog`.
    pub fn new(
        config: IssuerConfig,
        cas: Arc<CaSet>,
        catalog: watch::Receiver<Option<Arc<LoadedCatalog>>>,
        metrics: Metrics,
    ) -> Result<Issuer, String> {
        if let Some(endpoint) = sts::endpoint_override()
            && let Some(rest) = endpoint.strip_prefix("http://")
        {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            let loopback = host == "localhost"
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                || host
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "the STS endpoint {endpoint} is plain HTTP beyond loopback: its answers, which decide who gets a certificate, could be forged on the way; use https"
                ));
            }
            tracing::warn!(sts = %endpoint, "identities are checked by a plain-HTTP STS endpoint on loopback (an emulator?)");
        }
        if config.server_ids.is_empty() {
            return Err("no server id (--identity-server-id or --xds-tls-name)".into());
        }
        Ok(Issuer {
            sts: OnceCell::new(),
            sts_calls: tokio::sync::Semaphore::new(MAX_STS_CALLS),
            place: OnceCell::new(),
            config,
            cas,
            catalog,
            home_account: OnceCell::new(),
            limiter: Mutex::new(PerIp::default()),
            metrics,
        })
    }

    /// Where STS is, found once.
    async fn place(&self) -> &StsPlace {
        self.place
            .get_or_init(|| async {
                let region = common::aws::sdk_config()
                    .await
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "us-east-1".into());
                let endpoint = sts::endpoint(&region);
                tracing::info!(sts = %endpoint, "identity requests are checked by STS");
                StsPlace { region, endpoint }
            })
            .await
    }

    async fn sts(&self) -> Result<&Sts, Refused> {
        self.sts
            .get_or_try_init(|| async { Sts::new() })
            .await
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "sts_client", e))
    }

    /// Asks STS who signed `req`, at most [`MAX_STS_CALLS`] at a time.
    async fn caller_arn(&self, req: &SignedRequest) -> Result<String, Refused> {
        let Ok(_permit) = self.sts_calls.try_acquire() else {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many identity requests in flight; try again in a second",
            ));
        };
        Ok(self.sts().await?.caller_arn(req).await?)
    }

    /// The control plane's own AWS account, from its own credentials through STS, once.
    async fn home_account(&self) -> Result<String, Refused> {
        self.home_account
            .get_or_try_init(|| async {
                let failed = |e: String| {
                    Refused::new(
                        StatusCode::BAD_GATEWAY,
                        "home_account",
                        format!("cannot learn this control plane's own AWS account, which bare role names need (name the role by ARN instead): {e}"),
                    )
                };
                use aws_credential_types::provider::ProvideCredentials;
                let config = common::aws::sdk_config().await;
                let provider = config
                    .credentials_provider()
                    .ok_or_else(|| failed("no AWS credentials".into()))?;
                let credentials = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| failed(common::aws::error_chain(&e)))?;
                let place = self.place().await;
                let req = sts::sign_request(
                    &credentials,
                    &place.region,
                    &place.endpoint,
                    &self.config.server_ids[0],
                    "",
                    SystemTime::now(),
                )
                .map_err(failed)?;
                let arn = self.caller_arn(&req).await.map_err(|e| failed(e.message))?;
                let account = Caller::account_of(&arn)
                    .ok_or_else(|| failed(format!("STS named {arn:?}")))?;
                tracing::info!(account = %account, "this control plane's AWS account (for bare role names)");
                Ok(account)
            })
            .await
            .cloned()
    }

    async fn issue(
        &self,
        peer: &Peer,
        request: CertificateRequest,
    ) -> Result<CertificateResponse, Refused> {
        // What costs nothing first: a request that proves nothing takes no token.
        let forward = sts::check(
            &request.sts,
            &self.place().await.endpoint,
            &self.config.server_ids,
            &request.csr,
            SystemTime::now(),
        )?;
        if let Some(ip) = peer.remote.map(|a| a.ip()) {
            let allowed = self.limiter.lock().unwrap_or_else(|e| e.into_inner()).take(
                ip,
                self.config.per_ip_per_minute,
                Instant::now(),
            );
            if !allowed {
                return Err(Refused::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many identity requests from {ip}; try again in a few seconds"),
                ));
            }
        }
        let arn = self.caller_arn(&forward).await?;
        let caller = Caller::parse(&arn)?;
        let Some(catalog) = self.catalog.borrow().clone() else {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_catalog",
                "no catalog is loaded yet",
            ));
        };
        let proxies = proxies_of_role(&catalog.catalog, &caller, || self.home_account()).await?;
        // An Envoy started the App Mesh way asks as its virtual node's ARN, an alias: the
        // certificate names the proxy the alias selects, as the xDS port checks it.
        let asked = request
            .proxy
            .as_deref()
            .map(|p| catalog.catalog.selected_by(p));
        let proxy = choose(&caller, &proxies, asked)?;
        let ca_left = self
            .cas
            .current
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if ca_left < MIN_CA_LEFT {
            tracing::error!(ca_left = ?ca_left, "the CA expires within 10 minutes: no proxy certificates are issued (rotate it: --ca-next)");
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ca_expiring",
                "the control plane's CA expires within 10 minutes and signs nothing more",
            ));
        }
        if ca_left < self.config.ttl {
            tracing::warn!(ca_left = ?ca_left, ttl = ?self.config.ttl, "proxy certificates end with the CA, sooner than --identity-ttl (rotate the CA: --ca-next)");
        }
        let spiffe_id = super::spiffe_id(&self.config.trust_domain, &proxy);
        let leaf = Leaf {
            uris: vec![spiffe_id.clone()],
            client: true,
            ttl: self.config.ttl,
            ..Leaf::default()
        };
        // A request that does not parse is the caller's to mend; AWS Private CA failing
        // (throttled, unreachable) is not: the caller tries again.
        if let Err(e) = rcgen::CertificateSigningRequestParams::from_pem(&request.csr) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "bad_csr",
                format!("the certificate signing request: {e}"),
            ));
        }
        let remote = matches!(self.cas.current, crate::ca::Signer::Pca(_));
        let (certificate, not_after) = self
            .cas
            .current
            .sign_request(&request.csr, &leaf)
            .await
            .map_err(|e| {
                if remote {
                    tracing::error!(error = %e, "AWS Private CA did not sign a proxy certificate");
                    Refused::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ca_unavailable",
                        "the control plane's CA did not sign; try again",
                    )
                } else {
                    Refused::new(
                        StatusCode::BAD_REQUEST,
                        "bad_csr",
                        format!("the certificate signing request: {e}"),
                    )
                }
            })?;
        let not_after = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        tracing::info!(proxy = %proxy, caller = %caller.arn, remote = ?peer.remote, not_after, "identity issued");
        Ok(CertificateResponse {
            proxy: proxy.0,
            spiffe_id,
            certificate,
            trust_bundle: self.cas.bundle_pem(),
            not_after,
        })
    }
}

/// The largest request body (a signed request and a CSR are 2-4 kB).
const MAX_BODY: usize = 64 * 1024;

/// The request's body, read within [`BODY_DEADLINE`] and [`MAX_BODY`].
async fn read_request(body: axum::body::Body) -> Result<CertificateRequest, Refused> {
    let malformed = |m: String| Refused::new(StatusCode::BAD_REQUEST, "malformed", m);
    let bytes = tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_BODY))
        .await
        .map_err(|_| {
            malformed(format!(
                "the request body did not arrive within {BODY_DEADLINE:?}"
            ))
        })?
        .map_err(|e| malformed(format!("the request body: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("the request body: {e}")))
}

async fn handle(
    axum::extract::State(issuer): axum::extract::State<Arc<Issuer>>,
    peer: Option<Extension<Peer>>,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    let outcome = match read_request(body).await {
        Ok(request) => issuer.issue(&peer, request).await,
        Err(refused) => Err(refused),
    };
    match outcome {
        Ok(answer) => {
            issuer
                .metrics
                .identity_requests
                .with_label_values(&["issued"])
                .inc();
            issuer
                .metrics
                .identity_issue
                .observe(started.elapsed().as_secs_f64());
            Json(answer).into_response()
        }
        Err(refused) => {
            issuer
                .metrics
                .identity_requests
                .with_label_values(&[refused.reason])
                .inc();
            tracing::warn!(remote = ?peer.remote, reason = refused.reason, error = %refused.message, "identity request refused");
            (
                refused.status,
                Json(ErrorBody {
                    error: refused.message,
                }),
            )
                .into_response()
        }
    }
}

/// The endpoint's route, to merge with the xDS services on the xDS port.
pub fn router(issuer: Arc<Issuer>) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(issuer)
}

/// The route of a control plane that issues no identities: 404 with `why`, so that
/// `xds-server identity` says so instead of retrying.
pub fn unavailable_router(why: &'static str) -> axum::Router {
    let answer = move || async move {
        (StatusCode::NOT_FOUND, Json(ErrorBody { error: why.into() })).into_response()
    };
    axum::Router::new().route(PATH, axum::routing::post(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(yaml: &str) -> crate::catalog::Catalog {
        crate::catalog::parse_bytes("test.yaml", yaml.as_bytes()).unwrap()
    }

    fn caller(arn: &str) -> Caller {
        Caller::parse(arn).unwrap()
    }

    const CATALOG: &str = r#"
version: 1
proxies:
  connector: { identity: { iam_roles: [connector-task-role] } }
  edge: { identity: { iam_roles: ["arn:aws:iam::222222222222:role/edge-role", shared] } }
  web: { identity: { iam_roles: [shared] } }
  plain: {}
"#;

    async fn home_ok() -> Result<String, Refused> {
        Ok("111111111111".into())
    }

    async fn home_never() -> Result<String, Refused> {
        panic!("the home account is not needed for an ARN")
    }

    #[tokio::test]
    async fn roles_map_to_their_proxies() {
        let c = catalog(CATALOG);
        let of = |arn: &'static str| {
            let c = c.clone();
            async move {
                proxies_of_role(&c, &caller(arn), home_ok)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|p| p.0)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            of("arn:aws:sts::111111111111:assumed-role/connector-task-role/t").await,
            ["connector"]
        );
        // A role of the same name in another account is not the catalog's.
        assert!(
            of("arn:aws:sts::999999999999:assumed-role/connector-task-role/t")
                .await
                .is_empty()
        );
        assert_eq!(
            of("arn:aws:sts::111111111111:assumed-role/shared/t").await,
            ["edge", "web"]
        );
        let edge = proxies_of_role(
            &c,
            &caller("arn:aws:sts::222222222222:assumed-role/edge-role/t"),
            home_never,
        )
        .await
        .unwrap();
        assert_eq!(edge, [ProxyName("edge".into())]);
    }

    #[tokio::test]
    async fn a_proxy_asked_for_by_its_alias_is_the_proxy_it_selects() {
        const ARN: &str = "arn:aws:appmesh:us-east-1:111111111111:mesh/m/virtualNode/web";
        let c = catalog(
            &format!("{CATALOG}  other: {{ aliases: [\"{ARN}-2\"] }}\n")
                .replace("web: {", &format!("web: {{ aliases: [\"{ARN}\"], ")),
        );
        let r = caller("arn:aws:sts::111111111111:assumed-role/shared/t");
        let proxies = proxies_of_role(&c, &r, home_ok).await.unwrap();
        assert_eq!(
            choose(&r, &proxies, Some(c.selected_by(ARN))).unwrap().0,
            "web"
        );
        // An alias of a proxy the role is not the identity of is refused, naming that proxy.
        let refused = choose(&r, &proxies, Some(c.selected_by(&format!("{ARN}-2")))).unwrap_err();
        assert_eq!(refused.reason, "wrong_proxy");
        assert!(refused.message.contains("\"other\""), "{}", refused.message);
    }

    #[test]
    fn one_proxy_is_chosen_or_the_request_is_refused() {
        let two = [ProxyName("edge".into()), ProxyName("web".into())];
        let r = caller("arn:aws:sts::111111111111:assumed-role/r/t");
        assert_eq!(choose(&r, &two, Some("web")).unwrap().0, "web");
        let refused = choose(&r, &two, Some("connector")).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("edge, web"), "{}", refused.message);
        assert_eq!(
            choose(&r, &two, None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(choose(&r, &two[..1], None).unwrap().0, "edge");
        let unknown = choose(&r, &[], Some("edge")).unwrap_err();
        assert_eq!(unknown.reason, "unknown_role");
        assert!(
            unknown
                .message
                .contains("arn:aws:sts::111111111111:assumed-role/r/t")
        );
    }

    #[test]
    fn each_address_gets_its_own_bucket() {
        let mut limiter = PerIp::default();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(a, 3, now));
        }
        assert!(!limiter.take(a, 3, now));
        assert!(limiter.take(b, 3, now));
        // 3 a minute: one more after 20 s.
        assert!(limiter.take(a, 3, now + Duration::from_secs(21)));
        assert!(!limiter.take(a, 3, now + Duration::from_secs(21)));
        // 0: no limit.
        for _ in 0..1000 {
            assert!(limiter.take(a, 0, now));
        }
    }
}
