//! One synchronisation pass: list, fetch what changed (conditional GETs), render templates,
//! validate, replace files atomically, delete what the loader wrote and S3 no longer has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::ChecksumMode;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error_kind::ErrorKind;
use crate::generation;
use crate::location::S3Location;
use crate::metrics::Metrics;
use crate::paths::{UnsafeKey, relative_path};
use crate::state::{Entry, State};
use crate::template;
use common::files::{self, FileOptions};

/// Where objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `sync`: every object under the prefix, to the same relative path under this directory.
    Dir(PathBuf),
    /// `get`: one object to this file.
    File(PathBuf),
}

/// What a pass does.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The bucket and key (`get`) or prefix (`sync`).
    pub source: S3Location,
    /// Where the files go.
    pub target: Target,
    /// Remove files the loader wrote whose objects are gone.
    pub delete: bool,
    /// Objects larger than this are refused.
    pub max_size: u64,
    /// Mode and ownership of written files.
    pub file: FileOptions,
    /// Runs on each staged file before it replaces the old one; `{}` is the staged file's path.
    pub validate: Option<String>,
    /// Time allowed for `validate`.
    pub validate_timeout: Duration,
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// Publish each changed set of files together (`sync` only; see [`crate::generation`]).
    pub atomic_set: bool,
    /// A prefix that lists no objects is fine (`sync` only): otherwise it is an error, more
    /// likely a wrong bucket or prefix than a wish for an empty directory.
    pub allow_empty: bool,
    /// The environment variables templates may read.
    pub template_env: template::EnvPolicy,
}

/// A problem with one object; the other objects of the pass go ahead, and the object's file,
/// if an earlier pass wrote one, keeps its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ObjectError {
    /// The object key.
    pub key: String,
    /// What kind of problem.
    pub kind: ErrorKind,
    /// The details.
    pub message: String,
    /// The object's file, when it is there from an earlier pass (and keeps that content).
    pub kept: Option<PathBuf>,
}

impl ObjectError {
    /// A problem with the object `key`; [`Syncer::run_once`] fills in `kept`.
    pub fn new(key: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ObjectError {
            key: key.into(),
            kind,
            message: message.into(),
            kept: None,
        }
    }

    /// What became of the object's file: its previous content stays, or none was written.
    pub fn outcome(&self) -> String {
        match &self.kept {
            Some(path) => format!("{} keeps its previous content", path.display()),
            None => "no file written".to_string(),
        }
    }
}

/// A problem that stopped the whole pass; every file stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Listing the prefix failed (S3 unreachable, access denied, no such bucket).
    #[error("cannot list {location}: {message}")]
    List {
        /// What was listed.
        location: String,
        /// Why it failed.
        message: String,
    },
    /// The target directory could not be created or opened.
    #[error("cannot open the target directory {dir}: {source}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A new generation (`--atomic-set`) could not be built or published.
    #[error("cannot publish a new set of files in {dir}: {source}")]
    Generation {
        /// The target directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error("cannot write the state file {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Objects found.
    pub listed: usize,
    /// Object bodies downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Objects whose file was already up to date (no body downloaded, or identical bytes). Each
    /// listed object is counted once: written, unchanged, or in `errors`.
    pub unchanged: usize,
    /// Files replaced or created.
    pub written: Vec<PathBuf>,
    /// Files removed (`--delete`).
    pub deleted: Vec<PathBuf>,
    /// Per-object problems.
    pub errors: Vec<ObjectError>,
}

impl SyncReport {
    /// Whether any file changed.
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.deleted.is_empty()
    }

    /// Adds what the pass did to the metrics.
    pub fn count_in(&self, m: &Metrics) {
        m.downloads.inc_by(self.downloaded as u64);
        m.bytes.inc_by(self.bytes);
        m.written.inc_by(self.written.len() as u64);
        m.deleted.inc_by(self.deleted.len() as u64);
        for e in &self.errors {
            m.errors.with_label_values(&[e.kind.label()]).inc();
        }
        if self.errors.is_empty() {
            m.passes.with_label_values(&["ok"]).inc();
            m.last_success
                .set(common::duration::since_epoch().as_secs_f64());
            m.last_sync_successful.set(1);
        } else {
            m.passes.with_label_values(&["error"]).inc();
            m.last_sync_successful.set(0);
        }
    }

    /// One line for logs and `--once` output: each object counted once (written, unchanged, or
    /// an error), then the bodies that took and the files deleted.
    pub fn summary(&self) -> String {
        let n = |count: u64, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        format!(
            "{}: {} written, {} unchanged, {}; {} downloaded ({}), {} deleted",
            n(self.listed as u64, "object", "objects"),
            self.written.len(),
            self.unchanged,
            n(self.errors.len() as u64, "error", "errors"),
            self.downloaded,
            n(self.bytes, "byte", "bytes"),
            self.deleted.len(),
        )
    }
}

