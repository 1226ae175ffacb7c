//! The generic Envoy image's start-up, without Docker: `infra/docker/envoy/entrypoint.sh` with a
//! fake ECS task metadata endpoint writes a bootstrap that the real Envoy accepts, and the Envoy
//! it becomes connects to a running xds-server as the task (node.id = task ARN) in its role;
//! with `XDS_SERVER_IDENTITY=1`, over mutual TLS with the certificate its task role got.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tests::process::{ChildGuard, envoy_bin, envoy_executable};
use tests::{
    Backend, Moto, TempDir, XdsServer, ca_init, free_port, http, identity, repo_root, wait_for,
    workspace_bin,
};

const TASK_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task/prism-test/0123abcd";

fn metadata() -> Backend {
    Backend::start_with(
        "ecs-metadata",
        0,
        Arc::new(|path: &str| {
            if path.ends_with("/task") {
                format!(r#"{{"Cluster":"prism-test","TaskARN":"{TASK_ARN}","Family":"intdemo","Revision":"3","AvailabilityZone":"us-east-1a"}}"#)
            } else {
                r#"{"Name":"envoy","Networks":[{"IPv4Addresses":["127.0.0.1"]}]}"#.into()
            }
        }),
    )
    .unwrap()
}

/// The catalog of proxy `demo`: one HTTP listener to one backend; `identity` goes under the
/// proxy as it is (e.g. `identity: { iam_roles: [ROLE] }`).
fn catalog(dir: &TempDir, backend: &Backend, port: u16, identity: &str) -> std::path::PathBuf {
    dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  demo:
    {identity}
    listeners: [ {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: app }} ] }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            backend.endpoint()
        ),
    )
}

/// A control plane serving proxy `demo`.
fn control_plane(dir: &TempDir, backend: &Backend, port: u16) -> XdsServer {
    let server = XdsServer::start(dir, &catalog(dir, backend, port, ""), 0);
    server.wait_ready();
    server
}

fn entrypoint(dir: &TempDir, meta: &Backend, admin: u16, env: &[(&str, String)]) -> ChildGuard {
    ChildGuard::spawn(
        entrypoint_command(dir, meta, admin, env),
        dir.path().join("entrypoint.log"),
    )
}

