//! s3-config-loader against `aws s3 sync`, in one run, on the same moto bucket: N objects,
//! a first sync into an empty directory and a second one with nothing changed. Reports wall
//! time and the requests each made (counted from moto's request log).
//!
//! `cargo run --release -p tests --bin s3-bench -- [--objects 1000]`; needs the awscli
//! virtualenv that `scripts/bench-setup.sh` installs.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
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
    tool: &'static str,
    pass: &'static str,
    millis: f64,
    cpu_ms: f64,
    requests: usize,
    body_gets: usize,
}

fn measure(
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
        tool,
        pass,
        millis,
        cpu_ms,
        requests: requests(log) - r0,
        body_gets: gets(log) - g0,
    })
}

fn main() -> anyhow::Result<()> {
    let mut objects = 1000usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = &args[..] {
        if flag != "--objects" {
            bail!("usage: s3-bench [--objects N]");
        }
        objects = n.parse()?;
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

    let loader = |target: &Path| {
        let mut c = Command::new(workspace_bin("s3-config-loader"));
        c.args(["sync", "s3://bench-bucket/bench/"])
            .arg(target)
            .args(["--once", "--log", "warn"])
            .envs(moto.env());
        c
    };
    let awscli = |target: &Path| {
        let mut c = Command::new(&aws);
        c.args(["s3", "sync", "s3://bench-bucket/bench/"])
            .arg(target)
            .args(["--only-show-errors", "--endpoint-url", &moto.endpoint()])
            .envs(moto.env());
        c
    };
    let (a, b) = (dir.path().join("loader"), dir.path().join("awscli"));
    let rows = vec![
        measure("s3-config-loader", "first sync", &log, loader(&a))?,
        measure("aws s3 sync", "first sync", &log, awscli(&b))?,
        measure("s3-config-loader", "unchanged re-sync", &log, loader(&a))?,
        measure("aws s3 sync", "unchanged re-sync", &log, awscli(&b))?,
    ];
    println!("command: cargo run --release -p tests --bin s3-bench -- --objects {objects}");
    println!("{objects} objects of 1-4 KiB in 10 prefixes, one moto_server, same machine, one run");
    println!();
    println!("| tool | pass | wall time | client CPU | requests to S3 | object GETs |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | {} | {} |",
            r.tool, r.pass, r.millis, r.cpu_ms, r.requests, r.body_gets
        );
    }
    println!();
    for (pass, ours, theirs) in [
        ("first sync", &rows[0], &rows[1]),
        ("unchanged re-sync", &rows[2], &rows[3]),
    ] {
        println!(
            "{pass}: wall time {:.1}x, client CPU {:.1}x in favour of s3-config-loader",
            theirs.millis / ours.millis,
            theirs.cpu_ms / ours.cpu_ms
        );
    }
    Ok(())
}
