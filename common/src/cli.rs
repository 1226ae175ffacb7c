//! What every binary's `main` does the same way: logs and graceful shutdown.

/// How logs are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, for people.
    #[default]
    Text,
    /// JSON, one object a line, for CloudWatch and other collectors.
    Json,
}

/// Logs to stderr: JSON for CloudWatch and other collectors, or text; `filter` is an
/// env-filter expression such as `info` or `xds_server=debug`. Text is coloured only on a
/// terminal, and not when `NO_COLOR` is set: escape codes in a file or CloudWatch are noise.
pub fn init_logs(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(terminal, std::env::var_os("NO_COLOR")))
        .with_writer(move || OneLine {
            inner: std::io::stderr(),
            escape: !terminal,
        });
    if format == LogFormat::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Writes each log event as one line when `escape` (not on a terminal): a collector such as
/// CloudWatch takes every line for an event, and an error that spans lines (a catalog's list
/// of problems) would be torn apart. Line breaks inside the event are written as `\n`. The
/// formatter hands over one whole event per write.
struct OneLine<W> {
    inner: W,
    escape: bool,
}

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.escape {
            return self.inner.write(buf);
        }
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        let mut line = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(b),
            }
        }
        line.extend_from_slice(end);
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set to anything but
/// the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Completes on SIGTERM (what ECS sends to stop a task) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn an_event_of_several_lines_is_written_as_one_off_a_terminal() {
        let event = b"ERROR catalog rejected error=a.yaml: 2 errors\n  x: bad\n  y: bad\n";
        let mut off = super::OneLine {
            inner: Vec::new(),
            escape: true,
        };
        off.write_all(event).unwrap();
        assert_eq!(
            String::from_utf8(off.inner).unwrap(),
            "ERROR catalog rejected error=a.yaml: 2 errors\\n  x: bad\\n  y: bad\n"
        );
        let mut on = super::OneLine {
            inner: Vec::new(),
            escape: false,
        };
        on.write_all(event).unwrap();
        assert_eq!(on.inner, event, "a person's terminal keeps the lines");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some("".into())));
        assert!(!super::colour(true, Some("1".into())));
        assert!(!super::colour(false, None));
    }
}
