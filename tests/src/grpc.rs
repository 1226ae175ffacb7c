//! gRPC and h2c peers: a grpcio server and client, and an h2c-only HTTP server, run by
//! `tests/fixtures/grpc_peers.py` in the `.venv/grpc` virtualenv that `scripts/setup.sh` installs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{TempDir, free_port, repo_root, wait_for};

/// The Python with grpcio and h2.
fn python() -> PathBuf {
    let bin = repo_root().join(".venv/grpc/bin/python");
    assert!(
        bin.exists(),
        "{} is missing: scripts/setup.sh installs it",
        bin.display()
    );
    bin
}

fn peers(dir: &TempDir, args: &[&str], log: &str) -> ChildGuard {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/fixtures/grpc_peers.py"))
        .args(args);
    ChildGuard::spawn(cmd, dir.path().join(log))
}

/// A server of `grpc_peers.py` on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct PeerServer {
    /// The process.
    pub process: ChildGuard,
    /// Its port.
    pub port: u16,
}

impl PeerServer {
    /// A grpcio server: `/test.Stream/Count` answers `"COUNT,INTERVAL_MS"` with COUNT messages,
    /// one every INTERVAL_MS.
    pub fn grpc(dir: &TempDir) -> PeerServer {
        Self::start(dir, &["grpc-server"], "grpc-server")
    }

    /// A grpcio server whose `/test.Stream/Who` answers `name`.
    pub fn grpc_named(dir: &TempDir, name: &str) -> PeerServer {
        Self::start(
            dir,
            &["grpc-server", "--name", name],
            &format!("grpc-server-{name}"),
        )
    }

    /// A grpcio server whose `/test.Stream/Who` fails every call with status `code` (e.g.
    /// `UNAVAILABLE`); see [`PeerServer::failed_calls`].
    pub fn grpc_failing(dir: &TempDir, name: &str, code: &str) -> PeerServer {
        Self::start(
            dir,
            &["grpc-server", "--name", name, "--fail", code],
            &format!("grpc-server-{name}"),
        )
    }

    /// A [`PeerServer::grpc_named`] server over TLS with `certificate` (and `key`), requiring
    /// client certificates that chain to `ca`.
    pub fn grpc_tls(
        dir: &TempDir,
        name: &str,
        certificate: &Path,
        key: &Path,
        ca: &Path,
    ) -> PeerServer {
        let files = [certificate, key, ca].map(|p| p.display().to_string());
        let mut args = vec!["grpc-server", "--name", name, "--tls"];
        args.extend(files.iter().map(String::as_str));
        Self::start(dir, &args, &format!("grpc-server-{name}"))
    }

    /// How many calls a [`PeerServer::grpc_failing`] server has failed.
    pub fn failed_calls(&self) -> usize {
        self.process
            .output()
            .lines()
            .filter(|l| l.starts_with("failed "))
            .count()
    }

    /// An h2c-only HTTP server (HTTP/1.1 connections are closed): `GET /health` answers 200,
    /// other paths answer `name`; gRPC calls to `/test.Stream/Hang` are never answered.
    pub fn h2c(dir: &TempDir, name: &str) -> PeerServer {
        Self::start(dir, &["h2-server", name], &format!("h2-server-{name}"))
    }

    fn start(dir: &TempDir, args: &[&str], label: &str) -> PeerServer {
        let port = free_port();
        let port_arg = port.to_string();
        let mut all = vec![args[0], &port_arg];
        all.extend(&args[1..]);
        let process = peers(dir, &all, &format!("{label}-{port}.log"));
        wait_for(
            &format!("{label} to listen on {port}"),
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        PeerServer { process, port }
    }

    /// `127.0.0.1:port`, as catalogs write it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// How one gRPC call ended, as the grpcio client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// The status code name, e.g. `OK`, `DEADLINE_EXCEEDED`.
    pub code: String,
    /// Messages received before the end.
    pub messages: u64,
    /// How long the call took.
    pub seconds: f64,
    /// The status message.
    pub details: String,
}

/// What a call sends besides its method and request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions<'a> {
    /// The client's own deadline (sent as `grpc-timeout`, and enforced by the client).
    pub deadline: Option<Duration>,
    /// A `grpc-timeout` header the client does not enforce itself, e.g. `1S`.
    pub grpc_timeout_header: Option<&'a str>,
    /// TLS instead of plaintext.
    pub tls: Option<CallTls<'a>>,
}

/// The TLS of a [`call`].
#[derive(Debug, Clone, Copy)]
pub struct CallTls<'a> {
    /// The CA bundle the server's certificate must chain to.
    pub ca: &'a Path,
    /// The name the server's certificate must carry.
    pub name: &'a str,
    /// A client certificate and its key to present.
    pub client: Option<(&'a Path, &'a Path)>,
}

