//! Prometheus metrics of the control plane, served on the admin port at `/metrics`.

use common::admin::register as reg;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Every metric xds-server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Open xDS streams by `service` (ads, cds, eds, lds, rds) and `variant` (sotw, delta).
    pub streams: IntGaugeVec,
    /// Responses sent, by resource `type` (cds, eds, lds, rds) and `variant`.
    pub pushes: IntCounterVec,
    /// Responses acknowledged, by `type`.
    pub acks: IntCounterVec,
    /// Responses rejected by the proxy, by `type`.
    pub nacks: IntCounterVec,
    /// Time from sending a response to its ACK or NACK, by `type`.
    pub push_to_ack: HistogramVec,
    /// Time to rebuild all snapshots after a change.
    pub snapshot_build: Histogram,
    /// Catalog loads by `result` (ok, error).
    pub catalog_loads: IntCounterVec,
    /// 1 when the latest catalog read was accepted, else 0 (like Prometheus'
    /// `config_last_reload_successful`).
    pub catalog_last_load_success: prometheus::IntGauge,
    /// 1 while a fragment of a directory or prefix is refused (its last good version, if any,
    /// is served), 0 while it is served as read; by `fragment` (its name in the directory).
    pub catalog_fragment_refused: IntGaugeVec,
    /// Streams whose `node.cluster` names no proxy of the catalog.
    pub unknown_proxy_streams: IntCounter,
    /// AWS API calls of the endpoint sources, by `kind` (cloud_map, ecs) and `operation`.
    pub discovery_requests: IntCounterVec,
    /// Failed source polls by `kind` (file, cloud_map, ecs) and `reason` (throttled, timeout,
    /// error).
    pub discovery_errors: IntCounterVec,
    /// The current delay before the next poll of a throttled source, in seconds (0: none), by
    /// `kind` and `source` (the source's description; one series per source of the catalog).
    pub discovery_backoff: prometheus::GaugeVec,
    /// 1 while a source serves every instance because none is healthy (Cloud Map
    /// `health: healthy`), else 0; by `kind` and `source`.
    pub discovery_all_unhealthy: IntGaugeVec,
    /// Upstreams used by a proxy whose source has not answered yet (they have no endpoints).
    pub upstreams_without_endpoints: prometheus::IntGauge,
    /// Proxy roles gone from the catalog whose connected Envoys keep their last snapshot.
    pub orphaned_proxies: prometheus::IntGauge,
    /// Streams refused by `--require-identity`, by `reason` (no_certificate, wrong_proxy).
    pub identity_refusals: IntCounterVec,
    /// Streams refused by a cap, by `limit` (max_streams, max_streams_per_ip).
    pub limit_refusals: IntCounterVec,
    /// Identity requests (`xds-server identity`) by `result`: `issued`, or why not.
    pub identity_requests: IntCounterVec,
    /// Time to answer an identity request that was issued (STS's answer included).
    pub identity_issue: Histogram,
    /// When each mesh identity the control plane holds expires (seconds since the Unix
    /// epoch), by `secret`.
    pub certificate_expiry: prometheus::GaugeVec,
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
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Self {
            streams: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "xds_streams",
                        "Open xDS streams by service and protocol variant",
                    ),
                    &["service", "variant"],
                )
                .expect("valid metric"),
            ),
            pushes: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "xds_pushes_total",
                        "xDS responses sent, by resource type and variant",
                    ),
                    &["type", "variant"],
                )
                .expect("valid metric"),
            ),
            acks: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("xds_acks_total", "xDS responses acknowledged by proxies"),
                    &["type"],
                )
                .expect("valid metric"),
            ),
            nacks: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("xds_nacks_total", "xDS responses rejected by proxies"),
                    &["type"],
                )
                .expect("valid metric"),
            ),
            push_to_ack: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "xds_push_to_ack_seconds",
                        "Time from sending an xDS response to its ACK or NACK",
                    )
                    .buckets(latency_buckets.clone()),
                    &["type"],
                )
                .expect("valid metric"),
            ),
            snapshot_build: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "xds_snapshot_build_seconds",
                        "Time to rebuild every proxy's snapshot after a change",
                    )
                    .buckets(latency_buckets.clone()),
                )
                .expect("valid metric"),
            ),
            catalog_loads: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "xds_catalog_loads_total",
                        "Catalog loads by result (ok, error)",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            unknown_proxy_streams: reg(
                &registry,
                IntCounter::new(
                    "xds_unknown_proxy_streams_total",
                    "Streams from proxies whose node.cluster the catalog does not name",
                )
                .expect("valid metric"),
            ),
            discovery_requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "xds_discovery_requests_total",
                        "AWS API calls of endpoint sources",
                    ),
                    &["kind", "operation"],
                )
                .expect("valid metric"),
            ),
            discovery_errors: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "xds_discovery_errors_total",
                        "Failed endpoint source polls (the last good endpoints stay)",
                    ),
                    &["kind", "reason"],
                )
                .expect("valid metric"),
            ),
            discovery_backoff: reg(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "xds_discovery_backoff_seconds",
                        "Current delay before the next poll of a throttled source",
                    ),
                    &["kind", "source"],
                )
                .expect("valid metric"),
            ),
            discovery_all_unhealthy: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "xds_discovery_all_unhealthy",
                        "1 while a source serves all its instances because none is healthy",
                    ),
                    &["kind", "source"],
                )
                .expect("valid metric"),
            ),
            upstreams_without_endpoints: reg(
                &registry,
                prometheus::IntGauge::new(
                    "xds_upstreams_without_endpoints",
                    "Upstreams whose endpoint source has not answered yet",
                )
                .expect("valid metric"),
            ),
            identity_refusals: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "xds_identity_refusals_total",
                        "xDS streams refused for their identity, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid metric");
                // Present from the start at 0, so an alert can be written before the first refusal.
                for reason in ["no_certificate", "wrong_proxy"] {
                    c.with_label_values(&[reason]);
                }
                reg(&registry, c)
            },
            limit_refusals: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "xds_limit_refusals_total",
                        "xDS streams refused because a cap on open streams was reached, by limit",
                    ),
                    &["limit"],
                )
                .expect("valid metric");
                for limit in ["max_streams", "max_streams_per_ip"] {
                    c.with_label_values(&[limit]);
                }
                reg(&registry, c)
            },
            identity_requests: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "xds_identity_requests_total",
                        "Identity requests, by result (issued, or the reason for refusing)",
                    ),
                    &["result"],
                )
                .expect("valid metric");
                c.with_label_values(&["issued"]);
                reg(&registry, c)
            },
            identity_issue: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "xds_identity_issue_seconds",
                        "Time to answer an identity request with a certificate, STS included",
                    )
                    .buckets(latency_buckets.clone()),
                )
                .expect("valid metric"),
            ),
            certificate_expiry: reg(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "xds_certificate_expiry_seconds",
                        "When each certificate the control plane serves over SDS expires, seconds since the Unix epoch",
                    ),
                    &["secret"],
                )
                .expect("valid metric"),
            ),
            orphaned_proxies: reg(
                &registry,
                prometheus::IntGauge::new(
                    "xds_orphaned_proxies",
                    "Proxy roles gone from the catalog whose connected Envoys keep their last config",
                )
                .expect("valid metric"),
            ),
            catalog_fragment_refused: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "xds_catalog_fragment_refused",
                        "1 while a catalog fragment is refused and its last good version (if any) is served in its place, 0 while it is served as read",
                    ),
                    &["fragment"],
                )
                .expect("valid metric"),
            ),
            catalog_last_load_success: reg(
                &registry,
                prometheus::IntGauge::new(
                    "xds_catalog_last_load_success",
                    "1 when the latest catalog read was accepted, 0 when it was refused (the last good one is served)",
                )
                .expect("valid metric"),
            ),
            registry: {
                common::admin::register_build_info(&registry, "xds_server_build_info");
                registry
            },
        };
        m.known_labels();
        m
    }

    /// Every series whose labels are known in advance exists from the start at 0, so that
    /// alerts and dashboards see it before the first event.
    fn known_labels(&self) {
        for t in crate::translate::ResourceType::ALL {
            let t = t.short();
            self.acks.with_label_values(&[t]);
            self.nacks.with_label_values(&[t]);
            self.push_to_ack.with_label_values(&[t]);
            for variant in ["sotw", "delta"] {
                self.pushes.with_label_values(&[t, variant]);
            }
        }
        for result in ["ok", "error"] {
            self.catalog_loads.with_label_values(&[result]);
        }
        for kind in ["file", "cloud_map", "ecs"] {
            for reason in ["throttled", "timeout", "error"] {
                self.discovery_errors.with_label_values(&[kind, reason]);
            }
        }
        for (kind, operation) in [
            ("cloud_map", "DiscoverInstances"),
            ("ecs", "ListTasks"),
            ("ecs", "DescribeTasks"),
            ("ecs", "DescribeTaskDefinition"),
        ] {
            self.discovery_requests
                .with_label_values(&[kind, operation]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        common::admin::render(&self.registry)
    }
}
