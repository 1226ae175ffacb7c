//! Catalog fragments: one document per service in a directory or S3 prefix, merged into one
//! catalog that behaves like a mesh.
//!
//! - Each fragment is a whole catalog document: its format and its own values are checked on
//!   their own, and its `defaults` apply to its own routes and upstreams only.
//! - References cross fragments: a route or TCP listener may name an upstream of any fragment,
//!   TLS settings any fragment's proxy. A name (proxy or upstream) belongs to the fragment that
//!   defines it; defined twice, it is an error naming both.
//! - A bad fragment harms only itself. [`resolve`] is given the fragments as read and the last
//!   good version of each (what was served before); a fragment that fails its checks, defines a
//!   name another fragment already owns, or needs a name no fragment gives is refused, and its
//!   last good version is served in its place. A change that takes away a name another fragment
//!   needs (an upstream removed, a fragment deleted) is the one refused: the fragment that
//!   changed keeps its last good version, the fragments that rely on it keep working.
//!
//! The outcome depends only on the fragments and their last good versions, so replicas that
//! share both (the persisted last good catalog) serve the same catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sha2::Digest;

use super::validate::{self, Scope, Target};
use super::{Catalog, CatalogError, CatalogErrors, Mesh};

/// One fragment as read from its directory or prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its path or `s3://` URL.
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
    /// What its source says of this version: `ETag "…", modified SECS.NANOS` for S3 (its
    /// `Last-Modified`), `changed SECS.NANOS` for a file (the later of its mtime and ctime: a
    /// rename or `cp -p` that keeps an old mtime still counts as a change; [`stamp`],
    /// [`uploaded`]).
    pub source: Option<String>,
    /// Why it could not be read (a dangling symlink, an object this task cannot decrypt or
    /// over the size limit), when it could not: it is refused on its own, and keeps its last
    /// good version, as a fragment that does not parse does; its `bytes` are empty.
    pub unreadable: Option<String>,
}

/// A source's upload or modification time as [`Document::source`] writes it: `SECS.NANOS`
/// since the Unix epoch.
pub fn stamp(t: std::time::SystemTime) -> Option<String> {
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
}

/// When a version was uploaded, from its [`Document::source`] (`changed`, `mtime` as documents
/// written before said, or `modified`);
/// `None` when it does not say (a document written before it did).
pub fn uploaded(source: Option<&str>) -> Option<std::time::Duration> {
    let source = source?;
    let at = ["changed ", "mtime ", "modified "]
        .iter()
        .filter_map(|k| source.rfind(k).map(|i| i + k.len()))
        .max()?;
    let (secs, nanos) = source[at..].split_once('.')?;
    let nanos: String = nanos.chars().take_while(char::is_ascii_digit).collect();
    Some(std::time::Duration::new(
        secs.parse().ok()?,
        nanos.parse().ok().filter(|n| *n < 1_000_000_000)?,
    ))
}

impl Document {
    /// A document without a source stamp.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Document {
        Document {
            name: name.into(),
            bytes: bytes.into(),
            source: None,
            unreadable: None,
        }
    }

    /// A fragment listed at `name` that could not be read, and why.
    pub fn unreadable(name: impl Into<String>, why: impl Into<String>) -> Document {
        Document {
            unreadable: Some(why.into()),
            ..Document::new(name, Vec::new())
        }
    }
}

/// A fragment's version: the start of the SHA-256 of its bytes, so the same document has the
/// same version on every replica.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FragmentVersion(pub String);

impl FragmentVersion {
    /// The version of a document's bytes.
    pub fn of(bytes: &[u8]) -> FragmentVersion {
        let digest = sha2::Sha256::digest(bytes);
        FragmentVersion(hex::encode(&digest[..8]))
    }
}

impl fmt::Display for FragmentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fragment that passed its own checks: what the merged catalog takes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The version of its text.
    pub version: FragmentVersion,
    /// The document as read (what a persisted last good catalog keeps).
    pub text: Arc<str>,
    /// Its source's stamp, see [`Document::source`].
    pub source: Option<String>,
    /// The fragment, its defaults applied.
    pub catalog: Catalog,
}

impl Accepted {
    /// A fragment kept as text only, not parsed: one a persisted last good catalog holds that
    /// this server cannot take (a newer server's, during a rolling upgrade), written back for
    /// the replicas that can. Never served: its catalog is empty.
    pub fn unparsed(version: FragmentVersion, text: Arc<str>, source: Option<String>) -> Accepted {
        Accepted {
            version,
            text,
            source,
            catalog: Catalog {
                version: 1,
                defaults: Default::default(),
                mesh: None,
                proxies: Default::default(),
                upstreams: Default::default(),
            },
        }
    }
}

