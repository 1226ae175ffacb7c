//! Reload hooks, run once after a pass that changed files: a command, a signal, an HTTP POST.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use crate::http;

/// Which process `--signal` signals, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalTarget {
    /// A pid, or a pid file read each time.
    pub process: ProcessRef,
    /// The signal number.
    pub signal: i32,
}

/// A process by pid or by pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRef {
    /// A fixed pid.
    Pid(i32),
    /// A file holding the pid (read at each use, so restarts are followed).
    PidFile(PathBuf),
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
];

impl FromStr for SignalTarget {
    type Err = String;

    /// `PID[:SIGNAL]` or `pidfile:PATH[:SIGNAL]`; the signal defaults to HUP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, signal) = match s.rsplit_once(':') {
            Some((t, sig))
                if SIGNALS.iter().any(|(n, _)| {
                    sig.eq_ignore_ascii_case(n) || sig.eq_ignore_ascii_case(&format!("SIG{n}"))
                }) =>
            {
                let name = sig.to_ascii_uppercase();
                let name = name.trim_start_matches("SIG");
                (
                    t,
                    SIGNALS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .unwrap_or(libc::SIGHUP),
                )
            }
            _ => (s, libc::SIGHUP),
        };
        let process = if let Some(path) = target.strip_prefix("pidfile:") {
            ProcessRef::PidFile(PathBuf::from(path))
        } else {
            ProcessRef::Pid(target.parse().map_err(|_| {
                format!("{s:?}: write PID[:SIGNAL] or pidfile:PATH[:SIGNAL] (signals: HUP, INT, QUIT, USR1, USR2, TERM)")
            })?)
        };
        Ok(SignalTarget { process, signal })
    }
}

/// The hooks to run after a change.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// A command run with `sh -c`; `S3CL_CHANGED` holds the changed files, one per line.
    pub on_change: Option<String>,
    /// How long the command may run.
    pub timeout: Duration,
    /// Processes to signal.
    pub signals: Vec<SignalTarget>,
    /// URLs to POST to (e.g. Prometheus' `/-/reload`).
    pub posts: Vec<String>,
}

impl Hooks {
    /// Every configured hook.
    pub fn all(&self) -> Vec<Hook> {
        let on_change = self.on_change.iter().map(|_| Hook::OnChange);
        let signals = (0..self.signals.len()).map(Hook::Signal);
        let posts = (0..self.posts.len()).map(Hook::Post);
        on_change.chain(signals).chain(posts).collect()
    }

    /// The hook as its flag names it: `--on-change`, `--signal TARGET`, `--post URL`.
    pub fn describe(&self, hook: Hook) -> String {
        match hook {
            Hook::OnChange => "--on-change".to_string(),
            Hook::Signal(i) => match self.signals.get(i).map(|s| &s.process) {
                Some(ProcessRef::Pid(pid)) => format!("--signal {pid}"),
                Some(ProcessRef::PidFile(path)) => format!("--signal pidfile:{}", path.display()),
                None => "--signal".to_string(),
            },
            Hook::Post(i) => format!("--post {}", self.posts.get(i).map_or("", String::as_str)),
        }
    }

    /// Runs one hook for the files in `changed`.
    pub async fn run_one(&self, hook: Hook, changed: &[PathBuf]) -> Result<(), String> {
        match hook {
            Hook::OnChange => {
                let Some(cmd) = &self.on_change else {
                    return Ok(());
                };
                let list: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("S3CL_CHANGED", list.join("\n"))
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout(self.timeout, run).await {
                    Ok(Ok(status)) if status.success() => Ok(()),
                    Ok(Ok(status)) => Err(format!("--on-change {cmd:?} exited with {status}")),
                    Ok(Err(e)) => Err(format!("--on-change {cmd:?} could not start: {e}")),
                    Err(_) => Err(format!(
                        "--on-change {cmd:?} did not finish within {:?}",
                        self.timeout
                    )),
                }
            }
            Hook::Signal(i) => self.signals.get(i).map_or(Ok(()), send_signal),
            Hook::Post(i) => match self.posts.get(i) {
                Some(url) => http::post(url)
                    .await
                    .map_err(|e| format!("--post {url}: {e}")),
                None => Ok(()),
            },
        }
    }
}

/// One configured hook, as [`Hooks::all`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// `--on-change`.
    OnChange,
    /// The n-th `--signal`.
    Signal(usize),
    /// The n-th `--post`.
    Post(usize),
}

fn send_signal(t: &SignalTarget) -> Result<(), String> {
    let pid = match &t.process {
        ProcessRef::Pid(p) => *p,
        ProcessRef::PidFile(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--signal: cannot read {}: {e}", path.display()))?
            .trim()
            .parse()
            .map_err(|_| format!("--signal: {} does not hold a pid", path.display()))?,
    };
    if pid <= 0 {
        return Err(format!("--signal: refusing pid {pid}"));
    }
    // SAFETY: kill(2) with a positive pid and a valid signal number.
    let rc = unsafe { libc::kill(pid, t.signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "--signal: kill({pid}, {}) failed: {}",
            t.signal,
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_targets() {
        assert_eq!(
            "42".parse::<SignalTarget>().unwrap(),
            SignalTarget {
                process: ProcessRef::Pid(42),
                signal: libc::SIGHUP
            }
        );
        assert_eq!(
            "pidfile:/run/envoy.pid:USR1"
                .parse::<SignalTarget>()
                .unwrap(),
            SignalTarget {
                process: ProcessRef::PidFile("/run/envoy.pid".into()),
                signal: libc::SIGUSR1
            }
        );
        assert_eq!(
            "7:SIGTERM".parse::<SignalTarget>().unwrap().signal,
            libc::SIGTERM
        );
        assert!("envoy".parse::<SignalTarget>().is_err());
    }
}
