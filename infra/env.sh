#!/usr/bin/env bash
# Lifecycle of one deployment of a stage root module. Run it from the module's directory, e.g.
#   cd infra/stage/services/intdemo && ../../../env.sh -p [ENV]
#
#   -p  plan              -a  apply (asks)          -A  apply without asking
#   -s  show (resources, outputs and URLs)          -w  watch the logs
#   -d  drop (asks)       -D  drop without asking   -g  graph (graph.png; needs graphviz)
#   -h  this help
#
# ENV, the deployment's name, defaults to the branch (BRANCH, else git's; sanitised). State:
#   s3://$TF_STATE_BUCKET/infra/<module dir under infra/>/<ENV>/terraform.tfstate
# with TF_STATE_BUCKET defaulting to atala-cvp. Every root gets -var env_name, image_tags,
# state_bucket and region (AWS_REGION, default us-east-2).
# Secrets: ~/.secrets.tfvars when it exists, and every Secrets Manager secret named
# $SECRETS_PREFIX<variable> (default infra/, e.g. infra/grafana_admin_password) for a variable
# the root declares, handed to terraform in its environment (TF_VAR_*); the file's win. env.sh
# says which came from where, never a value.
# Images: for each component, the newest tag of this branch (<branch prefix>-<revision count>-<sha>)
# in its ECR repository, else the newest of develop's; IMAGE_TAG=T takes T for every component
# instead (CI passes what build-images.sh pushed), and fails if a repository lacks it.
# State is locked while terraform runs (a .tflock object beside it; Terraform >= 1.10).
set -euo pipefail

help() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
usage() { help >&2; exit 2; }

action=""
# A leading ':' keeps getopts quiet: an unknown option is reported below, once.
while getopts ":paAswdDgh" opt; do
  case $opt in
    p) action=plan ;; a) action=apply ;; A) action=apply-auto ;; s) action=show ;;
    w) action=watch ;; d) action=drop ;; D) action=drop-auto ;; g) action=graph ;;
    h) help; exit 0 ;;
    *) echo "env.sh: unknown option -$OPTARG" >&2; usage ;;
  esac
done
shift $((OPTIND - 1))
[ -n "$action" ] || usage

infra_dir=$(cd "$(dirname "$0")" && pwd)
module_dir=$(pwd)
case "$module_dir/" in
  "$infra_dir"/stage/*) module=${module_dir#"$infra_dir"/} ;;
  *) echo "env.sh: run it from a root module under $infra_dir/stage/ (here: $module_dir)" >&2; exit 2 ;;
esac

# Lower case, [a-z0-9-] only: names that AWS accepts and tags that ECR accepts.
# Cut to 24 characters, then without a trailing '-' (Cloud Map names must not end in one).
sanitise() { tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' | cut -c1-24 | sed 's/-*$//'; }

branch=${BRANCH:-$(git rev-parse --abbrev-ref HEAD)}
env_name=${1:-$(printf '%s' "$branch" | sanitise)}
[ -n "$env_name" ] || { echo "env.sh: no environment name (give one, or run inside a git branch)" >&2; exit 2; }

bucket=${TF_STATE_BUCKET:-atala-cvp}
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-2}}
key="infra/$module/$env_name/terraform.tfstate"
secrets="$HOME/.secrets.tfvars"
secrets_prefix=${SECRETS_PREFIX:-infra/}
components=${IMAGE_COMPONENTS:-"xds-server s3-config-loader ecs-sd envoy"}

# The newest tag (by revision count) starting with PREFIX- in REPOSITORY, if any.
newest_tag() {
  local repository=$1 prefix=$2
  aws ecr describe-images --repository-name "$repository" --region "$region" \
      --query 'imageDetails[].imageTags[]' --output text 2>/dev/null \
    | tr '\t ' '\n\n' \
    | grep -E "^${prefix}-[0-9]+-[0-9a-f]+$" \
    | awk -F- '{ print $(NF-1) " " $0 }' | sort -n | tail -n 1 | cut -d' ' -f2 || true
}

# Whether REPOSITORY holds TAG.
has_tag() {
  # AWS's own error (access denied, throttled) goes to stderr, before env.sh's.
  aws ecr describe-images --repository-name "$1" --region "$region" --image-ids "imageTag=$2" >/dev/null
}

image_tags() {
  local prefix entries="" tag
  prefix=$(printf '%s' "$branch" | sanitise)
  for c in $components; do
    if [ -n "${IMAGE_TAG:-}" ]; then
      # The newest by revision count is not always the one just built: after a rebase the
      # branch's count can be lower than an older build's.
      has_tag "$c" "$IMAGE_TAG" || { echo "env.sh: IMAGE_TAG $IMAGE_TAG is not in the $c repository" >&2; exit 1; }
      entries="$entries\"$c\"=\"$IMAGE_TAG\","
      continue
    fi
    tag=$(newest_tag "$c" "$prefix")
    [ -n "$tag" ] || tag=$(newest_tag "$c" develop)
    [ -n "$tag" ] || { echo "env.sh: no image of $c for $prefix or develop" >&2; exit 1; }
    entries="$entries\"$c\"=\"$tag\","
  done
  printf '{%s}' "${entries%,}"
}

tf_init() {
  terraform init -input=false -reconfigure \
    -backend-config="bucket=$bucket" -backend-config="key=$key" -backend-config="region=$region" \
    -backend-config="use_lockfile=true"
}

# Dropping needs no image: its tags are placeholders, so a deployment whose images are gone can go.
drop_tags() {
  local entries="" c
  for c in $components; do entries="$entries\"$c\"=\"dropped\","; done
  printf '{%s}' "${entries%,}"
}

# A root whose .tf files read no var.image_tags[...] (base/database, base/ecr) runs no image:
# nothing is looked up, so the repositories can be made before the first image exists.
uses_images() { grep -qs 'var\.image_tags\[' ./*.tf; }

# The variables ~/.secrets.tfvars sets (its top-level assignments), one a line.
file_secrets() { [ -f "$secrets" ] && sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=.*/\1/p' "$secrets" || true; }

