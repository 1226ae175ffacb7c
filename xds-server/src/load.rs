//! Reading the catalog from where it lives (a file, a directory of fragments, an S3 object or
//! prefix) and following its changes: accepted catalogs go out on a watch channel, refused ones
//! leave the last good one in place, and [`CatalogStatus`] says how the latest load went. For a
//! directory or prefix, a refused fragment keeps its last good version while the others' changes
//! go out ([`catalog::fragments`]), and the last good catalog is persisted ([`crate::last_good`])
//! for replicas that start while a fragment is bad.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::catalog::fragments::{self, Document, FragmentVersion, Fragments, Resolution};
use crate::catalog::{self, LoadedCatalog};
use crate::last_good::{self, LastGoodLocation, LastGoodStatus};
use crate::metrics::Metrics;
use s3_config_loader::S3Location;
use s3_config_loader::sync::{Fetched, fetch_object, list_objects};

/// Where the catalog comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLocation {
    /// A local file, or a directory whose YAML and JSON files are merged; re-read when it changes.
    File(PathBuf),
    /// An S3 object, polled with conditional GETs (ETag).
    S3(S3Location),
    /// Every YAML and JSON object under an S3 prefix (the location ends in `/`), merged; the
    /// prefix is listed on every poll and read again when a key or ETag changed.
    S3Prefix(S3Location),
}

impl std::str::FromStr for CatalogLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("s3://") {
            let loc: S3Location = s.parse().map_err(|e| format!("{e}"))?;
            if loc.key.is_empty() {
                return Err(format!(
                    "{s}: name the catalog object or a prefix ending in /, e.g. s3://BUCKET/xds/catalog.d/"
                ));
            }
            if loc.key.ends_with('/') {
                return Ok(CatalogLocation::S3Prefix(loc));
            }
            return Ok(CatalogLocation::S3(loc));
        }
        if s.is_empty() {
            return Err("the catalog location is empty".into());
        }
        Ok(CatalogLocation::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for CatalogLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::File(p) => write!(f, "{}", p.display()),
            CatalogLocation::S3(l) | CatalogLocation::S3Prefix(l) => write!(f, "{l}"),
        }
    }
}

/// A catalog's documents as read: one named document, or the fragments of a directory or
/// prefix (in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Documents {
    One(String, Vec<u8>),
    Fragments(Vec<Document>),
}

/// The fragments of a directory or S3 prefix as they are now (`validate --with`).
pub async fn read_fragments(location: &CatalogLocation) -> Result<Vec<Document>, String> {
    match location {
        CatalogLocation::File(dir) if !dir.is_dir() => {
            Err(format!("{}: not a directory", dir.display()))
        }
        CatalogLocation::S3(l) => Err(format!(
            "{l}: name a prefix ending in /, e.g. s3://BUCKET/xds/catalog.d/"
        )),
        _ => match CatalogReader::new(location).await.read().await? {
            Some(Documents::Fragments(docs)) => Ok(docs),
            _ => Ok(Vec::new()),
        },
    }
}

/// Reads the catalog's documents when they changed since the last read.
enum CatalogReader {
    File {
        path: PathBuf,
        last: Option<Documents>,
    },
    S3 {
        client: aws_sdk_s3::Client,
        location: S3Location,
        etag: Option<String>,
    },
    S3Prefix {
        client: aws_sdk_s3::Client,
        location: S3Location,
        /// Keys and ETags of the fragments last read.
        listed: Option<Vec<(String, String)>>,
    },
}

/// Catalogs larger than this are refused (they would be a mistake, not a catalog).
const MAX_CATALOG_BYTES: u64 = 64 * 1024 * 1024;

impl CatalogReader {
    async fn new(location: &CatalogLocation) -> CatalogReader {
        match location {
            CatalogLocation::File(path) => CatalogReader::File {
                path: path.clone(),
                last: None,
            },
            CatalogLocation::S3(location) => CatalogReader::S3 {
                client: s3_config_loader::s3_client().await,
                location: location.clone(),
                etag: None,
            },
            CatalogLocation::S3Prefix(location) => CatalogReader::S3Prefix {
                client: s3_config_loader::s3_client().await,
                location: location.clone(),
                listed: None,
            },
        }
    }

