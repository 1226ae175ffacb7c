//! A TCP proxy that adds network latency, for the benchmarks: AWS answers each call tens of
//! milliseconds after it is sent, many calls at once, where moto on loopback answers at once.
//!
//! Each connection is accepted at once and forwarded on its own connection to the target; every
//! chunk read in either direction is written on `latency / 2` after it was read, so a request and
//! its response take `latency` more than without the proxy (the round trip), however many are in
//! flight and however large they are: nothing is rate-limited or queued behind another
//! connection. A new connection costs one round trip more before its first byte goes through, as
//! a TCP handshake does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A running proxy; it stops when dropped.
pub struct LatencyProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Forwards 127.0.0.1:`port` (the returned one) to 127.0.0.1:`target`, adding `latency` to
    /// each round trip.
    pub fn start(target: u16, latency: Duration) -> LatencyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a tokio listener");
                let accept = async {
                    while let Ok((conn, _)) = listener.accept().await {
                        tokio::spawn(proxy(conn, target, latency));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        LatencyProxy {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn proxy(client: TcpStream, target: u16, latency: Duration) {
    let handshake = Instant::now() + latency;
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let one_way = latency / 2;
    tokio::join!(
        delayed_copy(client_read, upstream_write, one_way, handshake),
        delayed_copy(upstream_read, client_write, one_way, Instant::now()),
    );
}

/// Copies `from` to `to`, each chunk `delay` after it was read, or `delay` after `not_before`
/// when it was read earlier (the first request of a connection waits out the handshake, then
/// travels); reading goes on meanwhile, so a later chunk waits for its own delay only.
async fn delayed_copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now().max(not_before) + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once everything read is written.
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// The benchmarks' command line as `(flag, value)` pairs: every flag takes a value.
pub fn flag_values() -> anyhow::Result<Vec<(String, String)>> {
    let mut args = std::env::args().skip(1);
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            anyhow::bail!("{flag} needs a value");
        };
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// Parses `0,20,50` (milliseconds) for the benchmarks' `--latency-ms`.
pub fn parse_list(text: &str) -> anyhow::Result<Vec<u64>> {
    text.split(',')
        .map(|s| {
            s.trim().parse::<u64>().map_err(|e| {
                anyhow::anyhow!("--latency-ms {text:?}: {s:?} is not milliseconds: {e}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on loopback; with `together`, each connection answers only once that
    /// many connections have sent something.
    fn echo(together: Option<usize>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let barrier = together.map(|n| std::sync::Arc::new(std::sync::Barrier::new(n)));
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if let Some(b) = &barrier {
                            b.wait();
                        }
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn round_trip(conn: &mut std::net::TcpStream, msg: &str) {
        conn.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }

    #[test]
    fn a_round_trip_takes_the_latency_more() {
        let latency = Duration::from_millis(200);
        let proxy = LatencyProxy::start(echo(None), latency);
        // The first round trip pays for the handshake too; a second one only the latency.
        let started = std::time::Instant::now();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        round_trip(&mut conn, "hello");
        assert!(started.elapsed() >= latency * 2, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        round_trip(&mut conn, "again");
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    }

    #[test]
    fn connections_go_through_at_once() {
        // The echo server answers only when all ten requests are in: a proxy that forwarded
        // one connection at a time would never see an answer.
        let proxy = LatencyProxy::start(echo(Some(10)), Duration::from_millis(50));
        let clients: Vec<_> = (0..10)
            .map(|i| {
                let port = proxy.port;
                std::thread::spawn(move || {
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    round_trip(&mut c, &format!("client{i}"));
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    }

    #[test]
    fn the_latency_list_is_milliseconds() {
        assert_eq!(parse_list("0, 20,50").unwrap(), [0, 20, 50]);
        assert!(
            parse_list("20ms")
                .unwrap_err()
                .to_string()
                .contains("\"20ms\"")
        );
    }
}
