//! Prometheus metrics, served at `/metrics` on `--admin-listen`. Every series exists from the
//! start, at 0, with every label value it can take, so that a query or an alert on it works
//! before the first problem (`increase(s3cl_errors_total{kind="hook"}[5m])` is 0, not empty).

use common::admin::register;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::error_kind::ErrorKind;

/// The `kind` labels of `s3cl_errors_total` that are not per-object problems: a pass that
/// failed as a whole (listing), and a reload hook.
pub const PASS_ERROR_KINDS: [&str; 2] = ["list", "hook"];

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
    /// 1 when the last pass had no errors, else 0 (as Prometheus' own
    /// `prometheus_config_last_reload_successful`); 0 before the first pass.
    pub last_sync_successful: IntGauge,
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
        let last_sync_successful = register(
            &registry,
            IntGauge::new(
                "s3cl_last_sync_successful",
                "1 when the last pass had no errors, else 0",
            )
            .expect("valid metric"),
        );
        common::admin::register_build_info(&registry, "s3cl_build_info");
        let metrics = Metrics {
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
            last_sync_successful,
            registry,
        };
        for result in ["ok", "error"] {
            metrics.passes.with_label_values(&[result]);
        }
        let kinds = ErrorKind::ALL.iter().map(|k| k.label());
        for kind in kinds.chain(PASS_ERROR_KINDS) {
            metrics.errors.with_label_values(&[kind]);
        }
        metrics
    }

    /// Counts a pass that failed as a whole.
    pub fn record_failure(&self, kind: &str) {
        self.passes.with_label_values(&["error"]).inc();
        self.errors.with_label_values(&[kind]).inc();
        self.last_sync_successful.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start() {
        let text = common::admin::render(&Metrics::new().registry);
        for sample in [
            "s3cl_passes_total{result=\"ok\"} 0",
            "s3cl_passes_total{result=\"error\"} 0",
            "s3cl_errors_total{kind=\"list\"} 0",
            "s3cl_errors_total{kind=\"hook\"} 0",
            "s3cl_errors_total{kind=\"empty\"} 0",
            "s3cl_errors_total{kind=\"unsafe_key\"} 0",
            "s3cl_last_sync_successful 0",
            "s3cl_downloads_total 0",
        ] {
            assert!(text.contains(sample), "{sample} missing:\n{text}");
        }
        assert!(text.contains("s3cl_build_info{commit=\""), "{text}");
    }
}
