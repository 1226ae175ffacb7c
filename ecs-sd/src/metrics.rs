//! Prometheus metrics of ecs-sd itself, at `/metrics` on `--http-listen`.

use common::admin::register as reg;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
        Metrics {
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
            registry,
        }
    }
}
