//! The certificates and keys proxies get over SDS, and the task that keeps them: mesh
//! identities the CA issues and renews, the CA's trust bundle, and PEM files read again when
//! they change.
//!
//! Secret names say where a secret comes from: `mesh/identity/PROXY`, `mesh/trust`,
//! `file/CHAIN-PATH`, `trust/BUNDLE-PATH`. Keys never leave this module but inside the SDS
//! resources of the proxy they belong to; `Debug` never prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::ca::{CaSet, Leaf};
use crate::catalog::{Catalog, CertificateFiles, LoadedCatalog, ProxyName};
use crate::metrics::Metrics;

/// The mesh trust bundle: the CA's certificate, and the next CA's while it rotates.
pub const TRUST: &str = "mesh/trust";
/// The public roots of the control plane's system (`SSL_CERT_FILE`, else the usual bundle
/// paths), sent to Envoy like any bundle: what `trust: system` checks against does not
/// depend on the Envoy image.
pub const SYSTEM_TRUST: &str = "trust/system";

/// Where the system's root bundle is, as OpenSSL looks for it.
fn system_bundle() -> Result<PathBuf, String> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(PathBuf::from(file));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        "/etc/ssl/ca-bundle.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| "no system root bundle (install ca-certificates, or set SSL_CERT_FILE)".into())
}

/// The trust domain of the catalog's proxy identities.
pub fn trust_domain(catalog: &Catalog) -> &str {
    catalog
        .mesh
        .as_ref()
        .and_then(|m| m.trust_domain.as_deref())
        .unwrap_or(DEFAULT_TRUST_DOMAIN)
}

/// The trust domain when neither the catalog nor `--trust-domain` sets one.
pub const DEFAULT_TRUST_DOMAIN: &str = "mesh.local";

/// The secret of a proxy's mesh identity.
pub fn identity_name(proxy: &ProxyName) -> String {
    format!("mesh/identity/{proxy}")
}

/// The secret of a certificate read from files.
pub fn file_name(files: &CertificateFiles) -> String {
    format!("file/{}", files.chain.display())
}

/// The secret of a certificate kept in Secrets Manager.
pub fn secrets_manager_name(secret: &str) -> String {
    format!("secretsmanager/{secret}")
}

/// The secret of an ACM certificate.
pub fn acm_name(arn: &str) -> String {
    format!("acm/{arn}")
}

/// The secret of a trust bundle kept in Secrets Manager.
pub fn trust_secrets_manager_name(secret: &str) -> String {
    format!("trust/secretsmanager/{secret}")
}

/// The secret of the CA certificates of AWS Private CAs.
pub fn acm_pca_trust_name(arns: &[String]) -> String {
    format!("trust/acm-pca/{}", arns.join(","))
}

/// The secret of a trust bundle read from a file.
pub fn trust_file_name(path: &Path) -> String {
    format!("trust/{}", path.display())
}

/// What a secret is made of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The mesh identity of a proxy.
    Identity(ProxyName),
    /// The mesh trust bundle.
    Trust,
    /// A certificate and key from files (relative to the catalog).
    File(CertificateFiles),
    /// A trust bundle from a file (relative to the catalog).
    TrustFile(PathBuf),
    /// The system's public roots.
    SystemTrust,
    /// A certificate and key in a Secrets Manager secret.
    SecretsManager(String),
    /// A trust bundle in a Secrets Manager secret.
    TrustSecretsManager(String),
    /// An ACM private certificate with its key.
    Acm(String),
    /// The CA certificates of AWS Private CAs.
    AcmPcaTrust(Vec<String>),
}

impl Need {
    /// Where the secret comes from, in words.
    pub fn describe(&self) -> String {
        match self {
            Need::Identity(p) => {
                format!("the mesh identity of proxy {p}, issued by the control plane's CA")
            }
            Need::Trust => "the control plane's CA certificates".into(),
            Need::File(f) => format!("the files {} and {}", f.chain.display(), f.key.display()),
            Need::TrustFile(p) => format!("the file {}", p.display()),
            Need::SystemTrust => "the public roots of the control plane's system".into(),
            Need::SecretsManager(name) | Need::TrustSecretsManager(name) => {
                format!("the Secrets Manager secret {name}")
            }
            Need::Acm(arn) => format!("the ACM certificate {arn}"),
            Need::AcmPcaTrust(arns) => {
                format!("the CA certificates of AWS Private CA {}", arns.join(", "))
            }
        }
    }
}

