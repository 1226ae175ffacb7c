//! A stand-in for an AWS endpoint that forwards to moto, or answers `ThrottlingException` (the
//! JSON-protocol error of Cloud Map, ECS and most APIs) while told to.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// The stand-in.
pub struct Throttler {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// While true, every request is answered with ThrottlingException.
    pub throttle: Arc<AtomicBool>,
}

impl Throttler {
    /// Starts forwarding to moto on `moto_port`.
    pub fn start(moto_port: u16) -> Throttler {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttle = Arc::new(AtomicBool::new(false));
        let flag = throttle.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let _ = forward(conn, moto_port, &flag);
                });
            }
        });
        Throttler { port, throttle }
    }
}

fn forward(mut conn: TcpStream, moto_port: u16, throttle: &AtomicBool) -> std::io::Result<()> {
    loop {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte)? == 0 {
                return Ok(());
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body)?;
        if throttle.load(Ordering::Relaxed) {
            let msg = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-errortype: ThrottlingException\r\ncontent-length: {}\r\n\r\n",
                msg.len()
            );
            conn.write_all(resp.as_bytes())?;
            conn.write_all(msg)?;
            continue;
        }
        let mut upstream = TcpStream::connect(("127.0.0.1", moto_port))?;
        let head =
            String::from_utf8_lossy(&buf).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
        upstream.write_all(head.as_bytes())?;
        upstream.write_all(&body)?;
        let mut resp = Vec::new();
        upstream.read_to_end(&mut resp)?;
        conn.write_all(&resp)?;
        return Ok(()); // moto's answer says `connection: close`
    }
}
