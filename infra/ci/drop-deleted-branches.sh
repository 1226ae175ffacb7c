#!/usr/bin/env bash
# CI, nightly: drops the environments of deleted branches. For each service root, every
# deployment in the state bucket (infra/stage/services/<root>/<name>/terraform.tfstate) named as
# CI names a branch's environment (develop, infra*, test*, sanitised as env.sh does), that CI
# made itself (a made-by-ci object beside its state, which apply-branch.sh leaves) and whose
# branch no longer exists on origin is dropped with env.sh -D. Environments made by hand, under
# any name, are left alone. DRY_RUN=1 only says what it would drop.
set -euo pipefail
infra=$(cd "$(dirname "$0")/.." && pwd)
bucket=${TF_STATE_BUCKET:-atala-cvp}
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-2}}

# The same rule as env.sh's sanitise.
sanitise() { tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' | cut -c1-24 | sed 's/-*$//'; }

# The environment names of origin's branches, one a line. Fails (drops nothing) if origin is unreachable.
live=$(git -C "$infra" ls-remote --heads origin | sed 's#.*refs/heads/##' | while read -r b; do printf '%s\n' "$b" | sanitise; done)
[ -n "$live" ] || { echo "drop-deleted-branches.sh: origin lists no branch; dropping nothing" >&2; exit 1; }

for root in "$infra"/stage/services/*/; do
  module=${root#"$infra"/}; module=${module%/}
  keys=$(aws s3api list-objects-v2 --bucket "$bucket" --region "$region" --prefix "infra/$module/" \
           --query 'Contents[].Key' --output text | tr '\t ' '\n\n')
  for key in $keys; do
    [[ $key == */terraform.tfstate ]] || continue
    name=${key#"infra/$module/"}; name=${name%/terraform.tfstate}
    [[ $name =~ ^(develop|infra|test)[a-z0-9-]*$ ]] || continue
    # Only what CI made.
    grep -qx -- "infra/$module/$name/made-by-ci" <<< "$keys" || continue
    grep -qx -- "$name" <<< "$live" && continue
    if [ "${DRY_RUN:-}" = 1 ]; then
      echo "drop-deleted-branches.sh: would drop $module $name" >&2
    else
      echo "drop-deleted-branches.sh: dropping $module $name (its branch is gone)" >&2
      (cd "$root" && "$infra/env.sh" -D "$name")
    fi
  done
done
