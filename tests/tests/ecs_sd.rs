//! ecs-sd against moto (with the ECS fields moto leaves out filled in by a moto-side fixture)
//! and Debian's real Prometheus, reading our file_sd files and our http_sd endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::http::metric;
use tests::process::ChildGuard;
use tests::throttle::Throttler;
use tests::{Backend, Moto, Prometheus, TempDir, free_port, http, wait_for, workspace_bin};

struct Setup {
    dir: TempDir,
    moto: Moto,
    exporter: Backend,
    fixture: Value,
    out: PathBuf,
    sd: ChildGuard,
    http_port: u16,
    throttler: Option<Throttler>,
}

fn start(label: &str, interval: &str) -> Setup {
    start_with(label, interval, false)
}

/// With `throttled`, ecs-sd reaches ECS through a stand-in that can answer ThrottlingException.
fn start_with(label: &str, interval: &str, throttled: bool) -> Setup {
    let dir = TempDir::new(label);
    // awsvpc tasks get 127.0.0.1, so that Prometheus can scrape the exporter the test serves.
    let moto = Moto::start_ecs(&dir, 0, "127.0.0.1");
    let exporter = Backend::start("ecs_sd_demo_metric 1", 0).unwrap();
    let fixture: Value = serde_json::from_str(&moto.fixture(
        "ecs_tasks.py",
        &["setup", &exporter.addr.port().to_string()],
    ))
    .unwrap();
    // Not there yet: ecs-sd creates it.
    let out = dir.path().join("sd/files");
    let http_port = free_port();
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args(["--interval", interval, "--tags-to-labels", "*"])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .envs(moto.env());
    let throttler = throttled.then(|| Throttler::start(moto.port));
    if let Some(t) = &throttler {
        cmd.env(
            "AWS_ENDPOINT_URL_ECS",
            format!("http://127.0.0.1:{}", t.port),
        )
        .args(["--max-backoff", "2s"]);
    }
    let sd = ChildGuard::spawn(cmd, dir.path().join("ecs-sd.log"));
    // All four are written in one refresh, one after the other.
    wait_for("ecs-sd's first files", Duration::from_secs(30), || {
        ["15s", "30s", "1m", "5m"]
            .iter()
            .all(|i| out.join(format!("{i}-tasks.json")).exists())
            .then_some(())
    });
    Setup {
        dir,
        moto,
        exporter,
        fixture,
        out,
        sd,
        http_port,
        throttler,
    }
}

fn groups(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn find<'a>(groups: &'a [Value], job: &str, path: &str) -> Option<&'a Value> {
    groups
        .iter()
        .find(|g| g["labels"]["job"] == job && g["labels"]["metrics_path"] == path)
}

