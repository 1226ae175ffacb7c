//! ecs-sd against signal-ai's prometheus-ecs-sd on the same emulated cluster, in one run:
//! N awsvpc tasks over F task definitions in moto (with the ECS fields moto leaves out filled in
//! by tests/fixtures/moto_ecs.py), three refreshes each; refresh time and AWS calls, at each
//! latency of `--latency-ms` (a round trip added to every request by
//! [`tests::latency::LatencyProxy`], as AWS's network and service time would add; 0 is moto on
//! loopback without the proxy).
//!
//! `cargo run -p tests --bin ecs-sd-bench -- [--tasks 5000] [--families 50]
//!  [--latency-ms 0,20,50] [--prometheus-ecs-sd PATH/TO/discoverecs.py]`
//! prometheus-ecs-sd is run from its public source, which this repository does not include:
//! pass the path of a checkout's `discoverecs.py` (it needs only boto3, which moto's
//! virtualenv has).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use tests::latency::{self, LatencyProxy};
use tests::process::ChildGuard;
use tests::{Moto, TempDir, free_port, http, repo_root, wait_for, workspace_bin};

fn metric_sum(port: u16, prefix: &str) -> f64 {
    http::get(port, "/metrics", &[])
        .map(|r| {
            r.body
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn targets_in(dir: &std::path::Path) -> usize {
    ["15s", "30s", "1m", "5m"]
        .iter()
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("{i}-tasks.json"))).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v.as_array().map(Vec::len).unwrap_or(0))
        .sum()
}

/// One refresh of one tool.
struct Row {
    tool: &'static str,
    millis: f64,
    cpu_ms: f64,
    calls: f64,
    targets: usize,
}

/// Three refreshes of a running ecs-sd daemon against AWS at `port`, the first with cold caches.
fn ecs_sd(dir: &TempDir, name: &str, port: u16) -> anyhow::Result<Vec<Row>> {
    let out = dir.path().join(name);
    std::fs::create_dir_all(&out)?;
    let admin = free_port();
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args([
            "--interval",
            "0.5",
            "--http-listen",
            &format!("127.0.0.1:{admin}"),
            "--log-format",
            "json",
            // Refreshes that change no file are logged at debug.
            "--log",
            "warn,ecs_sd=debug",
        ])
        .envs(Moto::env_at(port));
    let sd = ChildGuard::spawn(cmd, dir.path().join(format!("{name}.log")));
    let mut calls = vec![0.0];
    let mut cpu = vec![0.0];
    for n in 1..=3 {
        wait_for("an ecs-sd refresh", Duration::from_secs(600), || {
            (metric_sum(admin, "ecs_sd_refresh_seconds_count") >= n as f64).then_some(())
        });
        calls.push(metric_sum(admin, "ecs_sd_api_calls_total"));
        cpu.push(cpu_seconds(sd.pid()));
    }
    // The metric counts a refresh before its log line is written.
    let took: Vec<f64> = wait_for(
        "ecs-sd's refresh log lines",
        Duration::from_secs(30),
        || {
            let took: Vec<f64> = sd
                .output()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("refreshed"))
                })
                .filter_map(|v| v["took_ms"].as_f64())
                .collect();
            (took.len() >= 3).then_some(took)
        },
    );
    drop(sd);
    let targets = targets_in(&out);
    Ok((0..3)
        .map(|i| Row {
            tool: "ecs-sd",
            millis: took[i],
            cpu_ms: (cpu[i + 1] - cpu[i]) * 1000.0,
            calls: calls[i + 1] - calls[i],
            targets,
        })
        .collect())
}

