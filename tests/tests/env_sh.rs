//! `infra/env.sh` with stand-in `terraform` and `aws` commands that record their arguments: the
//! backend key, the variables and the image tags for a branch with and without its own images.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{TempDir, repo_root};

struct Repo {
    dir: TempDir,
    module: PathBuf,
    record: PathBuf,
    stubs: PathBuf,
    home: PathBuf,
    ecr: PathBuf,
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup() -> Repo {
    let dir = TempDir::new("env-sh");
    let root = dir.path().join("repo");
    let module = root.join("infra/stage/services/intdemo");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::copy(repo_root().join("infra/env.sh"), root.join("infra/env.sh")).unwrap();
    std::fs::write(module.join("main.tf"), "# module\n").unwrap();
    git(&root, &["init", "-q", "-b", "develop"]);
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "init"]);
    let stubs = dir.path().join("bin");
    let record = dir.path().join("calls.log");
    let ecr = dir.path().join("ecr");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&ecr).unwrap();
    let stub = |name: &str, body: &str| {
        let path = stubs.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    // `terraform output -raw log_groups` lists two groups, as a root's output does.
    stub(
        "terraform",
        &format!(
            r#"printf '%s\n' "terraform $*" >> {}
if [ "$*" = "output -raw log_groups" ]; then printf '/ecs/prism-test/xds-server\n/ecs/prism-test/node-exporter'; fi"#,
            record.display()
        ),
    );
    // `aws ecr describe-images --repository-name X ...` prints the tags of ecr/X.
    stub(
        "aws",
        &format!(
            r#"printf '%s\n' "aws $*" >> {rec}
if [ "$1 $2" = "ecr describe-images" ]; then
  while [ $# -gt 0 ]; do [ "$1" = --repository-name ] && repo=$2; shift; done
  cat "{ecr}/$repo" 2>/dev/null || true
fi"#,
            rec = record.display(),
            ecr = ecr.display()
        ),
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".secrets.tfvars"), "postgres_password = \"x\"\n").unwrap();
    for c in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        std::fs::write(ecr.join(c), "develop-38-1234567\tdevelop-40-abcdef0\n").unwrap();
    }
    Repo {
        dir,
        module,
        record,
        stubs,
        home,
        ecr,
    }
}

impl Repo {
    /// Runs env.sh; returns the terraform calls.
    fn run(&self, args: &[&str]) -> Vec<String> {
        self.run_all(args)
            .into_iter()
            .filter(|l| l.starts_with("terraform"))
            .collect()
    }

