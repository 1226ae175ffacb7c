//! ecs-sd against signal-ai's prometheus-ecs-sd on the same emulated cluster, in one run:
//! N awsvpc tasks over F task definitions in moto (with the ECS fields moto leaves out filled in
//! by tests/fixtures/moto_ecs.py), three refreshes each; refresh time and AWS calls.
//!
//! `cargo run --release -p tests --bin ecs-sd-bench -- [--tasks 5000] [--families 50]
//!  [--prometheus-ecs-sd PATH/TO/discoverecs.py]`
//! prometheus-ecs-sd is run from its public source, which this repository does not include:
//! pass the path of a checkout's `discoverecs.py` (it needs only boto3, which moto's
//! virtualenv has).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
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

fn main() -> anyhow::Result<()> {
    let (mut tasks, mut families, mut upstream): (usize, usize, Option<PathBuf>) = (5000, 50, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tasks" => tasks = value.parse()?,
            "--families" => families = value.parse()?,
            "--prometheus-ecs-sd" => upstream = Some(PathBuf::from(value)),
            _ => bail!("usage: ecs-sd-bench [--tasks N] [--families F] [--prometheus-ecs-sd PATH]"),
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

    // ecs-sd: three refreshes of a running daemon, the first with cold caches.
    let out = dir.path().join("ecs-sd");
    std::fs::create_dir_all(&out)?;
    let port = free_port();
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args([
            "--interval",
            "0.5",
            "--http-listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .envs(moto.env());
    let sd = ChildGuard::spawn(cmd, dir.path().join("ecs-sd.log"));
    let mut calls = vec![0.0];
    let mut cpu = vec![0.0];
    for n in 1..=3 {
        wait_for("an ecs-sd refresh", Duration::from_secs(600), || {
            (metric_sum(port, "ecs_sd_refresh_seconds_count") >= n as f64).then_some(())
        });
        calls.push(metric_sum(port, "ecs_sd_api_calls_total"));
        cpu.push(cpu_seconds(sd.pid()));
    }
    let took: Vec<f64> = sd
        .output()
        .lines()
        .filter(|l| l.contains("\"refreshed\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["took_ms"].as_f64())
        .collect();
    if took.len() < 3 {
        bail!("ecs-sd logged {} refreshes:\n{}", took.len(), sd.output());
    }
    drop(sd);
    let our_targets = targets_in(&out);

    println!(
        "command: cargo run --release -p tests --bin ecs-sd-bench -- --tasks {tasks} --families {families} --prometheus-ecs-sd PATH"
    );
    println!(
        "{tasks} awsvpc tasks over {families} task definitions in one cluster, one moto, same machine, one run"
    );
    println!();
    println!("| tool | refresh | time | client CPU | AWS calls | targets |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for i in 0..3 {
        let label = if i == 0 {
            "first (cold caches)"
        } else {
            "later"
        };
        println!(
            "| ecs-sd | {label} | {:.0} ms | {:.0} ms | {} | {our_targets} |",
            took.get(i).copied().unwrap_or(f64::NAN),
            (cpu[i + 1] - cpu[i]) * 1000.0,
            calls[i + 1] - calls[i]
        );
    }

    if let Some(path) = upstream {
        let out3 = dir.path().join("prometheus-ecs-sd");
        std::fs::create_dir_all(&out3)?;
        let run = Command::new(repo_root().join(".venv/moto/bin/python"))
            .arg(repo_root().join("tests/fixtures/bench_prometheus_ecs_sd.py"))
            .arg(&path)
            .arg(&out3)
            .envs(moto.env())
            .output()?;
        if !run.status.success() {
            bail!(
                "prometheus-ecs-sd failed: {}",
                String::from_utf8_lossy(&run.stderr)
            );
        }
        let runs: serde_json::Value = serde_json::from_slice(&run.stdout)?;
        let theirs = targets_in(&out3);
        for (i, r) in runs.as_array().into_iter().flatten().enumerate() {
            let label = if i == 0 {
                "first (cold caches)"
            } else {
                "later"
            };
            println!(
                "| prometheus-ecs-sd | {label} | {:.0} ms | {:.0} ms | {} | {theirs} |",
                r["seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
                r["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1000.0,
                r["calls"]
            );
        }
    }
    Ok(())
}
