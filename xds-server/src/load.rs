//! Reading the catalog from where it lives (a file, a directory of fragments, an S3 object or
//! prefix) and following its changes: accepted catalogs go out on a watch channel, refused ones
//! leave the last good one in place, and [`CatalogStatus`] says how the latest load went.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::catalog::{self, LoadedCatalog};
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
/// prefix (name and bytes, in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Documents {
    One(String, Vec<u8>),
    Fragments(Vec<(String, Vec<u8>)>),
}

impl Documents {
    /// The catalog they make; `location` names a directory's or prefix's errors.
    fn parse(&self, location: &str) -> Result<catalog::Catalog, catalog::CatalogErrors> {
        match self {
            Documents::One(name, bytes) => catalog::parse_bytes(name, bytes),
            Documents::Fragments(fragments) => catalog::merge(location, fragments),
        }
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

    /// New documents, `Ok(None)` when unchanged, or why they could not be read.
    async fn read(&mut self) -> Result<Option<Documents>, String> {
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
                    Err(e) => {
                        // Read it again once it is back, even if unchanged.
                        *last = None;
                        Err(format!("cannot read {}: {e}", path.display()))
                    }
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
                let now: Vec<(String, String)> = objects
                    .into_iter()
                    .filter(|o| catalog::is_fragment_name(&o.key))
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
                    read.push((key, etag.unwrap_or(listed_etag)));
                    fragments.push((name, bytes));
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
) -> Result<LoadedCatalog, String> {
    let name = location.to_string();
    let mut reader = CatalogReader::new(location).await;
    let docs = reader
        .read()
        .await?
        .ok_or_else(|| format!("{name}: nothing read"))?;
    let mut catalog = docs.parse(&name).map_err(|e| e.to_string())?;
    let base_dir = reader.base_dir();
    let errors = server.settle(&mut catalog, &base_dir);
    if !errors.is_empty() {
        return Err(catalog::CatalogErrors {
            source_name: name,
            errors,
        }
        .to_string());
    }
    Ok(LoadedCatalog { catalog, base_dir })
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
}

/// Re-reads the catalog whenever its content changes; accepted catalogs go to `tx`.
pub async fn watch_catalog(
    location: CatalogLocation,
    interval: Duration,
    tx: watch::Sender<Option<Arc<LoadedCatalog>>>,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
    server: crate::secrets::ServerSide,
) {
    let name = location.to_string();
    let mut reader = CatalogReader::new(&location).await;
    loop {
        match reader.read().await {
            Ok(Some(docs)) => {
                // A directory or prefix that had proxies and now lists nothing is more likely a
                // mistake (a wrong prefix, a moved folder) than every service going away.
                let emptied = matches!(&docs, Documents::Fragments(f) if f.is_empty())
                    && tx
                        .borrow()
                        .as_ref()
                        .is_some_and(|c| !c.catalog.proxies.is_empty());
                let loaded = if emptied {
                    Err(catalog::CatalogErrors {
                        source_name: name.clone(),
                        errors: vec![catalog::CatalogError {
                            path: String::new(),
                            message: "lists no catalog files any more; the last good catalog stays (an emptied folder is more likely a mistake than every proxy going away)".into(),
                        }],
                    })
                } else {
                    docs.parse(&name).and_then(|mut catalog| {
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
                    })
                };
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                match loaded {
                    Ok(c) => {
                        metrics.catalog_loads.with_label_values(&["ok"]).inc();
                        metrics.catalog_last_load_success.set(1);
                        tracing::info!(catalog = %name, proxies = c.catalog.proxies.len(), upstreams = c.catalog.upstreams.len(), "catalog loaded");
                        for w in catalog::warnings(&c.catalog) {
                            tracing::warn!(catalog = %name, path = %w.path, "{}", w.message);
                        }
                        st.last_success = Some(common::duration::since_epoch().as_secs());
                        st.last_error = None;
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
            Ok(None) => {}
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

#[cfg(test)]
mod tests {
    use super::CatalogLocation;

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