    /// New documents, `Ok(None)` when unchanged, or why they could not be read. After an
    /// error the next successful read gives the documents again, even if unchanged, so the
    /// load that follows clears the error.
    async fn read(&mut self) -> Result<Option<Documents>, String> {
        let read = self.read_changed().await;
        if read.is_err() {
            match self {
                CatalogReader::File { last, .. } => *last = None,
                CatalogReader::S3 { etag, .. } => *etag = None,
                CatalogReader::S3Prefix { listed, .. } => *listed = None,
            }
        }
        read
    }

    async fn read_changed(&mut self) -> Result<Option<Documents>, String> {
        match self {
            CatalogReader::File { path, last } => {
                let read = if path.is_dir() {
                    catalog::read_dir_fragments(path).map(Documents::Fragments)
                } else {
                    std::fs::read(&*path).map(|b| Documents::One(path.display().to_string(), b))
                };
                match read {
                    Ok(docs) if last.as_ref() == Some(&docs) => Ok(None),
                    Ok(docs) => {
                        *last = Some(docs.clone());
                        Ok(Some(docs))
                    }
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                }
            }
            CatalogReader::S3 {
                client,
                location,
                etag,
            } => {
                let fetched = fetch_object(
                    client,
                    &location.bucket,
                    &location.key,
                    etag.clone(),
                    MAX_CATALOG_BYTES,
                )
                .await
                .map_err(|e| format!("cannot read {location}: {}", e.message))?;
                match fetched {
                    (Fetched::NotModified, _) => Ok(None),
                    (Fetched::Body(bytes), new_etag) => {
                        *etag = new_etag;
                        Ok(Some(Documents::One(location.to_string(), bytes)))
                    }
                }
            }
            CatalogReader::S3Prefix {
                client,
                location,
                listed,
            } => {
                let objects = list_objects(client, &location.bucket, &location.key)
                    .await
                    .map_err(|e| format!("cannot list {location}: {e}"))?;
                // Hidden objects (the last good catalog, `.last-good.json`) are no fragments,
                // as hidden files of a directory are not.
                let now: Vec<(String, String)> = objects
                    .into_iter()
                    .filter(|o| catalog::is_fragment_name(&o.key))
                    .filter(|o| !o.key.rsplit('/').next().unwrap_or("").starts_with('.'))
                    .map(|o| (o.key, o.etag))
                    .collect();
                if listed.as_ref() == Some(&now) {
                    return Ok(None);
                }
                let mut fragments = Vec::with_capacity(now.len());
                let mut read = Vec::with_capacity(now.len());
                for (key, listed_etag) in now {
                    let fetched =
                        fetch_object(client, &location.bucket, &key, None, MAX_CATALOG_BYTES).await;
                    let name = format!("s3://{}/{key}", location.bucket);
                    let (bytes, etag) = match fetched {
                        Ok((Fetched::Body(bytes), etag)) => (bytes, etag),
                        Ok((Fetched::NotModified, _)) => {
                            return Err(format!(
                                "cannot read {name}: not modified, yet it was not asked conditionally"
                            ));
                        }
                        Err(e) => return Err(format!("cannot read {name}: {}", e.message)),
                    };
                    // The ETag of what was read, so a change between listing and reading is
                    // seen on the next poll.
                    let etag = etag.unwrap_or(listed_etag);
                    fragments.push(Document {
                        name,
                        bytes,
                        source: Some(format!("ETag {etag}")),
                    });
                    read.push((key, etag));
                }
                *listed = Some(read);
                Ok(Some(Documents::Fragments(fragments)))
            }
        }
    }

    fn base_dir(&self) -> PathBuf {
        match self {
            CatalogReader::File { path, .. } if path.is_dir() => path.clone(),
            CatalogReader::File { path, .. } => path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".")),
            // Relative endpoint files of an S3 catalog are relative to the working directory.
            CatalogReader::S3 { .. } | CatalogReader::S3Prefix { .. } => PathBuf::from("."),
        }
    }
}

