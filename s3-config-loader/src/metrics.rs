//! Prometheus metrics, served at `/metrics` on `--admin-listen`.

use common::admin::register;
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

/// Every metric s3-config-loader exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Passes by result (ok, error).
    pub passes: IntCounterVec,
    /// Object bodies downloaded.
    pub downloads: IntCounter,
    /// Bytes downloaded.
    pub bytes: IntCounter,
    /// Files written (created or replaced).
    pub written: IntCounter,
    /// Files deleted.
    pub deleted: IntCounter,
    /// Problems by kind (list, download, checksum, unsafe_key, too_large, template, validation,
    /// write, conflict, hook).
    pub errors: IntCounterVec,
    /// Unix time of the last pass without errors.
    pub last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let vec = |name: &str, help: &str, label: &str| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        let last_success = register(
            &registry,
            Gauge::new(
                "s3cl_last_success_timestamp_seconds",
                "Unix time of the last pass without errors",
            )
            .expect("valid metric"),
        );
        Metrics {
            passes: vec(
                "s3cl_passes_total",
                "Sync passes by result (ok, error)",
                "result",
            ),
            downloads: counter("s3cl_downloads_total", "Object bodies downloaded"),
            bytes: counter("s3cl_downloaded_bytes_total", "Bytes downloaded"),
            written: counter("s3cl_files_written_total", "Files created or replaced"),
            deleted: counter(
                "s3cl_files_deleted_total",
                "Files deleted because their object is gone",
            ),
            errors: vec("s3cl_errors_total", "Problems by kind", "kind"),
            last_success,
            registry,
        }
    }

    /// Counts a pass that failed as a whole.
    pub fn record_failure(&self, kind: &str) {
        self.passes.with_label_values(&["error"]).inc();
        self.errors.with_label_values(&[kind]).inc();
    }
}
