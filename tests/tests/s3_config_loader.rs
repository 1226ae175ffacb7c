//! s3-config-loader against moto_server: first and unchanged syncs, changes, deletes, unsafe
//! keys, atomic replacement under a busy reader, validation, hooks, S3 outages, templates
//! rendered from ECS task metadata and accepted by the real Envoy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tests::http::metric;
use tests::process::{ChildGuard, envoy_bin};
use tests::{Backend, Moto, TempDir, free_port, http, wait_for, workspace_bin};

const BUCKET: &str = "config";

struct S3 {
    dir: TempDir,
    moto: Moto,
    rt: tokio::runtime::Runtime,
}

impl S3 {
    fn start(label: &str) -> S3 {
        let dir = TempDir::new(label);
        let moto = Moto::start(&dir, 0);
        let s3 = S3 {
            dir,
            moto,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        s3.create_bucket();
        s3
    }

    fn create_bucket(&self) {
        let client = self.moto.s3();
        self.rt
            .block_on(client.create_bucket().bucket(BUCKET).send())
            .expect("bucket created");
    }

    fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        let client = self.moto.s3();
        let body = aws_sdk_s3::primitives::ByteStream::from(body.into());
        self.rt
            .block_on(
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(body)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    fn delete(&self, key: &str) {
        let client = self.moto.s3();
        self.rt
            .block_on(client.delete_object().bucket(BUCKET).key(key).send())
            .unwrap();
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_bin("s3-config-loader"));
        cmd.args(args)
            .envs(self.moto.env())
            .env("S3_CONFIG_LOADER_LOG", "info");
        cmd
    }

    /// Runs the loader to completion.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("s3-config-loader runs")
    }