#[test]
fn files_hold_the_expected_targets_and_labels() {
    let s = start("ecs-sd-files", "0.2");
    let exporter = format!("127.0.0.1:{}", s.exporter.addr.port());
    let thirty = groups(&s.out.join("30s-tasks.json"));
    let api = find(&thirty, "api", "/metrics").expect("the api container, 30s");
    assert_eq!(api["targets"], serde_json::json!([exporter]));
    let l = &api["labels"];
    assert_eq!(l["instance"], exporter.as_str());
    assert_eq!(l["ecs_cluster"], "prism-test");
    assert_eq!(l["ecs_task_version"], "1");
    assert_eq!(l["__metrics_path__"], "/metrics");
    assert_eq!(l["__meta_ecs_service"], "api");
    assert_eq!(l["__meta_ecs_container"], "api");
    assert_eq!(l["__meta_ecs_launch_type"], "FARGATE");
    let task_arn = s.fixture["api"][0].as_str().unwrap();
    assert_eq!(l["__meta_ecs_task_arn"], task_arn);
    assert_eq!(l["ecs_task_id"], task_arn.rsplit('/').next().unwrap());

    // The sidecar's own port and path, in its own interval file.
    let fifteen = groups(&s.out.join("15s-tasks.json"));
    let envoy = find(&fifteen, "api", "/stats/prometheus").expect("the envoy sidecar, 15s");
    assert_eq!(envoy["targets"], serde_json::json!(["127.0.0.1:9901"]));

    let minute = groups(&s.out.join("1m-tasks.json"));
    assert!(
        find(&minute, "api", "/extra").is_some(),
        "the second endpoint, default file"
    );
    // prometheus-ecs-discovery's docker labels.
    let labelled = find(&minute, "blackbox", "/probe").expect("the docker-labelled exporter");
    assert_eq!(labelled["targets"], serde_json::json!(["127.0.0.1:9145"]));
    // Bridge mode on EC2: the instance's address and the host port bound to container port 9100.
    let host_ip = s.fixture["host_ip"].as_str().unwrap();
    let worker = find(&minute, "worker", "/metrics").expect("the bridge-mode worker");
    let target = worker["targets"][0].as_str().unwrap();
    assert!(target.starts_with(&format!("{host_ip}:")), "{worker}");
    assert_ne!(
        target,
        format!("{host_ip}:9100"),
        "a host port, not the container port"
    );
    assert!(
        worker["labels"]["instance_id"]
            .as_str()
            .unwrap()
            .starts_with("i-")
    );
    assert!(worker["labels"]["ecs_container_id"].is_string());
    // ECS Anywhere (EXTERNAL, bridge mode): the managed instance's address from SSM.
    let agent = find(&minute, "edge-agent", "/metrics").expect("the EXTERNAL task");
    assert!(
        agent["targets"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{agent}"
    );
    assert_eq!(
        agent["labels"]["instance_id"],
        tests::moto::MANAGED_INSTANCE
    );
    assert_eq!(agent["labels"]["__meta_ecs_launch_type"], "EXTERNAL");
    // A task without PROMETHEUS gives nothing.
    let all: Vec<Value> = ["15s", "30s", "1m", "5m"]
        .iter()
        .flat_map(|i| groups(&s.out.join(format!("{i}-tasks.json"))))
        .collect();
    assert!(!all.iter().any(|g| g["labels"]["job"] == "plain"));
    assert_eq!(groups(&s.out.join("5m-tasks.json")).len(), 0);
    // --dry-run explains, per target and per skipped container, and writes nothing.
    let dry = Command::new(workspace_bin("ecs-sd"))
        .arg("--dry-run")
        .envs(s.moto.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        text.contains(&format!("30s-tasks.json  {exporter}  /metrics  job=api")),
        "{text}"
    );
    assert!(
        text.contains("1m-tasks.json  127.0.0.1:9145  /probe  job=blackbox"),
        "{text}"
    );
    // http_sd serves the same targets.
    let r = http::get(s.http_port, "/sd/30s", &[]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        serde_json::json!(thirty)
    );
    assert!(
        metric(
            s.http_port,
            "ecs_sd_api_calls_total{operation=\"DescribeTasks\"}"
        ) >= 1.0
    );
}

#[test]
fn prometheus_scrapes_through_file_sd_and_http_sd_and_follows_task_changes() {
    let s = start("ecs-sd-prom", "0.2");
    let config = format!(
        r#"
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
scrape_configs:
  - job_name: ecs-30s
    file_sd_configs: [ {{ files: ["{}"], refresh_interval: 1s }} ]
  - job_name: ecs-http
    http_sd_configs: [ {{ url: "http://127.0.0.1:{}/sd/30s", refresh_interval: 1s }} ]
"#,
        s.out.join("30s-tasks.json").display(),
        s.http_port
    );
    let prom = Prometheus::start(&s.dir, &config);
    for pool in ["ecs-30s", "ecs-http"] {
        let target = wait_for(
            &format!("{pool}: the api target up"),
            Duration::from_secs(60),
            || prom.targets(pool).into_iter().find(|t| t["health"] == "up"),
        );
        assert_eq!(target["labels"]["job"], "api");
        assert_eq!(target["labels"]["ecs_cluster"], "prism-test");
        assert_eq!(
            target["scrapeUrl"],
            format!("http://127.0.0.1:{}/metrics", s.exporter.addr.port())
        );
    }
    let up = wait_for("a scraped sample", Duration::from_secs(30), || {
        let r = prom.api("/api/v1/query?query=ecs_sd_demo_metric");
        let results = r["data"]["result"].as_array().cloned().unwrap_or_default();
        // Both pools scrape the same target under the same labels: one series.
        (!results.is_empty()).then_some(results)
    });
    assert!(up.iter().all(|r| r["value"][1] == "1"), "{up:?}");

    // A stopped task leaves; a new one arrives.
    let arn = s.fixture["api"][0].as_str().unwrap();
    s.moto.fixture("ecs_tasks.py", &["stop", arn]);
    wait_for(
        "the stopped task to leave Prometheus",
        Duration::from_secs(30),
        || {
            (prom.targets("ecs-30s").is_empty() && prom.targets("ecs-http").is_empty())
                .then_some(())
        },
    );
    let new_arn = s.moto.fixture("ecs_tasks.py", &["run", "api"]);
    let new_id = new_arn.trim().rsplit('/').next().unwrap().to_string();
    wait_for(
        "the new task in Prometheus",
        Duration::from_secs(30),
        || {
            prom.targets("ecs-30s")
                .into_iter()
                .find(|t| t["labels"]["ecs_task_id"] == new_id.as_str() && t["health"] == "up")
        },
    );
}

#[test]
fn api_errors_keep_the_last_good_files() {
    let mut s = start("ecs-sd-errors", "0.2");
    let before: Vec<Vec<u8>> = ["15s", "30s", "1m", "5m"]
        .iter()
        .map(|i| std::fs::read(s.out.join(format!("{i}-tasks.json"))).unwrap())
        .collect();
    s.moto.process.kill();
    wait_for("errors to be counted", Duration::from_secs(60), || {
        (metric(s.http_port, "ecs_sd_errors_total{kind=\"error\"}") >= 2.0).then_some(())
    });
    let after: Vec<Vec<u8>> = ["15s", "30s", "1m", "5m"]
        .iter()
        .map(|i| std::fs::read(s.out.join(format!("{i}-tasks.json"))).unwrap())
        .collect();
    assert_eq!(before, after);
    // http_sd keeps answering with the last good targets.
    let r = http::get(s.http_port, "/sd/30s", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(s.sd.output().contains("the last good targets stay"));
}

#[test]
fn throttling_backs_off_and_keeps_the_last_good_files() {
    let s = start_with("ecs-sd-throttle", "0.2", true);
    let before = std::fs::read(s.out.join("30s-tasks.json")).unwrap();
    let throttler = s.throttler.as_ref().unwrap();
    throttler
        .throttle
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for("throttling to be counted", Duration::from_secs(60), || {
        (metric(s.http_port, "ecs_sd_errors_total{kind=\"throttled\"}") >= 2.0).then_some(())
    });
    assert_eq!(std::fs::read(s.out.join("30s-tasks.json")).unwrap(), before);
    assert!(s.sd.output().contains("retry_in"), "{}", s.sd.output());
    // Back to normal: refreshes succeed again and follow changes.
    throttler
        .throttle
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let arn = s.fixture["api"][0].as_str().unwrap();
    s.moto.fixture("ecs_tasks.py", &["stop", arn]);
    wait_for("refreshes to resume", Duration::from_secs(30), || {
        groups(&s.out.join("30s-tasks.json"))
            .is_empty()
            .then_some(())
    });
}

#[test]
fn prometheus_never_reads_a_partial_file_while_targets_churn() {
    let s = start("ecs-sd-churn", "0.05");
    let config = format!(
        r#"
global: {{ scrape_interval: 1s }}
scrape_configs:
  - job_name: ecs-30s
    file_sd_configs: [ {{ files: ["{}"], refresh_interval: 1s }} ]
"#,
        s.out.join("30s-tasks.json").display()
    );
    let prom = Prometheus::start(&s.dir, &config);
    let writes_before = metric(s.http_port, "ecs_sd_file_writes_total");
    let scans = "prometheus_sd_file_scan_duration_seconds_count";
    let scans_before = metric(prom.port, scans);
    // 100 starts and 100 stops, each seen by ecs-sd and written out.
    s.moto.fixture("ecs_tasks.py", &["churn", "100"]);
    let writes = metric(s.http_port, "ecs_sd_file_writes_total") - writes_before;
    assert!(writes >= 100.0, "only {writes} rewrites");
    let log = prom.process.output();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=error") && (l.contains("file") || l.contains("discovery")))
        .collect();
    assert!(problems.is_empty(), "Prometheus: {problems:?}");
    // It did read the file all along, and never failed to.
    assert!(
        metric(prom.port, scans) > scans_before,
        "Prometheus did not read the file during the churn"
    );
    assert_eq!(
        metric(prom.port, "prometheus_sd_file_read_errors_total"),
        0.0
    );
}

/// Whoever shares the directory may plant a link at the staging path this ecs-sd's pid would
/// have given, or at a target file, or a named pipe at a target file: the files are still
/// replaced in the directory, what the links point at is never written, and the pipe never
/// blocks a refresh.
#[test]
fn symlinks_planted_at_staging_paths_or_targets_never_redirect_a_write() {
    let s = start("ecs-sd-symlinks", "0.2");
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let pid = s.sd.pid();
    std::os::unix::fs::symlink(&victim, s.out.join(format!(".30s-tasks.json.tmp-{pid}"))).unwrap();
    let five = s.out.join("5m-tasks.json");
    std::fs::remove_file(&five).unwrap();
    std::os::unix::fs::symlink(&victim, &five).unwrap();
    // A named pipe blocks an open for reading until someone writes to it.
    let one = s.out.join("1m-tasks.json");
    std::fs::remove_file(&one).unwrap();
    let mkfifo = Command::new("mkfifo").arg(&one).status().unwrap();
    assert!(mkfifo.success());
    let arn = s.fixture["api"][0].as_str().unwrap();
    s.moto.fixture("ecs_tasks.py", &["stop", arn]);
    let thirty = s.out.join("30s-tasks.json");
    let is_file = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
    wait_for("the rewritten files", Duration::from_secs(30), || {
        (is_file(&thirty) && groups(&thirty).is_empty() && is_file(&five) && is_file(&one))
            .then_some(())
    });
    assert_eq!(std::fs::read_to_string(&five).unwrap().trim(), "[]");
    let text = std::fs::read_to_string(&one).unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_array()),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// `--log-format` takes the values the other binaries take, and refuses others (it once took any
/// string and wrote text for all but `json`).
#[test]
fn log_format_is_text_or_json() {
    let out = Command::new(workspace_bin("ecs-sd"))
        .args(["--dry-run", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[possible values: text, json]"), "{err}");
}

fn run_ecs_sd(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    Command::new(workspace_bin("ecs-sd"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// `--dry-run` ends with a summary; `--output json` prints exactly what the files hold, by
/// file name; a cluster that is not found fails the dry run; `ECS_SD_DRY_RUN` is `--dry-run`.
#[test]
fn dry_run_summarises_prints_the_file_sd_json_and_refuses_an_unknown_cluster() {
    let s = start("ecs-sd-dry-run", "0.2");
    let mut env = s.moto.env();
    env.push(("ECS_SD_DRY_RUN", "true".into()));
    let text = run_ecs_sd(&[], &env);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        summary, "5 tasks seen, 6 targets (15s: 1, 1m: 4, 30s: 1, 5m: 0), 0 containers skipped",
        "{stdout}"
    );

    let json = run_ecs_sd(&["--dry-run", "--output", "json"], &s.moto.env());
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let printed: Value = serde_json::from_slice(&json.stdout).expect("stdout is only JSON");
    let files = printed.as_object().unwrap();
    let names: Vec<&String> = files.keys().collect();
    assert_eq!(
        names,
        [
            "15s-tasks.json",
            "1m-tasks.json",
            "30s-tasks.json",
            "5m-tasks.json"
        ]
    );
    for (name, groups) in files {
        let written: Value =
            serde_json::from_slice(&std::fs::read(s.out.join(name)).unwrap()).unwrap();
        assert_eq!(groups, &written, "{name}");
    }
    assert!(
        String::from_utf8_lossy(&json.stderr).contains("5 tasks seen, 6 targets"),
        "the summary goes to stderr"
    );

    // A typo in --cluster-arns is not a cluster without tasks.
    let unknown = run_ecs_sd(
        &["--dry-run", "--cluster-arns", "prism-test,prism-tset"],
        &s.moto.env(),
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("cluster not found: prism-tset"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    assert!(
        String::from_utf8_lossy(&unknown.stdout).contains("30s-tasks.json"),
        "the clusters that exist are still shown"
    );
    // --output is for --dry-run only; ECS_SD_DRY_RUN=false is no --dry-run.
    let mut env = s.moto.env();
    env.push(("ECS_SD_DRY_RUN", "false".into()));
    let refused = run_ecs_sd(&["--http-listen", "127.0.0.1:0", "--output", "json"], &env);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("give --dry-run too"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Before the first refresh, every series is there at 0 with every label; the directory is
/// created; an error that repeats is logged when it starts and when it ends, without colours.
#[test]
fn metrics_exist_from_the_start_and_a_lasting_failure_is_logged_when_it_starts_and_ends() {
    let dir = TempDir::new("ecs-sd-lasting");
    let port = free_port();
    let http_port = free_port();
    let out = dir.path().join("not/yet/there");
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args([
            "--interval",
            "0.1",
            "--default-scrape-interval-prefix",
            "2m",
        ])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .envs(Moto::env_at(port))
        .env("AWS_MAX_ATTEMPTS", "1");
    let sd = ChildGuard::spawn(cmd, dir.path().join("ecs-sd.log"));
    let series = [
        "ecs_sd_targets{interval=\"30s\"} 0",
        "ecs_sd_targets{interval=\"2m\"} 0",
        "ecs_sd_skipped_containers{reason=\"no_address\"} 0",
        "ecs_sd_api_calls_total{operation=\"DescribeTaskDefinition\"} 0",
        "ecs_sd_errors_total{kind=\"write\"} 0",
        "ecs_sd_errors_total{kind=\"throttled\"} 0",
        "ecs_sd_last_refresh_successful 0",
        "ecs_sd_file_writes_total 0",
    ];
    tests::cli::metrics_from_the_start(http_port, "ecs-sd", "ecs_sd", &series);
    assert!(out.is_dir(), "--directory was not created");

    // AWS is not there: many failed refreshes, one log line.
    wait_for("five failed refreshes", Duration::from_secs(60), || {
        (metric(http_port, "ecs_sd_errors_total{kind=\"error\"}") >= 5.0).then_some(())
    });
    let failures = |log: &str| log.matches("refresh failed").count();
    assert_eq!(failures(&sd.output()), 1, "{}", sd.output());
    // It comes (with no clusters): the end is logged once, the gauge says so.
    let _moto = Moto::start(&dir, port);
    wait_for("a good refresh", Duration::from_secs(30), || {
        (metric(http_port, "ecs_sd_last_refresh_successful") == 1.0).then_some(())
    });
    wait_for(
        "the refresh that wrote the files",
        Duration::from_secs(30),
        || out.join("2m-tasks.json").exists().then_some(()),
    );
    let log = sd.output();
    assert_eq!(failures(&log), 1, "{log}");
    assert_eq!(log.matches("refreshing works again").count(), 1, "{log}");
    assert!(
        !tests::cli::has_escape_codes(&log),
        "colour codes in a log file:\n{log}"
    );
    // The reason labels stay after a refresh, at 0.
    assert!(
        http::get(http_port, "/metrics", &[])
            .unwrap()
            .body
            .contains("ecs_sd_skipped_containers{reason=\"no_port\"} 0")
    );
}

/// `--version` names the commit; every flag reads an environment variable (`ECS_SD_DRY_RUN`
/// among them).
#[test]
fn version_names_the_commit_and_every_flag_reads_the_environment() {
    let commit = tests::cli::version_commit("ecs-sd");
    assert!(!commit.is_empty());
    let help = tests::cli::help("ecs-sd", &[]);
    assert_eq!(
        tests::cli::flags_without_env(&help),
        Vec::<String>::new(),
        "{help}"
    );
    assert!(help.contains("[env: ECS_SD_DRY_RUN="), "{help}");
}

/// A refresh of more tasks than one DescribeTasks call takes (100) over more task definitions
/// than calls run at once (8): the batches go side by side, and every task still gives its one
/// target, at its own address and with its own labels, as ECS read one call at a time gives them.
#[test]
fn many_tasks_over_several_batches_each_give_their_own_target() {
    let dir = TempDir::new("ecs-sd-many");
    let moto = Moto::start_ecs(&dir, 0, "");
    moto.fixture("ecs_tasks.py", &["bulk", "250", "10"]);
    let expected: BTreeMap<String, (String, String)> =
        serde_json::from_str::<BTreeMap<String, (String, String)>>(
            &moto.fixture("ecs_tasks.py", &["addresses"]),
        )
        .unwrap()
        .into_iter()
        .map(|(arn, (family, ip))| (arn, (family, format!("{ip}:9100"))))
        .collect();
    assert_eq!(expected.len(), 250);
    let out = dir.path().join("sd");
    let http_port = free_port();
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args(["--interval", "60"])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .envs(moto.env());
    let _sd = ChildGuard::spawn(cmd, dir.path().join("ecs-sd.log"));
    let minute = out.join("1m-tasks.json");
    wait_for("ecs-sd's first files", Duration::from_secs(60), || {
        minute.exists().then_some(())
    });
    let got: BTreeMap<String, (String, String)> = groups(&minute)
        .iter()
        .map(|g| {
            let arn = g["labels"]["__meta_ecs_task_arn"]
                .as_str()
                .unwrap()
                .to_string();
            let job = g["labels"]["job"].as_str().unwrap().to_string();
            assert_eq!(g["targets"].as_array().unwrap().len(), 1, "{g}");
            (arn, (job, g["targets"][0].as_str().unwrap().to_string()))
        })
        .collect();
    assert_eq!(groups(&minute).len(), 250, "one target group per task");
    assert_eq!(got, expected);
    let calls = |op: &str| {
        metric(
            http_port,
            &format!("ecs_sd_api_calls_total{{operation=\"{op}\"}}"),
        )
    };
    assert_eq!(calls("DescribeTasks"), 3.0, "250 tasks in batches of 100");
    assert_eq!(
        calls("DescribeTaskDefinition"),
        10.0,
        "each task definition once"
    );
}

/// Later refreshes of a cluster of several ListTasks pages still find every task: one outside
/// any service, whose task definition revision was deregistered (INACTIVE) after it started,
/// stays among the 250 of two services refresh after refresh, as ECS lists it.
#[test]
fn a_lone_task_of_a_deregistered_revision_stays_found_among_many() {
    let dir = TempDir::new("ecs-sd-lone");
    let moto = Moto::start_ecs(&dir, 0, "");
    moto.fixture("ecs_tasks.py", &["bulk", "250", "2"]);
    let out = dir.path().join("sd");
    let http_port = free_port();
    let mut cmd = Command::new(workspace_bin("ecs-sd"));
    cmd.arg("--directory")
        .arg(&out)
        .args(["--interval", "0.2"])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .envs(moto.env());
    let _sd = ChildGuard::spawn(cmd, dir.path().join("ecs-sd.log"));
    let minute = out.join("1m-tasks.json");
    wait_for("ecs-sd's 250 targets", Duration::from_secs(60), || {
        (groups(&minute).len() == 250).then_some(())
    });
    let lone = moto.fixture("ecs_tasks.py", &["lone", "lonely"]);
    let lone = lone.trim().to_string();
    let listed = || {
        groups(&minute)
            .iter()
            .any(|g| g["labels"]["__meta_ecs_task_arn"] == lone.as_str())
    };
    wait_for("the lone task's target", Duration::from_secs(60), || {
        listed().then_some(())
    });
    // Refreshes that list the cluster differently must not drop it: watch a dozen more.
    let refreshes = || metric(http_port, "ecs_sd_refresh_seconds_count");
    let until = refreshes() + 12.0;
    wait_for("a dozen more refreshes", Duration::from_secs(120), || {
        assert!(listed(), "{lone} was dropped by a later refresh");
        (refreshes() >= until).then_some(())
    });
    assert_eq!(groups(&minute).len(), 251, "{lone} is one more target");
}
