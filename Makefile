# caddy-beacon: `make demo` runs the example app with the middleware, `make test` installs
# everything the tests need and runs them all. Both work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One Cargo target directory for cargo, maturin and pip builds: nothing is compiled twice.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
DEMO_PORT ?= 8000
# The maturin build backend runs the `maturin` executable, which lives in the virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv install install-test test test-rust test-python lint demo bench clean

help:
	@echo "make demo   - build, start the example app (uvicorn) with caddy-beacon, print URLs to try"
	@echo "make test   - install Rust build, package, Caddy and test tools into $(VENV); run every test"
	@echo "make bench  - throughput of the example app: bare vs caddy-beacon vs today's libraries"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "maturin>=1.7,<2"

venv: $(PY)

# The package is built from source by maturin, exactly as `pip install .` does for users.
install: $(PY)
	$(PIP) install --quiet --no-build-isolation ".[demo]"

install-test: $(PY)
	$(PIP) install --quiet --no-build-isolation ".[test]"

test: install-test test-rust lint test-python

# The end-to-end tests run the companion binary from the shared target directory.
test-rust:
	cargo build --locked -p beacon-agent
	cargo test --workspace --locked

lint: install-test
	$(PY) -m mypy
	$(PY) -m mypy.stubtest caddy_beacon._native

test-python: install-test
	$(PY) -m pytest

demo: install
	@echo ""
	@echo "caddy-beacon example app on http://127.0.0.1:$(DEMO_PORT)  (Ctrl-C stops it)"
	@echo "  curl -i http://127.0.0.1:$(DEMO_PORT)/items/42          a request (note the x-request-id header)"
	@echo "  curl -i -H 'X-Request-ID: my-id' http://127.0.0.1:$(DEMO_PORT)/"
	@echo "  curl http://127.0.0.1:$(DEMO_PORT)/health               liveness"
	@echo "  curl http://127.0.0.1:$(DEMO_PORT)/ready                readiness with the database check"
	@echo "  curl http://127.0.0.1:$(DEMO_PORT)/metrics              Prometheus metrics"
	@echo "  curl -H 'Accept: application/openmetrics-text' http://127.0.0.1:$(DEMO_PORT)/metrics   with exemplars"
	@echo "Traces: run it as OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make demo"
	@echo ""
	exec $(PY) -m uvicorn examples.app:app --host 127.0.0.1 --port $(DEMO_PORT)

bench: install
	$(PIP) install --quiet -r bench/requirements.txt
	$(PY) bench/throughput.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) target dist