fn entrypoint_command(
    dir: &TempDir,
    meta: &Backend,
    admin: u16,
    env: &[(&str, String)],
) -> Command {
    let bin_dir = workspace_bin("xds-server").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo_root().join("infra/docker/envoy/entrypoint.sh"));
    cmd.env("PATH", path)
        .env("ENVOY", envoy_bin())
        .env("ENVOY_BOOTSTRAP", dir.path().join("etc/envoy.yaml"))
        .env("ENVOY_ARGS", "--disable-hot-restart -l info")
        .env(
            "ECS_CONTAINER_METADATA_URI_V4",
            format!("http://{}/v4/abc", meta.addr),
        )
        .env("XDS_SERVER_ENVOY_ADMIN", format!("127.0.0.1:{admin}"))
        .env(
            "XDS_SERVER_ENVOY_STATS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

fn wait_connected(server: &XdsServer, envoy: &ChildGuard, port: u16) {
    let node = wait_for(
        "the Envoy in xds-server's /debug/nodes",
        Duration::from_secs(30),
        || {
            let nodes = server.admin_json("/debug/nodes");
            nodes
                .as_array()?
                .iter()
                .find(|n| n["id"] == TASK_ARN)
                .cloned()
        },
    );
    assert_eq!(node["proxy"], "demo", "{node} / {}", envoy.output());
    let r = wait_for(
        "a request through the Envoy",
        Duration::from_secs(30),
        || http::get(port, "/", &[]).ok().filter(|r| r.status == 200),
    );
    assert_eq!(r.body.trim(), "app");
}

#[test]
fn a_generated_bootstrap_makes_the_task_an_envoy_of_its_role() {
    let dir = TempDir::new("image-generated");
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let server = control_plane(&dir, &app, port);
    let envoy = entrypoint(
        &dir,
        &meta,
        free_port(),
        &[
            ("XDS_SERVER_PROXY", "demo".into()),
            ("XDS_SERVER_XDS", format!("127.0.0.1:{}", server.xds_port)),
        ],
    );
    wait_connected(&server, &envoy, port);
    let bootstrap = std::fs::read_to_string(dir.path().join("etc/envoy.yaml")).unwrap();
    assert!(bootstrap.contains(TASK_ARN), "{bootstrap}");
    // The task's zone, which zone-aware upstreams prefer.
    assert!(bootstrap.contains("zone: us-east-1a"), "{bootstrap}");
}

/// Under an ECS proxyConfiguration the container runs as UID 1337 (the UID the redirect
/// ignores): the entrypoint writes its bootstrap into a directory of that user's (as the image's
/// /etc/envoy is) and becomes an Envoy of its role; in a directory the user may not write, it
/// fails at once, saying which directory and user.
#[test]
fn as_uid_1337_the_entrypoint_writes_its_bootstrap_where_that_user_may() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("image-uid-1337");
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let server = control_plane(&dir, &app, port);
    let env = |etc: &str| {
        [
            ("XDS_SERVER_PROXY", "demo".to_string()),
            ("XDS_SERVER_XDS", format!("127.0.0.1:{}", server.xds_port)),
            (
                "ENVOY_BOOTSTRAP",
                dir.path()
                    .join(etc)
                    .join("envoy.yaml")
                    .display()
                    .to_string(),
            ),
        ]
    };
    // What the entrypoint runs as that user, from the checkout: say so if it cannot.
    tests::process::assert_usable_by(
        1337,
        &[],
        &[
            &repo_root().join("infra/docker/envoy/entrypoint.sh"),
            &workspace_bin("xds-server"),
            &envoy_executable(),
        ],
    );
    let own = dir.path().join("etc-1337");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(1337), Some(1337)).unwrap();
    let mut cmd = entrypoint_command(&dir, &meta, free_port(), &env("etc-1337"));
    cmd.uid(1337).gid(1337).env("ENVOY", envoy_executable());
    let envoy = ChildGuard::spawn(cmd, dir.path().join("entrypoint-1337.log"));
    wait_connected(&server, &envoy, port);
    let written = std::fs::metadata(own.join("envoy.yaml")).unwrap();
    assert_eq!((written.uid(), written.gid()), (1337, 1337));

    // A directory of root's (a task volume not made Envoy's first).
    std::fs::create_dir(dir.path().join("etc-root")).unwrap();
    let mut cmd = entrypoint_command(&dir, &meta, free_port(), &env("etc-root"));
    cmd.uid(1337).gid(1337);
    let out = cmd.output().expect("the entrypoint runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "generic-envoy: cannot write the bootstrap into {} as uid 1337",
            dir.path().join("etc-root").display()
        )),
        "{stderr}"
    );
}

/// A task definition written for App Mesh's Envoy: its ARN names the proxy (an alias in the
/// catalog), APPMESH_XDS_ENDPOINT the control plane; or the older APPMESH_VIRTUAL_NODE_NAME.
#[test]
fn app_mesh_s_variables_name_the_proxy_and_the_control_plane() {
    let arn = "arn:aws:appmesh:us-east-1:123456789012:mesh/color/virtualNode/demo";
    for (var, value) in [
        ("APPMESH_RESOURCE_ARN", arn),
        ("APPMESH_VIRTUAL_NODE_NAME", "mesh/color/virtualNode/demo"),
    ] {
        let dir = TempDir::new("image-appmesh");
        let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
        let aliases = format!("aliases: [\"{arn}\"]");
        let server = XdsServer::start(&dir, &catalog(&dir, &app, port, &aliases), 0);
        server.wait_ready();
        let envoy = entrypoint(
            &dir,
            &meta,
            free_port(),
            &[
                (var, value.into()),
                (
                    "APPMESH_XDS_ENDPOINT",
                    format!("127.0.0.1:{}", server.xds_port),
                ),
            ],
        );
        wait_connected(&server, &envoy, port);
    }
}