/// Fragments by name relative to their directory or prefix (`wallet.yaml`).
pub type Fragments = BTreeMap<String, Accepted>;

/// Server-side checks of one fragment (its certificate files, the trust domain); the errors
/// name fields of the fragment.
pub type Check<'a> = &'a dyn Fn(&mut Catalog) -> Vec<CatalogError>;

/// Why one fragment is not served as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The problems, their paths inside the fragment.
    pub errors: Vec<CatalogError>,
    /// The version read; `None` when the fragment was removed or could not be read.
    pub offered: Option<FragmentVersion>,
    /// The last good version served in its place; `None` when nothing of it is served.
    pub serving: Option<FragmentVersion>,
    /// Whether it is listed but could not be read ([`Document::unreadable`]).
    pub unreadable: bool,
}

impl Refusal {
    /// The errors on one line each, as logs and `/readyz` show them.
    pub fn describe(&self) -> String {
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    }
}

/// What became of a set of fragments.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The merged catalog served.
    pub catalog: Catalog,
    /// The fragments it is made of, each at the version served (the new last good).
    pub served: Fragments,
    /// The fragments not served as read, by name.
    pub refused: BTreeMap<String, Refusal>,
}

/// A fragment's name relative to `location`, as errors and the status name it.
pub fn short_name(location: &str, name: &str) -> String {
    name.strip_prefix(location)
        .map(|rest| rest.trim_start_matches('/'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name)
        .to_string()
}

/// What of a fragment is a private key, if any: in its text (comments too) or in any of its
/// values (a string escaped in JSON or YAML, the base64 of a DER key); what was found, never
/// the key.
pub fn private_key(name: &str, text: &str) -> Option<String> {
    fn in_value(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => crate::secrets::private_key_in(s),
            serde_json::Value::Array(items) => items.iter().find_map(in_value),
            serde_json::Value::Object(m) => m
                .iter()
                .find_map(|(k, v)| crate::secrets::private_key_in(k).or_else(|| in_value(v))),
            _ => None,
        }
    }
    crate::secrets::private_key_in(text).or_else(|| {
        super::parse_value(name, text)
            .ok()
            .and_then(|v| in_value(&v))
    })
}

/// Parses one fragment and checks it on its own (references aside), applies its defaults and
/// runs `check`. A fragment that holds a private key is refused whole, as an invalid one is:
/// its last good version stays served and persisted, and the key is never kept or quoted.
pub fn accept(doc: &Document, check: Check<'_>) -> Result<Accepted, Vec<CatalogError>> {
    if let Some(why) = &doc.unreadable {
        return Err(vec![CatalogError {
            path: String::new(),
            message: why.clone(),
            position: None,
        }]);
    }
    let mut catalog =
        super::parse_text(&doc.name, &doc.bytes, Scope::Deferred).map_err(|e| e.errors)?;
    catalog.apply_defaults();
    let errors = check(&mut catalog);
    if !errors.is_empty() {
        return Err(errors);
    }
    // After the errors of parsing and checks: one caused by a key pasted into a field names
    // that field (without quoting the key, [`super::redacted`]).
    if let Some(found) = private_key(&doc.name, &String::from_utf8_lossy(&doc.bytes)) {
        return Err(vec![CatalogError {
            path: String::new(),
            message: format!(
                "holds a private key ({found}): refused, its last good version stays served; keep keys in files or Secrets Manager and name them"
            ),
            position: None,
        }]);
    }
    let text = std::str::from_utf8(&doc.bytes).map_err(|_| {
        vec![CatalogError {
            path: String::new(),
            message: "the catalog is not UTF-8 text".into(),
            position: None,
        }]
    })?;
    Ok(Accepted {
        version: FragmentVersion::of(&doc.bytes),
        text: text.into(),
        source: doc.source.clone(),
        catalog,
    })
}

/// How far a fragment has fallen back: what it offers, then its last good version, then out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Offered,
    LastGood,
    Out,
}