/// What a pass does with one listed object.
enum Step {
    /// Its file holds what the listing's ETag says: nothing to fetch.
    UpToDate,
    /// Fetch it, conditionally on the ETag its file was written from, when there is one.
    Fetch(Option<String>),
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its ETag, as S3 gives it (quoted).
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The result of a conditional GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The object still has the ETag given (HTTP 304).
    NotModified,
    /// The object's content.
    Body {
        /// Its bytes.
        bytes: Vec<u8>,
        /// When it was uploaded (`Last-Modified`), if S3 said.
        modified: Option<std::time::SystemTime>,
    },
}

/// Runs passes for one source and target; keeps the state between passes.
pub struct Syncer {
    client: aws_sdk_s3::Client,
    config: SyncConfig,
    metrics: Metrics,
    state_path: PathBuf,
    state: State,
    /// The state as it is on disk: saved again whenever `state` differs.
    saved: State,
    /// During an `atomic_set` pass: the generation being built, relative to the target
    /// directory.
    generation: Option<PathBuf>,
}

impl Syncer {
    /// A syncer; reads the state file left by earlier runs.
    pub fn new(client: aws_sdk_s3::Client, mut config: SyncConfig, metrics: Metrics) -> Syncer {
        // `sync s3://b/envoy DIR` means the folder `envoy/`, not every key starting "envoy".
        if matches!(config.target, Target::Dir(_))
            && !config.source.key.is_empty()
            && !config.source.key.ends_with('/')
        {
            config.source.key.push('/');
        }
        let state_path = match &config.target {
            Target::Dir(dir) => dir.join(".s3-config-loader.json"),
            Target::File(file) => {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                file.with_file_name(format!(".{name}.s3-config-loader.json"))
            }
        };
        let state = State::load(&state_path);
        // Only a directory the loader owns is cleaned; `get` shares its directory with others.
        if let Target::Dir(dir) = &config.target
            && let Ok(handle) = files::Dir::open(dir)
        {
            handle.remove_stale_staging();
            generation::remove_stale(dir);
        }
        Syncer {
            client,
            config,
            metrics,
            state_path,
            saved: state.clone(),
            state,
            generation: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Whether these failures only kept files from being refreshed, each failed object having a
    /// file from an earlier pass (for `--allow-stale`): never for refused or broken objects.
    pub fn stale_copies_cover(&self, errors: &[ObjectError]) -> bool {
        errors.iter().all(|e| {
            matches!(e.kind, ErrorKind::Download | ErrorKind::Checksum)
                && self
                    .state
                    .files
                    .iter()
                    .any(|(rel, entry)| entry.key == e.key && self.absolute(rel).exists())
        })
    }

    /// Whether every file the last successful pass knew of is on disk (for `--allow-stale`).
    pub fn has_local_copy(&self) -> bool {
        match &self.config.target {
            Target::File(f) => f.exists(),
            Target::Dir(d) => {
                !self.state.files.is_empty() && self.state.files.keys().all(|p| d.join(p).exists())
            }
        }
    }

    /// One pass.
    pub async fn run_once(&mut self) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        let objects = match &self.config.target {
            Target::Dir(_) => self.list().await?,
            // A single object needs no listing: the conditional GET tells whether it changed.
            Target::File(_) => vec![Listed {
                key: self.config.source.key.clone(),
                etag: String::new(),
                size: 0,
            }],
        };
        report.listed = objects.len();

        let atomic_dir = match &self.config.target {
            Target::Dir(d) if self.config.atomic_set => Some(d.clone()),
            _ => None,
        };
        // The first published generation must hold every file, not only the changed ones.
        let first_generation = atomic_dir
            .as_deref()
            .is_some_and(|d| generation::current(d).is_none());

        // Decide, per object, its file and whether its body must be fetched.
        let mut plan: Vec<(Listed, PathBuf, Step)> = Vec::new();
        let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
        for obj in objects {
            let rel = match self.local_path(&obj.key) {
                Ok(rel) => rel,
                Err(e) => {
                    report.errors.push(ObjectError::new(
                        &obj.key,
                        ErrorKind::UnsafeKey,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            if let Some(other) = seen.insert(rel.clone(), obj.key.clone()) {
                report.errors.push(ObjectError::new(
                    &obj.key,
                    ErrorKind::Conflict,
                    format!("writes the same file {} as {other}", rel.display()),
                ));
                continue;
            }
            if obj.size > self.config.max_size {
                report
                    .errors
                    .push(too_large(&obj.key, obj.size, self.config.max_size));
                continue;
            }
            // The ETag this object's file was written from, when it still stands for the file.
            // Not for templates, rendered again every pass (their inputs, environment and task
            // metadata, can change while the object does not), nor for the first generation of
            // an --atomic-set, which must receive every body.
            let known = self
                .state
                .files
                .get(&rel)
                .filter(|e| e.key == obj.key)
                .filter(|_| !first_generation && !obj.key.ends_with(template::SUFFIX))
                .filter(|_| self.absolute(&rel).exists())
                .map(|e| e.etag.clone());
            let step = match known {
                Some(etag) if !obj.etag.is_empty() && etag == obj.etag => {
                    report.unchanged += 1;
                    Step::UpToDate
                }
                if_none_match => Step::Fetch(if_none_match),
            };
            plan.push((obj, rel, step));
        }

        let root = self.root();
        let dir = files::Dir::create(&root)
            .map_err(|source| SyncError::Directory { dir: root, source })?;
        let dir = Arc::new(dir);
        if let Some(atomic) = &atomic_dir {
            let new = generation::prepare(atomic).map_err(|source| SyncError::Generation {
                dir: atomic.clone(),
                source,
            })?;
            self.generation = new.file_name().map(PathBuf::from);
        }

        // Fetch the bodies, several at a time, and put each in place as it arrives, several
        // at a time too (writing a file waits for two fsyncs): memory holds at most
        // `concurrency` bodies, not a whole pass's.
        let limit = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut fetches = JoinSet::new();
        for (i, (obj, _, step)) in plan.iter().enumerate() {
            let Step::Fetch(if_none_match) = step else {
                continue;
            };
            let if_none_match = if_none_match.clone();
            let (client, bucket, key, max) = (
                self.client.clone(),
                self.config.source.bucket.clone(),
                obj.key.clone(),
                self.config.max_size,
            );
            let limit = limit.clone();
            fetches.spawn(async move {
                // Held until the body is in place, not only downloaded.
                let permit = limit.acquire_owned().await;
                (
                    i,
                    fetch_object(&client, &bucket, &key, if_none_match, max).await,
                    permit,
                )
            });
        }
        // The ETag each file now stands for, by plan index; remembered once all are in.
        let mut learned: Vec<(usize, String)> = Vec::new();
        {
            let this: &Syncer = self;
            let mut installs = FuturesUnordered::new();
            loop {
                tokio::select! {
                    Some(done) = fetches.join_next(), if !fetches.is_empty() => {
                        let Ok((i, result, permit)) = done else {
                            continue;
                        };
                        let (obj, rel, _) = &plan[i];
                        match result {
                            Ok((Fetched::NotModified, etag)) => {
                                report.unchanged += 1;
                                learned.push((i, etag.unwrap_or_else(|| obj.etag.clone())));
                            }
                            Ok((Fetched::Body { bytes: body, .. }, etag)) => {
                                report.downloaded += 1;
                                report.bytes += body.len() as u64;
                                let etag = etag.unwrap_or_else(|| obj.etag.clone());
                                let dir = dir.clone();
                                installs.push(async move {
                                    let installed = this.install(&dir, &obj.key, rel, body).await;
                                    drop(permit);
                                    (i, etag, installed)
                                });
                            }
                            Err(e) => report.errors.push(e),
                        }
                    }
                    Some((i, etag, installed)) = installs.next(), if !installs.is_empty() => {
                        match installed {
                            Ok(true) => report.written.push(this.absolute(&plan[i].1)),
                            Ok(false) => report.unchanged += 1,
                            Err(e) => {
                                report.errors.push(e);
                                continue;
                            }
                        }
                        learned.push((i, etag));
                    }
                    else => break,
                }
            }
        }
        for (i, etag) in learned {
            let (obj, rel, _) = &plan[i];
            self.remember(rel, &obj.key, etag);
        }
        // Key order, so that logs and hooks see a stable sequence.
        report.written.sort();
        report.errors.sort_by(|a, b| a.key.cmp(&b.key));
        // Whether each failed object's file has content from an earlier pass, which it keeps.
        for e in &mut report.errors {
            e.kept = self
                .local_path(&e.key)
                .ok()
                .map(|rel| self.absolute(&rel))
                .filter(|path| path.exists());
        }

        // Files the loader wrote whose objects are gone.
        let present: BTreeSet<PathBuf> = plan.iter().map(|(_, rel, _)| rel.clone()).collect();
        let unsafe_or_failed: BTreeSet<String> =
            report.errors.iter().map(|e| e.key.clone()).collect();
        let gone: Vec<PathBuf> = self
            .state
            .files
            .iter()
            .filter(|(rel, e)| !present.contains(*rel) && !unsafe_or_failed.contains(&e.key))
            .map(|(rel, _)| rel.clone())
            .collect();
        // An empty prefix is more likely a typo or a wrong bucket than a wish for an empty
        // directory (an init container must not "succeed" into one) or to remove everything.
        let refused_empty = matches!(self.config.target, Target::Dir(_))
            && report.listed == 0
            && !self.config.allow_empty;
        if refused_empty {
            let kept = match gone.len() {
                0 => String::new(),
                n => format!("; the {n} files it gave stay"),
            };
            report.errors.push(ObjectError::new(
                self.config.source.to_string(),
                ErrorKind::Empty,
                format!(
                    "the prefix lists no objects (a wrong bucket or prefix?){kept}; give --allow-empty if an empty prefix is meant"
                ),
            ));
        }
        if self.config.delete && !refused_empty && matches!(self.config.target, Target::Dir(_)) {
            for rel in gone {
                let path = self.absolute(&rel);
                match dir.remove_file(&self.write_rel(&rel)) {
                    Ok(()) => report.deleted.push(path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        report.errors.push(ObjectError::new(
                            self.state.files[&rel].key.clone(),
                            ErrorKind::Write,
                            format!("cannot delete {}: {e}", path.display()),
                        ));
                        continue;
                    }
                }
                self.state.files.remove(&rel);
            }
        }

        if let Some(name) = self.generation.take() {
            let atomic = atomic_dir.unwrap_or_default();
            let new = atomic.join(name);
            if report.changed() || first_generation {
                // `commit` fails only before anything is published: `new` can go.
                generation::commit(&atomic, &new).map_err(|source| {
                    generation::abandon(&new);
                    SyncError::Generation {
                        dir: atomic,
                        source,
                    }
                })?;
            } else {
                generation::abandon(&new);
            }
        }
        // Also when only ETags were learned (a 304, identical bytes), so that a restarted
        // loader downloads nothing it already has.
        if self.state != self.saved || !self.state_path.exists() {
            self.state
                .save(&self.state_path)
                .map_err(|source| SyncError::State {
                    path: self.state_path.clone(),
                    source,
                })?;
            self.saved = self.state.clone();
        }
        report.count_in(&self.metrics);
        Ok(report)
    }

    fn remember(&mut self, rel: &Path, key: &str, etag: String) {
        self.state.files.insert(
            rel.to_path_buf(),
            Entry {
                key: key.to_string(),
                etag,
            },
        );
    }

    /// The file an object goes to, relative to the target directory (templates lose `.tmpl`).
    fn local_path(&self, key: &str) -> Result<PathBuf, UnsafeKey> {
        match &self.config.target {
            Target::File(f) => Ok(PathBuf::from(f.file_name().unwrap_or_default())),
            Target::Dir(_) => {
                let rel = relative_path(key, &self.config.source.key)?;
                // Names the loader itself uses in the directory: `..data` and generations,
                // the state file, staging files.
                let first = rel
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default();
                if first.starts_with("..")
                    || first == ".s3-config-loader.json"
                    || first.starts_with(".tmp-")
                    || first.contains(".tmp-")
                {
                    return Err(UnsafeKey::Reserved(key.to_string()));
                }
                Ok(
                    match rel.to_str().and_then(|s| s.strip_suffix(template::SUFFIX)) {
                        Some(stripped) if !stripped.is_empty() && !stripped.ends_with('/') => {
                            PathBuf::from(stripped)
                        }
                        _ => rel,
                    },
                )
            }
        }
    }

    /// The directory files are written in: the target directory, or the `get` file's.
    fn root(&self) -> PathBuf {
        match &self.config.target {
            Target::Dir(d) => d.clone(),
            Target::File(f) => match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }

    /// Where a file is written, relative to [`Self::root`]: into the generation being built,
    /// or in place.
    fn write_rel(&self, rel: &Path) -> PathBuf {
        match &self.generation {
            Some(generation) => generation.join(rel),
            None => rel.to_path_buf(),
        }
    }

    fn absolute(&self, rel: &Path) -> PathBuf {
        match &self.config.target {
            Target::Dir(d) => d.join(rel),
            Target::File(f) => f.clone(),
        }
    }

    /// Renders, validates and writes one body; `Ok(false)` when the file already held it.
    async fn install(
        &self,
        dir: &Arc<files::Dir>,
        key: &str,
        rel: &Path,
        body: Vec<u8>,
    ) -> Result<bool, ObjectError> {
        let err = |kind, message: String| ObjectError::new(key, kind, message);
        let body = if key.ends_with(template::SUFFIX) {
            template::render_with_environment(&body, &self.config.template_env)
                .await
                .map_err(|e| err(ErrorKind::Template, e.to_string()))?
        } else {
            body
        };
        let path = self.absolute(rel);
        // In a generation being built, the file is a hard link to the published one.
        let dest = self.write_rel(rel);
        let (opts, keep_extension) = (self.config.file, self.config.validate.is_some());
        let staged = {
            let dir = dir.clone();
            blocking(move || {
                if dir.read(&dest).is_ok_and(|old| old == body) {
                    return Ok(None);
                }
                dir.stage(&dest, &body, opts, keep_extension).map(Some)
            })
            .await
        };
        let staged = match staged {
            Ok(Some(staged)) => staged,
            Ok(None) => return Ok(false),
            Err(e) => {
                return Err(err(
                    ErrorKind::Write,
                    format!("cannot write {}: {e}", path.display()),
                ));
            }
        };
        if let Some(cmd) = &self.config.validate
            && let Err(message) =
                run_validation(cmd, staged.path(), self.config.validate_timeout).await
        {
            // Dropping the staged file removes it.
            return Err(err(
                ErrorKind::Validation,
                format!("refused by --validate: {message}"),
            ));
        }
        blocking(move || staged.publish()).await.map_err(|e| {
            err(
                ErrorKind::Write,
                format!("cannot replace {}: {e}", path.display()),
            )
        })?;
        tracing::info!(key, file = %path.display(), "file updated");
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Listed>, SyncError> {
        let source = &self.config.source;
        list_objects(&self.client, &source.bucket, &source.key)
            .await
            .map_err(|message| SyncError::List {
                location: source.to_string(),
                message,
            })
    }
}

/// Every object under `prefix` (folder markers left out), with its ETag and size; the error
/// is AWS's reason.
pub async fn list_objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Listed>, String> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| common::aws::error_text(&e).text)?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            if key.ends_with('/') {
                continue; // a "folder" marker, not a file
            }
            out.push(Listed {
                key: key.to_string(),
                etag: o.e_tag().unwrap_or_default().to_string(),
                size: o.size().unwrap_or_default().max(0) as u64,
            });
        }
    }
    Ok(out)
}

/// Runs file system work (reads, writes and their fsyncs) on a blocking thread, so that
/// several files are written at once and the downloads go on meanwhile.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("a file task failed: {e}"))))
}

fn too_large(key: &str, size: u64, max: u64) -> ObjectError {
    ObjectError::new(
        key,
        ErrorKind::TooLarge,
        format!(
            "{size} bytes is over the limit of {} (--max-size)",
            crate::size::display(max)
        ),
    )
}

/// A conditional GET with checksum validation; a 304 is "not modified", not an error. Returns
/// the content (or "not modified") and the object's ETag.
pub async fn fetch_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    if_none_match: Option<String>,
    max: u64,
) -> Result<(Fetched, Option<String>), ObjectError> {
    let err = |kind, message: String| ObjectError::new(key, kind, message);
    let sent = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_if_none_match(if_none_match.clone())
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        // The SDK reports 304 Not Modified as an error.
        Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 304 => {
            return Ok((Fetched::NotModified, if_none_match));
        }
        Err(e) => return Err(err(ErrorKind::Download, common::aws::error_text(&e).text)),
    };
    let size = resp.content_length().unwrap_or_default().max(0) as u64;
    if size > max {
        return Err(too_large(key, size, max));
    }
    let etag = resp.e_tag().map(str::to_string);
    let modified = resp
        .last_modified()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok());
    let body = resp.body.collect().await.map_err(|e| {
        // The byte stream's error says only "streaming error"; the reason is in its sources.
        let text = common::aws::error_chain(&e);
        let kind = if text.to_ascii_lowercase().contains("checksum") {
            ErrorKind::Checksum
        } else {
            ErrorKind::Download
        };
        err(kind, format!("reading the body failed: {text}"))
    })?;
    let bytes = body.into_bytes().to_vec();
    if bytes.len() as u64 > max {
        return Err(too_large(key, bytes.len() as u64, max));
    }
    Ok((Fetched::Body { bytes, modified }, etag))
}

