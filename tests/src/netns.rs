//! Network namespaces a test creates for itself (iproute2), with links and iptables rules of
//! their own: traffic in them never reaches the machine's network. Each is removed when its
//! handle drops, also when the test fails.

use std::os::fd::AsRawFd;
use std::process::Command;

/// What every test namespace's name starts with; the pid of the test process that made it follows
/// the label.
const PREFIX: &str = "xds-e2e-";

/// Deletes the namespaces left by a test process that is gone (killed before its handles
/// dropped): named `PREFIX LABEL-PID-N`, with no process PID alive. Those of running tests stay.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
    {
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            eprintln!(
                "deleting {name}, left by test process {} that is gone",
                pid.unwrap()
            );
            drop(Netns {
                name: name.to_string(),
            });
        }
    }
}

/// A network namespace, deleted (with every process still in it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named after `label`, this process and a counter, its loopback up.
    pub fn new(label: &str) -> Netns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale);
        let name = format!("{PREFIX}{label}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add` (iproute2): {e}"));
        assert!(
            out.status.success(),
            "cannot create the network namespace {name} (`ip netns add`): {}\
             the transparent proxy tests need root, or CAP_SYS_ADMIN and CAP_NET_ADMIN (a \
             privileged container), to make namespaces of their own",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Its name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside (`ip netns exec`); panics with its output when it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Links this namespace to `other` by a veth pair: `dev` here with `cidr`, `other_dev`
    /// there with `other_cidr` (same subnet).
    pub fn link(&self, dev: &str, cidr: &str, other: &Netns, other_dev: &str, other_cidr: &str) {
        self.exec(&[
            "ip",
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            other_dev,
            "netns",
            &other.name,
        ]);
        self.exec(&["ip", "addr", "add", cidr, "dev", dev]);
        self.exec(&["ip", "link", "set", dev, "up"]);
        other.exec(&["ip", "addr", "add", other_cidr, "dev", other_dev]);
        other.exec(&["ip", "link", "set", other_dev, "up"]);
    }

    /// Runs `f` on a thread inside the namespace: the sockets it opens and the processes it
    /// starts live there. A panic in `f` is this call's panic.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                // SAFETY: setns(2) on a descriptor we own; it moves only this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// A value made inside a namespace (e.g. a backend listening there), dropped inside it too, also
/// when the test panics: what it does on drop (a backend's wake-up connection to its own address)
/// would otherwise leave from the test's own namespace, towards an address that is not there.
#[derive(Debug)]
pub struct InNetns<'a, T: Send> {
    ns: &'a Netns,
    value: Option<T>,
}

impl<T: Send> std::ops::Deref for InNetns<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("present until dropped")
    }
}

impl<T: Send> Drop for InNetns<'_, T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            self.ns.run(move || drop(value));
        }
    }
}

impl Netns {
    /// `f`'s value, made inside this namespace ([`Netns::run`]) and dropped there.
    pub fn hold<T: Send>(&self, f: impl FnOnce() -> T + Send) -> InNetns<'_, T> {
        InNetns {
            ns: self,
            value: Some(self.run(f)),
        }
    }
}

/// The properties of an ECS task's `proxyConfiguration` of type `APPMESH` (ECS's names).
#[derive(Debug, Clone)]
pub struct AppMeshProxyConfiguration {
    /// `IgnoredUID`: the proxy's own connections, never redirected.
    pub ignored_uid: u32,
    /// `IgnoredGID`: connections of processes in this group, never redirected either.
    pub ignored_gid: Option<u32>,
    /// `ProxyIngressPort`: where connections to `app_ports` go.
    pub proxy_ingress_port: u16,
    /// `ProxyEgressPort`: where the task's outbound TCP goes.
    pub proxy_egress_port: u16,
    /// `AppPorts`: the application's ports, reached from outside through the proxy.
    pub app_ports: Vec<u16>,
    /// `EgressIgnoredIPs`: destinations reached directly (task metadata, credentials).
    pub egress_ignored_ips: Vec<String>,
}

