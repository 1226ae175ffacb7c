//! `infra/env.sh` with stand-in `terraform` and `aws` commands that record their arguments: the
//! backend key, the variables and the image tags for a branch with and without its own images.

use std::collections::BTreeSet;
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
    sm: PathBuf,
    tf_env: PathBuf,
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
    for f in [
        "env.sh",
        "build-images.sh",
        "docker/Dockerfile",
        "ci/apply-branch.sh",
        "ci/drop-deleted-branches.sh",
    ] {
        std::fs::create_dir_all(root.join("infra").join(f).parent().unwrap()).unwrap();
        std::fs::copy(
            repo_root().join("infra").join(f),
            root.join("infra").join(f),
        )
        .unwrap();
    }
    // env.sh looks images up only for a root that reads var.image_tags[...].
    std::fs::write(
        module.join("main.tf"),
        "locals { image = var.image_tags[\"envoy\"] }\nvariable \"grafana_admin_password\" {}\nvariable \"postgres_password\" {}\n",
    )
    .unwrap();
    // A root that runs no image, as base/database.
    let database = root.join("infra/stage/base/database");
    std::fs::create_dir_all(&database).unwrap();
    std::fs::write(
        database.join("main.tf"),
        "module \"database\" {}\noutput \"endpoint\" {}\noutput \"credentials_command\" {}\n",
    )
    .unwrap();
    git(&root, &["init", "-q", "-b", "develop"]);
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "init"]);
    let stubs = dir.path().join("bin");
    let record = dir.path().join("calls.log");
    let ecr = dir.path().join("ecr");
    // Secrets Manager: sm/list names the secrets, sm/<name with / as %> holds each value.
    let sm = dir.path().join("sm");
    std::fs::create_dir_all(&sm).unwrap();
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&ecr).unwrap();
    let stub = |name: &str, body: &str| {
        let path = stubs.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    };
    // `terraform output -raw log_groups` lists two groups, as a root's output does.
    // It keeps the TF_VAR_* variables it was given in tf-env.log.
    let tf_env = dir.path().join("tf-env.log");
    stub(
        "terraform",
        &format!(
            r#"printf '%s\n' "terraform $*" >> {rec}
env | grep '^TF_VAR_' | sort >> {env} || true
case "$*" in
  "output -raw log_groups") printf '/ecs/prism-test/xds-server\n/ecs/prism-test/node-exporter' ;;
  "output -raw endpoint") printf 'prism-test.c0ffee.us-east-2.rds.amazonaws.com:5432' ;;
  "output -raw credentials_command") printf "aws secretsmanager get-secret-value --secret-id 'arn:db' --query SecretString --output text" ;;
esac"#,
            rec = record.display(),
            env = tf_env.display()
        ),
    );
    // `aws ecr describe-images --repository-name X ...` prints the tags of ecr/X; with
    // `--image-ids imageTag=T` it fails unless T is among them, as ECR does.
    stub(
        "aws",
        &format!(
            r#"printf '%s\n' "aws $*" >> {rec}
case "$1 $2" in
  "ecr describe-images")
    tag=""
    while [ $# -gt 0 ]; do
      [ "$1" = --repository-name ] && repo=$2
      [ "$1" = --image-ids ] && tag=${{2#imageTag=}}
      shift
    done
    if [ -n "$tag" ]; then tr '\t ' '\n\n' < "{ecr}/$repo" | grep -qx "$tag"; exit; fi
    cat "{ecr}/$repo" 2>/dev/null || true ;;
  "secretsmanager list-secrets") cat "{sm}/list" 2>/dev/null || true ;;
  "secretsmanager get-secret-value")
    while [ $# -gt 0 ]; do [ "$1" = --secret-id ] && id=$2; shift; done
    cat "{sm}/$(printf '%s' "$id" | tr / %)" ;;
  "s3api list-objects-v2") cat "{ecr}/../state-keys" 2>/dev/null || echo None ;;
  "sts get-caller-identity") echo 111122223333 ;;
  "ecr get-login-password") echo ecr-login-token-1 ;;