/// Reads the catalog once, as `serve` would (a file, a directory, an S3 object or prefix), and
/// settles it for `server`; the errors name the location and the fields.
pub async fn load_once(
    location: &CatalogLocation,
    server: &crate::secrets::ServerSide,
) -> Result<LoadedCatalog, LoadError> {
    let name = location.to_string();
    let mut reader = CatalogReader::new(location).await;
    let docs = reader
        .read()
        .await
        .map_err(LoadError::Read)?
        .ok_or_else(|| LoadError::Read(format!("{name}: nothing read")))?;
    // Strict, as `validate` is: every fragment must be good.
    let parsed = match &docs {
        Documents::One(doc_name, bytes) => catalog::parse_bytes(doc_name, bytes),
        Documents::Fragments(fragments) => catalog::merge(&name, fragments),
    };
    let mut catalog = parsed.map_err(LoadError::Invalid)?;
    let base_dir = reader.base_dir();
    let errors = server.settle(&mut catalog, &base_dir);
    if !errors.is_empty() {
        return Err(LoadError::Invalid(catalog::CatalogErrors {
            source_name: name,
            errors,
        }));
    }
    Ok(LoadedCatalog { catalog, base_dir })
}

/// Why [`load_once`] gave no catalog.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The location could not be read (a missing file, S3 refused).
    #[error("{0}")]
    Read(String),
    /// It was read, and is not a catalog `serve` would take.
    #[error("{0}")]
    Invalid(catalog::CatalogErrors),
}

/// The outcome of the latest catalog load, for `/readyz` and the logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogStatus {
    /// Where it comes from.
    pub location: String,
    /// When a catalog was last accepted (seconds since the Unix epoch).
    pub last_success: Option<u64>,
    /// The errors of the last rejected catalog, cleared when a good one is accepted.
    pub last_error: Option<String>,
    /// Upstreams whose endpoint source has not answered yet: they have no endpoints.
    pub upstreams_without_endpoints: Vec<String>,
    /// A directory's or prefix's fragments served, each at its version.
    pub fragments: BTreeMap<String, FragmentVersion>,
    /// Fragments not served as read, by name: why, and the last good version served instead.
    pub refused_fragments: BTreeMap<String, RefusedFragment>,
    /// The persisted last good catalog of a directory or prefix.
    pub last_good: Option<LastGoodStatus>,
}

/// A fragment not served as read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedFragment {
    /// Its errors, one a line, their paths inside the fragment.
    pub error: String,
    /// The version read; `null` when the fragment was removed.
    pub offered: Option<FragmentVersion>,
    /// The last good version served in its place; `null` when none is.
    pub serving: Option<FragmentVersion>,
}