/// Merges `documents` (the fragments of `location`, as read now), refusing the bad ones in
/// favour of their `last_good` versions; see the module documentation for the rules.
pub fn resolve(
    location: &str,
    documents: &[Document],
    last_good: &Fragments,
    check: Check<'_>,
) -> Resolution {
    let mut chosen: Fragments = BTreeMap::new();
    let mut stage: BTreeMap<String, Stage> = BTreeMap::new();
    let mut refused: BTreeMap<String, Vec<CatalogError>> = BTreeMap::new();
    let mut offered: BTreeMap<String, FragmentVersion> = BTreeMap::new();
    let mut unreadable: BTreeSet<String> = BTreeSet::new();
    for doc in documents {
        let name = short_name(location, &doc.name);
        // What could not be read offers no version (the hash of no bytes would look like one).
        if doc.unreadable.is_some() {
            unreadable.insert(name.clone());
        } else {
            offered.insert(name.clone(), FragmentVersion::of(&doc.bytes));
        }
        match accept(doc, check) {
            Ok(a) => {
                stage.insert(name.clone(), Stage::Offered);
                chosen.insert(name, a);
            }
            Err(errors) => {
                refused.insert(name.clone(), errors);
                fall_back(&name, &mut chosen, &mut stage, last_good);
            }
        }
    }
    // A fragment gone from the location offers nothing: its removal is a change like another.
    for name in last_good.keys() {
        stage.entry(name.clone()).or_insert(Stage::Offered);
    }
    let settled = |chosen: &Fragments, name: &str| {
        chosen
            .get(name)
            .zip(last_good.get(name))
            .is_some_and(|(c, l)| c.version == l.version)
    };
    loop {
        let mut refuse: BTreeMap<String, Vec<CatalogError>> = BTreeMap::new();
        let deny = |refuse: &mut BTreeMap<String, Vec<CatalogError>>,
                    name: &str,
                    path: String,
                    message: String| {
            refuse
                .entry(name.to_string())
                .or_default()
                .push(CatalogError {
                    path,
                    message,
                    position: None,
                });
        };
        // Names defined twice: a fragment served as before keeps its names; a changed one that
        // takes them is refused; when none is as before, every one of them is.
        let mut owners: BTreeMap<Target, Vec<&str>> = BTreeMap::new();
        for (name, a) in &chosen {
            for target in defines(&a.catalog) {
                owners.entry(target).or_default().push(name);
            }
        }
        for (target, names) in owners.iter().filter(|(_, n)| n.len() > 1) {
            let kept: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| settled(&chosen, n))
                .collect();
            match kept.first() {
                Some(first) => {
                    for name in names.iter().filter(|n| *n != first) {
                        deny(
                            &mut refuse,
                            name,
                            target.to_string(),
                            format!("already defined in {first}"),
                        );
                    }
                }
                None => {
                    for name in names {
                        let others: Vec<&str> =
                            names.iter().copied().filter(|n| n != name).collect();
                        deny(
                            &mut refuse,
                            name,
                            target.to_string(),
                            format!("also defined in {}", others.join(", ")),
                        );
                    }
                }
            }
        }
        // One mesh: the first fragment served as before that sets one says which, else the
        // first that sets one.
        let mesh = reference_mesh(&chosen, |n| settled(&chosen, n));
        if let Some((owner, mesh)) = &mesh {
            for (name, a) in &chosen {
                if a.catalog.mesh.as_ref().is_some_and(|m| m != mesh) {
                    deny(
                        &mut refuse,
                        name,
                        "mesh".into(),
                        format!("differs from the mesh {owner} sets ({mesh:?})"),
                    );
                }
            }
        }
        if refuse.is_empty() {
            let merged = union(&chosen, mesh.as_ref().map(|(_, m)| m.clone()));
            for (name, a) in &chosen {
                for (error, target) in validate::references(&a.catalog, &merged) {
                    if !settled(&chosen, name) {
                        deny(&mut refuse, name, error.path, error.message);
                        continue;
                    }
                    // Served as before and now unsatisfied: the fragment that gave the name
                    // changed (or went away); that change is refused instead.
                    let giver = last_good.iter().find(|(g, l)| {
                        *g != name
                            && defines(&l.catalog).contains(&target)
                            && stage.get(*g).is_some_and(|s| *s < Stage::Out)
                            && !settled(&chosen, g)
                    });
                    match giver {
                        Some((g, _)) => {
                            let what = if chosen.contains_key(g) {
                                "no longer defines it"
                            } else {
                                "is removed"
                            };
                            deny(
                                &mut refuse,
                                g,
                                target.to_string(),
                                format!("{what}, yet {name} needs it ({error})"),
                            );
                        }
                        None => deny(&mut refuse, name, error.path, error.message),
                    }
                }
            }
        }
        if refuse.is_empty() {
            break;
        }
        for (name, errors) in refuse {
            refused.entry(name.clone()).or_default().extend(errors);
            fall_back(&name, &mut chosen, &mut stage, last_good);
        }
    }
    let mesh = reference_mesh(&chosen, |n| settled(&chosen, n)).map(|(_, m)| m);
    let catalog = union(&chosen, mesh);
    let refused = refused
        .into_iter()
        .map(|(name, errors)| {
            let refusal = Refusal {
                errors,
                offered: offered.get(&name).cloned(),
                serving: chosen.get(&name).map(|a| a.version.clone()),
                unreadable: unreadable.contains(&name),
            };
            (name, refusal)
        })
        .collect();
    Resolution {
        catalog,
        served: chosen,
        refused,
    }
}