/// One server-streaming call through 127.0.0.1:`port`; panics when it has not ended after
/// `limit`.
pub fn call(
    dir: &TempDir,
    port: u16,
    method: &str,
    request: &str,
    options: CallOptions<'_>,
    limit: Duration,
) -> CallOutcome {
    let port_arg = port.to_string();
    let deadline_arg = options.deadline.map(|d| d.as_secs_f64().to_string());
    let mut args = vec!["call", &port_arg, method, request];
    if let Some(d) = &deadline_arg {
        args.extend(["--deadline", d]);
    }
    if let Some(t) = options.grpc_timeout_header {
        args.extend(["--grpc-timeout", t]);
    }
    let tls_files = options.tls.map(|t| {
        let client = t
            .client
            .map(|(c, k)| [c, k].map(|p| p.display().to_string()));
        (t.ca.display().to_string(), client)
    });
    if let (Some(t), Some((ca, client))) = (&options.tls, &tls_files) {
        args.extend(["--tls-ca", ca, "--tls-name", t.name]);
        if let Some([cert, key]) = client {
            args.extend(["--tls-cert", cert, key]);
        }
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut process = peers(dir, &args, &format!("grpc-call-{n}.log"));
    let code = process.wait_exit(limit);
    let output = process.output();
    assert_eq!(code, Some(0), "the gRPC client failed:\n{output}");
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("the gRPC client printed no result:\n{output}"));
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the gRPC client's result is not JSON ({e}): {line}"));
    CallOutcome {
        code: v["code"].as_str().unwrap_or_default().to_string(),
        messages: v["messages"].as_u64().unwrap_or_default(),
        seconds: v["seconds"].as_f64().unwrap_or_default(),
        details: v["details"].as_str().unwrap_or_default().to_string(),
    }
}

/// The answers of a batch of `/test.Stream/Who` calls a [`XdsGrpcClient`] made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Per answering server name, how many calls it answered.
    pub answers: std::collections::BTreeMap<String, u64>,
    /// Per failure (`CODE: details`), how many calls ended so.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// A proxyless grpcio client (`grpc_peers.py xds-calls`): one channel to an `xds:///` target,
/// configured by the gRPC bootstrap at `GRPC_XDS_BOOTSTRAP`, for its whole life; stops when
/// dropped.
#[derive(Debug)]
pub struct XdsGrpcClient {
    /// The process.
    pub process: ChildGuard,
    requests: PathBuf,
    next: u32,
}

impl XdsGrpcClient {
    /// Starts a client of `target` (`xds:///NAME`) with the gRPC bootstrap file `bootstrap`.
    pub fn start(dir: &TempDir, target: &str, bootstrap: &std::path::Path) -> XdsGrpcClient {
        // One batch directory (and log) per client of the test: xds-calls, xds-calls-2, ...
        let name = (1..)
            .map(|i| match i {
                1 => "xds-calls".to_string(),
                i => format!("xds-calls-{i}"),
            })
            .find(|n| !dir.path().join(n).exists())
            .expect("a free name");
        let requests = dir.path().join(&name);
        std::fs::create_dir_all(&requests).expect("the batch directory can be made");
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/fixtures/grpc_peers.py"))
            .args(["xds-calls", target])
            .arg(&requests)
            .env("GRPC_XDS_BOOTSTRAP", bootstrap);
        let process = ChildGuard::spawn(cmd, dir.path().join(format!("{name}.log")));
        XdsGrpcClient {
            process,
            requests,
            next: 0,
        }
    }

    /// Makes `n` calls (each waits for the channel to be ready, up to 10 s) and tells who
    /// answered them; panics when the batch has not ended within `limit`.
    pub fn calls(&mut self, n: u32, limit: Duration) -> Batch {
        let k = self.next;
        self.next += 1;
        // Written aside and renamed: the client polls for the file and must never read it
        // half written (an empty count once crashed it).
        let request = self.requests.join(format!("batch-{k}.req"));
        let staged = self.requests.join(format!(".batch-{k}.req.tmp"));
        std::fs::write(&staged, n.to_string()).expect("the batch request can be written");
        std::fs::rename(&staged, &request).expect("the batch request can be published");
        let result = self.requests.join(format!("batch-{k}.json"));
        // Not `wait_for`: a batch that does not end panics with the client's log, which says
        // why (a NACK, a resource that does not exist).
        let deadline = std::time::Instant::now() + limit;
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&result) {
                break text;
            }
            if !self.process.is_running() {
                panic!("the xds:/// client exited:\n{}", self.process.output());
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "batch {k} of {n} gRPC calls did not end within {limit:?}:\n{}",
                    self.process.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("batch {k} is not JSON ({e}): {text}"));
        Batch::from_json(&v)
    }
}

impl Batch {
    /// `{"answers": {NAME: n}, "errors": {"CODE: details": n}}`, as the clients print it.
    fn from_json(v: &serde_json::Value) -> Batch {
        let counts = |key: &str| {
            v[key]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or_default()))
                .collect()
        };
        Batch {
            answers: counts("answers"),
            errors: counts("errors"),
        }
    }
}

/// `n` `/test.Stream/Who` calls through `target` (`xds:///NAME`) from a proxyless Node client
/// (`tests/node/xds_calls.js`, npm `@grpc/grpc-js-xds`, which `scripts/setup.sh` installs)
/// with the gRPC bootstrap file `bootstrap`; panics when it has not ended after `limit`.
pub fn node_xds_calls(
    dir: &TempDir,
    target: &str,
    bootstrap: &Path,
    n: u32,
    limit: Duration,
) -> Batch {
    let node = repo_root().join("tests/node");
    assert!(
        node.join("node_modules/@grpc/grpc-js-xds").exists(),
        "{}/node_modules is missing: scripts/setup.sh installs it",
        node.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(node.join("xds_calls.js"))
        .args([target, &n.to_string()])
        .env("GRPC_XDS_BOOTSTRAP", bootstrap);
    let mut process = ChildGuard::spawn(cmd, dir.path().join("node-xds-calls.log"));
    let code = process.wait_exit(limit);
    let output = process.output();
    assert_eq!(code, Some(0), "the Node xds:/// client failed:\n{output}");
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("the Node client printed no result:\n{output}"));
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the Node client's result is not JSON ({e}): {line}"));
    Batch::from_json(&v)
}