impl Default for AppMeshProxyConfiguration {
    /// What App Mesh's documentation gives for ECS.
    fn default() -> Self {
        AppMeshProxyConfiguration {
            ignored_uid: 1337,
            ignored_gid: None,
            proxy_ingress_port: 15000,
            proxy_egress_port: 15001,
            app_ports: Vec::new(),
            egress_ignored_ips: vec!["169.254.170.2".into(), "169.254.169.254".into()],
        }
    }
}

/// An ECS task's namespace (`LABEL-app`) and its peers' (`LABEL-peer`), linked (10.99.1.1 here,
/// 10.99.1.2 there), with ECS's APPMESH redirect in the task for `app_ports` as envoy-service
/// configures it (the ignored UID and GID 1337). 10.99.0.0/24 is routed out of the task, to
/// addresses no one holds: only the redirect makes them answer. The peer also holds
/// 169.254.170.2 (the task metadata endpoint ECS ignores).
pub fn ecs_task(label: &str, app_ports: &[u16]) -> (Netns, Netns) {
    let app = Netns::new(&format!("{label}-app"));
    let peer = Netns::new(&format!("{label}-peer"));
    app.link("eth0", "10.99.1.1/24", &peer, "eth0", "10.99.1.2/24");
    // (This kernel has no dummy interfaces.)
    app.exec(&["ip", "route", "add", "10.99.0.0/24", "dev", "eth0"]);
    peer.exec(&["ip", "addr", "add", "169.254.170.2/32", "dev", "eth0"]);
    app.exec(&["ip", "route", "add", "169.254.170.2/32", "dev", "eth0"]);
    app.redirect_like_ecs(&AppMeshProxyConfiguration {
        app_ports: app_ports.to_vec(),
        ignored_gid: Some(1337),
        ..Default::default()
    });
    (app, peer)
}

impl Netns {
    /// The nat rules ECS's App Mesh CNI plugin installs in an awsvpc task's namespace for
    /// `config`: outbound TCP to any address not of the task itself goes to the egress port,
    /// unless it comes from the ignored UID or GID or goes to an ignored IP; inbound TCP from outside
    /// to an app port goes to the ingress port.
    pub fn redirect_like_ecs(&self, config: &AppMeshProxyConfiguration) {
        let nat = |args: &[&str]| {
            let mut all = vec!["iptables", "-w", "-t", "nat"];
            all.extend_from_slice(args);
            self.exec(&all);
        };
        let (uid, egress, ingress) = (
            config.ignored_uid.to_string(),
            config.proxy_egress_port.to_string(),
            config.proxy_ingress_port.to_string(),
        );
        nat(&["-N", "APPMESH_EGRESS"]);
        nat(&["-N", "APPMESH_INGRESS"]);
        nat(&[
            "-A",
            "APPMESH_EGRESS",
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "RETURN",
        ]);
        if let Some(gid) = config.ignored_gid {
            nat(&[
                "-A",
                "APPMESH_EGRESS",
                "-m",
                "owner",
                "--gid-owner",
                &gid.to_string(),
                "-j",
                "RETURN",
            ]);
        }
        if !config.egress_ignored_ips.is_empty() {
            let ips = config.egress_ignored_ips.join(",");
            nat(&[
                "-A",
                "APPMESH_EGRESS",
                "-p",
                "tcp",
                "-d",
                &ips,
                "-j",
                "RETURN",
            ]);
        }
        nat(&[
            "-A",
            "APPMESH_EGRESS",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &egress,
        ]);
        nat(&[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            "APPMESH_EGRESS",
        ]);
        if !config.app_ports.is_empty() {
            let ports: Vec<String> = config.app_ports.iter().map(u16::to_string).collect();
            nat(&[
                "-A",
                "APPMESH_INGRESS",
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &ports.join(","),
                "-j",
                "REDIRECT",
                "--to-ports",
                &ingress,
            ]);
        }
        nat(&[
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "-m",
            "addrtype",
            "!",
            "--src-type",
            "LOCAL",
            "-j",
            "APPMESH_INGRESS",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes the test started in here and has not stopped would keep the namespace's
        // interfaces alive; only processes of this namespace are signalled.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) of a process inside the test's own namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !deleted.is_ok_and(|s| s.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