/// Whether fragments make one catalog as they are: no name defined twice, one mesh, every
/// reference resolved. Versions served together always do; the shared last good versions of
/// several replicas may not ([`crate::last_good::versions`]).
pub fn fit_together(fragments: &Fragments) -> bool {
    let mut defined = BTreeSet::new();
    for a in fragments.values() {
        if !defines(&a.catalog).into_iter().all(|t| defined.insert(t)) {
            return false;
        }
    }
    let mut meshes = fragments.values().filter_map(|a| a.catalog.mesh.as_ref());
    let mesh = meshes.next();
    if meshes.any(|m| Some(m) != mesh) {
        return false;
    }
    let merged = union(fragments, mesh.cloned());
    fragments
        .values()
        .all(|a| validate::references(&a.catalog, &merged).is_empty())
}

/// Whether a fragment cannot join `others`: it defines a name one of them defines, or sets
/// another mesh than one of them.
pub fn clashes(a: &Accepted, others: &Fragments) -> bool {
    let mine = defines(&a.catalog);
    others.values().any(|o| {
        let mesh = a.catalog.mesh.is_some()
            && o.catalog.mesh.is_some()
            && a.catalog.mesh != o.catalog.mesh;
        mesh || !mine.is_disjoint(&defines(&o.catalog))
    })
}

/// Moves a refused fragment one stage back: to its last good version, or out of the catalog.
fn fall_back(
    name: &str,
    chosen: &mut Fragments,
    stage: &mut BTreeMap<String, Stage>,
    last_good: &Fragments,
) {
    let now = stage.get(name).copied().unwrap_or(Stage::Offered);
    let is_last_good = chosen
        .get(name)
        .zip(last_good.get(name))
        .is_some_and(|(c, l)| c.version == l.version);
    let next = match (now, last_good.get(name)) {
        (Stage::Offered, Some(l)) if !is_last_good => {
            chosen.insert(name.to_string(), l.clone());
            Stage::LastGood
        }
        _ => {
            chosen.remove(name);
            Stage::Out
        }
    };
    stage.insert(name.to_string(), next);
}

/// The proxies and upstreams a fragment defines; a proxy's aliases are proxy names it owns too
/// (a `node.cluster` must select one proxy across fragments).
fn defines(catalog: &Catalog) -> BTreeSet<Target> {
    let aliases = catalog.proxies.values().flat_map(|p| p.aliases.iter());
    let proxies = catalog
        .proxies
        .keys()
        .chain(aliases)
        .cloned()
        .map(Target::Proxy);
    let upstreams = catalog.upstreams.keys().cloned().map(Target::Upstream);
    proxies.chain(upstreams).collect()
}

/// The mesh settings the merged catalog takes, with the fragment they come from.
fn reference_mesh(chosen: &Fragments, settled: impl Fn(&str) -> bool) -> Option<(&str, Mesh)> {
    let setting = || {
        chosen
            .iter()
            .filter_map(|(n, a)| a.catalog.mesh.as_ref().map(|m| (n.as_str(), m.clone())))
    };
    setting()
        .find(|(n, _)| settled(n))
        .or_else(|| setting().next())
}

/// Every chosen fragment's proxies and upstreams in one catalog.
fn union(chosen: &Fragments, mesh: Option<Mesh>) -> Catalog {
    let mut merged = Catalog {
        mesh,
        ..Catalog::empty()
    };
    for a in chosen.values() {
        for (name, p) in &a.catalog.proxies {
            merged
                .proxies
                .entry(name.clone())
                .or_insert_with(|| p.clone());
        }
        for (name, u) in &a.catalog.upstreams {
            merged
                .upstreams
                .entry(name.clone())
                .or_insert_with(|| u.clone());
        }
    }
    merged
}

/// Merges the fragments of a directory or prefix with nothing served before, as `validate DIR`
/// and `render` do: every problem of every fragment is an error, named `FRAGMENT: PATH` under
/// `location`. No fragments give a catalog without proxies (a control plane deployed before
/// any service).
pub fn merge(location: &str, documents: &[Document]) -> Result<Catalog, CatalogErrors> {
    let resolution = resolve(location, documents, &Fragments::new(), &|_| Vec::new());
    if resolution.refused.is_empty() {
        return Ok(resolution.catalog);
    }
    Err(CatalogErrors {
        source_name: location.to_string(),
        errors: resolution
            .refused
            .into_iter()
            .flat_map(|(name, r)| r.errors.into_iter().map(move |e| at(&name, e)))
            .collect(),
    })
}