    /// Runs env.sh; returns every terraform and aws call.
    fn run_all(&self, args: &[&str]) -> Vec<String> {
        let _ = std::fs::remove_file(&self.record);
        let path = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(self.module.join("../../../env.sh"))
            .args(args)
            .current_dir(&self.module)
            .env("PATH", path)
            .env("HOME", &self.home)
            .env_remove("TF_STATE_BUCKET")
            .env("AWS_REGION", "us-east-2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "env.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn branch(&self, name: &str) {
        git(
            &self.dir.path().join("repo"),
            &["checkout", "-q", "-b", name],
        );
    }
}

#[test]
fn a_branch_with_its_own_images_uses_the_newest_and_its_own_state() {
    let r = setup();
    r.branch("feature/ATA-123_Thing");
    std::fs::write(
        r.ecr.join("xds-server"),
        "develop-40-abcdef0 feature-ata-123-thing-41-bbbbbbb\tfeature-ata-123-thing-43-ccccccc feature-ata-123-thing-9-ddddddd\n",
    )
    .unwrap();
    let calls = r.run(&["-p"]);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("terraform init"), "{calls:?}");
    assert!(
        calls[0].contains("-backend-config=bucket=atala-cvp"),
        "{}",
        calls[0]
    );
    assert!(
        calls[0].contains("-backend-config=key=infra/stage/services/intdemo/feature-ata-123-thing/terraform.tfstate"),
        "{}",
        calls[0]
    );
    let plan = &calls[1];
    assert!(plan.starts_with("terraform plan"), "{plan}");
    assert!(
        plan.contains("-var env_name=feature-ata-123-thing"),
        "{plan}"
    );
    assert!(
        plan.contains(r#""xds-server"="feature-ata-123-thing-43-ccccccc""#),
        "{plan}"
    );
    assert!(plan.contains(r#""ecs-sd"="develop-40-abcdef0""#), "{plan}");
    assert!(
        plan.contains(&format!("-var-file={}/.secrets.tfvars", r.home.display())),
        "{plan}"
    );
    // Roots read each other's state from the same bucket, in the same region.
    assert!(plan.contains("-var state_bucket=atala-cvp"), "{plan}");
    assert!(plan.contains("-var region=us-east-2"), "{plan}");
}

#[test]
fn a_branch_without_images_falls_back_to_develop_and_names_can_be_given() {
    let r = setup();
    r.branch("experiment");
    let calls = r.run(&["-A", "my-test-env"]);
    assert!(
        calls[0].contains("key=infra/stage/services/intdemo/my-test-env/terraform.tfstate"),
        "{calls:?}"
    );
    let apply = &calls[1];
    assert!(
        apply.starts_with("terraform apply -input=false -auto-approve"),
        "{apply}"
    );
    assert!(apply.contains("-var env_name=my-test-env"), "{apply}");
    assert!(
        apply.contains(r#""xds-server"="develop-40-abcdef0""#),
        "{apply}"
    );
    // Dropping needs no image, so a deployment whose images are gone can still go.
    for c in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        std::fs::write(r.ecr.join(c), "").unwrap();
    }
    let drop = r.run_all(&["-D", "my-test-env"]);
    assert!(
        drop[1].starts_with("terraform destroy -input=false -auto-approve"),
        "{drop:?}"
    );
    assert!(drop[1].contains(r#""envoy"="dropped""#), "{drop:?}");
    assert!(!drop.iter().any(|c| c.starts_with("aws ecr")), "{drop:?}");
    let show = r.run(&["-s", "my-test-env"]);
    assert_eq!(&show[1..], ["terraform state list", "terraform output"]);
}

#[test]
fn watch_follows_every_log_group_the_deployment_lists() {
    let r = setup();
    let calls = r.run_all(&["-w", "prism-test"]);
    assert!(calls[0].starts_with("terraform init"), "{calls:?}");
    assert_eq!(calls[1], "terraform output -raw log_groups");
    let mut tails: Vec<&String> = calls.iter().filter(|c| c.starts_with("aws logs")).collect();
    tails.sort();
    assert_eq!(
        tails,
        [
            "aws logs tail /ecs/prism-test/node-exporter --follow --region us-east-2",
            "aws logs tail /ecs/prism-test/xds-server --follow --region us-east-2",
        ]
    );
}

#[test]
fn a_long_branch_name_is_cut_to_24_characters_without_a_trailing_hyphen() {
    let r = setup();
    r.branch("bugfix/abcdefghijklmnop-q");
    let calls = r.run(&["-p"]);
    assert!(
        calls[0]
            .contains("key=infra/stage/services/intdemo/bugfix-abcdefghijklmnop/terraform.tfstate"),
        "{calls:?}"
    );
    assert!(
        calls[1].contains("-var env_name=bugfix-abcdefghijklmnop "),
        "{}",
        calls[1]
    );
}

#[test]
fn help_is_asked_for_and_an_unknown_option_is_named_once() {
    let env_sh = repo_root().join("infra/env.sh");
    let help = Command::new("bash")
        .arg(&env_sh)
        .arg("-h")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("-p  plan") && text.contains("-h  this help"),
        "{text}"
    );
    assert!(
        help.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    let bad = Command::new("bash")
        .arg(&env_sh)
        .arg("-x")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.matches("-x").count(), 1, "{err}");
    assert!(err.starts_with("env.sh: unknown option -x"), "{err}");
}
