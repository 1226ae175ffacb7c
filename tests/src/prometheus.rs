//! Prometheus (Debian's package) as a plain process on a loopback port.

use std::process::Command;
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{TempDir, free_port, http, wait_for};

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    /// The process (its log is where file_sd errors would show).
    pub process: ChildGuard,
    /// Its web port.
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) and its own storage under `dir`.
    pub fn start(dir: &TempDir, config: &str) -> Prometheus {
        let port = free_port();
        let config_path = dir.write("prometheus.yml", config);
        let mut cmd =
            Command::new(std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into()));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=debug");
        let process = ChildGuard::spawn(cmd, dir.path().join("prometheus.log"));
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http::get(port, "/-/ready", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        Prometheus { process, port }
    }

    /// `GET /api/v1/...` as JSON.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let r = http::get(self.port, path, &[]).expect("Prometheus answers");
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.body))
    }

    /// The active targets of a scrape job.
    pub fn targets(&self, job: &str) -> Vec<serde_json::Value> {
        self.api("/api/v1/targets?state=active")["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t["scrapePool"] == job)
            .collect()
    }
}