/// An error of fragment `name`, its path prefixed with the fragment.
pub fn at(name: &str, error: CatalogError) -> CatalogError {
    CatalogError {
        path: if error.path.is_empty() {
            name.to_string()
        } else {
            format!("{name}: {}", error.path)
        },
        message: error.message,
        position: error.position,
    }
}

/// What `validate FILE --with LOCATION` found: whether the fragment would join the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Joining {
    /// The fragment's name in the set: its path or key relative to the directory or prefix.
    pub name: String,
    /// Why it would be refused; empty when it joins.
    pub errors: Vec<CatalogError>,
    /// Other fragments that are refused on their own already (they do not stop this one).
    pub others_refused: BTreeMap<String, Vec<CatalogError>>,
    /// The merged catalog with the fragment in it, restricted to the fragment's proxies (with
    /// every upstream): what `--envoy` and the warnings look at.
    pub catalog: Catalog,
}

/// Checks `fragment` joining the fragments of `location` as `name` (its key relative to the
/// location, `team/wallet.yaml` for `s3://B/catalog.d/team/wallet.yaml`), as the server would
/// take it: `served` are the fragments there now (those valid on their own are served, and
/// are the last good versions), `pending` the ones written together with this one (the same
/// apply), which replace those of the same name, and `fragment` replaces the one named `name`.
/// Both lists name their documents under `location`. `persisted` is the server's last good
/// catalog when there is one: its versions are the last good ones, as on the server
/// ([`crate::last_good::versions`]), so a fragment refused now resolves against the version
/// the server still serves. `check` is the server's part of the checks.
pub fn check_joining(
    location: &str,
    served: &[Document],
    pending: &[Document],
    name: &str,
    fragment: &Document,
    persisted: Option<&Fragments>,
    check: Check<'_>,
) -> Joining {
    let mut own = Fragments::new();
    let mut documents: BTreeMap<String, Document> = BTreeMap::new();
    for doc in served {
        let short = short_name(location, &doc.name);
        if let Ok(a) = accept(doc, check) {
            own.insert(short.clone(), a);
        }
        documents.insert(short, doc.clone());
    }
    let last_good = crate::last_good::versions(&own, persisted);
    for doc in pending {
        documents.insert(short_name(location, &doc.name), doc.clone());
    }
    documents.insert(
        name.to_string(),
        Document {
            name: format!("{}/{name}", location.trim_end_matches('/')),
            ..fragment.clone()
        },
    );
    let documents: Vec<Document> = documents.into_values().collect();
    let mut resolution = resolve(location, &documents, &last_good, check);
    let errors = resolution
        .refused
        .remove(name)
        .map(|r| r.errors)
        .unwrap_or_default();
    let mut catalog = resolution.catalog;
    let own = resolution.served.get(name).map(|a| defines(&a.catalog));
    catalog.proxies.retain(|p, _| {
        own.as_ref()
            .is_some_and(|d| d.contains(&Target::Proxy(p.clone())))
    });
    Joining {
        name: name.to_string(),
        errors,
        catalog,
        others_refused: resolution
            .refused
            .into_iter()
            .map(|(n, r)| (n, r.errors))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_source_says_when_its_version_was_uploaded() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let s3 = format!("ETag \"abc\", modified {}", stamp(t).unwrap());
        assert_eq!(s3, "ETag \"abc\", modified 1700000000.000000005");
        assert_eq!(
            uploaded(Some(&s3)),
            Some(std::time::Duration::new(1_700_000_000, 5))
        );
        assert_eq!(
            uploaded(Some("mtime 12.000000001")),
            Some(std::time::Duration::new(12, 1))
        );
        // Written before sources carried a time, or not a time.
        assert_eq!(uploaded(Some("ETag \"abc\"")), None);
        assert_eq!(uploaded(Some("mtime soon")), None);
        assert_eq!(uploaded(None), None);
    }
    use crate::catalog::{ProxyName, UpstreamName};

    /// A service's fragment: proxy `proxy` routes `/` to `to`; it defines `upstreams`.
    pub(crate) fn service(proxy: &str, to: &str, upstreams: &[&str]) -> String {
        let mut text = format!(
            "version: 1\nproxies:\n  {proxy}:\n    listeners:\n      - {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}\n"
        );
        if !upstreams.is_empty() {
            text.push_str("upstreams:\n");
        }
        for u in upstreams {
            text.push_str(&format!(
                "  {u}: {{ protocol: http1, endpoints: {{ static: [\"10.0.0.1:80\"] }} }}\n"
            ));
        }
        text
    }

    #[test]
    fn a_fragment_with_a_key_pasted_into_a_field_is_refused_naming_the_field() {
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let body = key.lines().nth(1).unwrap().to_string();
        let indented: String = key.lines().map(|l| format!("            {l}\n")).collect();
        let server = crate::secrets::ServerSide {
            has_ca: false,
            trust_domain: "mesh.local".into(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let ca = crate::ca::Ca::generate("t").unwrap();
        std::fs::write(base.join("chain.pem"), ca.certificate_pem()).unwrap();
        let check = |c: &mut Catalog| server.settle(c, &base);
        // The key where a file's path belongs, under an upstream's TLS.
        let text = format!(
            "version: 1\nproxies:\n  web:\n    listeners:\n      - {{ name: out, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: app }} ] }}\nupstreams:\n  app:\n    protocol: http\n    endpoints: {{ static: [ \"10.0.0.1:80\" ] }}\n    tls:\n      trust: system\n      sni: app.test\n      certificate:\n        file:\n          chain: chain.pem\n          key: |\n{indented}"
        );
        let errors = accept(&Document::new("wallet.yaml", text.as_bytes()), &check).unwrap_err();
        let shown: String = errors.iter().map(|e| e.located()).collect();
        assert!(
            shown.contains("upstreams.app.tls.certificate.file") && shown.contains("private key"),
            "{shown}"
        );
        assert!(!shown.contains(&body), "{shown}");
    }

    fn docs(items: &[(&str, &str)]) -> Vec<Document> {
        items
            .iter()
            .map(|(n, t)| Document::new(format!("catalog.d/{n}"), t.as_bytes()))
            .collect()
    }

    fn run(items: &[(&str, &str)], last_good: &Fragments) -> Resolution {
        resolve("catalog.d", &docs(items), last_good, &|_| Vec::new())
    }

    fn route_of(r: &Resolution, proxy: &str) -> String {
        let p = &r.catalog.proxies[&ProxyName(proxy.into())];
        p.listeners[0].routes[0].to.clone().unwrap().0
    }

    fn errors(r: &Resolution, fragment: &str) -> Vec<String> {
        r.refused[fragment]
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const BROKEN: &str = "version: 1\nproxies: { connector: { listeners: [ { name: web, port: 0, protocol: http } ] } }\n";

    #[test]
    fn a_bad_fragment_keeps_its_last_good_version_and_the_others_change() {
        let first = run(
            &[
                (
                    "connector.yaml",
                    &service("connector", "connector", &["connector"]),
                ),
                ("wallet.yaml", &service("wallet", "connector", &["wallet"])),
            ],
            &Fragments::new(),
        );
        assert!(first.refused.is_empty(), "{:?}", first.refused);
        // Wallet routes to the connector fragment's upstream.
        assert_eq!(route_of(&first, "wallet"), "connector");

        let next = run(
            &[
                ("connector.yaml", BROKEN),
                ("wallet.yaml", &service("wallet", "wallet", &["wallet"])),
            ],
            &first.served,
        );
        let refusal = &next.refused["connector.yaml"];
        assert_eq!(
            refusal.serving,
            Some(first.served["connector.yaml"].version.clone())
        );
        assert_eq!(
            refusal.offered,
            Some(FragmentVersion::of(BROKEN.as_bytes()))
        );
        assert_eq!(
            errors(&next, "connector.yaml"),
            [
                "proxies.connector.listeners[0].port: port 0 is out of range (1-65535)",
                "proxies.connector.listeners[0].routes: an http listener needs at least one route (or `virtual_hosts`)"
            ]
        );
        assert_eq!(next.refused.len(), 1);
        assert_eq!(route_of(&next, "wallet"), "wallet");
        assert_eq!(route_of(&next, "connector"), "connector");
        assert_eq!(
            next.served["connector.yaml"],
            first.served["connector.yaml"]
        );
    }

    #[test]
    fn references_into_a_refused_fragment_resolve_against_its_last_good_version() {
        let first = run(
            &[(
                "connector.yaml",
                &service("connector", "connector", &["connector"]),
            )],
            &Fragments::new(),
        );
        // The connector's new version adds connector-v2 but is refused for another reason.
        let refused_v2 = service("connector", "connector", &["connector", "connector-v2"])
            .replace("port: 8080", "port: 70000");
        let next = run(
            &[
                ("connector.yaml", &refused_v2),
                ("wallet.yaml", &service("wallet", "connector-v2", &[])),
                ("shop.yaml", &service("shop", "connector", &[])),
            ],
            &first.served,
        );
        assert_eq!(
            errors(&next, "wallet.yaml"),
            [
                r#"proxies.wallet.listeners[0].routes[0].to: upstream "connector-v2" is not defined in `upstreams`"#
            ]
        );
        assert_eq!(next.refused["wallet.yaml"].serving, None);
        assert_eq!(route_of(&next, "shop"), "connector");
        assert!(
            !next
                .catalog
                .proxies
                .contains_key(&ProxyName("wallet".into()))
        );
    }

    #[test]
    fn a_change_that_takes_away_what_another_fragment_needs_is_the_one_refused() {
        let connector = service("connector", "connector", &["connector"]);
        let wallet = service("wallet", "connector", &["wallet"]);
        let first = run(
            &[("connector.yaml", &connector), ("wallet.yaml", &wallet)],
            &Fragments::new(),
        );
        // The connector renames its upstream: wallet, unchanged, still routes to the old name.
        let renamed = service("connector", "connector-2", &["connector-2"]);
        let next = run(
            &[("connector.yaml", &renamed), ("wallet.yaml", &wallet)],
            &first.served,
        );
        assert_eq!(
            errors(&next, "connector.yaml"),
            [
                r#"upstreams.connector: no longer defines it, yet wallet.yaml needs it (proxies.wallet.listeners[0].routes[0].to: upstream "connector" is not defined in `upstreams`)"#
            ]
        );
        assert_eq!(route_of(&next, "connector"), "connector");
        assert_eq!(route_of(&next, "wallet"), "connector");
        // Deleting the whole fragment is refused the same way; wallet moving away lets it go.
        let deleted = run(&[("wallet.yaml", &wallet)], &first.served);
        assert!(
            errors(&deleted, "connector.yaml")[0]
                .starts_with("upstreams.connector: is removed, yet wallet.yaml needs it"),
            "{:?}",
            deleted.refused
        );
        assert_eq!(deleted.refused["connector.yaml"].offered, None);
        assert!(
            deleted
                .catalog
                .upstreams
                .contains_key(&UpstreamName("connector".into()))
        );
        let moved = service("wallet", "wallet", &["wallet"]);
        let gone = run(&[("wallet.yaml", &moved)], &first.served);
        assert!(gone.refused.is_empty(), "{:?}", gone.refused);
        assert!(
            !gone
                .catalog
                .proxies
                .contains_key(&ProxyName("connector".into()))
        );
    }

    #[test]
    fn a_name_taken_from_its_owner_refuses_the_taker_only() {
        let first = run(
            &[(
                "connector.yaml",
                &service("connector", "connector", &["connector"]),
            )],
            &Fragments::new(),
        );
        let next = run(
            &[
                (
                    "connector.yaml",
                    &service("connector", "connector", &["connector"]),
                ),
                (
                    "wallet.yaml",
                    &service("wallet", "connector", &["connector"]),
                ),
            ],
            &first.served,
        );
        assert_eq!(
            errors(&next, "wallet.yaml"),
            ["upstreams.connector: already defined in connector.yaml"]
        );
        assert_eq!(next.refused.len(), 1);
        assert_eq!(route_of(&next, "connector"), "connector");
    }

    #[test]
    fn tls_settings_may_name_another_fragments_proxy() {
        let connector = "version: 1\nproxies:\n  connector:\n    listeners: [ { name: web, port: 8443, protocol: http, tls: { certificate: mesh }, routes: [ { match: { prefix: / }, to: local } ] } ]\nupstreams:\n  local: { protocol: http1, endpoints: { static: [\"127.0.0.1:8080\"] } }\n";
        let wallet = "version: 1\nproxies:\n  wallet:\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: connector-mtls } ] } ]\nupstreams:\n  connector-mtls: { protocol: http1, endpoints: { static: [\"10.0.0.2:8443\"] }, tls: { mesh: connector } }\n";
        let both = run(
            &[("connector.yaml", connector), ("wallet.yaml", wallet)],
            &Fragments::new(),
        );
        assert!(both.refused.is_empty(), "{:?}", both.refused);
        let alone = run(&[("wallet.yaml", wallet)], &Fragments::new());
        assert_eq!(
            errors(&alone, "wallet.yaml"),
            [
                r#"upstreams.connector-mtls.tls.mesh: proxy "connector" has no listener with `tls.certificate: mesh`"#
            ]
        );
    }

    #[test]
    fn a_fragment_is_checked_against_the_ones_it_joins() {
        let others = docs(&[(
            "connector.yaml",
            &service("connector", "connector", &["connector"]),
        )]);
        let wallet = Document::new(
            "/src/wallet.yaml",
            service("wallet", "connector", &["wallet"]).into_bytes(),
        );
        let joined = check_joining(
            "catalog.d",
            &others,
            &[],
            "wallet.yaml",
            &wallet,
            None,
            &|_| Vec::new(),
        );
        assert_eq!(joined.name, "wallet.yaml");
        assert!(joined.errors.is_empty(), "{:?}", joined.errors);
        let alone = check_joining("catalog.d", &[], &[], "wallet.yaml", &wallet, None, &|_| {
            Vec::new()
        });
        assert_eq!(
            alone
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                r#"proxies.wallet.listeners[0].routes[0].to: upstream "connector" is not defined in `upstreams`"#
            ]
        );
        // A new version of a fragment replaces the old one; taking away what wallet needs fails.
        let with_wallet = docs(&[
            (
                "connector.yaml",
                &service("connector", "connector", &["connector"]),
            ),
            ("wallet.yaml", &service("wallet", "connector", &["wallet"])),
        ]);
        let renamed = Document::new(
            "connector.yaml",
            service("connector", "c2", &["c2"]).into_bytes(),
        );
        let j = check_joining(
            "catalog.d",
            &with_wallet,
            &[],
            "connector.yaml",
            &renamed,
            None,
            &|_| Vec::new(),
        );
        assert_eq!(j.errors.len(), 1, "{:?}", j.errors);
        assert!(
            j.errors[0].message.contains("wallet.yaml needs it"),
            "{:?}",
            j.errors
        );
        // Others' own problems are told apart and do not fail this one.
        let mut broken_others = others.clone();
        broken_others.push(Document::new("catalog.d/old.yaml", BROKEN.as_bytes()));
        let j = check_joining(
            "catalog.d",
            &broken_others,
            &[],
            "wallet.yaml",
            &wallet,
            None,
            &|_| Vec::new(),
        );
        assert!(j.errors.is_empty(), "{:?}", j.errors);
        assert!(j.others_refused.contains_key("old.yaml"));
    }

    #[test]
    fn a_fragment_joins_under_its_key_and_with_the_fragments_of_the_same_change() {
        // A nested key: the new version of team/wallet.yaml replaces it, named by its key.
        let prefix = "s3://config/catalog.d/";
        let nested = vec![
            Document::new(
                "s3://config/catalog.d/connector.yaml",
                service("connector", "connector", &["connector"]).into_bytes(),
            ),
            Document::new(
                "s3://config/catalog.d/team/wallet.yaml",
                service("wallet", "connector", &["wallet"]).into_bytes(),
            ),
        ];
        let next = Document::new(
            "/tmp/wallet.yaml",
            service("wallet", "wallet", &["wallet"]).into_bytes(),
        );
        let j = check_joining(
            prefix,
            &nested,
            &[],
            "team/wallet.yaml",
            &next,
            None,
            &|_| Vec::new(),
        );
        assert_eq!(j.name, "team/wallet.yaml");
        assert!(j.errors.is_empty(), "{:?}", j.errors);
        // Under its file name it is another fragment, taking the names of team/wallet.yaml.
        let j = check_joining(prefix, &nested, &[], "wallet.yaml", &next, None, &|_| {
            Vec::new()
        });
        assert_eq!(
            j.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "proxies.wallet: already defined in team/wallet.yaml",
                "upstreams.wallet: already defined in team/wallet.yaml"
            ]
        );
        // Written in the same change: the connector's new upstream, a route to it in wallet.
        let wallet = Document::new(
            "/tmp/wallet.yaml",
            service("wallet", "ledger", &["wallet"]).into_bytes(),
        );
        let j = check_joining(
            prefix,
            &nested,
            &[],
            "team/wallet.yaml",
            &wallet,
            None,
            &|_| Vec::new(),
        );
        assert_eq!(j.errors.len(), 1, "{:?}", j.errors);
        let connector_v2 = Document::new(
            "s3://config/catalog.d/connector.yaml",
            service("connector", "connector", &["connector", "ledger"]).into_bytes(),
        );
        let j = check_joining(
            prefix,
            &nested,
            std::slice::from_ref(&connector_v2),
            "team/wallet.yaml",
            &wallet,
            None,
            &|_| Vec::new(),
        );
        assert!(j.errors.is_empty(), "{:?}", j.errors);
    }
}