esac"#,
            rec = record.display(),
            ecr = ecr.display(),
            sm = sm.display()
        ),
    );
    // `docker push R/X:T` adds T to ecr/X, as the registry would; `docker login` keeps its stdin.
    stub(
        "docker",
        &format!(
            r#"printf '%s\n' "docker $*" >> {rec}
case "$1" in
  login) printf 'stdin %s\n' "$(cat)" >> {rec} ;;
  push) ref=${{2##*/}}; printf ' %s' "${{ref#*:}}" >> "{ecr}/${{ref%%:*}}" ;;
esac"#,
            rec = record.display(),
            ecr = ecr.display()
        ),
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".secrets.tfvars"),
        "postgres_password = \"tfvars-s3cr3t\"\n",
    )
    .unwrap();
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
        sm,
        tf_env,
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
        self.run_in(&self.module, args).0
    }

    /// Runs env.sh from the root `dir`; returns every terraform and aws call, and its output
    /// (stdout and stderr).
    fn run_in(&self, dir: &Path, args: &[&str]) -> (Vec<String>, String) {
        self.run_script(&dir.join("../../../env.sh"), dir, args)
    }

    /// Runs `script` from `dir` with the stand-ins first on PATH; returns every stand-in call and
    /// the script's output.
    fn run_script(&self, script: &Path, dir: &Path, args: &[&str]) -> (Vec<String>, String) {
        let (ok, calls, output) = self.try_script(script, dir, args, &[]);
        assert!(ok, "{} {args:?}: {output}", script.display());
        (calls, output)
    }

    /// Runs `script` with the extra environment `env`; returns whether it succeeded, every
    /// stand-in call and its output.
    fn try_script(
        &self,
        script: &Path,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, Vec<String>, String) {
        let _ = std::fs::remove_file(&self.record);
        let _ = std::fs::remove_file(&self.tf_env);
        let path = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(script)
            .args(args)
            .current_dir(dir)
            .env("PATH", path)
            .env("HOME", &self.home)
            .env_remove("TF_STATE_BUCKET")
            .env("AWS_REGION", "us-east-2")
            .env_remove("BRANCH")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), calls, output)
    }

    fn root(&self, rel: &str) -> PathBuf {
        self.dir.path().join("repo/infra").join(rel)
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
        apply.starts_with("terraform apply -input=false -lock-timeout=15m -auto-approve"),
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
    let destroy = drop
        .iter()
        .find(|c| c.starts_with("terraform destroy"))
        .unwrap_or_else(|| panic!("{drop:?}"));
    assert!(
        destroy.starts_with("terraform destroy -input=false -lock-timeout=15m -auto-approve"),
        "{drop:?}"
    );
    assert!(destroy.contains(r#""envoy"="dropped""#), "{drop:?}");
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

#[test]
fn the_database_root_gets_its_state_key_no_image_lookup_and_no_password_on_the_command_line() {
    let r = setup();
    let database = r.root("stage/base/database");
    let (calls, output) = r.run_in(&database, &["-A", "prism-test"]);
    let terraform: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("terraform"))
        .collect();
    assert_eq!(terraform.len(), 2, "{calls:?}");
    assert!(
        terraform[0]
            .contains("-backend-config=key=infra/stage/base/database/prism-test/terraform.tfstate"),
        "{}",
        terraform[0]
    );
    let apply = terraform[1];
    assert!(
        apply.starts_with("terraform apply -input=false -lock-timeout=15m -auto-approve"),
        "{apply}"
    );
    assert!(apply.contains("-var env_name=prism-test"), "{apply}");
    // It runs no image: no tag is looked up (the repositories may not even exist yet).
    assert!(apply.contains("-var image_tags={}"), "{apply}");
    assert!(!calls.iter().any(|c| c.starts_with("aws ecr")), "{calls:?}");
    // ~/.secrets.tfvars still reaches terraform as a file, never its values as arguments.
    assert!(
        apply.contains(&format!("-var-file={}/.secrets.tfvars", r.home.display())),
        "{apply}"
    );
    for call in &calls {
        assert!(
            !call.contains("password") && !call.contains("tfvars-s3cr3t"),
            "a secret on the command line: {call}"
        );
    }
    assert!(!output.contains("tfvars-s3cr3t"), "{output}");
}

fn head(repo: &Path) -> String {
    rev_parse(repo, &["--short=7", "HEAD"])
}

/// The whole commit id, as `--version` names it.
fn full_head(repo: &Path) -> String {
    rev_parse(repo, &["HEAD"])
}

fn rev_parse(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("rev-parse")
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// infra/build-images.sh with stand-in docker and aws: it builds every image the Dockerfile
/// targets, logs in through stdin, pushes `<branch>-<revision count>-<sha>`, which env.sh then
/// deploys for that branch; a tag already pushed is not pushed again (tags are immutable).
#[test]
fn build_images_pushes_every_target_with_the_tag_env_sh_deploys() {
    let r = setup();
    let repo = r.dir.path().join("repo");
    r.branch("Infra1");
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "three"]);
    let tag = format!("infra1-3-{}", head(&repo));
    let script = repo.join("infra/build-images.sh");
    let (calls, output) = r.run_script(&script, &r.module, &[]);
    let registry = "111122223333.dkr.ecr.us-east-2.amazonaws.com";
    let docker: Vec<&String> = calls.iter().filter(|c| c.starts_with("docker")).collect();
    let mut expected = vec![
        format!("docker login --username AWS --password-stdin {registry}"),
        "stdin ecr-login-token-1".to_string(),
    ];
    for image in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        expected.push(format!(
            "docker build -f {root}/infra/docker/Dockerfile --target {image} --build-arg TOOLKIT_COMMIT={commit} -t {registry}/{image}:{tag} {root}",
            root = repo.display(),
            commit = full_head(&repo)
        ));
        expected.push(format!("docker push {registry}/{image}:{tag}"));
    }
    let mut got: Vec<String> = docker.iter().map(|c| c.to_string()).collect();
    // The stdin line follows the login call.
    if let Some(i) = calls.iter().position(|c| c.starts_with("stdin ")) {
        got.insert(1, calls[i].clone());
    }
    assert_eq!(got, expected, "{output}");
    // The login password never was an argument.
    assert!(
        !calls
            .iter()
            .any(|c| !c.starts_with("stdin") && c.contains("ecr-login-token-1")),
        "{calls:?}"
    );
    assert!(!output.contains("ecr-login-token-1"), "{output}");

    // env.sh on that branch deploys exactly what was pushed.
    let plan = r.run(&["-p"]);
    for image in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        assert!(
            plan[1].contains(&format!("\"{image}\"=\"{tag}\"")),
            "{}",
            plan[1]
        );
    }

    // The same commit again: nothing built or pushed, and it says why.
    let (again, output) = r.run_script(&script, &r.module, &[]);
    assert!(
        !again
            .iter()
            .any(|c| c.starts_with("docker build") || c.starts_with("docker push")),
        "{again:?}"
    );
    assert!(
        output.contains(&format!("envoy:{tag} is already in {registry}")),
        "{output}"
    );
}

