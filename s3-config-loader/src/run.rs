//! Running passes: once (init-container mode) or forever (daemon mode, with jitter and backoff),
//! firing the hooks after each pass that changed files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::hooks::{Hook, Hooks};
use crate::metrics::Metrics;
use crate::sync::{SyncError, SyncReport, Syncer};

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
    loop {
        let delay = match syncer.run_once().await {
            Ok(report) => {
                log_report(&report);
                run_hooks(&mut unhooked, &report, &config.hooks, metrics).await;
                backoff = Duration::ZERO;
                common::duration::jitter(config.interval)
            }
            Err(e) => {
                metrics.record_failure("list");
                // 2s, 4s, 8s, ... up to the interval: recover fast from a blip, don't hammer.
                backoff = common::backoff::next(backoff, Duration::from_secs(2), config.interval);
                tracing::warn!(error = %e, retry_in = ?backoff, "sync failed; files stay as they are");
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
            log_report(&report);
            println!("{}", report.summary());
            run_hooks(&mut BTreeMap::new(), &report, &config.hooks, metrics).await;
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

fn log_report(report: &SyncReport) {
    for e in &report.errors {
        tracing::error!(key = %e.key, kind = e.kind.label(), error = %e.message, "object not synced; {}", e.outcome());
    }
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
/// has not succeeded for; keeps the lists of the ones that fail.
async fn run_hooks(
    unhooked: &mut BTreeMap<Hook, BTreeSet<PathBuf>>,
    report: &SyncReport,
    hooks: &Hooks,
    metrics: &Metrics,
) {
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
    for (hook, files) in unhooked.iter() {
        let files: Vec<PathBuf> = files.iter().cloned().collect();
        match hooks.run_one(*hook, &files).await {
            Ok(()) => done.push(*hook),
            Err(problem) => {
                metrics.errors.with_label_values(&["hook"]).inc();
                tracing::error!(error = %problem, "reload hook failed");
            }
        }
    }
    for hook in done {
        unhooked.remove(&hook);
    }
}