/// Re-reads the catalog whenever its content changes; accepted catalogs go to `tx`. A
/// directory's or prefix's last good catalog is read from `last_good` at the start and written
/// there whenever what is served changes.
pub async fn watch_catalog(
    location: CatalogLocation,
    interval: Duration,
    tx: watch::Sender<Option<Arc<LoadedCatalog>>>,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
    server: crate::secrets::ServerSide,
    last_good: Option<LastGoodLocation>,
) {
    let name = location.to_string();
    let mut reader = CatalogReader::new(&location).await;
    let mut fragments = FragmentState::start(&name, last_good, &server, &reader, &status).await;
    loop {
        match reader.read().await {
            Ok(Some(Documents::Fragments(docs))) => {
                fragments
                    .load(&name, &docs, &reader, &server, &tx, &metrics, &status)
                    .await;
            }
            Ok(Some(Documents::One(doc_name, bytes))) => {
                let loaded = catalog::parse_bytes(&doc_name, &bytes).and_then(|mut catalog| {
                    // What only this server can say: its CA, its trust domain, its files.
                    let errors = server.settle(&mut catalog, &reader.base_dir());
                    if !errors.is_empty() {
                        return Err(catalog::CatalogErrors {
                            source_name: name.clone(),
                            errors,
                        });
                    }
                    Ok(LoadedCatalog {
                        catalog,
                        base_dir: reader.base_dir(),
                    })
                });
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                match loaded {
                    Ok(c) => {
                        accepted(&name, &c, &metrics, &mut st);
                        tx.send_replace(Some(Arc::new(c)));
                    }
                    Err(e) => {
                        metrics.catalog_loads.with_label_values(&["error"]).inc();
                        metrics.catalog_last_load_success.set(0);
                        tracing::error!(error = %e, "catalog rejected; still serving the last good catalog");
                        st.last_error = Some(e.to_string());
                    }
                }
            }
            // The fragments did not change; the last good catalog may have (another replica
            // wrote it, or its read or write failed).
            Ok(None) => {
                if fragments.stale(&name, &server, &reader, &status).await
                    && let Some(docs) = fragments.last_docs.clone()
                {
                    fragments
                        .load(&name, &docs, &reader, &server, &tx, &metrics, &status)
                        .await;
                }
            }
            Err(text) => {
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                if st.last_error.as_deref() != Some(&text) {
                    metrics.catalog_loads.with_label_values(&["error"]).inc();
                    metrics.catalog_last_load_success.set(0);
                    tracing::error!(error = %text, "catalog unreadable; still serving the last good catalog");
                    st.last_error = Some(text);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Counts, logs and records a catalog that goes out.
fn accepted(name: &str, c: &LoadedCatalog, metrics: &Metrics, st: &mut CatalogStatus) {
    metrics.catalog_loads.with_label_values(&["ok"]).inc();
    metrics.catalog_last_load_success.set(1);
    tracing::info!(catalog = %name, proxies = c.catalog.proxies.len(), upstreams = c.catalog.upstreams.len(), "catalog loaded");
    for w in catalog::warnings(&c.catalog) {
        tracing::warn!(catalog = %name, path = %w.path, "{}", w.message);
    }
    st.last_success = Some(common::duration::since_epoch().as_secs());
    st.last_error = None;
}

/// What a directory or prefix keeps between loads: each fragment's last good version, and the
/// persisted copy of them.
struct FragmentState {
    last_good: Fragments,
    store: Option<last_good::Store>,
    /// The document as last read or written.
    doc: Doc,
    /// Whether to load again at the next poll, though the fragments did not change: the
    /// document changed (another replica wrote it) or a write lost to another replica's.
    reload: bool,
    /// The fragment names this replica listed or read in the document, up to the last load
    /// (see [`last_good::merge`]).
    seen: std::collections::BTreeSet<String>,
    /// Refusals as last logged, so each is logged once per change.
    problems: common::problems::Problems,
    /// The last error of the store, logged once.
    store_error: Option<String>,
    /// Why fragments are left out of the document (they hold a private key), logged once.
    left_out: Vec<String>,
    /// The fragments last loaded, to load again once an unreadable store can be read.
    last_docs: Option<Vec<Document>>,
}

/// The persisted document as this replica knows it.
#[derive(Default)]
enum Doc {
    /// Not read yet, or its read failed: nothing is written until it is read.
    #[default]
    Unknown,
    /// There is none.
    Absent,
    /// There is one, not usable (corrupt, another format or catalog); `tag` to write over it.
    Ignored(last_good::Tag),
    /// There is one: its fragments that pass this server's checks, those that do not (kept
    /// when it is written again), and its digest.
    Good {
        tag: last_good::Tag,
        digest: String,
        fragments: Fragments,
        unchecked: Fragments,
    },
}

impl Doc {
    fn tag(&self) -> Option<&last_good::Tag> {
        match self {
            Doc::Ignored(tag) | Doc::Good { tag, .. } => Some(tag),
            Doc::Unknown | Doc::Absent => None,
        }
    }

    fn fragments(&self) -> Option<&Fragments> {
        match self {
            Doc::Good { fragments, .. } => Some(fragments),
            _ => None,
        }
    }
}

impl FragmentState {
    /// Whether the store still has to be read (no read has succeeded yet, or the last failed):
    /// nothing is written until it is.
    fn unread(&self) -> bool {
        self.store.is_some() && matches!(self.doc, Doc::Unknown)
    }

    /// Reads the persisted last good catalog, if there is one this server can use.
    async fn start(
        name: &str,
        location: Option<LastGoodLocation>,
        server: &crate::secrets::ServerSide,
        reader: &CatalogReader,
        status: &Mutex<CatalogStatus>,
    ) -> FragmentState {
        let mut state = FragmentState {
            last_good: Fragments::new(),
            store: None,
            doc: Doc::Unknown,
            reload: false,
            seen: Default::default(),
            problems: Default::default(),
            store_error: None,
            left_out: Vec::new(),
            last_docs: None,
        };
        let Some(location) = location else {
            return state;
        };
        status.lock().unwrap_or_else(|e| e.into_inner()).last_good = Some(LastGoodStatus {
            location: location.to_string(),
            ..Default::default()
        });
        state.store = Some(last_good::Store::new(location).await);
        state.read_persisted(name, server, reader, status).await;
        if let Some(fragments) = state.doc.fragments() {
            state.last_good = fragments.clone();
        }
        state
    }

    /// Reads the persisted last good catalog again when it changed (a conditional read): its
    /// fragments are the shared last good versions of every replica. A read that fails is
    /// tried again at each poll, and nothing is written before it succeeds (a replica that
    /// could not read it must not replace it with less). Whether it changed.
    async fn read_persisted(
        &mut self,
        name: &str,
        server: &crate::secrets::ServerSide,
        reader: &CatalogReader,
        status: &Mutex<CatalogStatus>,
    ) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let location = store.location().clone();
        let base = reader.base_dir();
        let check = |c: &mut catalog::Catalog| server.settle(c, &base);
        let (doc, error) = match store.read(self.doc.tag()).await {
            Ok(last_good::Read::Unchanged) => return false,
            Ok(last_good::Read::Absent) => {
                if !matches!(self.doc, Doc::Absent) {
                    tracing::info!(last_good = %location, "no last good catalog yet; it is written once one is served");
                }
                (Doc::Absent, None)
            }
            Ok(last_good::Read::Document(stored)) => {
                match last_good::decode(name, &stored.bytes, &check) {
                    Ok(decoded) => {
                        for why in &decoded.skipped {
                            tracing::warn!(last_good = %location, "last good fragment left out, it does not pass this server's checks: {why}");
                        }
                        tracing::info!(last_good = %location, digest = %decoded.digest, fragments = decoded.fragments.len(), "last good catalog read: its versions stand in for fragments that are bad now");
                        let doc = Doc::Good {
                            tag: stored.tag,
                            digest: decoded.digest,
                            fragments: decoded.fragments,
                            unchecked: decoded.unchecked,
                        };
                        (doc, None)
                    }
                    Err(why) => {
                        tracing::warn!(last_good = %location, "last good catalog ignored: {why}; only the live fragments are served, and it is written anew");
                        (Doc::Ignored(stored.tag), Some(format!("ignored: {why}")))
                    }
                }
            }
            Err(why) => {
                if self.store_error.as_ref() != Some(&why) {
                    tracing::warn!(last_good = %location, "last good catalog unreadable: {why}; tried again at each poll, not written until then");
                    self.store_error = Some(why.clone());
                }
                self.doc = Doc::Unknown;
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(shown) = st.last_good.as_mut() {
                    shown.error = Some(why);
                }
                return true;
            }
        };
        self.doc = doc;
        self.store_error = None;
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shown) = st.last_good.as_mut() {
            shown.digest = match &self.doc {
                Doc::Good { digest, .. } => Some(digest.clone()),
                _ => None,
            };
            shown.error = error;
        }
        true
    }

    /// Whether to load the same fragments again at this poll: a read of the store failed, a
    /// write lost to another replica's, or another replica wrote the document since.
    async fn stale(
        &mut self,
        name: &str,
        server: &crate::secrets::ServerSide,
        reader: &CatalogReader,
        status: &Mutex<CatalogStatus>,
    ) -> bool {
        if self.last_docs.is_none() {
            return false;
        }
        let changed = self.read_persisted(name, server, reader, status).await;
        std::mem::take(&mut self.reload) || self.unread() || changed
    }

    /// Merges the fragments as read now with their last good versions, sends the catalog,
    /// records and logs refusals (once per change), and persists what is served.
    #[allow(clippy::too_many_arguments)]
    async fn load(
        &mut self,
        name: &str,
        docs: &[Document],
        reader: &CatalogReader,
        server: &crate::secrets::ServerSide,
        tx: &watch::Sender<Option<Arc<LoadedCatalog>>>,
        metrics: &Metrics,
        status: &Mutex<CatalogStatus>,
    ) {
        // A directory or prefix that had proxies and now lists nothing is more likely a
        // mistake (a wrong prefix, a moved folder) than every service going away.
        let had_proxies = tx
            .borrow()
            .as_ref()
            .is_some_and(|c| !c.catalog.proxies.is_empty());
        if docs.is_empty() && (had_proxies || !self.last_good.is_empty()) {
            // A replica that starts on an emptied folder serves what the others keep serving.
            if tx.borrow().is_none() {
                let kept: Vec<Document> = self
                    .last_good
                    .iter()
                    .map(|(fragment, a)| Document {
                        name: fragment.clone(),
                        bytes: a.text.as_bytes().to_vec(),
                        source: a.source.clone(),
                    })
                    .collect();
                let base = reader.base_dir();
                let check = |c: &mut catalog::Catalog| server.settle(c, &base);
                let resolution = fragments::resolve(name, &kept, &self.last_good, &check);
                tx.send_replace(Some(Arc::new(LoadedCatalog {
                    catalog: resolution.catalog,
                    base_dir: base,
                })));
            }
            metrics.catalog_loads.with_label_values(&["error"]).inc();
            metrics.catalog_last_load_success.set(0);
            let e = catalog::CatalogErrors {
                source_name: name.to_string(),
                errors: vec![catalog::CatalogError {
                    path: String::new(),
                    message: "lists no catalog files any more; the last good catalog stays (an emptied folder is more likely a mistake than every proxy going away)".into(),
                    position: None,
                }],
            };
            tracing::error!(error = %e, "catalog rejected; still serving the last good catalog");
            status.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
            return;
        }
        // The shared versions: what the document keeps stands for every replica, so
        // replicas that saw different versions of a fragment fall back to the same one.
        self.read_persisted(name, server, reader, status).await;
        let last_good = last_good::versions(&self.last_good, self.doc.fragments());
        let base = reader.base_dir();
        let check = |c: &mut catalog::Catalog| server.settle(c, &base);
        let resolution = fragments::resolve(name, docs, &last_good, &check);
        self.report(name, &resolution, metrics, status);
        let Resolution {
            catalog,
            served,
            refused,
        } = resolution;
        // Nothing at all to serve from fragments that are there: not a catalog to be ready on.
        if !served.is_empty() || docs.is_empty() {
            let loaded = LoadedCatalog {
                catalog,
                base_dir: base,
            };
            let same = tx.borrow().as_ref().is_some_and(|c| **c == loaded);
            if !same {
                tx.send_replace(Some(Arc::new(loaded)));
            }
        }
        let live: std::collections::BTreeSet<String> = docs
            .iter()
            .map(|d| fragments::short_name(name, &d.name))
            .collect();
        // A fragment refused with no last good version here may have one in an unusable
        // document that another replica can still put back: writing over it now would lose
        // it. With no document at all there is nothing to lose (a write races another
        // replica's first one with If-None-Match), and the others' versions are written.
        let unserved: Vec<&String> = refused
            .iter()
            .filter(|(_, r)| r.serving.is_none() && r.offered.is_some())
            .map(|(n, _)| n)
            .collect();
        let read_names: Vec<String> = self
            .doc
            .fragments()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default();
        if unserved.is_empty() || !matches!(self.doc, Doc::Ignored(_)) {
            self.persist(name, &served, &live, status).await;
        } else {
            tracing::debug!(fragments = ?unserved, "last good catalog not written while these fragments are served by none of their versions here");
        }
        self.seen = live;
        self.seen.extend(read_names);
        self.last_good = served;
        self.last_docs = Some(docs.to_vec());
    }

    /// Status, metrics and logs of one resolution.
    fn report(
        &mut self,
        name: &str,
        resolution: &Resolution,
        metrics: &Metrics,
        status: &Mutex<CatalogStatus>,
    ) {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = LoadedCatalog {
            catalog: resolution.catalog.clone(),
            base_dir: PathBuf::new(),
        };
        if resolution.refused.is_empty() {
            accepted(name, &loaded, metrics, &mut st);
        } else {
            metrics.catalog_loads.with_label_values(&["error"]).inc();
            metrics.catalog_last_load_success.set(0);
            let refused: Vec<String> = resolution
                .refused
                .iter()
                .map(|(fragment, r)| {
                    let lines: Vec<String> = r
                        .errors
                        .iter()
                        .map(|e| format!("\n  {}", fragments::at(fragment, e.clone())))
                        .collect();
                    lines.concat()
                })
                .collect();
            let n = resolution.refused.len();
            st.last_error = Some(format!(
                "{name}: {n} fragment{} refused (each keeps its last good version, if any){}",
                if n == 1 { "" } else { "s" },
                refused.concat()
            ));
            tracing::info!(catalog = %name, proxies = resolution.catalog.proxies.len(), upstreams = resolution.catalog.upstreams.len(), refused = n, "catalog loaded without its refused fragments' changes");
        }
        let now: BTreeMap<String, String> = resolution
            .refused
            .iter()
            .map(|(f, r)| (f.clone(), r.describe()))
            .collect();
        for change in self.problems.update(now) {
            use common::problems::Change;
            match change {
                Change::Started { key, message } | Change::Changed { key, message } => {
                    let serving = resolution.refused[&key]
                        .serving
                        .as_ref()
                        .map_or_else(|| "none".to_string(), ToString::to_string);
                    tracing::error!(catalog = %name, fragment = %key, serving = %serving, error = %message, "catalog fragment refused; its last good version is served (serving: none if it never had one)");
                }
                Change::Ended { key, .. } => {
                    tracing::info!(catalog = %name, fragment = %key, "catalog fragment accepted again");
                }
            }
        }
        let mut names: std::collections::BTreeSet<&String> = resolution.served.keys().collect();
        names.extend(resolution.refused.keys());
        for gone in st.fragments.keys().chain(st.refused_fragments.keys()) {
            if !names.contains(gone) {
                let _ = metrics
                    .catalog_fragment_refused
                    .remove_label_values(&[gone]);
            }
        }
        for n in names {
            let refused = resolution.refused.contains_key(n);
            metrics
                .catalog_fragment_refused
                .with_label_values(&[n])
                .set(i64::from(refused));
        }
        st.fragments = resolution
            .served
            .iter()
            .map(|(n, a)| (n.clone(), a.version.clone()))
            .collect();
        st.refused_fragments = resolution
            .refused
            .iter()
            .map(|(n, r)| {
                let shown = RefusedFragment {
                    error: r.describe(),
                    offered: r.offered.clone(),
                    serving: r.serving.clone(),
                };
                (n.clone(), shown)
            })
            .collect();
    }

    /// Writes the last good catalog when it lacks or differs from what is served (merged with
    /// what it keeps of other replicas, [`last_good::merge`]), over the version read only: a
    /// write that loses to another replica's is merged again at the next poll.
    async fn persist(
        &mut self,
        name: &str,
        served: &Fragments,
        live: &std::collections::BTreeSet<String>,
        status: &Mutex<CatalogStatus>,
    ) {
        let Some(store) = &self.store else {
            return;
        };
        if self.unread() {
            return;
        }
        // What this replica cannot check stays for the replicas that can.
        let (mut stored, unchecked) = match &self.doc {
            Doc::Good {
                fragments,
                unchecked,
                ..
            } => (fragments.clone(), unchecked.clone()),
            _ => Default::default(),
        };
        stored.extend(unchecked.iter().map(|(n, a)| (n.clone(), a.clone())));
        let (merged, left_out) =
            last_good::persistable(&last_good::merge(&stored, served, live, &self.seen));
        // A fragment holding a key stops only its own persistence; said once per change.
        let left_out: Vec<String> = left_out
            .into_iter()
            .map(|n| last_good::EncodeError::PrivateKey(n).to_string())
            .collect();
        if left_out != self.left_out {
            for why in left_out.iter().filter(|w| !self.left_out.contains(w)) {
                tracing::error!(last_good = %store.location(), "fragment left out of the last good catalog: {why}");
            }
            self.left_out = left_out;
        }
        let outcome = match last_good::encode(name, &merged) {
            Ok((_, digest)) if matches!(&self.doc, Doc::Good { digest: d, .. } if *d == digest) => {
                return;
            }
            Ok((bytes, digest)) => match store.write(&bytes, self.doc.tag()).await {
                Ok(tag) => Ok((tag, digest)),
                Err(last_good::WriteError::Conflict(what)) => {
                    tracing::info!(last_good = %what, "last good catalog written by another replica meanwhile; read and merged again at the next poll");
                    self.reload = true;
                    return;
                }
                Err(last_good::WriteError::Failed(why)) => Err(why),
            },
            Err(e) => Err(e.to_string()),
        };
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        let shown = st.last_good.get_or_insert_with(|| LastGoodStatus {
            location: store.location().to_string(),
            ..Default::default()
        });
        match outcome {
            Ok((tag, digest)) => {
                tracing::info!(last_good = %store.location(), digest = %digest, fragments = merged.len(), "last good catalog written");
                shown.digest = Some(digest.clone());
                shown.error = (!self.left_out.is_empty()).then(|| self.left_out.join("; "));
                let (unchecked, fragments) = merged
                    .into_iter()
                    .partition(|(n, _)| unchecked.contains_key(n) && !served.contains_key(n));
                self.doc = Doc::Good {
                    tag,
                    digest,
                    fragments,
                    unchecked,
                };
                self.store_error = None;
            }
            Err(why) => {
                if self.store_error.as_ref() != Some(&why) {
                    tracing::error!(last_good = %store.location(), "last good catalog not written: {why}");
                    self.store_error = Some(why.clone());
                }
                shown.error = Some(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "version: 1\nproxies:\n  a:\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: a } ] } ]\nupstreams:\n  a: { protocol: http1, endpoints: { static: [\"10.0.0.1:80\"] } }\n";

    /// One replica of a directory catalog: its state, and what it loads the fragments with.
    struct Replica {
        state: FragmentState,
        reader: CatalogReader,
        server: crate::secrets::ServerSide,
        status: Mutex<CatalogStatus>,
        tx: watch::Sender<Option<Arc<LoadedCatalog>>>,
        name: String,
    }

    impl Replica {
        async fn start(
            catalog: &std::path::Path,
            last_good: &std::path::Path,
            trust_domain: &str,
        ) -> Replica {
            let location = CatalogLocation::File(catalog.to_path_buf());
            let reader = CatalogReader::new(&location).await;
            let server = crate::secrets::ServerSide {
                has_ca: false,
                trust_domain: trust_domain.into(),
            };
            let status = Mutex::new(CatalogStatus::default());
            let store = Some(LastGoodLocation::File(last_good.to_path_buf()));
            let name = location.to_string();
            let state = FragmentState::start(&name, store, &server, &reader, &status).await;
            let (tx, _) = watch::channel(None);
            Replica {
                state,
                reader,
                server,
                status,
                tx,
                name,
            }
        }

        async fn load(&mut self) {
            let Ok(Some(Documents::Fragments(docs))) = self.reader.read().await else {
                panic!("no fragments read");
            };
            let metrics = Metrics::new();
            self.state
                .load(
                    &self.name,
                    &docs,
                    &self.reader,
                    &self.server,
                    &self.tx,
                    &metrics,
                    &self.status,
                )
                .await;
        }
    }

    #[tokio::test]
    async fn a_fragment_bad_from_its_first_version_does_not_stop_the_first_document() {
        let dir = std::env::temp_dir().join(format!("xds-load-first-{}", std::process::id()));
        let catalog = dir.join("catalog.d");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(catalog.join("a.yaml"), A).unwrap();
        std::fs::write(catalog.join("new.yaml"), A.replace("port: 8080", "port: 0")).unwrap();
        let path = dir.join(last_good::DEFAULT_NAME);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        let st = x.status.lock().unwrap().clone();
        assert_eq!(st.refused_fragments["new.yaml"].serving, None);
        // No document yet: there is none to lose, and a.yaml's last good version is written.
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["fragments"]["a.yaml"]["text"], A);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_that_refuses_a_persisted_fragment_does_not_drop_it_from_the_document() {
        let dir = std::env::temp_dir().join(format!("xds-load-skip-{}", std::process::id()));
        let catalog = dir.join("catalog.d");
        std::fs::create_dir_all(&catalog).unwrap();
        std::fs::write(catalog.join("a.yaml"), A).unwrap();
        // A fragment only replicas of trust domain x.example take (during a rollout of a new
        // --trust-domain, say).
        let m =
            A.replace("a:", "m:").replace("to: a", "to: m") + "mesh: { trust_domain: x.example }\n";
        std::fs::write(catalog.join("m.yaml"), &m).unwrap();
        let path = dir.join(last_good::DEFAULT_NAME);
        let persisted = || {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            doc["fragments"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        assert_eq!(persisted(), ["a.yaml", "m.yaml"]);
        let mut y = Replica::start(&catalog, &path, "y.example").await;
        y.load().await;
        assert!(
            y.status
                .lock()
                .unwrap()
                .refused_fragments
                .contains_key("m.yaml")
        );
        // Y cannot use m.yaml, and it leaves it for the replicas that can.
        assert_eq!(persisted(), ["a.yaml", "m.yaml"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn catalog_locations() {
        assert!(matches!(
            "s3://config/xds/catalog.yaml".parse(),
            Ok(CatalogLocation::S3(_))
        ));
        assert!(matches!(
            "s3://config/xds/catalog.d/".parse(),
            Ok(CatalogLocation::S3Prefix(_))
        ));
        let bare: Result<CatalogLocation, String> = "s3://config".parse();
        assert!(bare.unwrap_err().contains("prefix ending in /"));
        assert!(matches!(
            "examples/catalog.yaml".parse(),
            Ok(CatalogLocation::File(_))
        ));
    }
}