/// The task's network reaches Envoy's metrics and readiness on the stats listener, and nothing
/// else of the admin interface, which stays on loopback.
#[test]
fn the_stats_listener_serves_metrics_and_readiness_only() {
    let dir = TempDir::new("image-stats");
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let server = control_plane(&dir, &app, port);
    let (admin, stats) = (free_port(), free_port());
    let mut envoy = entrypoint(
        &dir,
        &meta,
        admin,
        &[
            ("XDS_SERVER_PROXY", "demo".into()),
            ("XDS_SERVER_XDS", format!("127.0.0.1:{}", server.xds_port)),
            (
                "XDS_SERVER_ENVOY_STATS_LISTEN",
                format!("127.0.0.1:{stats}"),
            ),
        ],
    );
    wait_connected(&server, &envoy, port);
    let metrics = http::get(stats, "/stats/prometheus", &[]).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("envoy_cluster_upstream_rq_total"),
        "{}",
        metrics.body
    );
    let ready = http::get(stats, "/ready", &[]).unwrap();
    assert_eq!((ready.status, ready.body.trim()), (200, "LIVE"));
    for (method, path) in [
        ("POST", "/quitquitquit"),
        ("GET", "/config_dump"),
        ("POST", "/logging?level=trace"),
        ("POST", "/stats/prometheus"),
    ] {
        let r = http::request(method, stats, path, &[]).unwrap();
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }
    assert!(envoy.is_running(), "{}", envoy.output());
    // The admin itself answers on loopback, where it was asked to be.
    let dump = http::get(admin, "/config_dump", &[]).unwrap();
    assert_eq!(dump.status, 200);
}

