//! moto_server, the AWS API emulator, as a process on a loopback port.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{TempDir, free_port, http, repo_root, wait_for};

/// The ECS Anywhere host of the ECS fixtures, an SSM managed instance at 127.0.0.1.
pub const MANAGED_INSTANCE: &str = "mi-0123456789abcdef0";

/// The credentials and region every test client uses against moto.
pub const REGION: &str = "us-east-1";

/// A running moto_server.
#[derive(Debug)]
pub struct Moto {
    /// The process.
    pub process: ChildGuard,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The moto_server binary `scripts/setup.sh` installs (or `$MOTO_SERVER`).
pub fn moto_bin() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/moto/bin/moto_server"))
}

impl Moto {
    /// Starts moto on a free port (or `port`) and waits until it answers.
    pub fn start(dir: &TempDir, port: u16) -> Moto {
        let port = if port == 0 { free_port() } else { port };
        let bin = moto_bin();
        assert!(
            bin.exists(),
            "{} is missing: scripts/setup.sh installs it",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let process = ChildGuard::spawn(cmd, dir.path().join(format!("moto-{port}.log")));
        wait_for("moto_server to answer", Duration::from_secs(30), || {
            http::get(port, "/moto-api/data.json", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
        Moto { process, port }
    }

    /// moto with the ECS fields it leaves out filled in (`tests/fixtures/moto_ecs.py`); awsvpc
    /// tasks get the address `eni_ip`.
    pub fn start_ecs(dir: &TempDir, port: u16, eni_ip: &str) -> Moto {
        let managed = format!("{MANAGED_INSTANCE}=127.0.0.1");
        Self::start_fixture(
            dir,
            port,
            "moto_ecs.py",
            &[
                ("FIXTURE_ENI_IP", eni_ip),
                ("FIXTURE_MANAGED_INSTANCES", &managed),
            ],
        )
    }

    /// moto with AWS Private CA and ACM private certificates as AWS issues them
    /// (`tests/fixtures/moto_pca.py`: API passthrough, validity, certificates signed by the CA).
    pub fn start_pca(dir: &TempDir, port: u16) -> Moto {
        Self::start_fixture(dir, port, "moto_pca.py", &[])
    }

    /// moto with the App Mesh API as AWS answers it (`tests/fixtures/moto_appmesh.py`: virtual
    /// services, epoch timestamps, the mesh's ARN and owner, specs as written).
    pub fn start_appmesh(dir: &TempDir, port: u16) -> Moto {
        Self::start_fixture(dir, port, "moto_appmesh.py", &[])
    }

    /// [`Moto::start_appmesh`] whose lists answer `page_size` items a page (AWS's default is
    /// 100), so a small mesh spans several pages.
    pub fn start_appmesh_paged(dir: &TempDir, page_size: usize) -> Moto {
        let size = page_size.to_string();
        Self::start_fixture(
            dir,
            0,
            "moto_appmesh.py",
            &[("MOTO_APPMESH_PAGE_SIZE", size.as_str())],
        )
    }

    /// moto in-process in fixture `script` (tests/fixtures/), which serves on the port it is
    /// given.
    fn start_fixture(dir: &TempDir, port: u16, script: &str, env: &[(&str, &str)]) -> Moto {
        let port = if port == 0 { free_port() } else { port };
        let python = repo_root().join(".venv/moto/bin/python");
        let mut cmd = Command::new(python);
        cmd.arg(repo_root().join("tests/fixtures").join(script))
            .arg(port.to_string())
            .envs(env.iter().copied());
        let process = ChildGuard::spawn(cmd, dir.path().join(format!("moto-{script}-{port}.log")));
        wait_for(
            &format!("moto ({script}) to answer"),
            Duration::from_secs(30),
            || {
                http::get(port, "/moto-api/data.json", &[])
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        Moto { process, port }
    }

    /// Runs a fixture script (tests/fixtures/NAME) with moto's Python, against this moto.
    pub fn fixture(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(repo_root().join(".venv/moto/bin/python"))
            .arg(repo_root().join("tests/fixtures").join(name))
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("the fixture runs");
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points the toolkit's binaries (and any AWS SDK) at this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        Self::env_at(self.port)
    }

    /// The environment that points the toolkit's binaries at a moto on `port`, which may not
    /// be started yet (to see what they do while AWS cannot be reached).
    pub fn env_at(port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            // DiscoverInstances goes to `data-` + host: a name, which /etc/hosts maps to loopback.
            (
                "AWS_ENDPOINT_URL_SERVICEDISCOVERY",
                format!("http://moto.test:{port}"),
            ),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// An S3 client for the test itself.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}