#[test]
fn build_images_builds_only_what_it_is_asked_and_refuses_unknown_targets() {
    let r = setup();
    let repo = r.dir.path().join("repo");
    let script = repo.join("infra/build-images.sh");
    // -n: build only, no AWS at all; BRANCH names the branch of a detached CI checkout.
    let (ok, calls, output) =
        r.try_script(&script, &repo, &["-n", "envoy"], &[("BRANCH", "test2")]);
    assert!(ok, "{output}");
    let tag = format!("test2-1-{}", head(&repo));
    assert_eq!(
        calls,
        [format!(
            "docker build -f {root}/infra/docker/Dockerfile --target envoy --build-arg TOOLKIT_COMMIT={commit} -t local/envoy:{tag} {root}",
            root = repo.display(),
            commit = full_head(&repo)
        )]
    );
    let (ok, calls, output) = r.try_script(&script, &repo, &["-n", "runtime"], &[]);
    assert!(!ok && calls.is_empty(), "{calls:?}");
    assert!(
        output.contains("no target runtime")
            && output.contains("xds-server s3-config-loader ecs-sd envoy"),
        "{output}"
    );
}

impl Repo {
    /// Puts a secret into the stand-in Secrets Manager.
    fn secret(&self, name: &str, value: &str) {
        let list = self.sm.join("list");
        let mut names = std::fs::read_to_string(&list).unwrap_or_default();
        names.push_str(name);
        names.push('\t');
        std::fs::write(list, names).unwrap();
        std::fs::write(self.sm.join(name.replace('/', "%")), value).unwrap();
    }