# Secrets Manager's $secrets_prefix<variable> for each variable of this root that the file does
# not set, exported as TF_VAR_<variable>: in terraform's environment, not on its command line.
secrets_from_secrets_manager() {
  local names name var value from_file taken=() kept=()
  from_file=$(file_secrets)
  [ -z "$from_file" ] || echo "env.sh: secrets from $secrets: $(echo $from_file | sed 's/ /, /g')" >&2
  names=$(aws secretsmanager list-secrets --region "$region" --filters "Key=name,Values=$secrets_prefix" \
            --query 'SecretList[].Name' --output text 2>/dev/null) \
    || { echo "env.sh: could not list Secrets Manager's $secrets_prefix secrets; using none" >&2; return 0; }
  for name in $names; do
    var=${name#"$secrets_prefix"}
    [[ $var =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    grep -Eqs "^variable \"$var\"" ./*.tf || continue
    if grep -qx "$var" <<< "$from_file"; then kept+=("$var"); continue; fi
    value=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$name" \
              --query SecretString --output text) \
      || { echo "env.sh: could not read the secret $name (for $var)" >&2; exit 1; }
    export "TF_VAR_$var=$value"
    taken+=("$var")
  done
  [ ${#taken[@]} = 0 ] || echo "env.sh: secrets from Secrets Manager ($secrets_prefix): $(IFS=,; echo "${taken[*]}" | sed 's/,/, /g')" >&2
  [ ${#kept[@]} = 0 ] || echo "env.sh: also in Secrets Manager, taken from $secrets: $(IFS=,; echo "${kept[*]}" | sed 's/,/, /g')" >&2
}

# A lock another run holds is waited for, not failed on: two branch names alike in their first
# 24 characters share one state.
lock=(-lock-timeout=15m)

tf_vars() {
  local tags
  if [ "${1:-}" = drop ]; then tags=$(drop_tags)
  elif uses_images; then tags=$(image_tags)
  else tags='{}'; fi
  vars=(-var "env_name=$env_name" -var "image_tags=$tags"
        -var "state_bucket=$bucket" -var "region=$region")
  if [ -f "$secrets" ]; then vars+=(-var-file="$secrets"); fi
  secrets_from_secrets_manager
}

# A dropped environment is no longer CI's to drop again.
unmark() { aws s3api delete-object --bucket "$bucket" --region "$region" --key "${key%terraform.tfstate}made-by-ci" >/dev/null || true; }

echo "env.sh: $action of $module for \"$env_name\" (state s3://$bucket/$key)" >&2
case $action in
  plan) tf_init; tf_vars; terraform plan -input=false "${lock[@]}" "${vars[@]}" ;;
  apply) tf_init; tf_vars; terraform apply -input=false "${lock[@]}" "${vars[@]}" ;;
  apply-auto)
    tf_init; tf_vars; terraform apply -input=false "${lock[@]}" -auto-approve "${vars[@]}"
    # CI marks the environments it makes (CI_ENVIRONMENT=1, infra/ci/apply-branch.sh): only those
    # are dropped when their branch is gone (infra/ci/drop-deleted-branches.sh).
    if [ "${CI_ENVIRONMENT:-}" = 1 ]; then
      aws s3api put-object --bucket "$bucket" --region "$region" --key "${key%terraform.tfstate}made-by-ci" >/dev/null
    fi ;;
  drop) tf_init; tf_vars drop; terraform destroy -input=false "${lock[@]}" "${vars[@]}"; unmark ;;
  drop-auto) tf_init; tf_vars drop; terraform destroy -input=false "${lock[@]}" -auto-approve "${vars[@]}"; unmark ;;
  show)
    tf_init; terraform state list; terraform output
    # A database root (base/database) also says where it is and how to get its credentials.
    if grep -qs '^output "credentials_command"' ./*.tf; then
      echo "database: $(terraform output -raw endpoint)"
      echo "credentials: $(terraform output -raw credentials_command)"
    fi ;;
  watch)
    # Every log group the deployment lists in its `log_groups` output, followed together.
    tf_init >&2
    groups=$(terraform output -raw log_groups)
    [ -n "$groups" ] || { echo "env.sh: $module lists no log groups" >&2; exit 1; }
    trap 'kill 0' INT TERM
    for g in $groups; do aws logs tail "$g" --follow --region "$region" & done
    wait ;;
  graph) tf_init; terraform graph | dot -Tpng > graph.png; echo "env.sh: wrote graph.png" >&2 ;;
esac