    /// `sync s3://config/PREFIX DIR --once ...`.
    fn sync_once(&self, prefix: &str, extra: &[&str]) -> Output {
        let src = format!("s3://{BUCKET}/{prefix}");
        let out = self.out();
        let mut args = vec!["sync", &src, out.to_str().unwrap(), "--once"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// A loader in daemon mode, with an admin port for its metrics.
    fn daemon(&self, prefix: &str, extra: &[&str]) -> (ChildGuard, u16) {
        let admin = free_port();
        let src = format!("s3://{BUCKET}/{prefix}");
        let out = self.out();
        let admin_addr = format!("127.0.0.1:{admin}");
        let mut args = vec![
            "sync",
            &src,
            out.to_str().unwrap(),
            "--admin-listen",
            &admin_addr,
        ];
        args.extend_from_slice(extra);
        let cmd = self.command(&args);
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let child = ChildGuard::spawn(cmd, self.dir.path().join(format!("loader-{n}.log")));
        wait_for("the loader's admin port", Duration::from_secs(20), || {
            http::get(admin, "/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        (child, admin)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn first_sync_mirrors_nested_keys_and_an_unchanged_resync_downloads_nothing() {
    let s3 = S3::start("s3-first");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s3.put("app/envoy.yaml", "admin: {}\n");
    s3.put("app/prometheus/rules/a.yml", "groups: []\n");
    s3.put("app/blob.bin", big.clone());
    s3.put("other/ignored.txt", "not under the prefix");
    let first = s3.sync_once("app/", &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).starts_with("3 objects: 3 written, 0 unchanged, 0 errors; 3 downloaded ("),
        "{}",
        stdout(&first)
    );
    assert_eq!(read(&s3.out().join("envoy.yaml")), "admin: {}\n");
    assert_eq!(
        read(&s3.out().join("prometheus/rules/a.yml")),
        "groups: []\n"
    );
    assert_eq!(std::fs::read(s3.out().join("blob.bin")).unwrap(), big);
    assert!(!s3.out().join("ignored.txt").exists());

    let second = s3.sync_once("app/", &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&second).trim(),
        "3 objects: 0 written, 3 unchanged, 0 errors; 0 downloaded (0 bytes), 0 deleted"
    );

    // `get` of one object: the second run is a conditional GET answered 304.
    let file = s3.dir.path().join("single/envoy.yaml");
    let args = ["get", "s3://config/app/envoy.yaml", file.to_str().unwrap()];
    assert_eq!(
        stdout(&s3.run(&args)).trim(),
        "1 object: 1 written, 0 unchanged, 0 errors; 1 downloaded (10 bytes), 0 deleted"
    );
    assert_eq!(
        stdout(&s3.run(&args)).trim(),
        "1 object: 0 written, 1 unchanged, 0 errors; 0 downloaded (0 bytes), 0 deleted"
    );
    assert_eq!(read(&file), "admin: {}\n");
}

/// A template is downloaded and rendered every pass; when the result is what the file holds,
/// the object is "unchanged", once, not also counted as something else.
#[test]
fn the_summary_counts_each_object_once() {
    let s3 = S3::start("s3-summary");
    s3.put("app/a.conf.tmpl", "role=${S3CL_ROLE}\n");
    s3.put("app/b.conf", "b\n");
    let run = || {
        let src = format!("s3://{BUCKET}/app/");
        let mut cmd = s3.command(&["sync", &src, s3.out().to_str().unwrap(), "--once"]);
        cmd.env("S3CL_ROLE", "web").output().unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).starts_with("2 objects: 2 written, 0 unchanged, 0 errors;"),
        "{}",
        stdout(&first)
    );
    let again = run();
    assert_eq!(
        stdout(&again).trim(),
        "2 objects: 0 written, 2 unchanged, 0 errors; 1 downloaded (18 bytes), 0 deleted"
    );
    assert_eq!(read(&s3.out().join("a.conf")), "role=web\n");
}

#[test]
fn same_size_changes_are_seen_and_delete_removes_only_our_files() {
    let s3 = S3::start("s3-change");
    s3.put("app/a.txt", "aaaa");
    s3.put("app/b.txt", "bbbb");
    assert!(s3.sync_once("app/", &[]).status.success());
    std::fs::write(s3.out().join("mine.txt"), "written by someone else").unwrap();
    s3.put("app/a.txt", "AAAA"); // same size: `aws s3 sync` would miss it
    s3.delete("app/b.txt");
    let without_delete = s3.sync_once("app/", &[]);
    assert!(
        without_delete.status.success(),
        "{}",
        stderr(&without_delete)
    );
    assert_eq!(read(&s3.out().join("a.txt")), "AAAA");
    assert!(s3.out().join("b.txt").exists(), "removed without --delete");
    let with_delete = s3.sync_once("app/", &["--delete"]);
    assert!(with_delete.status.success(), "{}", stderr(&with_delete));
    assert!(!s3.out().join("b.txt").exists());
    assert_eq!(read(&s3.out().join("mine.txt")), "written by someone else");
    assert_eq!(read(&s3.out().join("a.txt")), "AAAA");
}

#[test]
fn keys_that_would_escape_the_directory_are_refused() {
    let s3 = S3::start("s3-unsafe");
    s3.put("app/good.txt", "good");
    s3.put("app/../../escaped.txt", "evil");
    s3.put("app//abs.txt", "evil");
    let out = s3.sync_once("app/", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("app/../../escaped.txt") && err.contains("would leave the target directory"),
        "{err}"
    );
    assert!(err.contains("app//abs.txt"), "{err}");
    assert_eq!(read(&s3.out().join("good.txt")), "good");
    // Nothing anywhere above the target directory.
    assert!(!s3.dir.path().join("escaped.txt").exists());
    assert!(!s3.dir.path().parent().unwrap().join("escaped.txt").exists());
    assert!(!Path::new("/abs.txt").exists());
}

#[test]
fn a_reader_never_sees_a_partial_or_empty_file_during_100_updates() {
    let s3 = S3::start("s3-atomic");
    let version = |i: usize| format!("version {i}\n{}END\n", "x".repeat(256 * 1024));
    s3.put("app/conf.txt", version(0));
    let (_loader, _admin) = s3.daemon("app/", &["--interval", "20ms"]);
    let path = s3.out().join("conf.txt");
    wait_for("the first version", Duration::from_secs(20), || {
        path.exists().then_some(())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).expect("the file is always there");
                assert!(
                    text.starts_with("version ") && text.ends_with("END\n"),
                    "partial read: {} bytes",
                    text.len()
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 1..=100 {
        s3.put("app/conf.txt", version(i));
        let want = format!("version {i}\n");
        wait_for(&format!("version {i}"), Duration::from_secs(20), || {
            read(&path).starts_with(&want).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw only whole files");
    assert!(reads.load(Ordering::Relaxed) > 100);
}

#[test]
fn failed_validation_keeps_the_old_file_and_hooks_fire_once_per_change() {
    let s3 = S3::start("s3-hooks");
    s3.put("app/conf.txt", "valid 1\n");
    let count = s3.dir.path().join("hook-count");
    let on_change = format!("echo changed >> {}", count.display());
    let (loader, admin) = s3.daemon(
        "app/",
        &[
            "--interval",
            "50ms",
            "--validate",
            "grep -q '^valid' {}",
            "--on-change",
            &on_change,
        ],
    );
    let path = s3.out().join("conf.txt");
    wait_for("the first sync", Duration::from_secs(20), || {
        (read(&path) == "valid 1\n").then_some(())
    });
    wait_for("the first hook", Duration::from_secs(20), || {
        (read(&count).lines().count() == 1).then_some(())
    });
    // Several polls with nothing new: no more hook runs.
    let passes = metric(admin, "s3cl_passes_total{result=\"ok\"}");
    wait_for("three more passes", Duration::from_secs(20), || {
        (metric(admin, "s3cl_passes_total{result=\"ok\"}") >= passes + 3.0).then_some(())
    });
    assert_eq!(
        read(&count).lines().count(),
        1,
        "the hook ran without a change"
    );
    // An invalid version is refused: old file kept, error counted and logged.
    s3.put("app/conf.txt", "broken\n");
    wait_for("the validation failure", Duration::from_secs(20), || {
        (metric(admin, "s3cl_errors_total{kind=\"validation\"}") >= 1.0).then_some(())
    });
    assert_eq!(read(&path), "valid 1\n");
    assert!(
        loader.output().contains("refused by --validate"),
        "{}",
        loader.output()
    );
    // A valid change goes through and fires the hook once more.
    s3.put("app/conf.txt", "valid 2\n");
    wait_for("the second version", Duration::from_secs(20), || {
        (read(&path) == "valid 2\n").then_some(())
    });
    wait_for("the second hook", Duration::from_secs(20), || {
        (read(&count).lines().count() == 2).then_some(())
    });
    let leftovers: Vec<String> = std::fs::read_dir(s3.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left: {leftovers:?}");
}

/// The most validations that ran at once in a `sync --once` of eight objects.
fn validations_at_once(s3: &S3, concurrency: &str) -> usize {
    let running = s3.dir.path().join(format!("running-{concurrency}"));
    let peaks = s3.dir.path().join(format!("peaks-{concurrency}"));
    std::fs::create_dir_all(&running).unwrap();
    let validate = format!(
        "touch {r}/$$; sleep 0.3; ls {r} | wc -l >> {p}; rm {r}/$$",
        r = running.display(),
        p = peaks.display()
    );
    let out = s3.sync_once(
        "many/",
        &["--concurrency", concurrency, "--validate", &validate],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("8 objects: 8 written, 0 unchanged, 0 errors;"),
        "{}",
        stdout(&out)
    );
    for i in 0..8 {
        assert_eq!(read(&s3.out().join(format!("f{i}.conf"))), format!("{i}\n"));
    }
    let peak = read(&peaks)
        .lines()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    std::fs::remove_dir_all(s3.out()).unwrap();
    peak
}

#[test]
fn files_are_validated_and_written_as_many_at_a_time_as_concurrency_allows() {
    let s3 = S3::start("s3-parallel");
    for i in 0..8 {
        s3.put(&format!("many/f{i}.conf"), format!("{i}\n"));
    }
    assert_eq!(
        validations_at_once(&s3, "1"),
        1,
        "--concurrency 1 is one at a time"
    );
    let peak = validations_at_once(&s3, "8");
    assert!(peak > 1, "the eight files were put in place one at a time");
}

#[test]
fn signal_and_post_hooks_reach_their_targets_once_per_change() {
    let s3 = S3::start("s3-signal");
    s3.put("app/conf.txt", "1");
    let (_daemon, pidfile, hups) = hup_counter(s3.dir.path());
    let reload = Backend::start("reloaded", 0).unwrap();
    let signal = format!("pidfile:{}:HUP", pidfile.display());
    let post = format!("http://{}/-/reload", reload.addr);
    let (_loader, admin) = s3.daemon(
        "app/",
        &["--interval", "50ms", "--signal", &signal, "--post", &post],
    );
    wait_for("the first change's hooks", Duration::from_secs(20), || {
        (read(&hups).lines().count() == 1 && reload.hits() == 1).then_some(())
    });
    let passes = metric(admin, "s3cl_passes_total{result=\"ok\"}");
    wait_for("three quiet passes", Duration::from_secs(20), || {
        (metric(admin, "s3cl_passes_total{result=\"ok\"}") >= passes + 3.0).then_some(())
    });
    assert_eq!((read(&hups).lines().count(), reload.hits()), (1, 1));
    s3.put("app/conf.txt", "2");
    wait_for("the second change's hooks", Duration::from_secs(20), || {
        (read(&hups).lines().count() == 2 && reload.hits() == 2).then_some(())
    });
    assert_eq!(metric(admin, "s3cl_errors_total{kind=\"hook\"}"), 0.0);
}

#[test]
fn files_survive_an_s3_outage_and_sync_resumes() {
    let mut s3 = S3::start("s3-outage");
    s3.put("app/conf.txt", "before\n");
    let (_loader, admin) = s3.daemon("app/", &["--interval", "100ms"]);
    let path = s3.out().join("conf.txt");
    wait_for("the first sync", Duration::from_secs(20), || {
        (read(&path) == "before\n").then_some(())
    });
    let port = s3.moto.port;
    s3.moto.process.kill();
    wait_for("errors to be counted", Duration::from_secs(30), || {
        (metric(admin, "s3cl_errors_total{kind=\"list\"}") >= 2.0).then_some(())
    });
    assert_eq!(read(&path), "before\n");
    // `--once --allow-stale` starts from the files in place while S3 is down; without it, fails.
    let stale = s3.sync_once("app/", &["--allow-stale"]);
    assert!(stale.status.success(), "{}", stderr(&stale));
    let strict = s3.sync_once("app/", &[]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        stderr(&strict).contains("cannot list s3://config/app/"),
        "{}",
        stderr(&strict)
    );
    // moto back (empty: it keeps nothing across restarts), with a new version of the object.
    s3.moto = Moto::start(&s3.dir, port);
    s3.create_bucket();
    s3.put("app/conf.txt", "after\n");
    wait_for("sync to resume", Duration::from_secs(30), || {
        (read(&path) == "after\n").then_some(())
    });
}

#[test]
fn templates_render_ecs_metadata_into_a_bootstrap_envoy_accepts() {
    let s3 = S3::start("s3-template");
    let meta = Backend::start_with(
        "ecs-metadata",
        0,
        Arc::new(|path: &str| {
            if path.ends_with("/task") {
                r#"{"Cluster":"arn:aws:ecs:us-east-1:1:cluster/prism-test","TaskARN":"arn:aws:ecs:us-east-1:1:task/prism-test/abc123","Family":"intdemo","Revision":"7","AvailabilityZone":"us-east-1a"}"#.into()
            } else {
                r#"{"Name":"envoy","Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["10.0.1.23"]}]}"#.into()
            }
        }),
    )
    .unwrap();
    let bootstrap = r#"node:
  id: "${ecs.TaskARN}"
  cluster: "${PROXY}"
  metadata: { az: "${ecs.AvailabilityZone}", ip: "${ecs.IPv4Address}", revision: "${ecs.Revision}", cluster_name: "${ecs.Cluster}", cluster_arn: "${ecs.ClusterArn}" }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
dynamic_resources:
  ads_config: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: xds } } ] }
  cds_config: { ads: {}, resource_api_version: V3 }
  lds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
    - name: xds
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: xds
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 } } } } ] } ]
"#;
    s3.put("envoy/envoy.yaml.tmpl", bootstrap);
    let validate = format!("{} --mode validate -c {{}}", envoy_bin().display());
    let mut cmd = s3.command(&[
        "sync",
        "s3://config/envoy/",
        s3.out().to_str().unwrap(),
        "--once",
        "--validate",
        &validate,
        "--template-env",
        "PROXY",
    ]);
    cmd.env(
        "ECS_CONTAINER_METADATA_URI_V4",
        format!("http://{}/v4/abc", meta.addr),
    )
    .env("PROXY", "intdemo");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rendered = read(&s3.out().join("envoy.yaml"));
    assert!(
        rendered.contains(r#"id: "arn:aws:ecs:us-east-1:1:task/prism-test/abc123""#),
        "{rendered}"
    );
    assert!(rendered.contains(r#"cluster: "intdemo""#), "{rendered}");
    assert!(rendered.contains(r#"ip: "10.0.1.23""#), "{rendered}");
    // The metadata gives the cluster's ARN: `ecs.Cluster` is its name, `ecs.ClusterArn` the ARN.
    assert!(
        rendered.contains(r#"cluster_name: "prism-test""#),
        "{rendered}"
    );
    assert!(
        rendered.contains(r#"cluster_arn: "arn:aws:ecs:us-east-1:1:cluster/prism-test""#),
        "{rendered}"
    );
    assert!(!s3.out().join("envoy.yaml.tmpl").exists());

    // A variable without a value fails with its name, and writes nothing.
    s3.put(
        "broken/envoy.yaml.tmpl",
        "node: { id: \"${ecs.TaskARN}\", cluster: \"${S3CL_NO_SUCH_VAR}\" }\n",
    );
    let dir2 = s3.dir.path().join("broken");
    let mut cmd = s3.command(&[
        "sync",
        "s3://config/broken/",
        dir2.to_str().unwrap(),
        "--once",
    ]);
    cmd.env(
        "ECS_CONTAINER_METADATA_URI_V4",
        format!("http://{}/v4/abc", meta.addr),
    );
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no value for ${S3CL_NO_SUCH_VAR}"),
        "{}",
        stderr(&out)
    );
    assert!(!dir2.join("envoy.yaml").exists());
}

/// A template that cannot be rendered names every name it lacks in one go: unset variables,
/// ECS metadata it cannot read (off ECS), names it may not read, and unknown `ecs.*` names.
#[test]
fn a_template_that_cannot_be_rendered_names_every_missing_variable() {
    let s3 = S3::start("s3-template-missing");
    s3.put(
        "app/a.conf.tmpl",
        "${S3CL_A} ${ecs.Cluster} ${HOME} ${S3CL_B} ${S3CL_A} ${ecs.TaskARN}\n",
    );
    let o = s3.sync_once("app/", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no value for ${S3CL_A}, ${ecs.Cluster}, ${S3CL_B}, ${ecs.TaskARN} (ECS task metadata: ECS_CONTAINER_METADATA_URI_V4 is not set"),
        "{err}"
    );
    assert!(err.contains("not allowed to read ${HOME}"), "{err}");
    s3.put("app/a.conf.tmpl", "${ecs.ClusterName}\n");
    let o = s3.sync_once("app/", &[]);
    assert!(
        stderr(&o).contains("(the ecs.* names are TaskARN, Cluster, ClusterArn,"),
        "{}",
        stderr(&o)
    );
}

/// "Keeps its previous content" is said only of a file that has some; a first sync that
/// fails says that no file was written.
#[test]
fn a_failed_object_keeps_its_previous_content_only_when_it_had_one() {
    let s3 = S3::start("s3-kept");
    s3.put("app/a.conf", "bad 1\n");
    let validate = ["--validate", "grep -q good {}"];
    let o = s3.sync_once("app/", &validate);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("app/a.conf: refused by --validate") && err.contains("(no file written)"),
        "{err}"
    );
    assert!(!err.contains("previous content"), "{err}");
    assert!(!s3.out().join("a.conf").exists());
    s3.put("app/a.conf", "good\n");
    assert!(s3.sync_once("app/", &validate).status.success());
    s3.put("app/a.conf", "bad 2\n");
    let o = s3.sync_once("app/", &validate);
    assert_eq!(o.status.code(), Some(1));
    let kept = format!(
        "{} keeps its previous content",
        s3.out().join("a.conf").display()
    );
    assert!(stderr(&o).contains(&kept), "{}", stderr(&o));
    assert_eq!(read(&s3.out().join("a.conf")), "good\n");
}

/// `--max-size` takes sizes as the documentation writes them; the refusal says the limit so.
#[test]
fn max_size_accepts_units() {
    let s3 = S3::start("s3-max-size");
    s3.put("app/big.bin", vec![7u8; 3 * 1024]);
    let o = s3.sync_once("app/", &["--max-size", "2KiB"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3072 bytes is over the limit of 2 KiB (--max-size)"),
        "{}",
        stderr(&o)
    );
    for size in ["10MiB", "10 MiB", "4kB", "3072"] {
        let o = s3.sync_once("app/", &["--max-size", size]);
        assert!(o.status.success(), "--max-size {size}: {}", stderr(&o));
    }
    let mut cmd = s3.command(&[
        "sync",
        "s3://config/app/",
        s3.out().to_str().unwrap(),
        "--once",
    ]);
    let o = cmd
        .env("S3_CONFIG_LOADER_MAX_SIZE", "1 KiB")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = s3.sync_once("app/", &["--max-size", "10 M"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a size"), "{}", stderr(&o));
}

#[test]
fn atomic_sets_are_published_together() {
    let s3 = S3::start("s3-set");
    let out = s3.out();
    // Each pass sees one whole set in S3; a slow --validate widens the time between installing
    // a.conf and b.conf, which an in-place writer would expose as a mixed set.
    let publish = |i: usize| {
        s3.put("app/a.conf", format!("{i}"));
        s3.put("app/nested/b.conf", format!("{i}"));
        let o = s3.sync_once(
            "app/",
            &["--atomic-set", "--delete", "--validate", "sleep 0.05"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    publish(0);
    assert!(
        std::fs::symlink_metadata(out.join("a.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&out.join("nested/b.conf")), "0");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, out) = (stop.clone(), out.clone());
        std::thread::spawn(move || {
            let mut consistent = 0;
            while !stop.load(Ordering::Relaxed) {
                // A reader that resolves `..data` once sees one whole set.
                let Ok(gen_dir) = std::fs::read_link(out.join("..data")) else {
                    continue;
                };
                let (a, b) = (
                    std::fs::read_to_string(out.join(&gen_dir).join("a.conf")),
                    std::fs::read_to_string(out.join(&gen_dir).join("nested/b.conf")),
                );
                // A generation may be removed under a slow reader; only mixed sets are wrong.
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(a, b, "a mixed set in {}", gen_dir.display());
                    consistent += 1;
                }
            }
            consistent
        })
    };
    for i in 1..=10 {
        publish(i);
        assert_eq!(read(&out.join("a.conf")), i.to_string());
        assert_eq!(read(&out.join("nested/b.conf")), i.to_string());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("no mixed set") > 0);
    // A removed object disappears from the next set; old generations are cleaned up.
    s3.delete("app/a.conf");
    let o = s3.sync_once("app/", &["--atomic-set", "--delete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("a.conf").exists());
    assert_eq!(read(&out.join("nested/b.conf")), "10");
    let generations = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("..") && name != "..data"
        })
        .count();
    assert_eq!(generations, 1);
}

#[test]
fn a_prefix_without_its_slash_means_the_folder_and_reserved_names_are_refused() {
    let s3 = S3::start("s3-prefix");
    s3.put("app/a.txt", "a");
    s3.put("app-old/x.txt", "not under app/");
    s3.put("app/..data", "would replace the generation link");
    s3.put("app/.s3-config-loader.json", "would replace the state file");
    let src = "s3://config/app";
    let out = s3.run(&["sync", src, s3.out().to_str().unwrap(), "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("app/..data") && err.contains("app/.s3-config-loader.json"),
        "{err}"
    );
    assert!(
        err.contains("would overwrite a file the loader itself keeps"),
        "{err}"
    );
    assert_eq!(read(&s3.out().join("a.txt")), "a");
    assert!(!s3.out().join("x.txt").exists() && !s3.out().join("-old").exists());
    let state = read(&s3.out().join(".s3-config-loader.json"));
    assert!(
        state.contains("\"files\""),
        "the state file was overwritten: {state}"
    );
}

#[test]
fn atomic_set_takes_over_a_directory_synced_without_it() {
    let s3 = S3::start("s3-takeover");
    s3.put("app/a.conf", "1");
    s3.put("app/nested/b.conf", "1");
    // First without --atomic-set: real files and a real `nested/` directory, and a state file.
    assert!(s3.sync_once("app/", &[]).status.success());
    assert!(
        std::fs::symlink_metadata(s3.out().join("nested"))
            .unwrap()
            .is_dir()
    );
    let o = s3.sync_once("app/", &["--atomic-set"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (path, want) in [("a.conf", "1"), ("nested/b.conf", "1")] {
        assert_eq!(
            read(&s3.out().join(path)),
            want,
            "{path} after the take-over"
        );
    }
    assert!(
        std::fs::symlink_metadata(s3.out().join("nested"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    s3.put("app/nested/b.conf", "2");
    assert!(s3.sync_once("app/", &["--atomic-set"]).status.success());
    assert_eq!(read(&s3.out().join("nested/b.conf")), "2");
    assert_eq!(read(&s3.out().join("a.conf")), "1");
}

#[test]
fn an_empty_prefix_deletes_nothing_and_allow_stale_does_not_hide_refusals() {
    let s3 = S3::start("s3-empty");
    // An init container must not "succeed" into an empty directory: a prefix without objects
    // (a typo, the wrong bucket) fails, unless --allow-empty says it is meant.
    let o = s3.sync_once("nothing/", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("s3://config/nothing/: the prefix lists no objects")
            && stderr(&o).contains("--allow-empty"),
        "{}",
        stderr(&o)
    );
    let o = s3.sync_once("nothing/", &["--allow-empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("0 objects: "), "{}", stdout(&o));

    s3.put("app/a.txt", "a");
    assert!(s3.sync_once("app/", &[]).status.success());
    s3.delete("app/a.txt");
    let o = s3.sync_once("app/", &["--delete"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("lists no objects"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the 1 files it gave stay"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read(&s3.out().join("a.txt")), "a");
    // A refused object is not an outage: --allow-stale does not turn it into success.
    s3.put("app/a.txt", "broken");
    let o = s3.sync_once("app/", &["--allow-stale", "--validate", "false"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(read(&s3.out().join("a.txt")), "a");
    // Emptied on purpose: with --allow-empty, --delete removes what the prefix gave.
    s3.delete("app/a.txt");
    let o = s3.sync_once("app/", &["--delete", "--allow-empty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!s3.out().join("a.txt").exists());
}

/// `--once` makes one pass; an interval with it is a mistake in the task definition, refused
/// (also when it comes from the environment) rather than ignored.
#[test]
fn once_with_an_interval_is_refused() {
    let dir = TempDir::new("s3-once-interval");
    let out = dir.path().join("out");
    let bin = workspace_bin("s3-config-loader");
    let o = Command::new(&bin)
        .args(["sync", "s3://config/app/", out.to_str().unwrap()])
        .args(["--once", "--interval", "10s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "--once makes one pass: --interval (S3_CONFIG_LOADER_INTERVAL) cannot be used with it"
        ),
        "{}",
        stderr(&o)
    );
    let o = Command::new(&bin)
        .args(["sync", "s3://config/app/", out.to_str().unwrap(), "--once"])
        .env("S3_CONFIG_LOADER_INTERVAL", "10s")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--once makes one pass: --interval"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // S3_CONFIG_LOADER_ONCE=false is no --once: a daemon with its interval starts.
    let admin = free_port();
    let mut cmd = Command::new(&bin);
    cmd.args(["sync", "s3://config/app/", out.to_str().unwrap()])
        .args([
            "--interval",
            "10s",
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .envs(Moto::env_at(free_port()))
        .env("S3_CONFIG_LOADER_ONCE", "false");
    let _daemon = ChildGuard::spawn(cmd, dir.path().join("daemon.log"));
    wait_for("the daemon's admin port", Duration::from_secs(20), || {
        http::get(admin, "/healthz", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
}

/// `--version` names the commit; every flag of both subcommands reads an environment variable.
#[test]
fn version_names_the_commit_and_every_flag_reads_the_environment() {
    let commit = tests::cli::version_commit("s3-config-loader");
    assert!(!commit.is_empty());
    for sub in ["get", "sync"] {
        let help = tests::cli::help("s3-config-loader", &[sub]);
        assert_eq!(
            tests::cli::flags_without_env(&help),
            Vec::<String>::new(),
            "{sub} --help:\n{help}"
        );
        assert!(
            help.contains("[env: S3_CONFIG_LOADER_LOG_FORMAT="),
            "{help}"
        );
    }
}

/// Metrics exist before the first pass, at 0 and with every label; a failure that repeats is
/// logged when it starts and when it ends, not every pass, and without colour codes.
#[test]
fn metrics_exist_from_the_start_and_a_lasting_failure_is_logged_when_it_starts_and_ends() {
    let dir = TempDir::new("s3-lasting");
    let port = free_port();
    let admin = free_port();
    let out = dir.path().join("out");
    let mut cmd = Command::new(workspace_bin("s3-config-loader"));
    cmd.args(["sync", "s3://config/app/", out.to_str().unwrap()])
        .args([
            "--interval",
            "100ms",
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .envs(Moto::env_at(port))
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("S3_CONFIG_LOADER_LOG", "info");
    let loader = ChildGuard::spawn(cmd, dir.path().join("loader.log"));
    let series = [
        "s3cl_passes_total{result=\"ok\"} 0",
        "s3cl_errors_total{kind=\"hook\"} 0",
        "s3cl_errors_total{kind=\"template\"} 0",
        "s3cl_errors_total{kind=\"empty\"} 0",
        "s3cl_errors_total{kind=\"validation\"} 0",
        "s3cl_last_sync_successful 0",
        "s3cl_files_written_total 0",
    ];
    tests::cli::metrics_from_the_start(admin, "s3-config-loader", "s3cl", &series);

    // S3 is not there: many failed passes, one log line.
    wait_for("ten failed passes", Duration::from_secs(60), || {
        (metric(admin, "s3cl_errors_total{kind=\"list\"}") >= 10.0).then_some(())
    });
    let failures = |log: &str| log.lines().filter(|l| l.contains("sync failed")).count();
    assert_eq!(failures(&loader.output()), 1, "{}", loader.output());
    assert!(!loader.output().contains("sync works again"));

    // S3 comes: the end is logged once, and the gauge says the last sync worked.
    let s3 = S3 {
        moto: Moto::start(&dir, port),
        dir,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    s3.create_bucket();
    s3.put("app/a.conf", "1");
    wait_for("the first good pass", Duration::from_secs(30), || {
        (metric(admin, "s3cl_last_sync_successful") == 1.0).then_some(())
    });
    assert_eq!(read(&out.join("a.conf")), "1");
    // A broken object: counted every pass, logged once when it starts and once when it ends.
    s3.put("app/b.conf.tmpl", "${S3CL_UNSET_IN_THIS_TEST}");
    wait_for("five template errors", Duration::from_secs(30), || {
        (metric(admin, "s3cl_errors_total{kind=\"template\"}") >= 5.0).then_some(())
    });
    assert_eq!(metric(admin, "s3cl_last_sync_successful"), 0.0);
    s3.delete("app/b.conf.tmpl");
    wait_for("the broken object's end", Duration::from_secs(30), || {
        loader
            .output()
            .lines()
            .any(|l| l.contains("object no longer failing") && l.contains("app/b.conf.tmpl"))
            .then_some(())
    });
    let log = loader.output();
    assert_eq!(failures(&log), 1, "{log}");
    assert_eq!(log.matches("sync works again").count(), 1, "{log}");
    let broken: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("app/b.conf.tmpl"))
        .collect();
    assert_eq!(broken.len(), 2, "{log}");
    assert!(
        broken[0].contains("object not synced; no file written")
            && broken[1].contains("object no longer failing"),
        "{log}"
    );
    assert!(
        !tests::cli::has_escape_codes(&log),
        "colour codes in a log file:\n{log}"
    );
}

/// A process that counts SIGHUPs, as a reloadable daemon would; returns its guard, its pid
/// file and the file it counts in.
fn hup_counter(dir: &Path) -> (ChildGuard, PathBuf, PathBuf) {
    let hups = dir.join("hups");
    let pidfile = dir.join("daemon.pid");
    let script = format!(
        "echo $$ > {pid}; trap 'echo hup >> {hups}' HUP; while true; do sleep 0.05; done",
        pid = pidfile.display(),
        hups = hups.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let daemon = ChildGuard::spawn(cmd, dir.join("daemon.log"));
    wait_for("the daemon's pid file", Duration::from_secs(10), || {
        pidfile.exists().then_some(())
    });
    (daemon, pidfile, hups)
}

#[test]
fn a_failed_reload_is_tried_again_until_it_succeeds() {
    let s3 = S3::start("s3-hook-retry");
    s3.put("app/conf.txt", "1");
    // Nothing listens there yet: the process to reload is down when the change lands.
    let port = tests::free_port();
    let post = format!("http://127.0.0.1:{port}/-/reload");
    // Another process, up all along, is signalled once for the change, not once per retry.
    let (_daemon, pidfile, hups) = hup_counter(s3.dir.path());
    let signal = format!("pidfile:{}:HUP", pidfile.display());
    let (_loader, admin) = s3.daemon(
        "app/",
        &["--interval", "50ms", "--post", &post, "--signal", &signal],
    );
    wait_for(
        "the reload to fail three times",
        Duration::from_secs(20),
        || (metric(admin, "s3cl_errors_total{kind=\"hook\"}") >= 3.0).then_some(()),
    );
    assert_eq!(read(&s3.out().join("conf.txt")), "1");
    assert_eq!(read(&hups).lines().count(), 1);
    // It comes up; S3 does not change again, yet the reload it missed reaches it, once.
    let reload = Backend::start("reloaded", port).unwrap();
    wait_for("the missed reload", Duration::from_secs(20), || {
        (reload.hits() == 1).then_some(())
    });
    let passes = metric(admin, "s3cl_passes_total{result=\"ok\"}");
    wait_for("three quiet passes", Duration::from_secs(20), || {
        (metric(admin, "s3cl_passes_total{result=\"ok\"}") >= passes + 3.0).then_some(())
    });
    assert_eq!((reload.hits(), read(&hups).lines().count()), (1, 1));
}

/// A regular file holding `text` (not a symbolic link).
fn regular(path: &Path, text: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) && read(path) == text
}

/// The generation directories (`..<stamp>`) in `dir`, without `..data`.
fn generations(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                (name.starts_with("..") && name != "..data").then_some(name)
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Whoever shares the volume may plant links where the loader writes: at the staging path a
/// loader of this pid would have used, at the target itself, and in place of a subdirectory.
/// None of them makes the loader write outside its directory.
#[test]
fn symlinks_planted_in_the_directory_never_redirect_a_write_outside_it() {
    let s3 = S3::start("s3-symlinks");
    let outside = s3.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    s3.put("app/conf.txt", "1");
    let (loader, admin) = s3.daemon("app/", &["--interval", "50ms"]);
    let out = s3.out();
    wait_for("the first sync", Duration::from_secs(20), || {
        regular(&out.join("conf.txt"), "1").then_some(())
    });
    let pid = loader.pid();
    for staging in [
        format!(".conf.txt.tmp-{pid}"),
        format!(".tmp-{pid}-conf.txt"),
        format!(".link.txt.tmp-{pid}"),
    ] {
        std::os::unix::fs::symlink(&victim, out.join(staging)).unwrap();
    }
    std::os::unix::fs::symlink(&victim, out.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("sub")).unwrap();
    s3.put("app/conf.txt", "2");
    s3.put("app/link.txt", "new");
    s3.put("app/sub/x.conf", "x");
    wait_for("the changed files", Duration::from_secs(20), || {
        (regular(&out.join("conf.txt"), "2") && regular(&out.join("link.txt"), "new")).then_some(())
    });
    wait_for("the refused subdirectory", Duration::from_secs(20), || {
        (metric(admin, "s3cl_errors_total{kind=\"write\"}") >= 1.0).then_some(())
    });
    assert!(regular(&victim, "precious"), "the victim was written");
    assert!(!outside.join("x.conf").exists(), "written through sub/");
    assert!(
        loader.output().contains("symbolic link"),
        "{}",
        loader.output()
    );
}

/// A `..data` link planted to point outside: --atomic-set neither reads from nor removes what
/// it points at, and publishes its own generation in place of the link.
#[test]
fn a_planted_data_link_never_makes_atomic_set_touch_what_it_points_at() {
    let s3 = S3::start("s3-data-link");
    let outside = s3.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), "precious").unwrap();
    let out = s3.out();
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("..data")).unwrap();
    s3.put("app/a.conf", "1");
    let o = s3.sync_once("app/", &["--atomic-set"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(regular(&outside.join("keep.txt"), "precious"));
    assert_eq!(read(&out.join("a.conf")), "1");
    assert!(!out.join("keep.txt").exists(), "linked in from outside");
    let data = std::fs::read_link(out.join("..data")).unwrap();
    assert_eq!(generations(&out), [data.to_string_lossy().into_owned()]);
}

/// The syscalls, as strace sees them: each staging file is created with O_EXCL and O_NOFOLLOW,
/// under a name that is not the pid, with its final mode already (never 0644 first), and is
/// given its owner through its descriptor, never through a path that could be swapped.
#[test]
fn staging_files_are_created_exclusively_with_their_mode_and_owner_through_the_descriptor() {
    let s3 = S3::start("s3-strace");
    s3.put("app/secret.conf", "s3cr3t");
    s3.put("app/nested/other.conf", "x");
    let trace = s3.dir.path().join("strace.txt");
    let src = format!("s3://{BUCKET}/app/");
    let out = s3.out();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", "trace=%file,%desc"])
        .arg(workspace_bin("s3-config-loader"))
        .args(["sync", &src, out.to_str().unwrap(), "--once"])
        .args(["--mode", "600", "--uid", "65534", "--gid", "65534"])
        .envs(s3.moto.env());
    let o = cmd.output().expect("strace runs");
    assert!(o.status.success(), "{}", stderr(&o));
    for (path, want) in [("secret.conf", "s3cr3t"), ("nested/other.conf", "x")] {
        let meta = std::fs::symlink_metadata(out.join(path)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o600, 65534, 65534)
        );
        assert_eq!(read(&out.join(path)), want);
    }
    let trace = std::fs::read_to_string(&trace).unwrap();
    let creates: Vec<&str> = trace
        .lines()
        .filter(|l| {
            l.contains("O_CREAT") && (l.contains("secret.conf") || l.contains("other.conf"))
        })
        .collect();
    assert!(creates.len() >= 2, "no staging file created:\n{trace}");
    for l in &creates {
        assert!(
            // (strace splits a call another thread interrupts: `..., 0600 <unfinished ...>`)
            l.contains("O_EXCL")
                && l.contains("O_NOFOLLOW")
                && (l.contains(", 0600)") || l.contains(", 0600 <unfinished")),
            "{l}"
        );
        let pid = l.split_whitespace().next().unwrap();
        assert!(
            !l.contains(&format!("tmp-{pid}")),
            "a name from the pid: {l}"
        );
    }
    let by_path: Vec<&str> = trace
        .lines()
        .filter(|l| {
            ["chown(", "lchown(", "fchownat(", "chmod(", "fchmodat("]
                .iter()
                .any(|c| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|w| w.starts_with(c))
                })
        })
        .collect();
    assert!(by_path.is_empty(), "changed through a path: {by_path:?}");
    assert!(trace.contains("fchown("), "no fchown:\n{trace}");
}

/// A swap that fails (here: a directory stands where the `..data` link must go) leaves the
/// directory as it was: directories moved aside for the new set's links come back.
#[test]
fn a_failed_swap_puts_the_directories_it_moved_aside_back() {
    let s3 = S3::start("s3-swap-fails");
    s3.put("app/a.conf", "1");
    s3.put("app/nested/b.conf", "1");
    assert!(s3.sync_once("app/", &[]).status.success());
    let out = s3.out();
    std::fs::create_dir_all(out.join("..data/blocker")).unwrap();
    let o = s3.sync_once("app/", &["--atomic-set"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot publish a new set"),
        "{}",
        stderr(&o)
    );
    assert!(regular(&out.join("nested/b.conf"), "1"), "nested/ is gone");
    assert!(regular(&out.join("a.conf"), "1"));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("replaced")),
        "left aside: {names:?}"
    );
    assert!(generations(&out).is_empty(), "{names:?}");
    // Once the obstacle is gone, the set is published.
    std::fs::remove_dir_all(out.join("..data")).unwrap();
    let o = s3.sync_once("app/", &["--atomic-set"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out.join("nested/b.conf")), "1");
    assert_eq!(generations(&out).len(), 1);
}

/// A loader killed in the middle of a pass leaves a half-built generation; the next start
/// removes it, and only the published one stays.
#[test]
fn generations_left_by_a_crash_are_removed_at_start() {
    let s3 = S3::start("s3-crash");
    s3.put("app/a.conf", "1");
    assert!(s3.sync_once("app/", &["--atomic-set"]).status.success());
    let out = s3.out();
    let published = generations(&out);
    assert_eq!(published.len(), 1);
    // The validator kills the loader while the new generation holds a staged file.
    s3.put("app/a.conf", "2");
    let o = s3.sync_once("app/", &["--atomic-set", "--validate", "kill -9 $PPID"]);
    assert_eq!(o.status.code(), None, "not killed: {}", stderr(&o));
    assert_eq!(generations(&out).len(), 2, "no half-built generation");
    assert_eq!(read(&out.join("a.conf")), "1");
    let o = s3.sync_once("app/", &["--atomic-set"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out.join("a.conf")), "2");
    let left = generations(&out);
    let data = std::fs::read_link(out.join("..data")).unwrap();
    assert_eq!(
        left,
        [data.to_string_lossy().into_owned()],
        "stale generations stay"
    );
}

/// A line break in a key would split the `S3CL_CHANGED` list hooks read: keys with control
/// characters are refused, with the reason, like keys that leave the directory. (moto refuses
/// keys with a newline itself; a carriage return splits lines for many readers just as well.)
#[test]
fn keys_with_control_characters_are_refused() {
    let s3 = S3::start("s3-control");
    s3.put("app/good.txt", "good");
    s3.put("app/evil\rname.txt", "evil");
    s3.put("app/tab\there.txt", "evil");
    let changed = s3.dir.path().join("changed");
    let hook = format!("printf '%s' \"$S3CL_CHANGED\" > {}", changed.display());
    let o = s3.sync_once("app/", &["--on-change", &hook]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("control character"), "{err}");
    assert!(
        err.contains("app/evil\\rname.txt") && err.contains("app/tab\\there.txt"),
        "{err}"
    );
    assert_eq!(
        read(&changed),
        s3.out().join("good.txt").display().to_string()
    );
    let names: Vec<String> = std::fs::read_dir(s3.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["good.txt"]);
}

/// Whoever can write to the bucket must not be able to copy the loader's environment (AWS
/// keys, tokens) into a file: templates read only names with the prefix (S3CL_ by default)
/// and the names given with --template-env.
#[test]
fn templates_read_only_prefixed_and_allowed_environment_variables() {
    let s3 = S3::start("s3-template-env");
    s3.put(
        "leak/creds.conf.tmpl",
        "key=${AWS_SECRET_ACCESS_KEY} home=${HOME}\n",
    );
    let run = |prefix: &str, extra: &[&str], env: &[(&str, &str)]| {
        let src = format!("s3://{BUCKET}/{prefix}");
        let dir = s3.dir.path().join(prefix);
        let mut cmd = s3.command(&["sync", &src, dir.to_str().unwrap(), "--once"]);
        cmd.args(extra).envs(env.iter().copied());
        (cmd.output().unwrap(), dir)
    };
    let (o, dir) = run("leak/", &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("${AWS_SECRET_ACCESS_KEY}")
            && err.contains("${HOME}")
            && err.contains("--template-env"),
        "{err}"
    );
    assert!(!dir.join("creds.conf").exists());

    s3.put(
        "ok/a.conf.tmpl",
        "role=${S3CL_ROLE} proxy=${PROXY} host=${XDS_HOST}\n",
    );
    let env = [
        ("S3CL_ROLE", "web"),
        ("PROXY", "intdemo"),
        ("XDS_HOST", "xds.local"),
    ];
    let (o, dir) = run(
        "ok/",
        &["--template-env", "PROXY"],
        &[
            ("S3_CONFIG_LOADER_TEMPLATE_ENV", "XDS_HOST"),
            env[0],
            env[1],
            env[2],
        ],
    );
    // The flag replaces the environment variable's list, as for every other flag.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("${XDS_HOST}"), "{}", stderr(&o));
    assert!(!dir.join("a.conf").exists());
    let (o, dir) = run(
        "ok/",
        &["--template-env", "PROXY", "--template-env", "XDS_HOST"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read(&dir.join("a.conf")),
        "role=web proxy=intdemo host=xds.local\n"
    );
    let mut with_list = env.to_vec();
    with_list.push(("S3_CONFIG_LOADER_TEMPLATE_ENV", "PROXY,XDS_HOST"));
    let (o, _) = run("ok/", &[], &with_list);
    assert!(o.status.success(), "{}", stderr(&o));
    // Another prefix: S3CL_ names are no longer readable.
    with_list.push(("S3_CONFIG_LOADER_TEMPLATE_ENV_PREFIX", "APP_"));
    let (o, _) = run("ok/", &[], &with_list);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("${S3CL_ROLE}"), "{}", stderr(&o));
}

/// Makes a named pipe at `path` (anyone sharing a directory can).
fn mkfifo(path: &Path) {
    let o = Command::new("mkfifo").arg(path).output().unwrap();
    assert!(
        o.status.success(),
        "mkfifo {}: {}",
        path.display(),
        stderr(&o)
    );
}

/// A named pipe planted where a file goes, or at the state file, blocks an open for reading
/// until someone writes to it: the loader never opens what is not a regular file, and replaces
/// the pipe with the file.
#[test]
fn a_named_pipe_planted_at_a_file_never_blocks_the_loader() {
    let s3 = S3::start("s3-fifo");
    s3.put("app/conf.txt", "1");
    s3.put("app/sub/nested.txt", "2");
    let out = s3.out();
    std::fs::create_dir_all(out.join("sub")).unwrap();
    for name in ["conf.txt", "sub/nested.txt", ".s3-config-loader.json"] {
        mkfifo(&out.join(name));
    }
    let src = format!("s3://{BUCKET}/app/");
    let cmd = s3.command(&["sync", &src, out.to_str().unwrap(), "--once"]);
    let mut loader = ChildGuard::spawn(cmd, s3.dir.path().join("loader.log"));
    let code = loader.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", loader.output());
    assert!(regular(&out.join("conf.txt"), "1"));
    assert!(regular(&out.join("sub/nested.txt"), "2"));
    let state = std::fs::symlink_metadata(out.join(".s3-config-loader.json")).unwrap();
    assert!(
        state.file_type().is_file(),
        "the state file is still a pipe"
    );
}
