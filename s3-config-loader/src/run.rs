//! Running passes: once (init-container mode) or forever (daemon mode, with jitter and backoff),
//! firing the hooks after each pass that changed files. The daemon logs a problem that lasts
//! (S3 down, a broken object, a hook that keeps failing) when it starts, changes and ends, not
//! on every pass; the metrics count every occurrence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::problems::{Change, Problems};

use crate::hooks::{Hook, Hooks};
use crate::metrics::Metrics;
use crate::sync::{ObjectError, SyncError, SyncReport, Syncer};

/// How passes are run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// One pass, then exit.
    pub once: bool,
    /// Time between passes in daemon mode (±10% jitter, so replicas spread their requests).
    pub interval: Duration,
    /// With `once`: succeed from existing files when S3 cannot be reached.
    pub allow_stale: bool,
    /// What to run after a change.
    pub hooks: Hooks,
}

/// Why a run ended unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pass failed as a whole.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Some objects could not be put in place (each: the problem and what became of its file).
    #[error("{} object(s) could not be put in place:\n  {}", .0.len(), .0.join("\n  "))]
    Objects(Vec<String>),
}

/// What the daemon has logged as going on, so that it logs each problem when it starts,
/// changes and ends only.
#[derive(Default)]
struct Ongoing {
    /// The pass as a whole (S3 unreachable, access denied).
    pass: Problems,
    /// Per object key.
    objects: Problems,
    /// Per reload hook.
    hooks: Problems,
}

/// Runs passes until `shutdown` completes (daemon) or once (`config.once`).
pub async fn run(
    syncer: &mut Syncer,
    config: &RunConfig,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    if config.once {
        return once(syncer, config, metrics).await;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    // Per hook, the changed files it has not succeeded for yet: a failed hook is tried again
    // after each pass, so a process that was down or busy still gets the change it missed,
    // while the hooks that worked are not run again.
    let mut unhooked: BTreeMap<Hook, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut ongoing = Ongoing::default();
    loop {
        let delay = match syncer.run_once().await {
            Ok(report) => {
                for change in ongoing.pass.update(BTreeMap::new()) {
                    if let Change::Ended { message, .. } = change {
                        tracing::info!(was = %message, "sync works again");
                    }
                }
                log_object_problems(&mut ongoing.objects, &report.errors);
                log_changes(&report);
                let failed = run_hooks(&mut unhooked, &report, &config.hooks, metrics).await;
                log_hook_problems(&mut ongoing.hooks, failed);
                backoff = Duration::ZERO;
                common::duration::jitter(config.interval)
            }
            Err(e) => {
                metrics.record_failure("list");
                // 2s, 4s, 8s, ... up to the interval: recover fast from a blip, don't hammer.
                backoff = common::backoff::next(backoff, Duration::from_secs(2), config.interval);
                let now = BTreeMap::from([("pass".to_string(), e.to_string())]);
                for change in ongoing.pass.update(now) {
                    match change {
                        Change::Started { message, .. } => {
                            tracing::warn!(error = %message, retry_in = ?backoff, "sync failed; files stay as they are (logged again when the error changes or ends)")
                        }
                        Change::Changed { message, .. } => {
                            tracing::warn!(error = %message, retry_in = ?backoff, "sync still failing, with another error; files stay as they are")
                        }
                        Change::Ended { .. } => {}
                    }
                }
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn once(syncer: &mut Syncer, config: &RunConfig, metrics: &Metrics) -> Result<(), RunError> {
    match syncer.run_once().await {
        Ok(report) => {
            log_object_problems(&mut Problems::default(), &report.errors);
            log_changes(&report);
            println!("{}", report.summary());
            let failed = run_hooks(&mut BTreeMap::new(), &report, &config.hooks, metrics).await;
            log_hook_problems(&mut Problems::default(), failed);
            if report.errors.is_empty() {
                Ok(())
            } else if config.allow_stale && syncer.stale_copies_cover(&report.errors) {
                tracing::warn!("starting from the files already in place (--allow-stale)");
                Ok(())
            } else {
                Err(RunError::Objects(
                    report
                        .errors
                        .iter()
                        .map(|e| format!("{e} ({})", e.outcome()))
                        .collect(),
                ))
            }
        }
        Err(e) => {
            metrics.record_failure("list");
            if config.allow_stale && syncer.has_local_copy() {
                tracing::warn!(error = %e, "S3 unavailable; starting from the files already in place (--allow-stale)");
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

/// Logs the objects that started or stopped failing, or fail differently, since `problems`
/// last saw them.
fn log_object_problems(problems: &mut Problems, errors: &[ObjectError]) {
    let now = errors
        .iter()
        .map(|e| (e.key.clone(), format!("{}: {}", e.kind.label(), e.message)))
        .collect();
    for change in problems.update(now) {
        match change {
            Change::Started { key, .. } | Change::Changed { key, .. } => {
                if let Some(e) = errors.iter().find(|e| e.key == key) {
                    tracing::error!(key = %e.key, kind = e.kind.label(), error = %e.message, "object not synced; {}", e.outcome());
                }
            }
            Change::Ended { key, message } => {
                tracing::info!(%key, was = %message, "object no longer failing");
            }
        }
    }
}

/// Logs a reload hook that started or stopped failing, or fails differently.
fn log_hook_problems(problems: &mut Problems, failed: BTreeMap<String, String>) {
    for change in problems.update(failed) {
        match change {
            Change::Started { message, .. } | Change::Changed { message, .. } => {
                tracing::error!(error = %message, "reload hook failed; tried again after each pass until it succeeds");
            }
            Change::Ended { key, .. } => tracing::info!(hook = %key, "reload hook succeeded"),
        }
    }
}

fn log_changes(report: &SyncReport) {
    if report.changed() {
        tracing::info!(summary = %report.summary(), "sync changed files");
    } else {
        tracing::debug!(summary = %report.summary(), "sync: nothing changed");
    }
}

/// The files a pass wrote or deleted.
fn changed_files(report: &SyncReport) -> Vec<PathBuf> {
    report
        .written
        .iter()
        .chain(&report.deleted)
        .cloned()
        .collect()
}

/// Adds the files `report` changed to every hook's list, then runs each hook for the files it
/// has not succeeded for; keeps the lists of the ones that fail, and returns their problems.
async fn run_hooks(
    unhooked: &mut BTreeMap<Hook, BTreeSet<PathBuf>>,
    report: &SyncReport,
    hooks: &Hooks,
    metrics: &Metrics,
) -> BTreeMap<String, String> {
    let changed = changed_files(report);
    if !changed.is_empty() {
        for hook in hooks.all() {
            unhooked
                .entry(hook)
                .or_default()
                .extend(changed.iter().cloned());
        }
    }
    let mut done = Vec::new();
    let mut failed = BTreeMap::new();
    for (hook, files) in unhooked.iter() {
        let files: Vec<PathBuf> = files.iter().cloned().collect();
        match hooks.run_one(*hook, &files).await {
            Ok(()) => done.push(*hook),
            Err(problem) => {
                metrics.errors.with_label_values(&["hook"]).inc();
                failed.insert(hooks.describe(*hook), problem);
            }
        }
    }
    for hook in done {
        unhooked.remove(&hook);
    }
    failed
}
