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

impl CatalogLocation {
    /// Whether it is a directory or prefix of fragments: an S3 prefix, a directory, or a path
    /// missing now whose name is not that of one document (`catalog.d`, not `catalog.yaml`),
    /// so that a replica started while its directory is missing still has a last good place.
    pub fn holds_fragments(&self) -> bool {
        match self {
            CatalogLocation::S3Prefix(_) => true,
            CatalogLocation::S3(_) => false,
            CatalogLocation::File(p) => match std::fs::metadata(p) {
                Ok(m) => m.is_dir(),
                Err(_) => {
                    let text = p.to_string_lossy();
                    text.ends_with('/') || !catalog::is_fragment_name(&text)
                }
            },
        }
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

impl Documents {
    /// The same documents with the same bytes (or the same reason they cannot be read),
    /// whatever their sources' stamps say.
    fn same_content(&self, other: &Documents) -> bool {
        match (self, other) {
            (Documents::One(a, x), Documents::One(b, y)) => a == b && x == y,
            (Documents::Fragments(a), Documents::Fragments(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(a, b)| {
                        a.name == b.name && a.bytes == b.bytes && a.unreadable == b.unreadable
                    })
            }
            _ => false,
        }
    }
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
        /// The fragments last read, by key.
        read: PrefixState,
    },
}

/// What an S3 prefix's reader keeps between polls: each key's document as read, with the
/// ETag of that version, so a poll fetches only the keys that are new, changed, or could not
/// be read last time, and gives nothing when the fragments are as last given.
#[derive(Debug, Default)]
struct PrefixState {
    /// Readable fragments by key: the ETag read and the document.
    read: BTreeMap<String, (String, Document)>,
    /// The documents last given, in key order; `None` before the first (or after an error).
    last: Option<Vec<Document>>,
}

impl PrefixState {
    /// The fragments listed `now` (key and ETag, in key order): those unchanged since read come
    /// from what was kept, the others from `fetch(key, listed ETag)` (the document, and the ETag
    /// of the version read when it was). `None` when they are what was last given.
    async fn update<F, Fut>(
        &mut self,
        now: Vec<(String, String)>,
        mut fetch: F,
    ) -> Option<Vec<Document>>
    where
        F: FnMut(String, String) -> Fut,
        Fut: std::future::Future<Output = (Document, Option<String>)>,
    {
        let mut read = BTreeMap::new();
        let mut docs = Vec::with_capacity(now.len());
        for (key, listed) in now {
            let doc = match self.read.remove(&key) {
                Some((etag, doc)) if etag == listed => {
                    read.insert(key, (etag, doc.clone()));
                    doc
                }
                _ => {
                    let (doc, etag) = fetch(key.clone(), listed.clone()).await;
                    // One that cannot be read is fetched again at the next poll.
                    if doc.unreadable.is_none() {
                        read.insert(key, (etag.unwrap_or(listed), doc.clone()));
                    }
                    doc
                }
            };
            docs.push(doc);
        }
        self.read = read;
        if self.last.as_ref() == Some(&docs) {
            return None;
        }
        self.last = Some(docs.clone());
        Some(docs)
    }
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
                read: PrefixState::default(),
            },
        }
    }

    /// New documents, `Ok(None)` when unchanged, or why they could not be read. After an
    /// error the next successful read gives the documents again, even if unchanged, so the
    /// load that follows clears the error.
    async fn read(&mut self) -> Result<Option<Documents>, String> {
        let read = self.read_changed().await;
        if read.is_err() {
            self.forget();
        }
        read
    }

    /// Gives the documents again at the next read, even if unchanged.
    fn forget(&mut self) {
        match self {
            CatalogReader::File { last, .. } => *last = None,
            CatalogReader::S3 { etag, .. } => *etag = None,
            CatalogReader::S3Prefix { read, .. } => read.last = None,
        }
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
                    // A new stamp on the same bytes (`chmod`, `touch`) is the same version.
                    Ok(docs) if last.as_ref().is_some_and(|l| l.same_content(&docs)) => Ok(None),
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
                    (Fetched::Body { bytes, .. }, new_etag) => {
                        *etag = new_etag;
                        Ok(Some(Documents::One(location.to_string(), bytes)))
                    }
                }
            }
            CatalogReader::S3Prefix {
                client,
                location,
                read,
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
                let (client, location) = (&*client, &*location);
                let fetch = |key: String, listed: String| async move {
                    let fetched =
                        fetch_object(client, &location.bucket, &key, None, MAX_CATALOG_BYTES).await;
                    let name = format!("s3://{}/{key}", location.bucket);
                    // One object that cannot be read (not decryptable by this task, over the
                    // size limit, archived) is refused on its own.
                    match fetched {
                        Ok((Fetched::Body { bytes, modified }, etag)) => {
                            // The ETag of what was read, so a change between listing and
                            // reading is seen on the next poll.
                            let etag = etag.unwrap_or(listed);
                            let shown = etag.clone();
                            let source = match modified.and_then(fragments::stamp) {
                                Some(t) => format!("ETag {shown}, modified {t}"),
                                None => format!("ETag {shown}"),
                            };
                            let doc = Document {
                                source: Some(source),
                                ..Document::new(name, bytes)
                            };
                            (doc, Some(etag))
                        }
                        Ok((Fetched::NotModified, _)) => {
                            let why = format!(
                                "cannot read {name}: not modified, yet it was not asked conditionally"
                            );
                            (Document::unreadable(name, why), None)
                        }
                        Err(e) => {
                            let why = format!("cannot read {name}: {}", e.message);
                            (Document::unreadable(name, why), None)
                        }
                    }
                };
                Ok(read.update(now, fetch).await.map(Documents::Fragments))
            }
        }
    }

    fn base_dir(&self) -> PathBuf {
        match self {
            CatalogReader::File { path, .. }
                if CatalogLocation::File(path.clone()).holds_fragments() =>
            {
                path.clone()
            }
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
    /// The version read; `null` when the fragment was removed or could not be read.
    pub offered: Option<FragmentVersion>,
    /// The last good version served in its place; `null` when none is.
    pub serving: Option<FragmentVersion>,
    /// `true` when it is listed but could not be read (its `error` says why).
    pub unreadable: bool,
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
        poll(
            &name,
            &mut reader,
            &mut fragments,
            &server,
            &tx,
            &metrics,
            &status,
        )
        .await;
        tokio::time::sleep(interval).await;
    }
}

