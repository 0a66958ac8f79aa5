#!/usr/bin/env bash
# make demo: what secctx does to the reference pods in examples/, offline.
set -euo pipefail
bin=${1:-bin/secctx}
cd "$(dirname "$0")/.."

bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'
[ -t 1 ] || { bold= dim= off=; }

show() {
  local file=$1 title=$2
  shift 2
  echo
  echo "${bold}== $title ($file)${off}"
  echo "${dim}the pod asks for:${off}"
  sed -n '/secctx.dev\/security-context/,/^spec:/p' "$file" | sed '$d' | sed 's/^/  /'
  echo "${dim}secctx's patch (only adds, at paths it owns):${off}"
  "$bin" inject -f "$file" "$@" -o patch 2>/dev/null | sed 's/^/  /'
  "$bin" inject -f "$file" "$@" -o patch 2>&1 >/dev/null | sed "s/^/  ${dim}/; s/\$/${off}/"
  echo "${dim}what the task container sees:${off}"
  "$bin" inject -f "$file" "$@" 2>/dev/null |
    awk '/^  containers:/{c=1} c && /^  [a-z]/ && !/^  containers:/{c=0}
         c && /^    (env|volumeMounts):/{p=1; print; next} c && p && /^    [a-z]/{p=0} c && p' |
    sed 's/^/  /'
  "$bin" inject -f "$file" "$@" 2>/dev/null | grep -E '^  serviceAccountName:' | sed 's/^/  /' || true
}

echo "${bold}$("$bin" version)${off}"
show examples/1-env-var-secret.yaml "1. a secret as an env var"
show examples/2-file-secret.yaml "2. a secret as a file"
show examples/3-service-account.yaml "3. run as a service account"
show examples/4-oauth2-token.yaml "4. an OAuth2 token" --agent-image ghcr.io/secctx/secctx:0.1.0
show examples/5-iam-role.yaml "5. run as an IAM role (IRSA)"
show examples/6-aws-secret.yaml "6. a secret from AWS Secrets Manager (backend aws, read by the secctx-fetch init container)" --config examples/secctx-aws.yaml
# Examples 7-9 with examples/secctx-stores.yaml: each secret goes to the
# store inject.backends sends its group to; the "store:" lines say which.
show examples/7-gcp-secret.yaml "7. a secret from Google Secret Manager (backend gcp, read by the secctx-fetch init container)" --config examples/secctx-stores.yaml
show examples/8-azure-secret.yaml "8. a secret from Azure Key Vault by its URL (backend azure, set by the exec wrapper)" --config examples/secctx-stores.yaml
show examples/9-mixed-stores.yaml "9. one pod, four stores: a Kubernetes Secret, and AWS, Google and Azure secrets in one fetch" --config examples/secctx-stores.yaml

echo
echo "${bold}== a pod with mistakes (examples/bad-annotation.yaml)${off}"
echo "${dim}secctx refuses it, naming every problem (exit code 1):${off}"
if "$bin" inject -f examples/bad-annotation.yaml 2>&1 | sed 's/; /;\n    /g; s/^/  /'; then :; fi
echo
echo "Next: 'make test' runs every test; docs/ explains the layout and the choices."
