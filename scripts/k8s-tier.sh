#!/usr/bin/env bash
# The cluster tier end to end, on a real single-node Kubernetes (../shared/k8s-local):
#   1. k8s-local.sh install   (apt packages + Kubernetes build; ~10-15 min once, cached in ~/.cache/k8s-local)
#   2. helm + kubectl         (../shared/tools/get-helm.sh, cached in ~/.cache/helm-bin)
#   3. k8s-local.sh up        (~30 s; reused when already up)
#   4. scripts/build-image.sh (podman, offline wheels; ~5 min, skipped when the sources are unchanged)
#   5. pytest -m k8s tests/k8s  (~6 min: Pipes jobs, the chart, and test_scale.py's whole cluster path:
#                                 PostgreSQL + model server on the host, daemon/webserver with K8sRunLauncher)
#   6. k8s-local.sh down      (only if this script brought the cluster up; K8S_KEEP_UP=1 keeps it)
# Usage: scripts/k8s-tier.sh [pytest args...]      Env: PYTHON, IMAGE, K8S_KEEP_UP=1, FACTORY_K8S_KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
K8S_LOCAL=${K8S_LOCAL:-$ROOT/../shared/k8s-local/k8s-local.sh}
GET_HELM=${GET_HELM:-$ROOT/../shared/tools/get-helm.sh}
export FACTORY_TEST_IMAGE=${IMAGE:-localhost/attrfactory:dev}
export K8S_LOCAL
T0=$(date +%s)
step() { echo "[k8s-tier] $(( $(date +%s) - T0 ))s: $*" >&2; }

step "install (cached after the first time)"
nice -n 10 bash "$K8S_LOCAL" install
HELM_DIR=$(bash "$GET_HELM")
export HELM=$HELM_DIR/helm KUBECTL=$HELM_DIR/kubectl
KCFG=$(bash "$K8S_LOCAL" kubeconfig)

started_here=0
if [ -f "$KCFG" ] && "$KUBECTL" --kubeconfig "$KCFG" get --raw /readyz >/dev/null 2>&1; then
  step "cluster already up: reusing it"
else
  step "up"
  nice -n 10 bash "$K8S_LOCAL" up
  started_here=1
fi
cleanup() {
  rc=$?
  if [ "$started_here" = 1 ] && [ "${K8S_KEEP_UP:-0}" != 1 ]; then
    step "down"
    bash "$K8S_LOCAL" down || true
  fi
  step "done (exit $rc)"
}
trap cleanup EXIT

step "image $FACTORY_TEST_IMAGE"
PYTHON=$PY bash scripts/build-image.sh "$FACTORY_TEST_IMAGE" >/dev/null

step "tests"
FACTORY_K8S_TIER=1 HF_HUB_OFFLINE=1 "$PY" -m pytest -m k8s -p no:cacheprovider -rA -v tests/k8s "$@"