/// One secret's PEM: a certificate chain with its key, or a trust bundle (no key).
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    /// The chain, or the bundle.
    pub chain: String,
    /// The private key of a certificate.
    pub key: Option<String>,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Every secret the control plane holds now, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    by_name: BTreeMap<String, Pem>,
    /// Certificates that expire within a day and that the control plane cannot renew itself
    /// (files), or whose renewal fails, with their end: for `/readyz`.
    pub expiring: Vec<(String, SystemTime)>,
    /// Secrets the catalog names that were never obtained (listeners and clusters that name
    /// them wait for them): for `/readyz`.
    pub missing: Vec<String>,
}

/// The longest wait before issuing a failed mesh identity again.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A CA with less time left than this issues no mesh identity.
const MIN_CA_LEFT: Duration = Duration::from_secs(10 * 60);

/// How soon before its end a certificate that will not be renewed is reported.
const EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// When the first certificate of a PEM chain expires.
fn not_after(chain: &str) -> Option<SystemTime> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

impl Material {
    /// A secret, if held.
    pub fn get(&self, name: &str) -> Option<&Pem> {
        self.by_name.get(name)
    }

    /// The names held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// `self` holding `pem` as secret `name`.
    #[cfg(test)]
    pub(crate) fn with(mut self, name: &str, pem: Pem) -> Material {
        self.by_name.insert(name.to_string(), pem);
        self
    }

    /// When a held certificate (the first of its chain) expires.
    pub fn expiry(&self, name: &str) -> Option<SystemTime> {
        not_after(&self.by_name.get(name)?.chain)
    }
}

/// What a catalog must fit on this server.
#[derive(Debug, Clone)]
pub struct ServerSide {
    /// Whether the server has a CA (`--ca`), which mesh TLS needs.
    pub has_ca: bool,
    /// `--trust-domain`.
    pub trust_domain: String,
}

impl ServerSide {
    /// Fits `catalog` (read from directory `base`) to this server: the trust domain is the
    /// server's (a catalog that sets another is refused), mesh TLS needs the CA, and the
    /// certificate files it names must be readable PEM whose keys belong to their
    /// certificates (else a listener would wait for a secret that never comes). The errors
    /// name the fields.
    pub fn settle(&self, catalog: &mut Catalog, base: &Path) -> Vec<crate::catalog::CatalogError> {
        crate::catalog::redacted(self.settle_errors(catalog, base))
    }

    /// The trust-domain part of [`ServerSide::settle`]: the catalog's is the server's (one
    /// that sets another is refused), and it is set when the catalog does not say.
    pub fn settle_trust_domain(&self, catalog: &mut Catalog) -> Vec<crate::catalog::CatalogError> {
        let mesh = catalog.mesh.get_or_insert_with(Default::default);
        match &mesh.trust_domain {
            Some(td) if *td != self.trust_domain => vec![crate::catalog::CatalogError {
                path: "mesh.trust_domain".into(),
                message: format!(
                    "{td:?} is not this control plane's trust domain {:?} (serve --trust-domain)",
                    self.trust_domain
                ),
                position: None,
            }],
            Some(_) => Vec::new(),
            None => {
                mesh.trust_domain = Some(self.trust_domain.clone());
                Vec::new()
            }
        }
    }