/// Runs `cmd` through `sh -c` with `{}` replaced by the (quoted) staged file path.
/// `cmd` with each `{}` replaced by a reference to `$1`, quoted for where it stands: the staged
/// file's path (which holds S3 key names) is passed to `sh` as an argument and never becomes
/// shell text, so a key such as `$(reboot).yaml` runs nothing, whether the user wrote `{}`,
/// `"{}"`, `'{}'` or `--config="{}"`. Quotes and backslashes are followed as POSIX sh does.
fn with_path_argument(cmd: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut quote = Quote::None;
    let mut out = String::with_capacity(cmd.len() + 8);
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('{', _) if chars.peek() == Some(&'}') => {
                chars.next();
                out.push_str(match quote {
                    Quote::None => "\"$1\"",
                    Quote::Double => "$1",
                    // Out of the single quotes, a double-quoted $1, and back in.
                    Quote::Single => "'\"$1\"'",
                });
                continue;
            }
            ('\\', Quote::None | Quote::Double) => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
                continue;
            }
            ('\'', Quote::None) => quote = Quote::Single,
            ('\'', Quote::Single) => quote = Quote::None,
            ('"', Quote::None) => quote = Quote::Double,
            ('"', Quote::Double) => quote = Quote::None,
            _ => {}
        }
        out.push(c);
    }
    out
}

