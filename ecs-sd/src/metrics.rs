//! Prometheus metrics of ecs-sd itself, at `/metrics` on `--http-listen`. Every series exists
//! from the start, at 0, with every label value it can take, so that queries and alerts work
//! before the first refresh or the first problem.

use common::admin::register as reg;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The AWS operations ecs-sd calls (in [`crate::discover`]), the `operation` label of `ecs_sd_api_calls_total`.
pub const OPERATIONS: [&str; 7] = [
    "ListClusters",
    "ListTasks",
    "DescribeTasks",
    "DescribeTaskDefinition",
    "DescribeContainerInstances",
    "DescribeInstances",
    "DescribeInstanceInformation",
];

/// Every metric ecs-sd exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Tasks seen in the last refresh.
    pub tasks: IntGauge,
    /// Targets written, by interval file.
    pub targets: IntGaugeVec,
    /// Containers skipped in the last refresh, by reason.
    pub skipped: IntGaugeVec,
    /// AWS API calls by operation.
    pub api_calls: IntCounterVec,
    /// Failed refreshes by kind (error, throttled, write).
    pub errors: IntCounterVec,
    /// Target files rewritten because their content changed.
    pub file_writes: prometheus::IntCounter,
    /// Duration of refreshes.
    pub refresh: Histogram,
    /// Unix time of the last successful refresh.
    pub last_success: Gauge,
    /// 1 when the last refresh succeeded (and its files were written), else 0; 0 before the
    /// first (as Prometheus' own `prometheus_config_last_reload_successful`).
    pub last_refresh_successful: IntGauge,
}

/// The `kind` labels of `ecs_sd_errors_total`.
pub const ERROR_KINDS: [&str; 3] = ["error", "throttled", "write"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers all metrics, for the four standard interval files.
    pub fn new() -> Self {
        Self::with_intervals(&crate::targets::INTERVALS)
    }

    /// Creates and registers all metrics; `intervals` are the files' prefixes (the four
    /// standard ones and the default one), the label values of `ecs_sd_targets`.
    pub fn with_intervals(intervals: &[&str]) -> Self {
        let registry = Registry::new();
        common::admin::register_build_info(&registry, "ecs_sd_build_info");
        let metrics = Metrics {
            tasks: reg(
                &registry,
                IntGauge::new("ecs_sd_tasks", "Tasks seen in the last refresh").expect("valid"),
            ),
            targets: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("ecs_sd_targets", "Targets by interval file"),
                    &["interval"],
                )
                .expect("valid"),
            ),
            skipped: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "ecs_sd_skipped_containers",
                        "Containers skipped in the last refresh, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid"),
            ),
            api_calls: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("ecs_sd_api_calls_total", "AWS API calls by operation"),
                    &["operation"],
                )
                .expect("valid"),
            ),
            errors: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "ecs_sd_errors_total",
                        "Failed refreshes (the last good targets stay)",
                    ),
                    &["kind"],
                )
                .expect("valid"),
            ),
            file_writes: reg(
                &registry,
                prometheus::IntCounter::new(
                    "ecs_sd_file_writes_total",
                    "Target files rewritten (content changed)",
                )
                .expect("valid"),
            ),
            refresh: reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new(
                    "ecs_sd_refresh_seconds",
                    "Duration of refreshes",
                ))
                .expect("valid"),
            ),
            last_success: reg(
                &registry,
                Gauge::new(
                    "ecs_sd_last_success_timestamp_seconds",
                    "Unix time of the last successful refresh",
                )
                .expect("valid"),
            ),
            last_refresh_successful: reg(
                &registry,
                IntGauge::new(
                    "ecs_sd_last_refresh_successful",
                    "1 when the last refresh succeeded and its files were written, else 0",
                )
                .expect("valid"),
            ),
            registry,
        };
        for interval in crate::targets::INTERVALS.iter().chain(intervals) {
            metrics.targets.with_label_values(&[*interval]);
        }
        for reason in crate::targets::SKIP_REASONS {
            metrics.skipped.with_label_values(&[reason]);
        }
        for operation in OPERATIONS {
            metrics.api_calls.with_label_values(&[operation]);
        }
        for kind in ERROR_KINDS {
            metrics.errors.with_label_values(&[kind]);
        }
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start() {
        let text = common::admin::render(&Metrics::with_intervals(&["2m"]).registry);
        for sample in [
            "ecs_sd_targets{interval=\"15s\"} 0",
            "ecs_sd_targets{interval=\"2m\"} 0",
            "ecs_sd_skipped_containers{reason=\"no_port\"} 0",
            "ecs_sd_api_calls_total{operation=\"DescribeInstanceInformation\"} 0",
            "ecs_sd_errors_total{kind=\"throttled\"} 0",
            "ecs_sd_last_refresh_successful 0",
            "ecs_sd_tasks 0",
            "ecs_sd_refresh_seconds_count 0",
        ] {
            assert!(text.contains(sample), "{sample} missing:\n{text}");
        }
        assert!(text.contains("ecs_sd_build_info{commit=\""), "{text}");
    }
}