    fn settle_errors(
        &self,
        catalog: &mut Catalog,
        base: &Path,
    ) -> Vec<crate::catalog::CatalogError> {
        use crate::catalog::{CatalogError, CertificateSource, TrustSource};
        let mut errors = Vec::new();
        // Each file-backed source: whether it reads and its key belongs to its certificate.
        let cert = |source: Option<&CertificateSource>| match source {
            Some(CertificateSource::File(f)) => Some(
                read(base, &f.chain)
                    .and_then(|chain| Ok((chain, read(base, &f.key)?)))
                    .and_then(|(chain, key)| check_pair(&chain, Some(&key))),
            ),
            _ => None,
        };
        let trust = |source: Option<&TrustSource>| match source {
            Some(TrustSource::File(f)) => {
                Some(read(base, f).and_then(|pem| check_pair(&pem, None)))
            }
            _ => None,
        };
        let listeners = || {
            catalog.proxies.iter().flat_map(|(name, p)| {
                p.listeners.iter().enumerate().map(move |(i, l)| {
                    (format!("proxies.{name}.listeners[{i}].tls"), l.tls.as_ref())
                })
            })
        };
        let upstreams = || {
            catalog
                .upstreams
                .iter()
                .map(|(name, u)| (format!("upstreams.{name}.tls"), u.tls.as_ref()))
        };
        // Certificates first, then trust bundles.
        let checks = (listeners().map(|(at, tls)| {
            let source = tls.map(|t| &t.certificate);
            (format!("{at}.certificate"), cert(source))
        }))
        .chain(upstreams().map(|(at, tls)| {
            let source = tls.and_then(|t| t.certificate.as_ref());
            (format!("{at}.certificate"), cert(source))
        }))
        .chain(listeners().map(|(at, tls)| {
            let source = tls.and_then(|t| t.client_certificate.as_ref());
            (
                format!("{at}.client_certificate.trust"),
                trust(source.map(|c| &c.trust)),
            )
        }))
        .chain(upstreams().map(|(at, tls)| {
            let source = tls.and_then(|t| t.trust.as_ref());
            (format!("{at}.trust"), trust(source))
        }));
        for (path, checked) in checks {
            if let Some(Err(message)) = checked {
                errors.push(CatalogError {
                    path: format!("{path}.file"),
                    message,
                    position: None,
                });
            }
        }
        errors.extend(self.settle_trust_domain(catalog));
        if !self.has_ca {
            let no_ca = |path: String| CatalogError {
                path,
                message: "mesh TLS needs the control plane's CA (serve --ca)".into(),
                position: None,
            };
            for (name, p) in &catalog.proxies {
                for (i, l) in p.listeners.iter().enumerate() {
                    let Some(tls) = &l.tls else { continue };
                    let trust_mesh = tls
                        .client_certificate
                        .as_ref()
                        .is_some_and(|c| c.trust == TrustSource::Mesh);
                    if tls.certificate == CertificateSource::Mesh || trust_mesh {
                        errors.push(no_ca(format!("proxies.{name}.listeners[{i}].tls")));
                    }
                }
            }
            for (name, u) in &catalog.upstreams {
                let Some(tls) = &u.tls else { continue };
                if tls.mesh.is_some()
                    || tls.trust == Some(TrustSource::Mesh)
                    || tls.certificate == Some(CertificateSource::Mesh)
                {
                    errors.push(no_ca(format!("upstreams.{name}.tls")));
                }
            }
        }
        errors
    }
}

/// How the secrets are kept.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// The CA of mesh identities and the mesh trust bundle (none: no mesh TLS).
    pub cas: Option<Arc<CaSet>>,
    /// How long a mesh identity is valid; renewed at half life, with jitter.
    pub ttl: Duration,
    /// How often files are read again.
    pub interval: Duration,
    /// How often Secrets Manager secrets are read again.
    pub secret_interval: Duration,
}

/// An identity issued, and when to renew it.
struct Held {
    pem: Pem,
    renew_at: SystemTime,
}

/// The secrets every proxy of `catalog` needs.
fn all_needs(catalog: &Catalog) -> BTreeMap<String, Need> {
    catalog
        .proxies
        .keys()
        .flat_map(|p| crate::translate::tls::needs(catalog, p))
        .collect()
}

/// Reads `path` (relative to the catalog's directory `base`), or says why not.
fn read(base: &Path, path: &Path) -> Result<String, String> {
    let full = base.join(path);
    std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))
}

/// Checks that `chain` holds certificates and `key` a private key, as PEM.
fn check_pair(chain: &str, key: Option<&str>) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    if let Some(key) = key {
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
        // Files replaced one after the other are, for a moment, a new key with an old
        // certificate: that pair waits for the next read.
        let public = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .ok()
            .and_then(|k| k.public_key().map(|p| p.as_ref().to_vec()));
        let leaf = x509_parser::parse_x509_certificate(&certs[0])
            .map(|(_, c)| c.public_key().raw.to_vec())
            .ok();
        if public != leaf {
            return Err(
                "the key does not belong to the certificate (are the files being replaced?)".into(),
            );
        }
    }
    Ok(())
}