/// Uploads the bootstrap template an operator would: `xds-server bootstrap` with placeholders.
fn upload_template(moto: &Moto, xds_port: u16, admin: u16) {
    let out = Command::new(workspace_bin("xds-server"))
        .args([
            "bootstrap",
            "--proxy",
            "${PROXY}",
            "--node-id",
            "${ecs.TaskARN}",
        ])
        .args([
            "--xds",
            &format!("127.0.0.1:{xds_port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s3 = moto.s3();
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    rt.block_on(
        s3.put_object()
            .bucket("config")
            .key("envoy/bootstrap.yaml.tmpl")
            .body(out.stdout.into())
            .send(),
    )
    .unwrap();
}

/// The environment variables infra/modules/envoy-service lets its init container's templates
/// read (its `S3_CONFIG_LOADER_TEMPLATE_ENV`).
fn init_container_template_env() -> String {
    let main =
        std::fs::read_to_string(repo_root().join("infra/modules/envoy-service/task.tf")).unwrap();
    let re =
        regex::Regex::new(r#"name = "S3_CONFIG_LOADER_TEMPLATE_ENV", value = "([^"]*)""#).unwrap();
    re.captures(&main)
        .expect("envoy-service's init container sets S3_CONFIG_LOADER_TEMPLATE_ENV")[1]
        .to_string()
}

/// As infra/modules/envoy-service runs it: an init container renders the bootstrap with
/// `s3-config-loader get`, then the entrypoint uses that file as it is.
#[test]
fn an_init_container_rendered_bootstrap_is_used_as_is() {
    let dir = TempDir::new("image-init");
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let server = control_plane(&dir, &app, port);
    let admin = free_port();
    let moto = Moto::start(&dir, 0);
    upload_template(&moto, server.xds_port, admin);
    let bootstrap = dir.path().join("etc/envoy.yaml");
    let init = Command::new(workspace_bin("s3-config-loader"))
        .args(["get", "s3://config/envoy/bootstrap.yaml.tmpl"])
        .arg(&bootstrap)
        .envs(moto.env())
        .env("PROXY", "demo")
        .env(
            "S3_CONFIG_LOADER_TEMPLATE_ENV",
            init_container_template_env(),
        )
        .env(
            "ECS_CONTAINER_METADATA_URI_V4",
            format!("http://{}/v4/abc", meta.addr),
        )
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let envoy = entrypoint(&dir, &meta, admin, &[]);
    wait_connected(&server, &envoy, port);
}

#[test]
fn a_bootstrap_template_from_s3_is_rendered_validated_and_used() {
    let dir = TempDir::new("image-s3");
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let server = control_plane(&dir, &app, port);
    let admin = free_port();
    let moto = Moto::start(&dir, 0);
    upload_template(&moto, server.xds_port, admin);
    let mut env = moto.env();
    env.push((
        "ENVOY_BOOTSTRAP_S3",
        "s3://config/envoy/bootstrap.yaml.tmpl".into(),
    ));
    env.push(("PROXY", "demo".into()));
    let envoy = entrypoint(&dir, &meta, admin, &env);
    wait_connected(&server, &envoy, port);
}

/// The processes whose parent is `pid`: (pid, command line with spaces between arguments).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // /proc/PID/stat: "PID (COMM) STATE PPID ...", where COMM may hold spaces or ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((child, cmdline.trim().to_string()));
        }
    }
    out
}

/// Kills what the entrypoint left running beside Envoy (the renewer): in a container the end of
/// its pid namespace does that; here the processes would outlive the test.
struct KillChildrenOf(u32);

impl Drop for KillChildrenOf {
    fn drop(&mut self) {
        for (pid, _) in children(self.0) {
            // SAFETY: plain kill(2) of a process this test's entrypoint started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// With `XDS_SERVER_IDENTITY=1`, as infra/ runs the image and the control plane: the
/// entrypoint proves the task role to a control plane that requires identities, its CA from
/// Secrets Manager as infra/modules/xds-server makes it, and gets the proxy's certificate; the
/// generated bootstrap does mutual TLS with it, Envoy is served its role's config and routes,
/// and `xds-server identity --renew` runs beside Envoy, its child once the shell has become
/// Envoy.
#[test]
fn with_identity_the_task_role_gets_the_certificate_envoy_connects_with() {
    let dir = TempDir::new("image-identity");
    let moto = Moto::start(&dir, 0);
    let ca = dir.path().join("ca");
    identity::ca_as_terraform_makes_it(&ca);
    moto.fixture(
        "iam_identity.py",
        &[
            "secret",
            "prism-test/xds-server/ca",
            &ca.display().to_string(),
        ],
    );
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let catalog = catalog(
        &dir,
        &app,
        port,
        "identity: { iam_roles: [demo-task-role] }",
    );
    let server = identity::plane(
        &dir,
        &moto,
        &catalog,
        "secretsmanager:prism-test/xds-server/ca",
        &[],
    );
    let task = identity::assume(&moto, "demo-task-role", "task-1");
    let mut env = identity::env_with(&moto, &task);
    let ca_pem = std::fs::read_to_string(ca.join("certificate.pem")).unwrap();
    env.extend([
        ("XDS_SERVER_IDENTITY", "1".to_string()),
        ("XDS_SERVER_PROXY", "demo".into()),
        ("XDS_SERVER_XDS", format!("127.0.0.1:{}", server.xds_port)),
        ("XDS_SERVER_XDS_CA_PEM", ca_pem.clone()),
    ]);
    let mut envoy = entrypoint(&dir, &meta, free_port(), &env);
    let _renewer = KillChildrenOf(envoy.pid());
    wait_connected(&server, &envoy, port);
    assert_eq!(
        server.metric("xds_identity_requests_total{result=\"issued\"}"),
        1.0
    );
    assert_eq!(
        server.metric("xds_identity_refusals_total{reason=\"no_certificate\"}"),
        0.0
    );

    // Beside the bootstrap, as the image's default: the CA written from the environment, the
    // certificate the bootstrap's SDS reads.
    let id_dir = dir.path().join("etc/identity");
    assert_eq!(
        std::fs::read_to_string(id_dir.join("xds-ca.pem"))
            .unwrap()
            .trim(),
        ca_pem.trim()
    );
    let bootstrap = std::fs::read_to_string(dir.path().join("etc/envoy.yaml")).unwrap();
    assert!(
        bootstrap.contains(&id_dir.join("sds-certificate.json").display().to_string()),
        "{bootstrap}"
    );

    // The shell became Envoy (same pid), and the renewer is its child.
    let exe = std::fs::read_link(format!("/proc/{}/exe", envoy.pid())).unwrap();
    assert_eq!(
        exe.file_name(),
        envoy_bin().canonicalize().unwrap().file_name(),
        "{}",
        envoy.output()
    );
    let renewers: Vec<_> = children(envoy.pid())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("xds-server identity --renew"))
        .collect();
    assert_eq!(renewers.len(), 1, "{renewers:?}\n{}", envoy.output());
    assert!(envoy.is_running(), "{}", envoy.output());
}

/// The entrypoint refuses to start Envoy when the task gets no certificate: a role that is no
/// proxy's identity, or no CA to check the control plane with.
#[test]
fn with_identity_and_no_certificate_the_container_fails() {
    let dir = TempDir::new("image-identity-refused");
    let moto = Moto::start(&dir, 0);
    let ca = dir.path().join("ca");
    assert!(ca_init(&ca).status.success());
    let (meta, app, port) = (metadata(), Backend::start("app", 0).unwrap(), free_port());
    let catalog = catalog(
        &dir,
        &app,
        port,
        "identity: { iam_roles: [demo-task-role] }",
    );
    let server = identity::plane(
        &dir,
        &moto,
        &catalog,
        &format!("file:{}", ca.display()),
        &[],
    );
    let stranger = identity::assume(&moto, "batch-task-role", "task-2");
    let ca_pem = std::fs::read_to_string(ca.join("certificate.pem")).unwrap();
    let base = |ca: Option<(&'static str, String)>| {
        let mut env = identity::env_with(&moto, &stranger);
        env.extend([
            ("XDS_SERVER_IDENTITY", "true".to_string()),
            ("XDS_SERVER_PROXY", "demo".into()),
            ("XDS_SERVER_XDS", format!("127.0.0.1:{}", server.xds_port)),
            ("XDS_SERVER_IDENTITY_TIMEOUT", "5s".into()),
        ]);
        env.extend(ca);
        env
    };
    let cases = [
        (
            base(Some(("XDS_SERVER_XDS_CA_PEM", ca_pem))),
            "is no proxy's identity",
        ),
        (base(None), "XDS_SERVER_IDENTITY needs XDS_SERVER_XDS_CA"),
    ];
    for (env, expected) in cases {
        let mut envoy = entrypoint(&dir, &meta, free_port(), &env);
        let code = envoy.wait_exit(std::time::Duration::from_secs(30));
        assert_ne!(code, Some(0), "{}", envoy.output());
        assert!(envoy.output().contains(expected), "{}", envoy.output());
        assert!(!envoy.output().contains("starting main dispatch loop"));
    }
    assert!(
        server
            .admin_json("/debug/nodes")
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// A test that runs something as UID 1337 first checks that user may reach it, and names the
/// directory in the way (a checkout under a home directory of mode 0700, say) instead of
/// leaving a process that dies with "permission denied".
#[test]
fn what_uid_1337_cannot_reach_is_named_before_anything_runs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("image-unreachable");
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let file = private.join("envoy");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    tests::process::assert_usable_by(1337, &[], &[&file]);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let refused = std::panic::catch_unwind(|| {
        tests::process::assert_usable_by(1337, &[], &[&file]);
    })
    .expect_err("UID 1337 reached a directory of mode 0700");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains(&format!(
            "UID 1337 cannot reach {}: it may not search the directory {}",
            file.display(),
            private.display()
        )),
        "{message}"
    );
}
