//! s3-config-loader against `aws s3 sync`, in one run, on the same moto bucket: N objects,
//! a first sync into an empty directory and a second one with nothing changed. Reports wall
//! time and the requests each made (counted from moto's request log), at each latency of
//! `--latency-ms` (a round trip added to every request by [`tests::latency::LatencyProxy`],
//! as AWS's network and service time would add; 0 is moto on loopback without the proxy).
//!
//! `cargo run -p tests --bin s3-bench -- [--objects 1000] [--latency-ms 0,20,50]`; needs the
//! awscli virtualenv that `scripts/bench-setup.sh` installs.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use std::time::Duration;
use tests::latency::{self, LatencyProxy};
use tests::{Moto, TempDir, repo_root, workspace_bin};

fn requests(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\" 200 ") || l.contains("\" 304 ") || l.contains("\" 404 "))
                .count()
        })
        .unwrap_or(0)
}

fn gets(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"GET /bench-bucket/bench/"))
                .count()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of all waited-for children so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_CHILDREN is a valid target.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

struct Row {
    latency_ms: u64,
    tool: &'static str,
    pass: &'static str,
    millis: f64,
    cpu_ms: f64,
    requests: usize,
    body_gets: usize,
}

fn measure(
    latency_ms: u64,
    tool: &'static str,
    pass: &'static str,
    log: &Path,
    mut cmd: Command,
) -> anyhow::Result<Row> {
    let (r0, g0, cpu0) = (requests(log), gets(log), children_cpu());
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {tool}"))?;
    let millis = start.elapsed().as_secs_f64() * 1000.0;
    let cpu_ms = (children_cpu() - cpu0) * 1000.0;
    if !out.status.success() {
        bail!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // moto writes its log line after answering; give it a moment to flush.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Row {
        latency_ms,
        tool,
        pass,
        millis,
        cpu_ms,
        requests: requests(log) - r0,
        body_gets: gets(log) - g0,
    })
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: s3-bench [--objects N] [--latency-ms 0,20,50]";
    let (mut objects, mut latencies) = (1000usize, vec![0, 20, 50]);
    for (flag, value) in latency::flag_values()? {
        match flag.as_str() {
            "--objects" => objects = value.parse()?,
            "--latency-ms" => latencies = latency::parse_list(&value)?,
            _ => bail!(USAGE),
        }
    }
    let aws = repo_root().join(".venv/awscli/bin/aws");
    if !aws.exists() {
        bail!("{} is missing: run scripts/bench-setup.sh", aws.display());
    }
    let dir = TempDir::new("s3-bench");
    let moto = Moto::start(&dir, 0);
    let log = moto.process.log.clone();
    let rt = tokio::runtime::Runtime::new()?;
    let s3 = moto.s3();
    rt.block_on(async {
        s3.create_bucket().bucket("bench-bucket").send().await?;
        for i in 0..objects {
            let body: Vec<u8> = format!("object {i}\n").repeat(100 + i % 300).into_bytes();
            s3.put_object()
                .bucket("bench-bucket")
                .key(format!("bench/dir{}/file{i}.conf", i % 10))
                .body(body.into())
                .send()
                .await?;
        }
        anyhow::Ok(())
    })?;

    let mut rows = Vec::new();
    for &ms in &latencies {
        // 0: straight to moto; otherwise through the proxy.
        let proxy = (ms > 0).then(|| LatencyProxy::start(moto.port, Duration::from_millis(ms)));
        let port = proxy.as_ref().map_or(moto.port, |p| p.port);
        let env = Moto::env_at(port);
        let loader = |target: &Path| {
            let mut c = Command::new(workspace_bin("s3-config-loader"));
            c.args(["sync", "s3://bench-bucket/bench/"])
                .arg(target)
                .args(["--once", "--log", "warn"])
                .envs(env.clone());
            c
        };
        let awscli = |target: &Path| {
            let mut c = Command::new(&aws);
            c.args(["s3", "sync", "s3://bench-bucket/bench/"])
                .arg(target)
                .args(["--only-show-errors", "--endpoint-url"])
                .arg(format!("http://127.0.0.1:{port}"))
                .envs(env.clone());
            c
        };
        let (a, b) = (
            dir.path().join(format!("loader-{ms}")),
            dir.path().join(format!("awscli-{ms}")),
        );
        eprintln!("{ms} ms latency");
        rows.push(measure(
            ms,
            "s3-config-loader",
            "first sync",
            &log,
            loader(&a),
        )?);
        rows.push(measure(ms, "aws s3 sync", "first sync", &log, awscli(&b))?);
        rows.push(measure(
            ms,
            "s3-config-loader",
            "unchanged re-sync",
            &log,
            loader(&a),
        )?);
        rows.push(measure(
            ms,
            "aws s3 sync",
            "unchanged re-sync",
            &log,
            awscli(&b),
        )?);
    }
    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!(
        "command: cargo run -p tests --bin s3-bench -- --objects {objects} --latency-ms {}",
        list.join(",")
    );
    println!(
        "{objects} objects of 1-4 KiB in 10 prefixes, one moto_server, same machine, one run; latency: round trip added to each request"
    );
    println!();
    println!("| latency | tool | pass | wall time | client CPU | requests to S3 | object GETs |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} ms | {} | {} | {:.0} ms | {:.0} ms | {} | {} |",
            r.latency_ms, r.tool, r.pass, r.millis, r.cpu_ms, r.requests, r.body_gets
        );
    }
    println!();
    for run in rows.chunks(4) {
        for (pass, ours, theirs) in [
            ("first sync", &run[0], &run[1]),
            ("unchanged re-sync", &run[2], &run[3]),
        ] {
            println!(
                "{} ms, {pass}: wall time {:.1}x, client CPU {:.1}x in favour of s3-config-loader",
                ours.latency_ms,
                theirs.millis / ours.millis,
                theirs.cpu_ms / ours.cpu_ms
            );
        }
    }
    Ok(())
}
