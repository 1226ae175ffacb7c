#!/usr/bin/env bash
# CI: applies every service root (infra/stage/services/*) for this branch's environment, without
# asking (env.sh -A; the name is the branch's, BRANCH in a detached checkout), and marks each as
# CI's own (CI_ENVIRONMENT=1: env.sh leaves made-by-ci beside its state), so that only those are
# ever dropped by drop-deleted-branches.sh. The images are the ones build-images.sh pushed for
# this commit (IMAGE_TAG, by default build-images.sh -t): after a rebase, the newest tag by
# revision count can be an older build's. The base roots are per network and account, applied
# by hand (infra/README.md).
set -euo pipefail
infra=$(cd "$(dirname "$0")/.." && pwd)
IMAGE_TAG=${IMAGE_TAG:-$("$infra/build-images.sh" -t)}
export IMAGE_TAG
for root in "$infra"/stage/services/*/; do
  (cd "$root" && CI_ENVIRONMENT=1 "$infra/env.sh" -A)
done
