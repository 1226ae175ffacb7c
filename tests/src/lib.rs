//! Harness for the end-to-end tests: the toolkit's binaries and real peers (Envoy, small HTTP
//! backends) started as processes on 127.0.0.1, on ports the OS picks, and stopped again when
//! their handles drop, also when a test fails.

pub mod backend;
pub mod browser;
pub mod cli;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod latency;
pub mod moto;
pub mod netns;
pub mod openssl;
pub mod process;
pub mod prometheus;
pub mod throttle;
pub mod xds_client;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use backend::Backend;
pub use moto::Moto;
pub use process::{Envoy, Mode, XdsServer};
pub use prometheus::Prometheus;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// A binary of this workspace, built by `cargo build` next to the test executables.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("in a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `xds-server ca init --out DIR`: a new CA in `dir`.
pub fn ca_init(dir: &Path) -> std::process::Output {
    std::process::Command::new(workspace_bin("xds-server"))
        .args(["ca", "init", "--out"])
        .arg(dir)
        .output()
        .expect("xds-server ca init runs")
}

/// A server certificate for `name` that `ca` signs, valid for `ttl`.
pub fn server_certificate(
    ca: &xds_server::ca::Ca,
    name: &str,
    ttl: Duration,
) -> xds_server::ca::Issued {
    ca.issue(&xds_server::ca::Leaf {
        names: vec![name.into()],
        server: true,
        ttl,
        ..Default::default()
    })
    .expect("the CA signs a server certificate")
}

/// A port that was free a moment ago on 127.0.0.1 (for peers that must be told their port).
///
/// Chosen below the kernel's ephemeral range, where ports bound to 0 and outgoing connections
/// never land: otherwise another test's backend could take the port between this check and the
/// peer's bind. It is also reserved for this test process while it lives ([`reserve_port`]), so
/// no other test (in this process or another) picks it, not even while a peer that held it
/// restarts on it.
pub fn free_port() -> u16 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ephemeral_low: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u64, ephemeral_low.max(11_000));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        ^ (u64::from(std::process::id()) << 20);
    for _ in 0..1000 {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A cheap mix of the seed and a counter (splitmix64), spread over the range.
        let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let port = (low + (z ^ (z >> 31)) % (high - low)) as u16;
        if reserve_port(port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}")
}

/// Reserves `port` for this process: an advisory lock on a file named after it, in a directory
/// of this user's that every test process shares, held until the process exits (the kernel
/// drops it then, so nothing is left to clean up). A port handed out once in this process is
/// not handed out again. Returns whether the port is this call's; where the directory is
/// unusable, ports go unreserved, as before there were reservations.
fn reserve_port(port: u16) -> bool {
    static HELD: std::sync::Mutex<Vec<(u16, std::fs::File)>> = std::sync::Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(p, _)| *p == port) {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("toolkit-test-ports-{uid}"));
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
    });
    let Ok(file) = file else { return true };
    match file.try_lock() {
        Ok(()) => {
            held.push((port, file));
            true
        }
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(_)) => true,
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(label: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("xds-e2e-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir can be created");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Replaces a file atomically (write a temporary file, then rename), as editors and
    /// s3-config-loader do, so the server never reads half a file.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("temp file can be written");
        std::fs::rename(&tmp, &path).expect("temp file can be renamed");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the logs of a failed test.
            eprintln!("test files and logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