async fn run_validation(cmd: &str, staged: &Path, timeout: Duration) -> Result<(), String> {
    // `sh -c LINE sh PATH`: PATH is $1 (and `sh` stays $0, the name sh's own errors carry).
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(with_path_argument(cmd))
        .arg("sh")
        .arg(staged)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{cmd:?} did not finish within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    // The first lines say what is wrong (Envoy prints its reason before anything else).
    let head = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .collect::<Vec<_>>()
        .join(" | ");
    Err(format!("{cmd:?} exited with {}: {head}", out.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_becomes_a_quoted_argument_wherever_it_stands() {
        assert_eq!(with_path_argument("envoy -c {}"), r#"envoy -c "$1""#);
        assert_eq!(with_path_argument(r#"envoy -c "{}""#), r#"envoy -c "$1""#);
        assert_eq!(with_path_argument("envoy -c '{}'"), r#"envoy -c ''"$1"''"#);
        assert_eq!(
            with_path_argument(r#"v --config="{}" x"#),
            r#"v --config="$1" x"#
        );
        assert_eq!(
            with_path_argument(r#"echo \{} '"' {}"#),
            r#"echo \{} '"' "$1""#
        );
    }

    /// A key's name is in the staged file's path: however the user quoted `{}`, a name with
    /// shell syntax in it reaches the validator as one argument and runs nothing.
    #[tokio::test]
    async fn a_key_with_shell_syntax_runs_nothing_however_the_placeholder_is_quoted() {
        let dir = common::files::scratch_dir("s3cl-validate");
        // Were the name's commands run, they would run in `dir` (the commands `cd` there).
        let name = "a $(touch ran) b`touch ran`'\"x.yaml";
        let staged = dir.join(name);
        std::fs::write(&staged, "ok").unwrap();
        let timeout = Duration::from_secs(10);
        for check in [
            "test -f {}",
            r#"test -f "{}""#,
            "test -f '{}'",
            r#"f="{}"; test -f "$f""#,
        ] {
            let cmd = format!("cd '{}' && {check}", dir.display());
            run_validation(&cmd, &staged, timeout)
                .await
                .unwrap_or_else(|e| panic!("{check}: {e}"));
            assert!(!dir.join("ran").exists(), "{check} ran the key's command");
        }
        let refused = run_validation("test ! -f {}", &staged, timeout).await;
        assert!(refused.unwrap_err().contains("exited with"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