    /// The TF_VAR_* variables terraform was started with.
    fn tf_env(&self) -> BTreeSet<String> {
        std::fs::read_to_string(&self.tf_env)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

#[test]
fn secrets_come_from_the_tfvars_file_and_secrets_manager_and_env_sh_says_which_from_where() {
    let r = setup();
    r.secret("infra/grafana_admin_password", "sm-s3cr3t-grafana");
    r.secret("infra/postgres_password", "sm-s3cr3t-postgres");
    // The root declares no such variable: not even read.
    r.secret("infra/bitcoind_password", "sm-s3cr3t-bitcoind");
    let (calls, output) = r.run_in(&r.module, &["-p", "develop"]);
    let tf_env = r.tf_env();
    assert!(
        tf_env.contains("TF_VAR_grafana_admin_password=sm-s3cr3t-grafana"),
        "{tf_env:?}"
    );
    // The file's postgres_password wins (terraform reads -var-file over TF_VAR_*; env.sh does not
    // even fetch the other).
    assert!(
        !tf_env
            .iter()
            .any(|v| v.starts_with("TF_VAR_postgres_password")
                || v.starts_with("TF_VAR_bitcoind_password")),
        "{tf_env:?}"
    );
    let reads: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("aws secretsmanager get-secret-value"))
        .collect();
    assert_eq!(reads.len(), 1, "{calls:?}");
    assert!(
        reads[0].contains("--secret-id infra/grafana_admin_password"),
        "{reads:?}"
    );
    let file = format!("{}/.secrets.tfvars", r.home.display());
    assert!(
        output.contains(&format!("env.sh: secrets from {file}: postgres_password\n")),
        "{output}"
    );
    assert!(
        output.contains("env.sh: secrets from Secrets Manager (infra/): grafana_admin_password\n"),
        "{output}"
    );
    assert!(
        output.contains(&format!(
            "env.sh: also in Secrets Manager, taken from {file}: postgres_password\n"
        )),
        "{output}"
    );
    for value in ["sm-s3cr3t", "tfvars-s3cr3t"] {
        assert!(!output.contains(value), "a secret printed: {output}");
        assert!(
            !calls.iter().any(|c| c.contains(value)),
            "a secret on a command line: {calls:?}"
        );
    }

    // Without the file, both come from Secrets Manager and no -var-file is passed.
    std::fs::remove_file(r.home.join(".secrets.tfvars")).unwrap();
    let (calls, output) = r.run_in(&r.module, &["-p", "develop"]);
    let tf_env = r.tf_env();
    assert!(
        tf_env.contains("TF_VAR_postgres_password=sm-s3cr3t-postgres"),
        "{tf_env:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("-var-file")), "{calls:?}");
    assert!(
        output.contains(
            "env.sh: secrets from Secrets Manager (infra/): grafana_admin_password, postgres_password\n"
        ),
        "{output}"
    );
    assert!(!output.contains("sm-s3cr3t"), "{output}");
}

#[test]
fn show_on_the_database_says_where_it_is_and_how_to_get_credentials_not_the_password() {
    let r = setup();
    let (calls, output) = r.run_in(&r.root("stage/base/database"), &["-s", "prism-test"]);
    assert!(
        output.contains("database: prism-test.c0ffee.us-east-2.rds.amazonaws.com:5432\n"),
        "{output}"
    );
    assert!(
        output.contains("credentials: aws secretsmanager get-secret-value --secret-id 'arn:db'"),
        "{output}"
    );
    // env.sh itself reads no secret to show it.
    assert!(!calls.iter().any(|c| c.starts_with("aws")), "{calls:?}");
}

/// The CI's scripts: apply-branch.sh applies the service roots for the branch CI names;
/// drop-deleted-branches.sh drops exactly the CI-named environments whose branch is gone.
#[test]
fn ci_applies_the_branch_and_drops_only_environments_of_deleted_ci_branches() {
    let r = setup();
    let repo = r.dir.path().join("repo");
    // CI builds and pushes the images first (apply-branch.sh deploys those).
    let (ok, _, output) = r.try_script(
        &repo.join("infra/build-images.sh"),
        &repo,
        &[],
        &[("BRANCH", "infra1")],
    );
    assert!(ok, "{output}");
    let (calls, _) = {
        let (ok, calls, output) = r.try_script(
            &repo.join("infra/ci/apply-branch.sh"),
            &repo,
            &[],
            &[("BRANCH", "infra1")],
        );
        assert!(ok, "{output}");
        (calls, output)
    };
    let terraform: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("terraform"))
        .collect();
    assert!(
        terraform[0].contains("key=infra/stage/services/intdemo/infra1/terraform.tfstate"),
        "{terraform:?}"
    );
    assert!(
        terraform[1].starts_with("terraform apply -input=false")
            && terraform[1].contains(" -auto-approve ")
            && terraform[1].contains("-var env_name=infra1 "),
        "{terraform:?}"
    );
    // CI marks the environment it made as its own.
    assert!(
        calls.iter().any(|c| c.starts_with("aws s3api put-object")
            && c.contains("--key infra/stage/services/intdemo/infra1/made-by-ci")),
        "{calls:?}"
    );

    // origin has develop and infra1; the bucket has those, two gone CI branches and a hand-named one.
    let origin = r.dir.path().join("origin.git");
    git(
        r.dir.path(),
        &["init", "-q", "--bare", origin.to_str().unwrap()],
    );
    git(
        &repo,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    git(
        &repo,
        &["push", "-q", "origin", "develop", "develop:infra1"],
    );
    // CI made develop, infra1, infra2 and test-old; test-by-hand was made by hand under a name
    // like CI's, and is no CI environment whatever its branch.
    let mut keys: Vec<String> = [
        "develop",
        "infra1",
        "infra2",
        "test-old",
        "my-test-env",
        "test-by-hand",
    ]
    .iter()
    .map(|n| format!("infra/stage/services/intdemo/{n}/terraform.tfstate"))
    .collect();
    keys.extend(
        ["develop", "infra1", "infra2", "test-old"]
            .iter()
            .map(|n| format!("infra/stage/services/intdemo/{n}/made-by-ci")),
    );
    std::fs::write(r.dir.path().join("state-keys"), keys.join("\t")).unwrap();
    let script = repo.join("infra/ci/drop-deleted-branches.sh");
    let (ok, calls, output) = r.try_script(&script, &repo, &[], &[]);
    assert!(ok, "{output}");
    let destroyed: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("terraform destroy"))
        .collect();
    assert_eq!(destroyed.len(), 2, "{calls:?}");
    assert!(
        destroyed[0].contains("-auto-approve") && destroyed[0].contains("-var env_name=infra2 ")
    );
    assert!(
        destroyed[1].contains("-var env_name=test-old "),
        "{destroyed:?}"
    );
    assert!(
        output.contains("dropping stage/services/intdemo infra2 (its branch is gone)"),
        "{output}"
    );
    assert!(!output.contains("test-by-hand"), "{output}");
    // A dropped environment loses its mark.
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("aws s3api delete-object")
                && c.contains("--key infra/stage/services/intdemo/infra2/made-by-ci")),
        "{calls:?}"
    );
    // DRY_RUN only says so.
    let (ok, calls, output) = r.try_script(&script, &repo, &[], &[("DRY_RUN", "1")]);
    assert!(ok, "{output}");
    assert!(
        !calls.iter().any(|c| c.starts_with("terraform")),
        "{calls:?}"
    );
    assert!(
        output.contains("would drop stage/services/intdemo test-old"),
        "{output}"
    );
}