/// A PEM read again: what was served already when the bytes are the same (no parsing every
/// pass; the system bundle alone holds some 150 certificates), else checked anew.
fn checked(previous: Option<&Pem>, chain: String, key: Option<String>) -> Result<Pem, String> {
    if let Some(p) = previous
        && p.chain == chain
        && p.key == key
    {
        return Ok(p.clone());
    }
    check_pair(&chain, key.as_deref())?;
    Ok(Pem { chain, key })
}

/// Keeps `tx` holding every secret the latest catalog of `catalog_rx` needs: issues and
/// renews mesh identities, reads files again every `interval` and AWS sources every
/// `secret_interval`. Issuance and AWS reads run in the background, [`IN_FLIGHT`] at a time:
/// a slow CA or AWS API delays only the secrets waiting for it, and each result is published as
/// it comes. Whatever cannot be had keeps its last good content (logged once per change of
/// error) and is tried again with backoff.
pub async fn run(
    mut catalog_rx: watch::Receiver<Option<Arc<LoadedCatalog>>>,
    config: SecretsConfig,
    tx: watch::Sender<Arc<Material>>,
    metrics: Metrics,
) {
    let mut identities: BTreeMap<ProxyName, Held> = BTreeMap::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut held_names: Vec<String> = Vec::new();
    // Identities whose issuance failed: when to try again, and the last delay.
    let mut retry: BTreeMap<ProxyName, (SystemTime, Duration)> = BTreeMap::new();
    // AWS's answers (Secrets Manager, ACM, AWS Private CA) by secret name.
    let mut fetched: BTreeMap<String, Fetched> = BTreeMap::new();
    // Work under way: issuances by proxy, AWS reads by secret name.
    let mut running: tokio::task::JoinSet<Done> = tokio::task::JoinSet::new();
    let mut issuing: std::collections::BTreeSet<ProxyName> = Default::default();
    let mut reading: std::collections::BTreeSet<String> = Default::default();
    let mut tasks: std::collections::HashMap<tokio::task::Id, Task> = Default::default();
    loop {
        let loaded = catalog_rx.borrow_and_update().clone();
        let mut next_wake = SystemTime::now() + config.interval;
        if let Some(loaded) = loaded {
            let base = loaded.base_dir.as_path();
            let needs = all_needs(&loaded.catalog);
            let td = trust_domain(&loaded.catalog).to_string();
            let previous = tx.borrow().clone();
            let mut material = Material::default();
            let now = SystemTime::now();
            for (name, need) in &needs {
                // Not held yet, but under way: no error to log.
                let mut pending = false;
                let got: Result<Pem, String> = match need {
                    Need::Trust => match &config.cas {
                        Some(cas) => Ok(Pem {
                            chain: cas.bundle_pem(),
                            key: None,
                        }),
                        None => Err("mesh TLS needs the control plane's CA (serve --ca)".into()),
                    },
                    Need::Identity(proxy) => match &config.cas {
                        None => Err("mesh TLS needs the control plane's CA (serve --ca)".into()),
                        Some(cas) => {
                            let held = identities.get(proxy);
                            let due = held.is_none_or(|h| h.renew_at <= now)
                                && retry.get(proxy).is_none_or(|(at, _)| *at <= now);
                            if due && !issuing.contains(proxy) && running.len() < IN_FLIGHT {
                                issuing.insert(proxy.clone());
                                let (cas, td, proxy, ttl) =
                                    (cas.clone(), td.clone(), proxy.clone(), config.ttl);
                                let task = Task::Identity(proxy.clone());
                                let handle = running.spawn(async move {
                                    let got = issue(&cas, &td, &proxy, ttl).await;
                                    Done::Identity(proxy, got)
                                });
                                tasks.insert(handle.id(), task);
                            }
                            // Until a renewal comes, the identity held is still good.
                            match (held, errors.get(name)) {
                                (Some(h), _) => Ok(h.pem.clone()),
                                (None, Some(e)) => Err(e.clone()),
                                (None, None) => {
                                    pending = true;
                                    Err("being issued".into())
                                }
                            }
                        }
                    },
                    Need::File(files) => read(base, &files.chain).and_then(|chain| {
                        let key = read(base, &files.key)?;
                        checked(previous.get(name), chain, Some(key))
                            .map_err(|e| format!("{}: {e}", files.chain.display()))
                    }),
                    // Read from AWS in the background: every --secret-interval, sooner after
                    // a failure.
                    Need::SecretsManager(_)
                    | Need::TrustSecretsManager(_)
                    | Need::Acm(_)
                    | Need::AcmPcaTrust(_) => {
                        let due = fetched.get(name).is_none_or(|f| f.due <= now);
                        if due && !reading.contains(name) && running.len() < IN_FLIGHT {
                            reading.insert(name.clone());
                            let (name, need) = (name.clone(), need.clone());
                            let task = Task::Fetch(name.clone());
                            let handle = running.spawn(async move {
                                let got = fetch(&need).await;
                                Done::Fetch(name, got)
                            });
                            tasks.insert(handle.id(), task);
                        }
                        match (fetched.get(name), errors.get(name)) {
                            (Some(f), _) => f.got.clone(),
                            (None, Some(e)) => Err(e.clone()),
                            (None, None) => {
                                pending = true;
                                Err("being read".into())
                            }
                        }
                    }
                    Need::SystemTrust => system_bundle().and_then(|path| {
                        checked(previous.get(name), read(base, &path)?, None)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
                    Need::TrustFile(path) => read(base, path).and_then(|chain| {
                        checked(previous.get(name), chain, None)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
                };
                // An identity still served while its renewal fails keeps its error (for
                // /readyz and the log) until a renewal comes.
                let failing = matches!(need, Need::Identity(p) if retry.contains_key(p));
                match got {
                    Ok(pem) => {
                        if !failing && errors.remove(name).is_some() {
                            tracing::info!(secret = %name, "secret readable again");
                        }
                        material.by_name.insert(name.clone(), pem);
                    }
                    Err(e) => {
                        if !pending && errors.get(name) != Some(&e) {
                            tracing::error!(secret = %name, error = %e, "secret unavailable; proxies keep the last good one");
                            errors.insert(name.clone(), e);
                        }
                        match previous.get(name) {
                            Some(old) => {
                                material.by_name.insert(name.clone(), old.clone());
                            }
                            None => material.missing.push(name.clone()),
                        }
                    }
                }
            }
            identities.retain(|p, _| needs.contains_key(&identity_name(p)));
            retry.retain(|p, _| needs.contains_key(&identity_name(p)));
            errors.retain(|name, _| needs.contains_key(name));
            fetched.retain(|name, _| needs.contains_key(name));
            for (name, pem) in &material.by_name {
                // The system's bundle holds many CAs: the first one's end says nothing.
                if name == SYSTEM_TRUST {
                    continue;
                }
                let Some(end) = not_after(&pem.chain) else {
                    continue;
                };
                let at = end
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics
                    .certificate_expiry
                    .with_label_values(&[name.as_str()])
                    .set(at);
                let renewed = name.starts_with("mesh/identity/") && !errors.contains_key(name);
                let left = end.duration_since(now).unwrap_or_default();
                if !renewed && left < EXPIRY_WARNING {
                    material.expiring.push((name.clone(), end));
                }
            }
            for gone in held_names
                .iter()
                .filter(|n| !material.by_name.contains_key(*n))
            {
                let _ = metrics
                    .certificate_expiry
                    .remove_label_values(&[gone.as_str()]);
            }
            held_names = material.by_name.keys().cloned().collect();
            if let Some(soonest) = identities
                .values()
                .map(|h| h.renew_at)
                .chain(retry.values().map(|(at, _)| *at))
                .chain(fetched.values().map(|f| f.due))
                .min()
            {
                next_wake = next_wake.min(soonest);
            }
            if *previous != material {
                tx.send_replace(Arc::new(material));
            }
        }
        let wait = next_wake
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        let mut dones = Vec::new();
        tokio::select! {
            r = catalog_rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            Some(done) = running.join_next_with_id(), if !running.is_empty() => dones.push(done),
        }
        // Whatever else is ready, in the same pass.
        while let Some(done) = running.try_join_next_with_id() {
            dones.push(done);
        }
        // Counted from when the answers came, with jitter: proxies that failed together do
        // not come back together.
        let now = SystemTime::now();
        for done in dones {
            let done = match done {
                Ok((id, done)) => {
                    tasks.remove(&id);
                    done
                }
                // A panicking task loses only its own result: what it was for is due again.
                Err(e) => {
                    tracing::error!(error = %e, "a certificate task failed");
                    match tasks.remove(&e.id()) {
                        Some(Task::Identity(proxy)) => {
                            issuing.remove(&proxy);
                        }
                        Some(Task::Fetch(name)) => {
                            reading.remove(&name);
                        }
                        None => {}
                    }
                    continue;
                }
            };
            match done {
                Done::Identity(proxy, got) => {
                    issuing.remove(&proxy);
                    match got {
                        Ok((pem, not_after)) => {
                            let life = not_after.duration_since(now).unwrap_or_default();
                            let renew_at = now + common::duration::jitter(life / 2);
                            tracing::info!(proxy = %proxy, renew_in = ?renew_at.duration_since(now).unwrap_or_default(), "mesh identity issued");
                            identities.insert(proxy.clone(), Held { pem, renew_at });
                            retry.remove(&proxy);
                        }
                        Err(e) => {
                            let last = retry.get(&proxy).map(|(_, d)| *d).unwrap_or_default();
                            let delay = common::backoff::next(last, config.interval, RETRY_MAX);
                            retry.insert(
                                proxy.clone(),
                                (now + common::duration::jitter(delay), delay),
                            );
                            errors.insert(identity_name(&proxy), e.clone());
                            tracing::error!(proxy = %proxy, error = %e, retry_in = ?delay, "mesh identity not issued; retrying");
                        }
                    }
                }
                Done::Fetch(name, got) => {
                    reading.remove(&name);
                    let last = fetched.get(&name).map(|f| f.delay).unwrap_or_default();
                    let (due, delay) = match &got {
                        Ok(_) => (now + config.secret_interval, Duration::ZERO),
                        Err(_) => {
                            let delay =
                                common::backoff::next(last, Duration::from_secs(1), RETRY_MAX)
                                    .min(config.secret_interval);
                            (now + common::duration::jitter(delay), delay)
                        }
                    };
                    fetched.insert(name, Fetched { got, due, delay });
                }
            }
        }
    }
}

/// What a background task of [`run`] is for.
enum Task {
    Identity(ProxyName),
    Fetch(String),
}

/// What a background task of [`run`] brings back.
enum Done {
    Identity(ProxyName, Result<(Pem, SystemTime), String>),
    Fetch(String, Result<Pem, String>),
}

/// An AWS source's last answer, and when to ask again.
struct Fetched {
    got: Result<Pem, String>,
    due: SystemTime,
    /// The last delay after a failure (zero after a success).
    delay: Duration,
}

/// How many issuances and AWS reads run at once.
const IN_FLIGHT: usize = 16;

/// A secret read from AWS, checked.
async fn fetch(need: &Need) -> Result<Pem, String> {
    let (chain, key) = match need {
        Need::SecretsManager(secret) => {
            let (chain, key) = crate::ca::read_secret(secret)
                .await
                .map_err(|e| e.to_string())?;
            (chain, Some(key))
        }
        Need::TrustSecretsManager(secret) => {
            let (chain, _) = crate::ca::read_secret_parts(secret)
                .await
                .map_err(|e| e.to_string())?;
            (chain, None)
        }
        Need::Acm(arn) => {
            let (chain, key) = crate::acm::export(arn).await?;
            (chain, Some(key))
        }
        Need::AcmPcaTrust(arns) => {
            let mut bundle = String::new();
            for arn in arns {
                let client = crate::acm::pca_client(arn).await;
                let pem = crate::acm::ca_certificate(&client, arn)
                    .await
                    .map_err(|e| e.to_string())?;
                bundle.push_str(&pem);
            }
            (bundle, None)
        }
        other => return Err(format!("{} is not read from AWS", other.describe())),
    };
    check_pair(&chain, key.as_deref()).map_err(|e| format!("{}: {e}", need.describe()))?;
    Ok(Pem { chain, key })
}

/// A mesh identity for `proxy`: server and client authentication, URI SAN its SPIFFE ID.
async fn issue(
    cas: &CaSet,
    td: &str,
    proxy: &ProxyName,
    ttl: Duration,
) -> Result<(Pem, SystemTime), String> {
    let ca_left = cas
        .current
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if ca_left < MIN_CA_LEFT {
        return Err(format!(
            "the CA ends in {}s: no new mesh identities (rotate it with --ca-next)",
            ca_left.as_secs()
        ));
    }
    let issued = cas
        .current
        .issue(&Leaf {
            uris: vec![crate::identity::spiffe_id(td, proxy)],
            server: true,
            client: true,
            ttl,
            ..Leaf::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        Pem {
            chain: issued.certificate_pem,
            key: Some(issued.private_key_pem),
        },
        issued.not_after,
    ))
}

/// What of `text` is a private key, if any, said without the key: a PEM block of any private
/// key label (`PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`,
/// `OPENSSH PRIVATE KEY`, ...) with a base64 body, also in comment lines (`# ...`); or, the
/// whole text, the base64 of a DER private key (PKCS#1, PKCS#8, SEC1, encrypted PKCS#8).
/// A mention of a label without a body is none.
pub fn private_key_in(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN ";
    const ENCAPSULATION: &str = "-----";
    let mut rest = text;
    while let Some(at) = rest.find(BEGIN) {
        rest = &rest[at + BEGIN.len()..];
        let Some(end) = rest.find(ENCAPSULATION) else {
            break;
        };
        let label = &rest[..end];
        let is_key = label.ends_with("PRIVATE KEY")
            && label
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ');
        if is_key && pem_body_len(&rest[end + ENCAPSULATION.len()..]) >= MIN_PEM_BODY {
            return Some(format!("a PEM {label} block"));
        }
    }
    let compact: String = text.split_ascii_whitespace().collect();
    if compact.len() >= MIN_KEY_BASE64 && compact.bytes().all(is_base64) {
        use base64ct::Encoding;
        let der = base64ct::Base64::decode_vec(&compact)
            .or_else(|_| base64ct::Base64Unpadded::decode_vec(&compact))
            .ok()?;
        let plain = rustls_pki_types::PrivateKeyDer::try_from(der.as_slice()).is_ok();
        if plain || pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice()).is_ok() {
            return Some("the base64 of a DER private key".into());
        }
    }
    None
}

/// Fewer base64 characters than the smallest key's (an Ed25519 PKCS#8 key, 64) are no key.
const MIN_KEY_BASE64: usize = 64;

/// A private key label with this much base64 below it is a key, or part of one (a paste cut
/// short leaks as much).
const MIN_PEM_BODY: usize = 16;

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// How many base64 characters follow a PEM header line: its body's lines, each perhaps in a
/// comment or indented, after the encryption headers of a legacy encrypted key; or a body on
/// the header's own line, spaces for line breaks, up to the footer (a key kept on one line).
fn pem_body_len(after_header: &str) -> usize {
    let base64_words = |line: &str| {
        let mut words = line.split_ascii_whitespace().peekable();
        let valid = words.peek().is_some() && words.clone().all(|w| w.bytes().all(is_base64));
        if valid { words.map(str::len).sum() } else { 0 }
    };
    let (first, rest) = after_header.split_once('\n').unwrap_or((after_header, ""));
    if let Some((body, _)) = first.split_once("-----END ") {
        return base64_words(body);
    }
    let mut len = 0;
    for line in rest.lines() {
        let line = line.trim_start().trim_start_matches(['#', '/']).trim();
        if line.starts_with("-----END ") {
            break;
        }
        if len == 0
            && (line.is_empty() || line.starts_with("Proc-Type:") || line.starts_with("DEK-Info:"))
        {
            continue;
        }
        match base64_words(line) {
            0 => break,
            n => len += n,
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_found_in_every_form_and_mentions_are_not() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pkcs8 = key.serialize_pem();
        let relabeled = |label: &str| pkcs8.replace("PRIVATE KEY", label);
        let found = |text: &str| private_key_in(text);
        assert_eq!(found(&pkcs8).as_deref(), Some("a PEM PRIVATE KEY block"));
        for label in [
            "ENCRYPTED PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ] {
            assert_eq!(
                found(&relabeled(label)),
                Some(format!("a PEM {label} block"))
            );
        }
        // A legacy encrypted key has headers before its body.
        let legacy = relabeled("RSA PRIVATE KEY").replacen(
            "-----\n",
            "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,937D4F436A988B51E50A46F153E540B7\n\n",
            1,
        );
        assert!(found(&legacy).is_some(), "{legacy}");
        // In a YAML comment, or indented in a block scalar.
        let commented: String = pkcs8.lines().map(|l| format!("# {l}\n")).collect();
        assert!(found(&format!("version: 1\n{commented}")).is_some());
        let indented: String = pkcs8.lines().map(|l| format!("    {l}\n")).collect();
        assert!(found(&format!("key: |\n{indented}")).is_some());
        // The base64 of its DER, as a value could hold it.
        use base64ct::Encoding;
        let der = base64ct::Base64::encode_string(&key.serialize_der());
        assert_eq!(
            found(&der).as_deref(),
            Some("the base64 of a DER private key")
        );
        // A certificate, a public key, a mention, a token: none.
        let ca = crate::ca::Ca::generate("t").unwrap();
        assert_eq!(found(ca.certificate_pem()), None);
        assert_eq!(found(&key.public_key_pem()), None);
        assert_eq!(
            found("# keys go in files, never -----BEGIN PRIVATE KEY----- inline\nversion: 1\n"),
            None
        );
        assert_eq!(found(&"QUJD".repeat(40)), None);
        assert_eq!(
            found("never paste -----BEGIN PRIVATE KEY----- blocks into any catalog file\n"),
            None
        );
        // A key kept on one line, spaces for its line breaks.
        let one_line = pkcs8.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
        assert!(found(&format!("key: {one_line}\n")).is_some(), "{one_line}");
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let pem = Pem {
            chain: "-----BEGIN CERTIFICATE-----".into(),
            key: Some("-----BEGIN PRIVATE KEY-----secret".into()),
        };
        let mut m = Material::default();
        m.by_name.insert("x".into(), pem);
        let text = format!("{m:?}");
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_and_a_key_must_belong_together() {
        let ca = crate::ca::Ca::generate("t").unwrap();
        let leaf = |n: &str| {
            ca.issue(&Leaf {
                names: vec![n.into()],
                server: true,
                ttl: Duration::from_secs(60),
                ..Leaf::default()
            })
            .unwrap()
        };
        let (a, b) = (leaf("a.test"), leaf("b.test"));
        assert_eq!(
            check_pair(&a.certificate_pem, Some(&a.private_key_pem)),
            Ok(())
        );
        let mixed = check_pair(&a.certificate_pem, Some(&b.private_key_pem)).unwrap_err();
        assert!(mixed.contains("does not belong"), "{mixed}");
        assert!(check_pair("not pem", None).is_err());
        assert_eq!(check_pair(ca.certificate_pem(), None), Ok(()));
    }

    #[test]
    fn a_private_key_pasted_into_a_catalog_field_is_not_quoted_by_its_error() {
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let body = key.lines().nth(1).unwrap().to_string();
        let indented: String = key.lines().map(|l| format!("            {l}\n")).collect();
        let doc = |certificate: &str| {
            format!(
                "version: 1\nproxies:\n  web:\n    listeners:\n      - {{ name: out, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: app }} ] }}\n\
                 upstreams:\n  app:\n    protocol: http\n    endpoints: {{ static: [ \"10.0.0.1:80\" ] }}\n    tls:\n      trust: system\n      sni: app.test\n      certificate:\n{certificate}"
            )
        };
        let shown = |errors: &[crate::catalog::CatalogError]| {
            errors
                .iter()
                .map(|e| e.located())
                .collect::<Vec<_>>()
                .join("\n")
        };
        // The key where its path belongs: the file cannot be read, and its name is the key.
        let as_path = doc(&format!(
            "        file:\n          chain: chain.pem\n          key: |\n{indented}"
        ));
        let mut catalog = crate::catalog::parse("wallet.yaml", &as_path).unwrap();
        let server = ServerSide {
            has_ca: false,
            trust_domain: "mesh.local".into(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca = crate::ca::Ca::generate("t").unwrap();
        std::fs::write(dir.join("chain.pem"), ca.certificate_pem()).unwrap();
        let text = shown(&server.settle(&mut catalog, &dir));
        assert!(
            text.contains("upstreams.app.tls.certificate.file") && text.contains("private key"),
            "{text}"
        );
        assert!(!text.contains(&body) && !text.contains("BEGIN"), "{text}");
        // The key where a map belongs: serde's "invalid type: string ..." would quote it.
        let as_map = doc(&format!("        file: |\n{indented}"));
        let text = shown(
            &crate::catalog::parse("wallet.yaml", &as_map)
                .unwrap_err()
                .errors,
        );
        assert!(
            text.contains("upstreams.app.tls.certificate") && text.contains("private key"),
            "{text}"
        );
        assert!(!text.contains(&body) && !text.contains("BEGIN"), "{text}");
    }
}
