//! What the identity tests set up on the AWS side (moto's IAM and STS): a task role's temporary
//! credentials, the environment a task has with them, and a control plane that requires
//! identities.

use std::path::Path;
use std::process::{Command, Output};

use crate::{Moto, TempDir, XdsServer};

/// Temporary credentials of an assumed role, as an ECS task has them.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// AWS_ACCESS_KEY_ID.
    pub key: String,
    /// AWS_SECRET_ACCESS_KEY.
    pub secret: String,
    /// AWS_SESSION_TOKEN.
    pub token: String,
}

/// Assumes role `role` (created in moto if missing) as session `session`
/// (`tests/fixtures/iam_identity.py role`).
pub fn assume(moto: &Moto, role: &str, session: &str) -> Credentials {
    let out = moto.fixture("iam_identity.py", &["role", role, session]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("credentials JSON");
    let field = |k: &str| v[k].as_str().expect("credential field").to_string();
    Credentials {
        key: field("AccessKeyId"),
        secret: field("SecretAccessKey"),
        token: field("SessionToken"),
    }
}

/// moto's environment with `creds` in place of the test's own.
pub fn env_with(moto: &Moto, creds: &Credentials) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && *k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push(("AWS_ACCESS_KEY_ID", creds.key.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY", creds.secret.clone()));
    env.push(("AWS_SESSION_TOKEN", creds.token.clone()));
    env
}

/// `xds-server identity` against `server`'s xDS port, checking it with `ca_file`, writing to
/// `out`, with the task environment `env`.
pub fn identity_cmd(
    server: &XdsServer,
    ca_file: &Path,
    out: &Path,
    env: &[(&str, String)],
) -> Command {
    let mut cmd = Command::new(crate::workspace_bin("xds-server"));
    cmd.args([
        "identity",
        "--xds",
        &format!("127.0.0.1:{}", server.xds_port),
    ])
    .arg("--out")
    .arg(out)
    .arg("--xds-ca")
    .arg(ca_file)
    .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

/// `xds-server identity` once (at most 60 s), with `extra` flags.
pub fn identity(
    server: &XdsServer,
    ca_file: &Path,
    out: &Path,
    env: &[(&str, String)],
    extra: &[&str],
) -> Output {
    identity_cmd(server, ca_file, out, env)
        .args(extra)
        .args(["--timeout", "60s"])
        .output()
        .expect("xds-server identity runs")
}

/// A control plane on `catalog` with its CA at `ca` (`file:DIR` or `secretsmanager:NAME`), TLS
/// for 127.0.0.1, `--require-identity` and STS in moto; ready when returned.
pub fn plane(dir: &TempDir, moto: &Moto, catalog: &Path, ca: &str, extra: &[&str]) -> XdsServer {
    let mut flags = vec![
        "--ca",
        ca,
        "--xds-tls",
        "--xds-tls-name",
        "127.0.0.1",
        "--require-identity",
    ];
    flags.extend_from_slice(extra);
    let server = XdsServer::start_env(dir, catalog.as_os_str(), 0, &flags, &moto.env());
    server.wait_ready();
    server
}

/// A CA in `dir` (`certificate.pem`, `private_key.pem`) as infra/modules/xds-server makes it
/// with Terraform's tls provider (`tls_private_key` ECDSA P256, its `private_key_pem_pkcs8`;
/// `tls_self_signed_cert` with `is_ca_certificate`, which adds the RFC 5280 subject key id, and
/// `allowed_uses` cert_signing, crl_signing, digital_signature), made here with openssl.
pub fn ca_as_terraform_makes_it(dir: &Path) {
    std::fs::create_dir_all(dir).expect("CA directory");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nx509_extensions = ca\nprompt = no\n\
         [dn]\nCN = xds-server CA prism-test\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,digitalSignature,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .expect("openssl config");
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.pem",
    ]);
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "sec1.pem",
        "-out",
        "private_key.pem",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "private_key.pem",
        "-sha256",
        "-days",
        "3650",
        "-config",
        "ca.cnf",
        "-out",
        "certificate.pem",
    ]);
}
