//! `xds-server diff` before a deploy: exactly the resources a catalog change touches, per proxy,
//! exit 2 when something changes and 0 when nothing does; local files and S3 (moto) alike.

use std::process::Command;

use tests::{Moto, TempDir, workspace_bin};

const OLD: &str = r#"
version: 1
proxies:
  web:
    listeners:
      - name: public
        port: 8080
        protocol: http
        routes:
          - match: { prefix: /api/ }
            to: api
            timeout: 5s
          - match: { prefix: / }
            to: site
  worker:
    listeners:
      - { name: out, port: 9000, protocol: tcp, to: queue }
upstreams:
  api:
    protocol: http1
    endpoints: { static: ["10.0.0.1:80", "10.0.0.2:80"] }
  site:
    protocol: http1
    endpoints: { static: ["10.0.1.1:80"] }
  queue:
    protocol: tcp
    endpoints: { static: ["10.0.2.1:5672"] }
"#;

/// One route's timeout and one upstream's endpoints change; nothing else.
fn changed() -> String {
    OLD.replace("timeout: 5s", "timeout: 30s")
        .replace(r#""10.0.0.2:80""#, r#""10.0.0.3:80""#)
}

fn diff(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("xds-server"))
        .arg("diff")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("xds-server diff runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `  TYPE NAME VERB` lines of a diff.
fn changes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .map(str::trim)
        .collect()
}

#[test]
fn diff_shows_exactly_the_changed_route_and_upstream() {
    let dir = TempDir::new("diff");
    let old = dir.write("old.yaml", OLD);
    let new = dir.write("new.yaml", &changed());
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());

    let (code, out, err) = diff(&["--catalog", old, "--catalog-new", new], &[]);
    assert_eq!(code, 2, "a difference exits 2\n{out}\n{err}");
    assert_eq!(
        changes(&out),
        ["rds public modified", "eds api modified"],
        "only the route and the upstream:\n{out}"
    );
    assert!(out.starts_with("proxy web:\n"), "{out}");
    assert!(!out.contains("proxy worker"), "worker is untouched:\n{out}");
    // The lines that changed, as YAML, marked - and +.
    for line in [
        "-      timeout: 5s",
        "+      timeout: 30s",
        "10.0.0.2",
        "10.0.0.3",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('-') && l.contains("10.0.0.2")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('+') && l.contains("10.0.0.3")),
        "{out}"
    );

    let (code, out, _) = diff(&["--catalog", old, "--catalog-new", old], &[]);
    assert_eq!((code, out.as_str()), (0, "no changes\n"));
    let (code, out, _) = diff(
        &["--catalog", old, "--catalog-new", new, "--proxy", "worker"],
        &[],
    );
    assert_eq!((code, out.as_str()), (0, "no changes\n"), "--proxy narrows");

    // An invalid new catalog: exit 1 with the field path, no diff.
    let bad = dir.write("bad.yaml", &OLD.replace("10.0.1.1:80", "10.0.1.1"));
    let (code, out, err) = diff(
        &["--catalog", old, "--catalog-new", bad.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("upstreams.site.endpoints.static[0]"), "{err}");

    // The same from S3.
    let moto = Moto::start(&dir, 0);
    let s3 = moto.s3();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        s3.create_bucket().bucket("config").send().await.unwrap();
        for (key, body) in [
            ("xds/old.yaml", OLD.to_string()),
            ("xds/new.yaml", changed()),
        ] {
            s3.put_object()
                .bucket("config")
                .key(key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    });
    let env = moto.env();
    let (code, out, err) = diff(
        &[
            "--catalog",
            "s3://config/xds/old.yaml",
            "--catalog-new",
            "s3://config/xds/new.yaml",
        ],
        &env,
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(
        changes(&out),
        ["rds public modified", "eds api modified"],
        "{out}"
    );
    let (code, _, err) = diff(
        &[
            "--catalog",
            "s3://config/xds/old.yaml",
            "--catalog-new",
            "s3://config/xds/missing.yaml",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("s3://config/xds/missing.yaml"), "{err}");
}