/// Three refreshes of prometheus-ecs-sd (its `discoverecs.py` at `path`) against AWS at `port`.
fn prometheus_ecs_sd(
    dir: &TempDir,
    name: &str,
    path: &std::path::Path,
    port: u16,
) -> anyhow::Result<Vec<Row>> {
    let out = dir.path().join(name);
    std::fs::create_dir_all(&out)?;
    let run = Command::new(repo_root().join(".venv/moto/bin/python"))
        .arg(repo_root().join("tests/fixtures/bench_prometheus_ecs_sd.py"))
        .arg(path)
        .arg(&out)
        .envs(Moto::env_at(port))
        .output()?;
    if !run.status.success() {
        bail!(
            "prometheus-ecs-sd failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let runs: serde_json::Value = serde_json::from_slice(&run.stdout)?;
    let targets = targets_in(&out);
    Ok(runs
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Row {
            tool: "prometheus-ecs-sd",
            millis: r["seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            cpu_ms: r["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            calls: r["calls"].as_f64().unwrap_or(f64::NAN),
            targets,
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: ecs-sd-bench [--tasks N] [--families F] [--latency-ms 0,20,50] [--prometheus-ecs-sd PATH]";
    let (mut tasks, mut families, mut upstream): (usize, usize, Option<PathBuf>) = (5000, 50, None);
    let mut latencies = vec![0, 20, 50];
    for (flag, value) in latency::flag_values()? {
        match flag.as_str() {
            "--tasks" => tasks = value.parse()?,
            "--families" => families = value.parse()?,
            "--latency-ms" => latencies = latency::parse_list(&value)?,
            "--prometheus-ecs-sd" => upstream = Some(PathBuf::from(value)),
            _ => bail!(USAGE),
        }
    }
    let dir = TempDir::new("ecs-sd-bench");
    let moto = Moto::start_ecs(&dir, 0, "");
    let setup = Instant::now();
    moto.fixture(
        "ecs_tasks.py",
        &["bulk", &tasks.to_string(), &families.to_string()],
    );
    eprintln!("created {tasks} tasks in {:.0?}", setup.elapsed());

    let mut runs: Vec<(u64, Vec<Row>, Vec<Row>)> = Vec::new();
    for &ms in &latencies {
        // 0: straight to moto; otherwise through the proxy.
        let proxy = (ms > 0).then(|| LatencyProxy::start(moto.port, Duration::from_millis(ms)));
        let port = proxy.as_ref().map_or(moto.port, |p| p.port);
        eprintln!("{ms} ms latency: ecs-sd");
        let ours = ecs_sd(&dir, &format!("ecs-sd-{ms}"), port)?;
        let theirs = match &upstream {
            Some(path) => {
                eprintln!("{ms} ms latency: prometheus-ecs-sd");
                prometheus_ecs_sd(&dir, &format!("prometheus-ecs-sd-{ms}"), path, port)?
            }
            None => Vec::new(),
        };
        runs.push((ms, ours, theirs));
    }

    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!(
        "command: cargo run -p tests --bin ecs-sd-bench -- --tasks {tasks} --families {families} --latency-ms {} --prometheus-ecs-sd PATH",
        list.join(",")
    );
    println!(
        "{tasks} awsvpc tasks over {families} task definitions in one cluster, one moto, same machine, one run; latency: round trip added to each request"
    );
    println!();
    println!("| latency | tool | refresh | time | client CPU | AWS calls | targets |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (ms, ours, theirs) in &runs {
        for (i, r) in ours.iter().enumerate().chain(theirs.iter().enumerate()) {
            let label = if i == 0 {
                "first (cold caches)"
            } else {
                "later"
            };
            println!(
                "| {ms} ms | {} | {label} | {:.0} ms | {:.0} ms | {} | {} |",
                r.tool, r.millis, r.cpu_ms, r.calls, r.targets
            );
        }
    }
    println!();
    for (ms, ours, theirs) in &runs {
        if theirs.len() < 2 || ours.len() < 2 {
            continue;
        }
        let warm = |rows: &[Row]| {
            rows[1..].iter().map(|r| r.millis).sum::<f64>() / (rows.len() - 1) as f64
        };
        println!(
            "{ms} ms: cold refresh {:.1}x, warm refresh {:.1}x in favour of ecs-sd",
            theirs[0].millis / ours[0].millis,
            warm(theirs) / warm(ours)
        );
    }
    Ok(())
}
