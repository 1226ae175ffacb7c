//! A small HTTP backend that answers every request with its own name, so a test can see which
//! upstream Envoy chose (and, as an echo backend, what the request looked like when it arrived).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

/// Makes the body of the response to a request path.
pub type Responder = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Makes the body of the response to a request.
type Handler = Arc<dyn Fn(&Request) -> String + Send + Sync>;

/// A request as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target (path and query) in lower case.
    pub path: String,
    /// The request head as sent: request line and headers.
    pub head: String,
}

/// A running backend; stops when dropped.
#[derive(Debug)]
pub struct Backend {
    /// Its name, the body of every response.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    /// While false, `GET /health` answers 503 (for active health checks).
    healthy: Arc<AtomicBool>,
}

impl Backend {
    /// Starts a backend on 127.0.0.1 at a port the OS picks (or `port`, when not 0).
    pub fn start(name: &str, port: u16) -> std::io::Result<Backend> {
        let body = format!("{name}\n");
        Self::start_with(name, port, Arc::new(move |_: &str| body.clone()))
    }

    /// Starts a backend on `addr` (e.g. an address of a test's network namespace).
    pub fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let body = format!("{name}\n");
        Self::start_on(name, addr, 200, Arc::new(move |_: &Request| body.clone()))
    }

    /// Starts a backend that answers with its name, then the request head as it arrived
    /// (request line and headers, one a line); every response carries `x-backend: NAME`.
    pub fn start_echo(name: &str) -> std::io::Result<Backend> {
        let name2 = name.to_string();
        Self::start_full(
            name,
            0,
            200,
            Arc::new(move |r: &Request| format!("{name2}\n{}\n", r.head)),
        )
    }

    /// Starts a backend whose response body depends on the request.
    pub fn start_with(name: &str, port: u16, respond: Responder) -> std::io::Result<Backend> {
        Self::start_full(
            name,
            port,
            200,
            Arc::new(move |r: &Request| respond(&r.path)),
        )
    }

    /// Starts a backend that answers every request with `status` (and its name).
    pub fn start_failing(name: &str, port: u16, status: u16) -> std::io::Result<Backend> {
        let body = format!("{name}\n");
        Self::start_full(
            name,
            port,
            status,
            Arc::new(move |_: &Request| body.clone()),
        )
    }

    fn start_full(
        name: &str,
        port: u16,
        status: u16,
        respond: Handler,
    ) -> std::io::Result<Backend> {
        Self::start_on(
            name,
            SocketAddr::from(([127, 0, 0, 1], port)),
            status,
            respond,
        )
    }

    fn start_on(
        name: &str,
        addr: SocketAddr,
        status: u16,
        respond: Handler,
    ) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop2, hits2, healthy2) = (stop.clone(), hits.clone(), healthy.clone());
        let name = name.to_string();
        let name2 = name.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let respond = respond.clone();
                let hits = hits2.clone();
                let name = name2.clone();
                let healthy = healthy2.clone();
                thread::spawn(move || serve(conn, &name, status, &*respond, &hits, &healthy));
            }
        });
        Ok(Backend {
            name,
            addr,
            stop,
            hits,
            healthy,
        })
    }

    /// Makes `GET /health` answer 200 (`true`, the start) or 503, as a health check endpoint
    /// of a task that turns unhealthy and recovers.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// `127.0.0.1:port`, as catalogs and endpoint files write it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Answers requests on one connection (HTTP/1.1 keep-alive) until the peer closes it.
fn serve(
    mut conn: TcpStream,
    name: &str,
    status: u16,
    respond: &(dyn Fn(&Request) -> String + Send + Sync),
    hits: &AtomicU64,
    healthy: &AtomicBool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let raw = String::from_utf8_lossy(&buf[..end]).into_owned();
            let head = raw.to_ascii_lowercase();
            let mut words = raw.split_whitespace();
            let request = Request {
                method: words.next().unwrap_or_default().to_string(),
                path: head.split_whitespace().nth(1).unwrap_or("/").to_string(),
                head: raw.replace("\r\n", "\n"),
            };
            let body = respond(&request);
            buf.drain(..end + 4);
            hits.fetch_add(1, Ordering::Relaxed);
            let close = head.contains("connection: close");
            let status = if request.path == "/health" && !healthy.load(Ordering::Relaxed) {
                503
            } else {
                status
            };
            let resp = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\nx-backend: {name}\r\ncontent-length: {}\r\n{}\r\n{}",
                if status == 200 { "OK" } else { "Failing" },
                body.len(),
                if close { "connection: close\r\n" } else { "" },
                body
            );
            if conn.write_all(resp.as_bytes()).is_err() || close {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag. Briefly: from a namespace where the address
        // is not local, a plain connect would wait minutes for a peer that is not there.
        let _ = TcpStream::connect_timeout(&self.addr, std::time::Duration::from_millis(500));
    }
}