/// One poll of [`watch_catalog`]: reads the catalog, and loads it when it changed.
async fn poll(
    name: &str,
    reader: &mut CatalogReader,
    fragments: &mut FragmentState,
    server: &crate::secrets::ServerSide,
    tx: &watch::Sender<Option<Arc<LoadedCatalog>>>,
    metrics: &Metrics,
    status: &Mutex<CatalogStatus>,
) {
    match reader.read().await {
        Ok(Some(Documents::Fragments(docs))) => {
            fragments
                .load(name, &docs, reader, server, tx, metrics, status)
                .await;
        }
        Ok(Some(Documents::One(doc_name, bytes))) => {
            let mut by_server = false;
            let loaded = catalog::parse_bytes(&doc_name, &bytes).and_then(|mut catalog| {
                // What only this server can say: its CA, its trust domain, its files.
                let errors = server.settle(&mut catalog, &reader.base_dir());
                if !errors.is_empty() {
                    by_server = true;
                    return Err(catalog::CatalogErrors {
                        source_name: name.to_string(),
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
                    accepted(name, &c, metrics, &mut st);
                    tx.send_replace(Some(Arc::new(c)));
                }
                Err(e) => {
                    // Refused by what the server's checks read besides the catalog (a
                    // certificate file it names): checked again at each poll, logged once
                    // per change.
                    if by_server {
                        reader.forget();
                    }
                    let text = e.to_string();
                    if st.last_error.as_ref() != Some(&text) {
                        metrics.catalog_loads.with_label_values(&["error"]).inc();
                        metrics.catalog_last_load_success.set(0);
                        tracing::error!(error = %e, "catalog rejected; still serving the last good catalog");
                        st.last_error = Some(text);
                    }
                }
            }
        }
        // The fragments did not change; the last good catalog may have (another replica
        // wrote it, or its read or write failed).
        Ok(None) => {
            fragments
                .unchanged(name, reader, server, tx, metrics, status)
                .await;
        }
        Err(text) => {
            fragments
                .unlistable(name, &text, reader, server, tx, metrics, status)
                .await;
        }
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
    /// Why the document could not be read at the last try, logged once per change.
    read_error: Option<String>,
    /// Why fragments of the document were left out at its last read, logged once each.
    skipped: std::collections::BTreeSet<String>,
    /// Why it is ignored (not one, another catalog's), when it is.
    ignored: Option<String>,
    /// Why the last write failed, logged once per change; the write is tried again at each
    /// poll ([`FragmentState::pending`]).
    write_error: Option<String>,
    /// A write that failed, to try again at the next poll without loading again.
    pending: Option<PendingWrite>,
    /// The versions this replica served and replaced since its last write of the document
    /// (see [`last_good::merge`]), carried until a write lands: a rollback loaded while the
    /// document could not be read or written, or lost a race, is still written as served.
    replaced: last_good::Replaced,
    /// The fragments last loaded, to load again once an unreadable store can be read.
    last_docs: Option<Vec<Document>>,
    /// The fragments last loaded that failed their own checks, with their errors: checked
    /// again at each poll, since what the server's checks read besides the fragment (a
    /// certificate file it names) may have changed since.
    own_errors: BTreeMap<String, Vec<catalog::CatalogError>>,
}

/// Shows the last good versions served on `/readyz`, when no fragment is listed.
fn show_kept(kept: &Fragments, status: &Mutex<CatalogStatus>) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    st.fragments = kept
        .iter()
        .map(|(n, a)| (n.clone(), a.version.clone()))
        .collect();
}

/// A document as written, apart: the fragments this server takes (for one it serves at the
/// version written, the one it serves, parsed and checked) and those it keeps only to write
/// back (`unchecked`: of the document read, at the same version), whether it serves another
/// version of them or not. So a version this server cannot use is never taken as last good.
fn written_apart(
    merged: Fragments,
    served: &Fragments,
    unchecked: &Fragments,
) -> (Fragments, Fragments) {
    let mut fragments = Fragments::new();
    let mut kept = Fragments::new();
    for (n, a) in merged {
        match served.get(&n) {
            Some(s) if s.version == a.version => {
                let a = fragments::Accepted {
                    source: a.source,
                    ..s.clone()
                };
                fragments.insert(n, a);
            }
            _ if unchecked.get(&n).is_some_and(|u| u.version == a.version) => {
                kept.insert(n, a);
            }
            _ => {
                fragments.insert(n, a);
            }
        }
    }
    (fragments, kept)
}

/// What a failed write needs to be tried again: the names of the load it followed (see
/// [`last_good::merge`]); the fragments are those served, [`FragmentState::last_good`].
struct PendingWrite {
    live: std::collections::BTreeSet<String>,
    seen: std::collections::BTreeSet<String>,
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
    /// when it is written again), its digest, and the catalog location it names.
    Good {
        tag: last_good::Tag,
        catalog: String,
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
            read_error: None,
            skipped: Default::default(),
            ignored: None,
            write_error: None,
            pending: None,
            replaced: Default::default(),
            last_docs: None,
            own_errors: BTreeMap::new(),
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
    /// could not read it must not replace it with less). Whether it changed: a read that fails
    /// is no change (the catalog is not loaded again for it), the first one that succeeds is.
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
        let (doc, ignored) = match store.read(self.doc.tag()).await {
            Ok(last_good::Read::Unchanged) => return self.recheck(&check, &location),
            // Still none: nothing changed (a write that failed is tried again by `stale`).
            Ok(last_good::Read::Absent) if matches!(self.doc, Doc::Absent) => return false,
            Ok(last_good::Read::Absent) => {
                tracing::info!(last_good = %location, "no last good catalog yet; it is written once one is served");
                (Doc::Absent, None)
            }
            Ok(last_good::Read::Document(stored)) => {
                match last_good::decode(name, &stored.bytes, &check) {
                    Ok(decoded) => {
                        // Logged once per change: the document is read again whenever
                        // any replica writes it.
                        for why in &decoded.skipped {
                            if !self.skipped.contains(why) {
                                tracing::warn!(last_good = %location, "last good fragment left out, it does not pass this server's checks: {why}");
                            }
                        }
                        self.skipped = decoded.skipped.iter().cloned().collect();
                        tracing::info!(last_good = %location, digest = %decoded.digest, fragments = decoded.fragments.len(), "last good catalog read: its versions stand in for fragments that are bad now");
                        let doc = Doc::Good {
                            tag: stored.tag,
                            catalog: decoded.catalog,
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
                if self.read_error.as_ref() != Some(&why) {
                    tracing::warn!(last_good = %location, "last good catalog unreadable: {why}; tried again at each poll, not written until then");
                    self.read_error = Some(why);
                }
                self.doc = Doc::Unknown;
                self.show(status);
                return false;
            }
        };
        self.doc = doc;
        self.ignored = ignored;
        self.read_error = None;
        self.show(status);
        true
    }

    /// Checks again the document's fragments this server's checks refused (a certificate file
    /// one names may have appeared since) and takes those that pass now as last good
    /// versions; whether any does.
    fn recheck(&mut self, check: fragments::Check<'_>, location: &LastGoodLocation) -> bool {
        let Doc::Good {
            fragments,
            unchecked,
            ..
        } = &mut self.doc
        else {
            return false;
        };
        let passing: Vec<(String, fragments::Accepted)> = unchecked
            .iter()
            .filter_map(|(n, a)| {
                let doc = Document {
                    source: a.source.clone(),
                    ..Document::new(n.clone(), a.text.as_bytes())
                };
                Some((n.clone(), fragments::accept(&doc, check).ok()?))
            })
            .collect();
        for (n, a) in &passing {
            tracing::info!(last_good = %location, fragment = %n, "last good fragment passes this server's checks now; its version stands in while the fragment is bad");
            unchecked.remove(n);
            fragments.insert(n.clone(), a.clone());
            // Warned about again if it fails again.
            let own = format!("{n}: ");
            self.skipped.retain(|w| w != n && !w.starts_with(&own));
        }
        !passing.is_empty()
    }

    /// Shows the document's digest and what is wrong with it, if anything, on `/readyz`: a
    /// failed read, then a failed write, then why it is ignored.
    fn show(&self, status: &Mutex<CatalogStatus>) {
        let Some(store) = &self.store else {
            return;
        };
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        let shown = st.last_good.get_or_insert_with(|| LastGoodStatus {
            location: store.location().to_string(),
            ..Default::default()
        });
        shown.digest = match &self.doc {
            Doc::Good { digest, .. } => Some(digest.clone()),
            _ => None,
        };
        shown.error = self
            .read_error
            .clone()
            .or_else(|| self.write_error.clone())
            .or_else(|| self.ignored.clone());
    }

    /// Whether to load the same fragments again at this poll: the document could be read
    /// again after a failed read, a write lost to another replica's, or another replica wrote
    /// the document since. When none did, a write that failed is tried again (the catalog is
    /// not loaded again for it).
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
        if std::mem::take(&mut self.reload) || changed {
            return true;
        }
        if let Some(PendingWrite { live, seen }) = self.pending.take() {
            let served = self.last_good.clone();
            self.persist(name, &served, &live, &seen, status).await;
        }
        false
    }

    /// A poll that found the fragments as they were: loads them again when the document
    /// changed ([`FragmentState::stale`]), else tries again a write that failed.
    async fn unchanged(
        &mut self,
        name: &str,
        reader: &CatalogReader,
        server: &crate::secrets::ServerSide,
        tx: &watch::Sender<Option<Arc<LoadedCatalog>>>,
        metrics: &Metrics,
        status: &Mutex<CatalogStatus>,
    ) {
        // Started on an emptied folder: what it serves is the document's, followed as the
        // other replicas write it.
        if self.last_docs.is_none() {
            if self.read_persisted(name, server, reader, status).await {
                if let Some(fragments) = self.doc.fragments() {
                    self.last_good = fragments.clone();
                }
                if let Some(kept) = self.serve_kept(name, reader, server, tx) {
                    show_kept(&kept, status);
                }
            }
            return;
        }
        let stale = self.stale(name, server, reader, status).await;
        if (stale || self.checks_changed(name, reader, server))
            && let Some(docs) = self.last_docs.clone()
        {
            self.load(name, &docs, reader, server, tx, metrics, status)
                .await;
        }
    }

    /// Whether a fragment refused by its own checks is judged otherwise now (a certificate
    /// file it names appeared or changed), though its bytes did not change.
    fn checks_changed(
        &self,
        name: &str,
        reader: &CatalogReader,
        server: &crate::secrets::ServerSide,
    ) -> bool {
        let (Some(docs), false) = (&self.last_docs, self.own_errors.is_empty()) else {
            return false;
        };
        let base = reader.base_dir();
        let check = |c: &mut catalog::Catalog| server.settle(c, &base);
        docs.iter().any(|d| {
            self.own_errors
                .get(&fragments::short_name(name, &d.name))
                .is_some_and(|before| fragments::accept(d, &check).err().as_ref() != Some(before))
        })
    }

    /// Serves the last good versions it has (those of the persisted document, for a replica
    /// that has not listed the catalog yet), as the replicas already running keep serving
    /// theirs; the versions it serves, if any.
    fn serve_kept(
        &self,
        name: &str,
        reader: &CatalogReader,
        server: &crate::secrets::ServerSide,
        tx: &watch::Sender<Option<Arc<LoadedCatalog>>>,
    ) -> Option<Fragments> {
        if self.last_good.is_empty() {
            return None;
        }
        let kept: Vec<Document> = self
            .last_good
            .iter()
            .map(|(fragment, a)| Document {
                source: a.source.clone(),
                ..Document::new(fragment.clone(), a.text.as_bytes())
            })
            .collect();
        let base = reader.base_dir();
        let check = |c: &mut catalog::Catalog| server.settle(c, &base);
        let resolution = fragments::resolve(name, &kept, &self.last_good, &check);
        if resolution.served.is_empty() {
            return None;
        }
        let loaded = LoadedCatalog {
            catalog: resolution.catalog,
            base_dir: base,
        };
        if !tx.borrow().as_ref().is_some_and(|c| **c == loaded) {
            tx.send_replace(Some(Arc::new(loaded)));
        }
        Some(resolution.served)
    }

    /// A poll that could not read the catalog (a directory or prefix that cannot be listed:
    /// missing, permission denied, S3 refused or unreachable). What is served stays; a
    /// replica that has not listed the catalog yet serves the persisted last good catalog,
    /// read again at each poll (and served again when it changed) until the catalog can be
    /// listed, and `/readyz` says why and what is served.
    #[allow(clippy::too_many_arguments)]
    async fn unlistable(
        &mut self,
        name: &str,
        why: &str,
        reader: &CatalogReader,
        server: &crate::secrets::ServerSide,
        tx: &watch::Sender<Option<Arc<LoadedCatalog>>>,
        metrics: &Metrics,
        status: &Mutex<CatalogStatus>,
    ) {
        // Never listed here: what is served, if anything, is the document's.
        let from_document = self.store.is_some() && self.last_docs.is_none();
        if from_document {
            let changed = self.read_persisted(name, server, reader, status).await;
            if changed && let Some(fragments) = self.doc.fragments() {
                self.last_good = fragments.clone();
            }
            let kept = (changed || tx.borrow().is_none())
                .then(|| self.serve_kept(name, reader, server, tx))
                .flatten();
            if let Some(kept) = kept {
                let location = self.store.as_ref().map(|s| s.location().to_string());
                tracing::warn!(catalog = %name, last_good = ?location, fragments = self.last_good.len(), "catalog unreadable; serving the persisted last good catalog until it can be read");
                show_kept(&kept, status);
            }
        }
        let text = match &self.store {
            Some(store) if from_document && tx.borrow().is_some() => format!(
                "{why}; serving the last good catalog read from {}",
                store.location()
            ),
            _ => why.to_string(),
        };
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        if st.last_error.as_deref() != Some(text.as_str()) {
            metrics.catalog_loads.with_label_values(&["error"]).inc();
            metrics.catalog_last_load_success.set(0);
            if tx.borrow().is_some() {
                tracing::error!(error = %text, "catalog unreadable; still serving the last good catalog");
            } else {
                tracing::error!(error = %text, "catalog unreadable, and no last good catalog to serve: nothing is served until it can be read");
            }
            st.last_error = Some(text);
        }
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
        // Nor is the document emptied by it, while it holds fragments (even ones only other
        // replicas take) or cannot be read.
        if docs.is_empty() {
            self.read_persisted(name, server, reader, status).await;
        }
        let doc_holds = self.unread()
            || matches!(&self.doc, Doc::Good { fragments, unchecked, .. }
                if !fragments.is_empty() || !unchecked.is_empty());
        if docs.is_empty() && (had_proxies || !self.last_good.is_empty() || doc_holds) {
            // A replica that starts on an emptied folder serves what the others keep serving.
            if tx.borrow().is_none()
                && let Some(kept) = self.serve_kept(name, reader, server, tx)
            {
                show_kept(&kept, status);
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
            // What was listed is nothing: a poll that loads again (the document changed)
            // loads that, not the fragments listed before. (A replica that never listed
            // any stays one that serves the document's.)
            if self.last_docs.is_some() {
                self.last_docs = Some(Vec::new());
            }
            return;
        }
        // The shared versions: what the document keeps stands for every replica, so
        // replicas that saw different versions of a fragment fall back to the same one.
        self.read_persisted(name, server, reader, status).await;
        let base = reader.base_dir();
        let check = |c: &mut catalog::Catalog| server.settle(c, &base);
        // A replica's first load has no versions of its own: the document's stand in, or,
        // when they do not make one catalog, the fragments good now with the document's for
        // the others.
        let own = match self.doc.fragments() {
            Some(shared) if self.last_docs.is_none() && !fragments::fit_together(shared) => {
                let now: Fragments = docs
                    .iter()
                    .filter_map(|d| {
                        let a = fragments::accept(d, &check).ok()?;
                        Some((fragments::short_name(name, &d.name), a))
                    })
                    .collect();
                last_good::starting(&now, shared)
            }
            _ => self.last_good.clone(),
        };
        let last_good = last_good::versions(&own, self.doc.fragments());
        let resolution = fragments::resolve(name, docs, &last_good, &check);
        self.own_errors = docs
            .iter()
            .filter(|d| d.unreadable.is_none())
            .filter_map(|d| {
                let fragment = fragments::short_name(name, &d.name);
                if !resolution.refused.contains_key(&fragment) {
                    return None;
                }
                fragments::accept(d, &check).err().map(|e| (fragment, e))
            })
            .collect();
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
            .filter(|(_, r)| r.serving.is_none() && (r.offered.is_some() || r.unreadable))
            .map(|(n, _)| n)
            .collect();
        // A write that failed before is superseded by this load's.
        self.pending = None;
        let read_names: Vec<String> = match &self.doc {
            Doc::Good {
                fragments,
                unchecked,
                ..
            } => fragments.keys().chain(unchecked.keys()).cloned().collect(),
            _ => Vec::new(),
        };
        // Fragments whose version served changed with this load, seen live here: the
        // version served before joins those replaced since the last write.
        let changes = served
            .iter()
            .filter(|(n, _)| self.store.is_some() && !refused.contains_key(*n));
        for (n, a) in changes {
            if let Some(before) = self.last_good.get(n).filter(|b| b.version != a.version) {
                let versions = self.replaced.entry(n.clone()).or_default();
                versions.insert(before.version.clone());
            }
        }
        self.replaced.retain(|n, _| served.contains_key(n));
        if unserved.is_empty() || !matches!(self.doc, Doc::Ignored(_)) {
            let seen = self.seen.clone();
            self.persist(name, &served, &live, &seen, status).await;
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
                    unreadable: r.unreadable,
                };
                (n.clone(), shown)
            })
            .collect();
    }

    /// Writes the last good catalog when it lacks or differs from what is served (merged with
    /// what it keeps of other replicas, [`last_good::merge`]), over the version read only: a
    /// write that loses to another replica's is merged again at the next poll, and one that
    /// fails is tried again at each poll until it succeeds or is no longer needed.
    async fn persist(
        &mut self,
        name: &str,
        served: &Fragments,
        live: &std::collections::BTreeSet<String>,
        seen: &std::collections::BTreeSet<String>,
        status: &Mutex<CatalogStatus>,
    ) {
        self.pending = None;
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
        let merged = last_good::merge(&stored, served, live, seen, &self.replaced);
        let location = store.location().to_string();
        let outcome = match last_good::encode(name, &merged) {
            // The same fragments, and the catalog named as it is now (a document that names it
            // otherwise, as a replica of an older version did, is written anew).
            Ok((_, digest))
                if matches!(&self.doc, Doc::Good { digest: d, catalog, .. }
                    if *d == digest && *catalog == last_good::canonical(name)) =>
            {
                Ok(None)
            }
            Ok((bytes, digest)) => match store.write(&bytes, self.doc.tag()).await {
                Ok(tag) => Ok(Some((tag, digest))),
                Err(last_good::WriteError::Conflict(what)) => {
                    tracing::info!(last_good = %what, "last good catalog written by another replica meanwhile; read and merged again at the next poll");
                    self.reload = true;
                    return;
                }
                Err(last_good::WriteError::Failed(why)) => Err(why),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            // The document already holds it (another replica wrote it): nothing to write.
            Ok(None) => {
                self.replaced.clear();
                if self.write_error.take().is_some() {
                    tracing::info!(last_good = %location, "last good catalog up to date again, written by another replica");
                }
            }
            Ok(Some((tag, digest))) => {
                tracing::info!(last_good = %location, digest = %digest, fragments = merged.len(), "last good catalog written");
                let (fragments, kept) = written_apart(merged, served, &unchecked);
                // A fragment this server takes now is warned about again if it fails again.
                for n in fragments.keys().filter(|n| unchecked.contains_key(*n)) {
                    let own = format!("{n}: ");
                    self.skipped.retain(|w| w != n && !w.starts_with(&own));
                }
                let unchecked = kept;
                self.doc = Doc::Good {
                    tag,
                    catalog: last_good::canonical(name),
                    digest,
                    fragments,
                    unchecked,
                };
                self.ignored = None;
                self.write_error = None;
                self.replaced.clear();
            }
            Err(why) => {
                if self.write_error.as_ref() != Some(&why) {
                    tracing::error!(last_good = %location, "last good catalog not written: {why}; tried again at each poll");
                    self.write_error = Some(why);
                }
                self.pending = Some(PendingWrite {
                    live: live.clone(),
                    seen: seen.clone(),
                });
            }
        }
        self.show(status);
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
        metrics: Metrics,
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
                metrics: Metrics::new(),
                name,
            }
        }

        /// The fragments as they are now.
        async fn read(&mut self) -> Vec<Document> {
            let Ok(Some(Documents::Fragments(docs))) = self.reader.read().await else {
                panic!("no fragments read");
            };
            docs
        }

        async fn load(&mut self) {
            let docs = self.read().await;
            self.load_read(&docs).await;
        }

        /// Loads fragments read earlier (a replica whose poll listed them before a change).
        async fn load_read(&mut self, docs: &[Document]) {
            self.state
                .load(
                    &self.name,
                    docs,
                    &self.reader,
                    &self.server,
                    &self.tx,
                    &self.metrics,
                    &self.status,
                )
                .await;
        }

        /// A poll that finds the fragments as they were.
        async fn unchanged(&mut self) {
            self.state
                .unchanged(
                    &self.name,
                    &self.reader,
                    &self.server,
                    &self.tx,
                    &self.metrics,
                    &self.status,
                )
                .await;
        }

        /// One poll of the watch loop.
        async fn poll(&mut self) {
            poll(
                &self.name,
                &mut self.reader,
                &mut self.state,
                &self.server,
                &self.tx,
                &self.metrics,
                &self.status,
            )
            .await;
        }

        /// Catalogs accepted whole ("catalog loaded" in the log).
        fn loaded(&self) -> u64 {
            self.metrics.catalog_loads.with_label_values(&["ok"]).get()
        }

        fn status(&self) -> CatalogStatus {
            self.status.lock().unwrap().clone()
        }

        /// The version of fragment `name` served.
        fn serving(&self, name: &str) -> Option<FragmentVersion> {
            let st = self.status();
            match st.refused_fragments.get(name) {
                Some(r) => r.serving.clone(),
                None => st.fragments.get(name).cloned(),
            }
        }
    }

    /// A service's fragment: proxy `proxy` routes `/` to `to`; it defines `upstreams`, each
    /// with endpoint `ip`.
    fn service(proxy: &str, to: &str, upstreams: &[&str], ip: &str) -> String {
        let mut text = format!(
            "version: 1\nproxies:\n  {proxy}:\n    listeners:\n      - {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}\nupstreams:\n"
        );
        for u in upstreams {
            text.push_str(&format!(
                "  {u}: {{ protocol: http1, endpoints: {{ static: [\"{ip}:80\"] }} }}\n"
            ));
        }
        text
    }

    /// Writes a fragment uploaded at `secs` past an epoch (its mtime).
    fn upload(dir: &std::path::Path, name: &str, text: &str, secs: u64) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    /// Writes the document at `path` as another replica of `catalog` would, holding the
    /// fragments (name, text) given.
    fn write_document(catalog: &std::path::Path, path: &std::path::Path, texts: &[(&str, &str)]) {
        let doc: Fragments = texts
            .iter()
            .map(|(n, t)| {
                let a = fragments::accept(&Document::new(*n, t.as_bytes()), &|_| Vec::new());
                (n.to_string(), a.unwrap())
            })
            .collect();
        let (bytes, _) = last_good::encode(&catalog.display().to_string(), &doc).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The text of fragment `name` in the document at `path`.
    fn stored_text(path: &std::path::Path, name: &str) -> String {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        doc["fragments"][name]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {doc}"))
            .to_string()
    }

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xds-load-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("catalog.d")).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_document_naming_the_catalog_otherwise_is_written_anew_though_its_fragments_match() {
        let dir = scratch("respell");
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.1"),
            0,
        );
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.poll().await;
        let named = || {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            doc["catalog"].as_str().unwrap().to_string()
        };
        let canonical = last_good::canonical(&catalog.display().to_string());
        assert_eq!(named(), canonical);
        // The same fragments, the catalog spelled otherwise (by hand, or an older version).
        let otherwise = dir.join("x/../catalog.d").display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let respelled = text.replace(
            &serde_json::to_string(&canonical).unwrap(),
            &serde_json::to_string(&otherwise).unwrap(),
        );
        assert_ne!(respelled, text);
        std::fs::write(&path, respelled).unwrap();
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.poll().await;
        assert_eq!(y.status().last_good.unwrap().error, None);
        assert_eq!(named(), canonical);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_that_listed_before_an_upload_does_not_write_the_older_version_over_it() {
        let dir = scratch("lag");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let v1 = service("a", "a", &["a"], "10.0.0.1");
        let v2 = service("a", "a", &["a"], "10.0.0.2");
        upload(&catalog, "a.yaml", &v1, 0);
        upload(
            &catalog,
            "b.yaml",
            &service("b", "b", &["b"], "10.0.1.1"),
            0,
        );
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        // Y lists a.yaml v1; then v2 is uploaded, and X serves it and writes it.
        let listed_by_y = y.read().await;
        upload(&catalog, "a.yaml", &v2, 60);
        x.load().await;
        assert_eq!(
            x.serving("a.yaml"),
            Some(FragmentVersion::of(v2.as_bytes()))
        );
        // Y serves v1 until its next poll, and writes with what the document holds.
        y.load_read(&listed_by_y).await;
        assert_eq!(
            y.serving("a.yaml"),
            Some(FragmentVersion::of(v1.as_bytes()))
        );
        // a.yaml breaks: both replicas fall back to v2, the last good version.
        upload(
            &catalog,
            "a.yaml",
            &v2.replace("port: 8080", "port: 0"),
            120,
        );
        x.load().await;
        y.load().await;
        for r in [&x, &y] {
            assert_eq!(
                r.serving("a.yaml"),
                Some(FragmentVersion::of(v2.as_bytes()))
            );
            assert!(r.status().refused_fragments.contains_key("a.yaml"));
        }
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_write_that_fails_with_no_document_is_tried_again_without_loading_again() {
        let dir = scratch("nowrite");
        let catalog = dir.join("catalog.d");
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.1"),
            0,
        );
        // The document's directory is a link to one that is not there: it reads as absent,
        // and writing it fails, until that directory is made.
        std::os::unix::fs::symlink(dir.join("missing"), dir.join("store")).unwrap();
        let path = dir.join("store").join(last_good::DEFAULT_NAME);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        assert_eq!(x.loaded(), 1);
        let error = x.status().last_good.unwrap().error.unwrap();
        assert!(error.starts_with("cannot write"), "{error}");
        for _ in 0..3 {
            x.poll().await;
        }
        // The same fragments: not loaded again at each poll, and the error stays shown.
        assert_eq!(x.loaded(), 1);
        assert_eq!(x.status().last_good.unwrap().error, Some(error));
        std::fs::create_dir(dir.join("missing")).unwrap();
        x.poll().await;
        let shown = x.status().last_good.unwrap();
        assert_eq!(shown.error, None);
        assert!(shown.digest.is_some());
        assert!(path.exists());
        assert_eq!(x.loaded(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_document_is_read_again_at_each_poll_without_loading_again() {
        let dir = scratch("noread");
        let catalog = dir.join("catalog.d");
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.1"),
            0,
        );
        // A directory where the document should be: reading it fails.
        let path = dir.join(last_good::DEFAULT_NAME);
        std::fs::create_dir(&path).unwrap();
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        let error = x.status().last_good.unwrap().error.unwrap();
        assert!(error.starts_with("cannot read"), "{error}");
        for _ in 0..3 {
            x.poll().await;
        }
        assert_eq!(x.loaded(), 1);
        assert_eq!(x.status().last_good.unwrap().error, Some(error));
        // Readable (no document): loaded once more, and the document is written.
        std::fs::remove_dir(&path).unwrap();
        x.poll().await;
        assert_eq!(x.loaded(), 2);
        let shown = x.status().last_good.unwrap();
        assert_eq!(shown.error, None);
        assert!(shown.digest.is_some() && path.is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Makes a directory immutable (`chattr +i`, which binds root too) while it lives.
    struct Immutable(PathBuf);

    impl Immutable {
        fn new(dir: &std::path::Path) -> Immutable {
            let done = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                done,
                "chattr +i {}: this test needs root (CAP_LINUX_IMMUTABLE)",
                dir.display()
            );
            Immutable(dir.to_path_buf())
        }
    }

    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }

    #[tokio::test]
    async fn a_write_over_a_document_that_fails_is_tried_again_at_each_poll() {
        let dir = scratch("rewrite");
        let catalog = dir.join("catalog.d");
        let v1 = service("a", "a", &["a"], "10.0.0.1");
        let v2 = service("a", "a", &["a"], "10.0.0.2");
        upload(&catalog, "a.yaml", &v1, 0);
        let store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        let path = store.join(last_good::DEFAULT_NAME);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        let persisted = || stored_text(&path, "a.yaml");
        assert_eq!(persisted(), v1);
        let locked = Immutable::new(&store);
        upload(&catalog, "a.yaml", &v2, 60);
        x.poll().await;
        let error = x.status().last_good.unwrap().error.unwrap();
        assert!(error.starts_with("cannot write"), "{error}");
        x.poll().await;
        assert_eq!(x.status().last_good.unwrap().error, Some(error));
        drop(locked);
        // The next poll writes it, though nothing changed since.
        x.poll().await;
        assert_eq!(x.status().last_good.unwrap().error, None);
        assert_eq!(persisted(), v2);
        assert_eq!(x.loaded(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_that_starts_on_a_document_that_does_not_fit_keeps_every_fragment_good_now() {
        let dir = scratch("start");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        // `shared` moved from a.yaml to b.yaml; the document pairs a.yaml's older version
        // (which still defines it) with b.yaml's newer one (written by hand, or by a replica
        // that knew less). a.yaml is bad now.
        let a_v1 = service("a", "shared", &["shared"], "10.0.0.1");
        let b_v2 = service("b", "shared", &["b", "shared"], "10.0.1.1");
        let doc = |texts: &[(&str, &str)]| -> Fragments {
            texts
                .iter()
                .map(|(n, t)| {
                    let a = fragments::accept(&Document::new(*n, t.as_bytes()), &|_| Vec::new());
                    (n.to_string(), a.unwrap())
                })
                .collect()
        };
        let (bytes, _) = last_good::encode(
            &catalog.display().to_string(),
            &doc(&[("a.yaml", &a_v1), ("b.yaml", &b_v2)]),
        )
        .unwrap();
        std::fs::write(&path, bytes).unwrap();
        upload(
            &catalog,
            "a.yaml",
            &a_v1.replace("port: 8080", "port: 0"),
            60,
        );
        upload(&catalog, "b.yaml", &b_v2, 60);
        let mut z = Replica::start(&catalog, &path, "x.example").await;
        z.load().await;
        let st = z.status();
        // b.yaml, good now and unchanged, is served; a.yaml's old version, which takes
        // b.yaml's upstream, is not.
        assert_eq!(
            z.serving("b.yaml"),
            Some(FragmentVersion::of(b_v2.as_bytes()))
        );
        assert!(
            !st.refused_fragments.contains_key("b.yaml"),
            "{:?}",
            st.refused_fragments
        );
        assert_eq!(st.refused_fragments["a.yaml"].serving, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_fragment_rolled_back_with_its_old_mtime_falls_back_to_the_version_rolled_back_to() {
        let dir = scratch("rollback");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let v1 = service("a", "a", &["a"], "10.0.0.1");
        let v2 = service("a", "a", &["a"], "10.0.0.2");
        upload(&catalog, "a.yaml", &v1, 0);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        // v1 kept aside (`cp -p a.yaml a.yaml.bak`), v2 uploaded, then v1 put back with its
        // old mtime (`mv a.yaml.bak a.yaml`).
        let bak = dir.join("a.yaml.bak");
        std::fs::rename(catalog.join("a.yaml"), &bak).unwrap();
        upload(&catalog, "a.yaml", &v2, 60);
        x.load().await;
        std::fs::rename(&bak, catalog.join("a.yaml")).unwrap();
        x.load().await;
        assert_eq!(
            x.serving("a.yaml"),
            Some(FragmentVersion::of(v1.as_bytes()))
        );
        // a.yaml breaks: this replica and a new one fall back to v1, the version served last.
        upload(
            &catalog,
            "a.yaml",
            &v1.replace("port: 8080", "port: 0"),
            120,
        );
        x.load().await;
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.load().await;
        for r in [&x, &y] {
            assert_eq!(
                r.serving("a.yaml"),
                Some(FragmentVersion::of(v1.as_bytes()))
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_rollback_loaded_while_the_document_cannot_be_read_is_written_once_it_can() {
        let dir = scratch("rollback-unread");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let v1 = service("a", "a", &["a"], "10.0.0.1");
        let v2 = service("a", "a", &["a"], "10.0.0.2");
        // As a prefix reads them: a versioned bucket whose current version v2 is deleted
        // makes v1 current again, with its own ETag and Last-Modified.
        let object = |text: &str, etag: &str, secs: u64| Document {
            source: Some(format!(
                "ETag \"{etag}\", modified {}.000000000",
                1_700_000_000 + secs
            )),
            ..Document::new(format!("{}/a.yaml", catalog.display()), text.as_bytes())
        };
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load_read(&[object(&v1, "e1", 0)]).await;
        x.load_read(&[object(&v2, "e2", 60)]).await;
        let persisted = || stored_text(&path, "a.yaml");
        assert_eq!(persisted(), v2);
        // The rollback is loaded while the document cannot be read (a directory stands in
        // its place): nothing is written then.
        let aside = dir.join("document.aside");
        std::fs::rename(&path, &aside).unwrap();
        std::fs::create_dir(&path).unwrap();
        x.load_read(&[object(&v1, "e1", 0)]).await;
        assert_eq!(
            x.serving("a.yaml"),
            Some(FragmentVersion::of(v1.as_bytes()))
        );
        // Readable again, still holding v2: the next poll (the fragments unchanged) writes
        // v1 over it, though v2 was uploaded later.
        std::fs::remove_dir(&path).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        x.unchanged().await;
        assert_eq!(x.status().last_good.unwrap().error, None);
        assert_eq!(persisted(), v1);
        // a.yaml breaks: a replica that starts now falls back to v1, as this one does.
        let broken = [object(&v1.replace("port: 8080", "port: 0"), "e3", 120)];
        x.load_read(&broken).await;
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.load_read(&broken).await;
        for r in [&x, &y] {
            assert_eq!(
                r.serving("a.yaml"),
                Some(FragmentVersion::of(v1.as_bytes()))
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_fragment_is_refused_on_its_own_and_the_others_still_change() {
        let dir = scratch("unreadable");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let a1 = service("a", "a", &["a"], "10.0.0.1");
        let a2 = service("a", "a", &["a"], "10.0.0.2");
        let b = service("b", "b", &["b"], "10.0.1.1");
        upload(&catalog, "a.yaml", &a1, 0);
        upload(&catalog, "b.yaml", &b, 0);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        // b.yaml becomes a dangling symlink; a.yaml changes meanwhile.
        std::fs::remove_file(catalog.join("b.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone.yaml"), catalog.join("b.yaml")).unwrap();
        upload(&catalog, "a.yaml", &a2, 60);
        x.load().await;
        // A replica that starts now serves the same: b.yaml from the last good catalog.
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.load().await;
        for r in [&x, &y] {
            assert_eq!(
                r.serving("a.yaml"),
                Some(FragmentVersion::of(a2.as_bytes()))
            );
            assert_eq!(r.serving("b.yaml"), Some(FragmentVersion::of(b.as_bytes())));
            let st = r.status();
            let refused = &st.refused_fragments["b.yaml"];
            assert!(refused.error.contains("cannot read"), "{}", refused.error);
            // Nothing was read: no version is offered, and it says so.
            assert_eq!(refused.offered, None);
            assert!(refused.unreadable);
            assert_eq!(st.refused_fragments.len(), 1);
        }
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        std::fs::remove_dir_all(&dir).unwrap();
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

    #[tokio::test]
    async fn a_replica_that_cannot_parse_a_persisted_fragment_writes_it_back_as_it_was() {
        let dir = scratch("newer");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        // A newer server (in a rolling upgrade) wrote a fragment with a field this one does
        // not know; this one refuses it live, and must not drop it from the document.
        let future = format!(
            "{}future_field: {{ on: true }}\n",
            service("f", "f", &["f"], "10.0.2.1")
        );
        let a1 = service("a", "a", &["a"], "10.0.0.1");
        let a2 = service("a", "a", &["a"], "10.0.0.2");
        upload(&catalog, "a.yaml", &a1, 0);
        upload(&catalog, "future.yaml", &future, 0);
        let doc = Fragments::from([
            (
                "a.yaml".to_string(),
                fragments::accept(&Document::new("a.yaml", a1.as_bytes()), &|_| Vec::new())
                    .unwrap(),
            ),
            (
                "future.yaml".to_string(),
                fragments::Accepted::unparsed(
                    FragmentVersion::of(future.as_bytes()),
                    future.as_str().into(),
                    Some("changed 1700000000.000000000".into()),
                ),
            ),
        ]);
        let (bytes, _) = last_good::encode(&catalog.display().to_string(), &doc).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        assert_eq!(x.serving("future.yaml"), None);
        upload(&catalog, "a.yaml", &a2, 60);
        x.load().await;
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["fragments"]["a.yaml"]["text"], a2);
        assert_eq!(doc["fragments"]["future.yaml"]["text"], future);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_emptied_folder_stays_refused_when_the_document_changes_meanwhile() {
        let dir = scratch("emptied");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let a = service("a", "a", &["a"], "10.0.0.1");
        upload(&catalog, "a.yaml", &a, 0);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.poll().await;
        std::fs::remove_file(catalog.join("a.yaml")).unwrap();
        x.poll().await;
        let error = x.status().last_error.unwrap();
        assert!(error.contains("lists no catalog files"), "{error}");
        // Another replica writes the document (here: a.yaml's other version) meanwhile.
        let other = service("a", "a", &["a"], "10.0.0.2");
        write_document(&catalog, &path, &[("a.yaml", &other)]);
        x.poll().await;
        // Still nothing listed: still refused, and what it served stays.
        assert_eq!(x.status().last_error, Some(error));
        assert_eq!(x.loaded(), 1);
        let served = x.tx.borrow().clone().unwrap();
        assert!(
            served
                .catalog
                .upstreams
                .values()
                .any(|u| format!("{u:?}").contains("10.0.0.1"))
        );
        // A replica that starts on the emptied folder serves the document's versions, and
        // still says so once the folder cannot be listed at all.
        let mut z = Replica::start(&catalog, &path, "x.example").await;
        z.poll().await;
        assert_eq!(
            z.serving("a.yaml"),
            Some(FragmentVersion::of(other.as_bytes()))
        );
        // ... and follows it as the other replicas write it, the folder still empty.
        let third = service("a", "a", &["a"], "10.0.0.3");
        write_document(&catalog, &path, &[("a.yaml", &third)]);
        z.poll().await;
        assert_eq!(
            z.serving("a.yaml"),
            Some(FragmentVersion::of(third.as_bytes()))
        );
        std::fs::remove_dir(&catalog).unwrap();
        z.poll().await;
        let error = z.status().last_error.unwrap();
        assert!(
            error.ends_with(&format!(
                "; serving the last good catalog read from {}",
                path.display()
            )),
            "{error}"
        );
        // With no last good location, nothing is kept of the versions replaced.
        x.state.store = None;
        std::fs::create_dir(&catalog).unwrap();
        for (k, ip) in ["10.0.0.7", "10.0.0.8"].iter().enumerate() {
            upload(
                &catalog,
                "a.yaml",
                &service("a", "a", &["a"], ip),
                300 + k as u64,
            );
            x.poll().await;
        }
        assert_eq!(x.loaded(), 3);
        assert!(x.state.replaced.is_empty(), "{:?}", x.state.replaced);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_newer_servers_version_in_the_document_never_stands_in_for_the_one_served() {
        let dir = scratch("newer-kept");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let f1 = service("f", "f", &["f"], "10.0.2.1");
        let f2 = format!("{f1}future_field: {{ on: true }}\n");
        let a = |ip: &str| service("a", "a", &["a"], ip);
        upload(&catalog, "a.yaml", &a("10.0.0.1"), 0);
        upload(&catalog, "f.yaml", &f1, 0);
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.load().await;
        // A newer server takes f.yaml's v2 and writes it; this one refuses it and serves v1.
        upload(&catalog, "f.yaml", &f2, 60);
        let accepted = |t: &str| {
            fragments::accept(&Document::new("a.yaml", t.as_bytes()), &|_| Vec::new()).unwrap()
        };
        let written_by_newer = Fragments::from([
            ("a.yaml".to_string(), accepted(&a("10.0.0.1"))),
            (
                "f.yaml".to_string(),
                fragments::Accepted::unparsed(
                    FragmentVersion::of(f2.as_bytes()),
                    f2.as_str().into(),
                    // As that server read it: later than v1 (whose ctime is now).
                    Some("changed 4000000000.000000000".into()),
                ),
            ),
        ]);
        let (bytes, _) =
            last_good::encode(&catalog.display().to_string(), &written_by_newer).unwrap();
        std::fs::write(&path, bytes).unwrap();
        // This replica writes the document for another change (a.yaml), keeping v2 in it.
        upload(&catalog, "a.yaml", &a("10.0.0.2"), 120);
        y.load().await;
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["fragments"]["f.yaml"]["text"], f2);
        assert_eq!(doc["fragments"]["a.yaml"]["text"], a("10.0.0.2"));
        // Loads again (a.yaml changes once more): still v1 of f.yaml, its proxy served.
        upload(&catalog, "a.yaml", &a("10.0.0.3"), 180);
        y.load().await;
        assert_eq!(
            y.serving("f.yaml"),
            Some(FragmentVersion::of(f1.as_bytes()))
        );
        let served = y.tx.borrow().clone().unwrap();
        assert!(
            served
                .catalog
                .proxies
                .contains_key(&catalog::ProxyName("f".into()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_serving_nothing_does_not_empty_the_document_when_the_folder_empties() {
        let dir = std::env::temp_dir().join(format!("xds-load-emptied-td-{}", std::process::id()));
        let catalog = dir.join("catalog.d");
        std::fs::create_dir_all(&catalog).unwrap();
        // A fragment only replicas of trust domain x.example take.
        let m =
            A.replace("a:", "m:").replace("to: a", "to: m") + "mesh: { trust_domain: x.example }\n";
        std::fs::write(catalog.join("m.yaml"), &m).unwrap();
        let path = dir.join(last_good::DEFAULT_NAME);
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.load().await;
        // Y serves nothing of it; then the folder empties (a wrong prefix, a moved folder).
        let mut y = Replica::start(&catalog, &path, "y.example").await;
        y.load().await;
        assert_eq!(y.serving("m.yaml"), None);
        std::fs::remove_file(catalog.join("m.yaml")).unwrap();
        y.poll().await;
        let error = y.status().last_error.unwrap();
        assert!(error.contains("lists no catalog files"), "{error}");
        // The document still holds m.yaml for the replicas that take it.
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["fragments"]["m.yaml"]["text"], m);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_that_starts_while_its_directory_cannot_be_listed_serves_the_last_good_catalog()
     {
        let dir = scratch("unlistable");
        let catalog = dir.join("catalog.d");
        let a = service("a", "a", &["a"], "10.0.0.1");
        upload(&catalog, "a.yaml", &a, 0);
        // X served a.yaml and wrote it at the default place.
        let path = match LastGoodLocation::default_for(&CatalogLocation::File(catalog.clone())) {
            Some(LastGoodLocation::File(p)) => p,
            other => panic!("no default place: {other:?}"),
        };
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.poll().await;
        assert!(path.is_file());
        // The directory goes (a volume not mounted yet, a folder moved): it cannot be listed.
        std::fs::rename(&catalog, dir.join("moved")).unwrap();
        // Its default last good place is still beside it.
        assert_eq!(
            LastGoodLocation::default_for(&CatalogLocation::File(catalog.clone())),
            Some(LastGoodLocation::File(path.clone()))
        );
        assert_eq!(
            LastGoodLocation::default_for(&CatalogLocation::File(dir.join("catalog.yaml"))),
            None
        );
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.poll().await;
        y.poll().await;
        // Y serves what X serves, and says why it serves it from the document.
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        assert!(y.tx.borrow().is_some());
        assert_eq!(y.serving("a.yaml"), Some(FragmentVersion::of(a.as_bytes())));
        let error = y.status().last_error.unwrap();
        assert!(
            error.starts_with(&format!("cannot read {}", catalog.display()))
                && error.ends_with(&format!(
                    "serving the last good catalog read from {}",
                    path.display()
                )),
            "{error}"
        );
        // Listed again: served from the directory, the error cleared.
        std::fs::rename(dir.join("moved"), &catalog).unwrap();
        y.poll().await;
        assert_eq!(y.status().last_error, None);
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_replica_whose_directory_stays_unlistable_serves_the_last_good_catalog_as_it_changes()
    {
        let dir = scratch("unlistable-later");
        let catalog = dir.join("catalog.d");
        let moved = dir.join("moved");
        let path = dir.join(last_good::DEFAULT_NAME);
        let v1 = service("a", "a", &["a"], "10.0.0.1");
        let v2 = service("a", "a", &["a"], "10.0.0.2");
        upload(&catalog, "a.yaml", &v1, 0);
        std::fs::rename(&catalog, &moved).unwrap();
        // Y starts while the directory is missing and nothing has been written yet.
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.poll().await;
        assert!(y.tx.borrow().is_none());
        let unlisted = y.status().last_error.unwrap();
        assert!(
            unlisted.starts_with(&format!("cannot read {}", catalog.display())),
            "{unlisted}"
        );
        // X, where the directory is there, serves a.yaml and writes it.
        let mut x = {
            std::fs::rename(&moved, &catalog).unwrap();
            let mut x = Replica::start(&catalog, &path, "x.example").await;
            x.poll().await;
            std::fs::rename(&catalog, &moved).unwrap();
            x
        };
        // Y's next poll serves it, and says where it comes from.
        y.poll().await;
        assert_eq!(
            y.serving("a.yaml"),
            Some(FragmentVersion::of(v1.as_bytes()))
        );
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        let error = y.status().last_error.unwrap();
        assert_eq!(
            error,
            format!(
                "{unlisted}; serving the last good catalog read from {}",
                path.display()
            )
        );
        // a.yaml changes where X lists it; X writes the new version; Y, still unable to list,
        // serves it at its next poll.
        std::fs::rename(&moved, &catalog).unwrap();
        upload(&catalog, "a.yaml", &v2, 60);
        x.poll().await;
        std::fs::rename(&catalog, &moved).unwrap();
        y.poll().await;
        assert_eq!(
            y.serving("a.yaml"),
            Some(FragmentVersion::of(v2.as_bytes()))
        );
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        assert_eq!(y.status().last_error, Some(error));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_fragment_that_gains_a_private_key_is_refused_and_its_last_good_version_kept() {
        let dir = scratch("key");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let k1 = service("k", "k", &["k"], "10.0.0.1");
        upload(&catalog, "k.yaml", &k1, 0);
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.1.1"),
            0,
        );
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.poll().await;
        // A key pasted into a comment of k.yaml's next version.
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let body = pem.lines().nth(1).unwrap().to_string();
        let commented: String = pem.lines().map(|l| format!("# {l}\n")).collect();
        let k2 = format!("{}{commented}", k1.replace("10.0.0.1", "10.0.0.2"));
        upload(&catalog, "k.yaml", &k2, 60);
        x.poll().await;
        let persisted = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&persisted).unwrap();
        assert_eq!(doc["fragments"]["k.yaml"]["text"], k1.as_str());
        assert!(!persisted.contains(&body));
        // A replica that starts now serves k.yaml's last good version too.
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.poll().await;
        for r in [&x, &y] {
            let st = r.status();
            let refused = &st.refused_fragments["k.yaml"];
            assert_eq!(refused.serving, Some(FragmentVersion::of(k1.as_bytes())));
            assert!(
                refused
                    .error
                    .contains("holds a private key (a PEM PRIVATE KEY block)"),
                "{}",
                refused.error
            );
            let shown = serde_json::to_string(&st).unwrap();
            assert!(!shown.contains(&body), "{shown}");
            assert_eq!(st.last_good.unwrap().error, None);
        }
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_fragment_whose_mode_or_times_change_with_its_bytes_the_same_is_not_loaded_again() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = scratch("chmod");
        let catalog = dir.join("catalog.d");
        let file = catalog.join("a.yaml");
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.1"),
            0,
        );
        let mut x = Replica::start(&catalog, &dir.join(last_good::DEFAULT_NAME), "x.example").await;
        x.poll().await;
        assert_eq!(x.loaded(), 1);
        let written = std::fs::read(dir.join(last_good::DEFAULT_NAME)).unwrap();
        // chmod (and touch) give the file a new ctime; wait for the clock to move on so they do.
        let before = std::fs::metadata(&file).unwrap().ctime_nsec();
        for mode in [0o600, 0o644].iter().cycle() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).unwrap();
            if std::fs::metadata(&file).unwrap().ctime_nsec() != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.1"),
            30,
        );
        x.poll().await;
        x.poll().await;
        assert_eq!(x.loaded(), 1, "the same bytes were loaded again");
        assert_eq!(
            std::fs::read(dir.join(last_good::DEFAULT_NAME)).unwrap(),
            written,
            "the last good catalog was written again for the same versions"
        );
        // A change of its bytes still loads.
        upload(
            &catalog,
            "a.yaml",
            &service("a", "a", &["a"], "10.0.0.2"),
            60,
        );
        x.poll().await;
        assert_eq!(x.loaded(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_fragment_refused_for_a_missing_file_is_served_once_the_file_appears() {
        let dir = scratch("late-file");
        let catalog = dir.join("catalog.d");
        upload(
            &catalog,
            "b.yaml",
            &service("b", "b", &["b"], "10.0.1.1"),
            0,
        );
        let a = service("a", "a", &[], "")
            + "  a:\n    protocol: http1\n    endpoints: { static: [\"10.0.0.1:80\"] }\n    tls: { trust: { file: ca.pem }, sni: a.test }\n";
        upload(&catalog, "a.yaml", &a, 0);
        let mut x = Replica::start(&catalog, &dir.join(last_good::DEFAULT_NAME), "x.example").await;
        x.poll().await;
        let refused = &x.status().refused_fragments["a.yaml"];
        assert!(refused.error.contains("ca.pem"), "{}", refused.error);
        assert_eq!(refused.serving, None);
        let errors = |x: &Replica| x.metrics.catalog_loads.with_label_values(&["error"]).get();
        let refusals = errors(&x);
        // Checked again at each poll, and while nothing changed it is not loaded (nor
        // counted, nor logged) again.
        x.poll().await;
        assert_eq!(errors(&x), refusals);
        // The file it names appears, its bytes unchanged: it is served at the next poll.
        let ca = crate::ca::Ca::generate("t").unwrap();
        std::fs::write(catalog.join("ca.pem"), ca.certificate_pem()).unwrap();
        x.poll().await;
        let st = x.status();
        assert!(
            st.refused_fragments.is_empty(),
            "{:?}",
            st.refused_fragments
        );
        assert_eq!(st.fragments["a.yaml"], FragmentVersion::of(a.as_bytes()));
        assert_eq!(x.loaded(), 1);
        x.poll().await;
        assert_eq!(x.loaded(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_last_good_fragment_refused_for_a_missing_file_stands_in_once_the_file_appears() {
        let dir = scratch("late-file-doc");
        let catalog = dir.join("catalog.d");
        let path = dir.join(last_good::DEFAULT_NAME);
        let b = service("b", "b", &["b"], "10.0.1.1");
        upload(&catalog, "b.yaml", &b, 0);
        let a = service("a", "a", &[], "")
            + "  a:\n    protocol: http1\n    endpoints: { static: [\"10.0.0.1:80\"] }\n    tls: { trust: { file: ca.pem }, sni: a.test }\n";
        upload(&catalog, "a.yaml", &a, 0);
        let ca = crate::ca::Ca::generate("t").unwrap();
        std::fs::write(catalog.join("ca.pem"), ca.certificate_pem()).unwrap();
        let mut x = Replica::start(&catalog, &path, "x.example").await;
        x.poll().await;
        assert_eq!(x.serving("a.yaml"), Some(FragmentVersion::of(a.as_bytes())));
        // a.yaml breaks; a replica starts while ca.pem is missing (its volume not mounted
        // yet): the document's a.yaml does not pass its checks, and it serves none of it.
        upload(&catalog, "a.yaml", &a.replace("port: 8080", "port: 0"), 60);
        x.poll().await;
        std::fs::remove_file(catalog.join("ca.pem")).unwrap();
        let mut y = Replica::start(&catalog, &path, "x.example").await;
        y.poll().await;
        assert_eq!(y.serving("a.yaml"), None);
        // ca.pem appears: at the next poll, nothing else changed, y serves a.yaml's last
        // good version, as x does.
        std::fs::write(catalog.join("ca.pem"), ca.certificate_pem()).unwrap();
        y.poll().await;
        assert_eq!(y.serving("a.yaml"), Some(FragmentVersion::of(a.as_bytes())));
        assert_eq!(*x.tx.borrow(), *y.tx.borrow());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_catalog_file_refused_for_a_missing_file_is_served_once_the_file_appears() {
        let dir = scratch("late-file-one");
        let path = dir.join("catalog.yaml");
        let text = service("a", "a", &[], "")
            + "  a:\n    protocol: http1\n    endpoints: { static: [\"10.0.0.1:80\"] }\n    tls: { trust: { file: ca.pem }, sni: a.test }\n";
        std::fs::write(&path, &text).unwrap();
        let location = CatalogLocation::File(path.clone());
        let name = location.to_string();
        let mut reader = CatalogReader::new(&location).await;
        let server = crate::secrets::ServerSide {
            has_ca: false,
            trust_domain: "x.example".into(),
        };
        let status = Mutex::new(CatalogStatus::default());
        let mut state = FragmentState::start(&name, None, &server, &reader, &status).await;
        let (tx, _) = watch::channel(None);
        let metrics = Metrics::new();
        for _ in 0..2 {
            poll(
                &name,
                &mut reader,
                &mut state,
                &server,
                &tx,
                &metrics,
                &status,
            )
            .await;
        }
        let error = status.lock().unwrap().last_error.clone().unwrap();
        assert!(error.contains("ca.pem"), "{error}");
        assert!(tx.borrow().is_none());
        // Refused once, not again at each poll.
        assert_eq!(metrics.catalog_loads.with_label_values(&["error"]).get(), 1);
        let ca = crate::ca::Ca::generate("t").unwrap();
        std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
        poll(
            &name,
            &mut reader,
            &mut state,
            &server,
            &tx,
            &metrics,
            &status,
        )
        .await;
        assert!(
            tx.borrow().is_some(),
            "the catalog is served once its file is there"
        );
        assert_eq!(status.lock().unwrap().last_error, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_prefix_poll_fetches_only_the_keys_new_changed_or_unreadable() {
        let fetched = std::cell::RefCell::new(Vec::<String>::new());
        let readable = std::cell::Cell::new(false);
        let fetch = |key: String, etag: String| {
            fetched.borrow_mut().push(key.clone());
            let doc = if key == "b.yaml" && !readable.get() {
                Document::unreadable(key, "cannot read b.yaml: InvalidObjectState")
            } else {
                Document::new(key, etag.clone().into_bytes())
            };
            async move { (doc, Some(etag)) }
        };
        let listed = |a: &str, b: &str| {
            vec![
                ("a.yaml".to_string(), a.to_string()),
                ("b.yaml".to_string(), b.to_string()),
            ]
        };
        let mut state = PrefixState::default();
        let mut poll = async |now: Vec<(String, String)>| {
            fetched.borrow_mut().clear();
            let docs = state.update(now, fetch).await;
            (docs.is_some(), fetched.borrow().clone())
        };
        assert_eq!(
            poll(listed("1", "1")).await,
            (true, vec!["a.yaml".into(), "b.yaml".into()])
        );
        // b.yaml still cannot be read: only it is fetched again, and nothing is loaded again.
        assert_eq!(poll(listed("1", "1")).await, (false, vec!["b.yaml".into()]));
        assert_eq!(poll(listed("1", "1")).await, (false, vec!["b.yaml".into()]));
        // Readable now: loaded.
        readable.set(true);
        assert_eq!(poll(listed("1", "1")).await, (true, vec!["b.yaml".into()]));
        // Nothing changed: nothing fetched.
        assert_eq!(poll(listed("1", "1")).await, (false, vec![]));
        // a.yaml changed: only it is fetched.
        assert_eq!(poll(listed("2", "1")).await, (true, vec!["a.yaml".into()]));
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
