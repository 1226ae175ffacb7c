#!/usr/bin/env bash
# Builds the images of infra/docker/Dockerfile and pushes them to ECR, tagged as env.sh looks
# them up:
#   infra/build-images.sh [-n] [IMAGE ...]      (default: every image the Dockerfile targets)
#   infra/build-images.sh -t                    prints the tag it builds, and does nothing else
#
#   -n  build only (no login, no push)          -h  this help
#
# Tag: <branch prefix>-<revision count>-<short sha>, e.g. develop-412-1a2b3c4; the branch prefix
# is the branch sanitised as env.sh does it (BRANCH overrides git's, for CI checkouts). The
# revision count needs the whole history (not a shallow clone). Registry: REGISTRY, else this
# account's ECR in AWS_REGION (default us-east-2). Tags are immutable: an image whose tag is
# already in its repository (the same commit built before) is not pushed again.
set -euo pipefail

help() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
push=1 print_tag=0
while getopts ":nth" opt; do
  case $opt in
    n) push=0 ;;
    t) print_tag=1 ;;
    h) help; exit 0 ;;
    *) echo "build-images.sh: unknown option -$OPTARG" >&2; help >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

root=$(cd "$(dirname "$0")/.." && pwd)
dockerfile="$root/infra/docker/Dockerfile"
# The Dockerfile's final stages: every `FROM ... AS name` but the shared build and runtime ones.
targets=$(sed -n 's/^FROM .* AS \([a-z0-9-]*\)$/\1/p' "$dockerfile" | grep -vx -e build -e runtime)
images=("$@")
[ ${#images[@]} -gt 0 ] || read -r -a images <<< "$(echo $targets)"
for i in "${images[@]}"; do
  grep -qx -- "$i" <<< "$targets" || { echo "build-images.sh: no target $i in $dockerfile (targets: $(echo $targets))" >&2; exit 2; }
done

# The same rule as env.sh's sanitise: lower case, [a-z0-9-], at most 24 characters, no trailing '-'.
sanitise() { tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' | cut -c1-24 | sed 's/-*$//'; }
branch=${BRANCH:-$(git -C "$root" rev-parse --abbrev-ref HEAD)}
prefix=$(printf '%s' "$branch" | sanitise)
[ -n "$prefix" ] && [ "$prefix" != head ] || { echo "build-images.sh: no branch (a detached checkout: set BRANCH)" >&2; exit 2; }
tag="$prefix-$(git -C "$root" rev-list --count HEAD)-$(git -C "$root" rev-parse --short=7 HEAD)"
commit=$(git -C "$root" rev-parse HEAD)
if [ $print_tag = 1 ]; then echo "$tag"; exit 0; fi

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-2}}
if [ $push = 1 ] && [ -z "${REGISTRY:-}" ]; then
  REGISTRY="$(aws sts get-caller-identity --query Account --output text).dkr.ecr.$region.amazonaws.com"
fi
registry=${REGISTRY:-local}

if [ $push = 1 ]; then
  # The password goes through a pipe, never on a command line.
  aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
fi
for i in "${images[@]}"; do
  if [ $push = 1 ] && aws ecr describe-images --repository-name "$i" --region "$region" \
       --image-ids "imageTag=$tag" >/dev/null 2>&1; then
    echo "build-images.sh: $i:$tag is already in $registry (tags are immutable), not pushed again" >&2
    continue
  fi
  docker build -f "$dockerfile" --target "$i" --build-arg "TOOLKIT_COMMIT=$commit" \
    -t "$registry/$i:$tag" "$root"
  if [ $push = 1 ]; then docker push "$registry/$i:$tag"; fi
  echo "build-images.sh: $registry/$i:$tag" >&2
done
