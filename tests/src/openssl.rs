//! Outside TLS clients and tools the tests use to see what a user would: curl over HTTPS and
//! openssl's view of a certificate.

use std::path::Path;
use std::process::Command;

/// `curl https://backend.test:PORT/` (resolved to 127.0.0.1) trusting `ca` (none: the system's
/// roots), presenting the client certificate in `client` (a directory holding certificate.pem
/// and private_key.pem) when given: the body, or `None` when the handshake or request failed.
pub fn curl(port: u16, ca: Option<&Path>, client: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("backend.test:{port}:127.0.0.1"))
        .arg(format!("https://backend.test:{port}/"));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some(c) = client {
        cmd.arg("--cert")
            .arg(c.join("certificate.pem"))
            .arg("--key")
            .arg(c.join("private_key.pem"));
    }
    let out = cmd.output().expect("curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What `openssl x509 -text` says of a certificate file.
pub fn x509_text(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(path)
        .output()
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