/// After a rebase a branch can count fewer revisions than an older build of it: CI deploys the
/// tag build-images.sh pushed for this commit (IMAGE_TAG), not the newest by revision count.
#[test]
fn ci_deploys_the_images_it_built_even_after_a_rebase_and_locks_the_state() {
    let r = setup();
    let repo = r.dir.path().join("repo");
    r.branch("infra1");
    // Before the rebase, the branch's build 50 was pushed.
    for c in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        std::fs::write(r.ecr.join(c), "develop-40-abcdef0\tinfra1-50-aaaaaaa\n").unwrap();
    }
    let tag = format!("infra1-1-{}", head(&repo));
    let ci = [("BRANCH", "infra1")];
    let (ok, calls, output) = r.try_script(&repo.join("infra/build-images.sh"), &repo, &[], &ci);
    assert!(ok, "{output}");
    assert!(
        calls.iter().any(|c| c.ends_with(&format!("/envoy:{tag}"))),
        "{calls:?}"
    );
    // -t prints that tag and does nothing else.
    let (ok, calls, output) =
        r.try_script(&repo.join("infra/build-images.sh"), &repo, &["-t"], &ci);
    assert!(ok && calls.is_empty(), "{calls:?} {output}");
    assert_eq!(output.trim(), tag);

    let (ok, calls, output) = r.try_script(&repo.join("infra/ci/apply-branch.sh"), &repo, &[], &ci);
    assert!(ok, "{output}");
    let terraform: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("terraform"))
        .collect();
    // Two applies of one environment never run at once: the state is locked.
    assert!(
        terraform[0].starts_with("terraform init")
            && terraform[0].contains("-backend-config=use_lockfile=true"),
        "{terraform:?}"
    );
    // A lock held by another run (a branch of the same 24-character name) is waited for.
    assert!(
        terraform[1].contains(" -lock-timeout=15m "),
        "{terraform:?}"
    );
    for c in ["xds-server", "s3-config-loader", "ecs-sd", "envoy"] {
        assert!(
            terraform[1].contains(&format!("\"{c}\"=\"{tag}\"")),
            "{}",
            terraform[1]
        );
    }
    assert!(
        !terraform[1].contains("infra1-50-aaaaaaa"),
        "{}",
        terraform[1]
    );
    // By hand (no IMAGE_TAG), env.sh still takes the newest by revision count.
    let plan = r.run(&["-p"]);
    assert!(
        plan[1].contains(r#""envoy"="infra1-50-aaaaaaa""#),
        "{}",
        plan[1]
    );

    // A tag that is not in every repository is refused, naming the repository.
    std::fs::write(r.ecr.join("ecs-sd"), "develop-40-abcdef0\n").unwrap();
    let (ok, calls, output) = r.try_script(
        &r.module.join("../../../env.sh"),
        &r.module,
        &["-A"],
        &[("IMAGE_TAG", tag.as_str())],
    );
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("IMAGE_TAG {tag} is not in the ecs-sd repository")),
        "{output}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("terraform apply")),
        "{calls:?}"
    );
}
