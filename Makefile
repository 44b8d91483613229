# caddy-beacon: `make demo` runs the whole stack (Caddy, two replicas under companions,
# Prometheus if present) without Docker; `make test` installs everything the tests need and
# runs them all. Both work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One Cargo target directory for cargo, maturin and pip builds: nothing is compiled twice.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
# Extra arguments for the demo, e.g. DEMO_ARGS="--port 8081" (see python -m examples.demo --help).
DEMO_ARGS ?=
# Prometheus comes from Debian's package, unpacked into the virtualenv: no service is started
# and nothing is installed system-wide. `make demo` uses it when present.
PROMETHEUS := $(VENV)/bin/prometheus
# The Compose Specification's JSON schema, as Docker's docker-compose 1.29.2 ships it (PyPI).
COMPOSE_SCHEMA := $(VENV)/share/compose_spec.json
# The maturin build backend runs the `maturin` executable, which lives in the virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv install install-test test tools test-rust test-python test-go test-fuzz lint lint-with check \
	check-format check-lint check-unit check-native format unit-with demo bench clean prometheus caddy kubernetes \
	wasm dist dist-test fuzz go-fuzz rust-fuzz

help: ## every target, one line each
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:[^=]*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "maturin>=1.7,<2"

venv: $(PY) ## the virtualenv (.venv) with maturin, nothing else

# Releases: dist/ holds what a release publishes (release/dist.py says how it is built and
# checked). The toolchain (maturin, zig, cargo-zigbuild, auditwheel) is pinned in
# release/requirements.txt and lives in the virtualenv; Rust targets are added with rustup.
DIST_TOOLS := $(VENV)/.installed-dist
DIST_SUMS := dist/SHA256SUMS
RELEASE_SOURCES := $(shell find release -name '*.py' 2>/dev/null) release/requirements.txt

# The package is built from source by maturin, exactly as `pip install .` does for users, and
# again only when its sources or dependencies changed (stamp files in the virtualenv).
PACKAGE_SOURCES := pyproject.toml Cargo.toml Cargo.lock \
	$(shell find rust python build_backend -type f -not -path '*/__pycache__/*' -not -path 'rust/beacon-registry/*' -not -name '*.so' 2>/dev/null)

install: $(VENV)/.installed-demo ## the package (release build, as pip builds it) and the demo's tools
install-test: $(VENV)/.installed-test ## the package and everything the tests use

$(VENV)/.installed-demo: $(PACKAGE_SOURCES) | $(PY)
	$(PIP) install --quiet --no-build-isolation ".[demo]"
	@touch $@

# The test extras include the demo's, so a test install serves `make demo` too.
$(VENV)/.installed-test: $(PACKAGE_SOURCES) | $(PY)
	$(PIP) install --quiet --no-build-isolation ".[test]"
	@touch $@ $(VENV)/.installed-demo

# The beacon Caddy module: rust/beacon-registry built for wasm32-wasip1 (paths remapped so the
# .wasm does not depend on where the repo sits), copied next to the Go code that embeds it, and
# Caddy built with its standard modules plus ours. Go's module and build caches are shared.
CADDY_BIN := target/caddy/caddy
CADDY_VERSION := $(shell sed -n 's|^[[:space:]]*github.com/caddyserver/caddy/v2 \(v[0-9.]*\).*|\1|p' caddy/go.mod)
WASM_BUILT := $(CARGO_TARGET_DIR)/wasm32-wasip1/wasm/beacon_registry.wasm
WASM_EMBEDDED := caddy/beacon_registry.wasm
REGISTRY_SOURCES := Cargo.toml Cargo.lock $(shell find rust/beacon-registry -type f 2>/dev/null)
GO_SOURCES := caddy/go.mod caddy/go.sum $(shell find caddy -name '*.go' 2>/dev/null)

caddy: $(CADDY_BIN) ## Caddy with the beacon module: target/caddy/caddy (needs Go)
wasm: $(WASM_EMBEDDED) ## the registry as WebAssembly, copied where the Go module embeds it

$(WASM_BUILT): $(REGISTRY_SOURCES)
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1 || \
	  { echo "cannot add the Rust target wasm32-wasip1 (rustup target add wasm32-wasip1): the beacon module cannot be built here" >&2; exit 1; }
	CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="--remap-path-prefix=$(CURDIR)=. --remap-path-prefix=$(HOME)=~" \
	  cargo build --locked --profile wasm --target wasm32-wasip1 -p beacon-registry

$(WASM_EMBEDDED): $(WASM_BUILT)
	cp $< $@

$(CADDY_BIN): $(GO_SOURCES) $(WASM_EMBEDDED)
	@command -v go >/dev/null 2>&1 || { echo "Go is needed to build Caddy with the beacon module (https://go.dev/dl/)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	cd caddy && go build -trimpath -o ../$(CADDY_BIN) ./cmd/caddy
	@touch $@

prometheus: $(PROMETHEUS) ## Prometheus and promtool from Debian's package, into the virtualenv

# A real Kubernetes control plane for tests/test_kubernetes.py: kube-apiserver and kubectl built
# from the Go module proxy at the version tests/kubernetes/go.mod pins (~5 min and 2.7 GB of Go
# build cache the first time, seconds after), and etcd from Debian's etcd-server package,
# unpacked into the virtualenv. No kubelet and no controllers: the tests write EndpointSlices.
KUBE_BIN := target/kubernetes
KUBE_APISERVER := $(KUBE_BIN)/kube-apiserver
KUBECTL := $(KUBE_BIN)/kubectl
KUBE_VERSION := $(shell sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*|\1|p' tests/kubernetes/go.mod)
KUBE_SOURCES := tests/kubernetes/go.mod tests/kubernetes/go.sum $(wildcard tests/kubernetes/*/main.go)
ETCD := $(VENV)/bin/etcd

kubernetes: $(KUBE_APISERVER) $(ETCD) ## kube-apiserver, kubectl and etcd for the Kubernetes tests (needs Go, apt)

$(KUBE_APISERVER): $(KUBE_SOURCES)
	@command -v go >/dev/null 2>&1 || { echo "Go is needed to build kube-apiserver and kubectl for the Kubernetes tests (https://go.dev/dl/)" >&2; exit 1; }
	@mkdir -p $(KUBE_BIN)
	cd tests/kubernetes && go build -trimpath -ldflags "-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION)" \
	  -o ../../$(KUBE_BIN)/ ./kube-apiserver ./kubectl
	@touch $@

$(ETCD): | $(PY)
	@mkdir -p $(VENV)/debs
	@cd $(VENV)/debs && { apt-get download etcd-server 2>/dev/null || \
	    { apt-get update -qq && apt-get download etcd-server; } || \
	    { echo "cannot fetch Debian's etcd-server package (apt-get download etcd-server)" >&2; exit 1; }; } && \
	  dpkg-deb -x etcd-server_*.deb ../etcd && cd $(CURDIR) && \
	  ln -sf $(CURDIR)/$(VENV)/etcd/usr/bin/etcd $@

$(PROMETHEUS): | $(PY)
	@mkdir -p $(VENV)/debs
	@if command -v prometheus >/dev/null 2>&1; then ln -sf "$$(command -v prometheus)" $@; \
	  ! command -v promtool >/dev/null 2>&1 || ln -sf "$$(command -v promtool)" $(VENV)/bin/promtool; else \
	  cd $(VENV)/debs && { apt-get download prometheus 2>/dev/null || \
	    { apt-get update -qq && apt-get download prometheus; } || \
	    { echo "cannot fetch Debian's prometheus package (apt-get download prometheus)" >&2; exit 1; }; } && \
	  dpkg-deb -x prometheus_*.deb ../prometheus && cd $(CURDIR) && \
	  ln -sf $(CURDIR)/$(VENV)/prometheus/usr/bin/prometheus $@ && \
	  ln -sf $(CURDIR)/$(VENV)/prometheus/usr/bin/promtool $(VENV)/bin/promtool; fi

$(COMPOSE_SCHEMA): | $(PY)
	@mkdir -p $(VENV)/share $(VENV)/debs
	$(PIP) download --quiet --no-deps "docker-compose==1.29.2" -d $(VENV)/debs
	$(PY) -c "import zipfile,sys; open(sys.argv[2],'wb').write(zipfile.ZipFile(sys.argv[1]).read('compose/config/compose_spec.json'))" \
	  $(VENV)/debs/docker_compose-1.29.2-py2.py3-none-any.whl $@

# make test: everything, in phases, each timed (tools/phases.py prints the table at the end).
TEST_PHASES := install-test tools lint test-rust test-go test-fuzz test-python dist-test

test: ## everything, as CI runs it: installs what it needs, runs every test, prints each phase's time
	@$(PYTHON) tools/phases.py $(TEST_PHASES)

tools: $(PROMETHEUS) $(COMPOSE_SCHEMA) $(CADDY_BIN) $(KUBE_APISERVER) $(ETCD) ## the real parts the tests run: Caddy with the module, Prometheus, kube-apiserver, etcd

# --- make check: the everyday loop -----------------------------------------------------------
# Formatters (checked), linters and type checks in every language, and the tests that need no
# Caddy, no root and no network namespace (pytest markers decide), against an editable install
# built with cargo's dev profile (no fat LTO) in a virtualenv of its own: it never disturbs the
# release build that `make test` and the benchmarks use.
CHECK_VENV ?= .venv-check
CHECK_PY := $(CHECK_VENV)/bin/python
CHECK_MARKS := not caddy and not netns and not kubernetes and not prometheus
PYTEST_WORKERS ?= 2

check: check-format check-lint check-unit ## the everyday loop: formatters, linters, type checks, unit tests (minutes)

check-format: $(CHECK_VENV)/.deps ## formatting checked in every language: rustfmt, gofmt, ruff format
	@$(MAKE) --no-print-directory format-check-with LINT_PY=$(CHECK_PY)

check-lint: check-native ## clippy -D warnings, go vet, ruff check, mypy, stubtest
	@$(MAKE) --no-print-directory lint-with LINT_PY=$(CHECK_PY)

check-unit: check-native $(WASM_EMBEDDED) ## cargo test, go test (no fuzzing), the Python tests that need no Caddy or root
	@$(MAKE) --no-print-directory unit-with LINT_PY=$(CHECK_PY)

check-native: $(CHECK_VENV)/.native ## the editable dev build of the package, in .venv-check

format: $(CHECK_VENV)/.deps ## rewrites: cargo fmt, gofmt -w, ruff format and ruff check --fix
	cargo fmt --all
	cd fuzz && cargo fmt
	gofmt -w caddy tests/kubernetes
	$(CHECK_VENV)/bin/ruff format .
	$(CHECK_VENV)/bin/ruff check --fix .

# The test extras, read from pyproject.toml (the package itself is installed by maturin develop).
$(CHECK_VENV)/.deps: pyproject.toml release/requirements.txt
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_PY) -m pip install --quiet --upgrade pip
	$(CHECK_PY) tools/test_requirements.py > $(CHECK_VENV)/requirements.txt
	$(CHECK_PY) -m pip install --quiet "maturin>=1.7,<2" pyelftools -r $(CHECK_VENV)/requirements.txt
	@touch $@

# Editable: the Python sources are used where they are; only a change to the Rust rebuilds.
CHECK_NATIVE_SOURCES := pyproject.toml Cargo.toml Cargo.lock $(shell find rust -type f -not -path 'rust/beacon-registry/*' 2>/dev/null)

$(CHECK_VENV)/.native: $(CHECK_NATIVE_SOURCES) $(CHECK_VENV)/.deps
	VIRTUAL_ENV=$(CURDIR)/$(CHECK_VENV) $(CHECK_VENV)/bin/maturin develop --quiet --profile dev
	@touch $@

format-check-with:
	cargo fmt --all --check
	cd fuzz && cargo fmt --check
	@test -z "$$(gofmt -l caddy tests/kubernetes)" || { gofmt -l caddy tests/kubernetes; echo "gofmt: the files above need formatting (make format)" >&2; exit 1; }
	$(LINT_PY) -m ruff format --check .

lint-with:
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cd caddy && go vet ./... && go vet -tags nokubernetes ./...
	$(LINT_PY) -m ruff check .
	$(LINT_PY) -m mypy
	$(LINT_PY) -m mypy.stubtest caddy_beacon._native

unit-with:
	cargo test --workspace --locked
	cd caddy && go test ./...
	$(LINT_PY) -m pytest -m "$(CHECK_MARKS)" -n $(PYTEST_WORKERS)

# Every fuzz target, briefly (make fuzz runs them for longer).
test-fuzz: $(CARGO_FUZZ) ## each Rust fuzz target for FUZZ_SHORT_SECONDS (10)
	@$(MAKE) --no-print-directory rust-fuzz FUZZ_SECONDS=$(FUZZ_SHORT_SECONDS)

# The end-to-end tests run the companion binary from the shared target directory.
test-rust: ## cargo test over the workspace, and the companion's debug build the end-to-end tests run
	cargo build --locked -p beacon-companion
	cargo test --workspace --locked

# cargo fuzz (fuzz/): libFuzzer targets for every Rust parser that takes bytes from the network
# or the admin API. It needs nightly Rust (the sanitizers; rustup adds it) and cargo-fuzz
# (installed into the virtualenv). Each target reads its committed corpus (fuzz/corpus/) and
# writes what it finds new under target/, so a run leaves the checkout as it was; a crash is
# saved in fuzz/artifacts/ and fails the run.
CARGO_FUZZ := $(VENV)/bin/cargo-fuzz
RUST_FUZZERS := request_id_and_traceparent first_request_head registry_commands registry_addresses \
	companion_events_sink companion_admin_answers
FUZZ_SHORT_SECONDS ?= 10
FUZZ_LONG_SECONDS ?= 300

$(CARGO_FUZZ): | $(PY)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	cargo install --locked --root $(VENV) cargo-fuzz

rust-fuzz: $(CARGO_FUZZ) ## each Rust fuzz target for FUZZ_SECONDS
	@for target in $(RUST_FUZZERS); do \
	  mkdir -p $(CARGO_TARGET_DIR)/fuzz-corpus/$$target; \
	  (cd fuzz && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/fuzz cargo +nightly fuzz run $$target \
	    $(CARGO_TARGET_DIR)/fuzz-corpus/$$target corpus/$$target -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
	    > $(CARGO_TARGET_DIR)/fuzz-$$target.log 2>&1); status=$$?; \
	  echo "$$target: $$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' $(CARGO_TARGET_DIR)/fuzz-$$target.log | grep -o '[0-9]*$$') runs"; \
	  [ $$status -eq 0 ] || { tail -30 $(CARGO_TARGET_DIR)/fuzz-$$target.log >&2; exit 1; }; \
	done

# The module's host, against the real embedded .wasm; `go test` replays the fuzzers' committed
# corpora (caddy/testdata/fuzz), then each fuzzer runs for FUZZ_SHORT. `make fuzz` runs them
# for FUZZ_LONG instead.
FUZZ_SHORT ?= 10s
FUZZ_LONG ?= 5m
GO_FUZZERS := FuzzAdminPoolAction FuzzGuestRawInput

test-go: $(WASM_EMBEDDED) ## go vet and go test in both builds (with and without Kubernetes), each Go fuzzer briefly
	cd caddy && go vet ./... && go test ./...
	cd caddy && go vet -tags nokubernetes ./... && go test -tags nokubernetes ./...
	@$(MAKE) --no-print-directory go-fuzz FUZZ_TIME=$(FUZZ_SHORT)

fuzz: $(WASM_EMBEDDED) $(CARGO_FUZZ) ## every fuzz target (cargo fuzz, go test -fuzz) for longer than make test does
	@$(MAKE) --no-print-directory go-fuzz FUZZ_TIME=$(FUZZ_LONG)
	@$(MAKE) --no-print-directory rust-fuzz FUZZ_SECONDS=$(FUZZ_LONG_SECONDS)

# Each Go fuzzer for FUZZ_TIME; its log (Caddy's JSON lines aside) ends with the executions.
go-fuzz: ## each Go fuzzer for FUZZ_TIME
	@mkdir -p target/fuzz
	@for fuzzer in $(GO_FUZZERS); do \
	  (cd caddy && go test -run XXX -fuzz "^$$fuzzer\$$" -fuzztime $(FUZZ_TIME) -fuzzminimizetime 5s . > ../target/fuzz/$$fuzzer.log 2>&1); \
	  status=$$?; grep -v '^{"level"' target/fuzz/$$fuzzer.log | grep -E 'execs|FAIL|ok|panic' | tail -2; \
	  [ $$status -eq 0 ] || { echo "$$fuzzer failed: target/fuzz/$$fuzzer.log" >&2; exit 1; }; \
	done

# mypy checks release/ too, whose ELF reader (pyelftools) comes with the release toolchain.
lint: install-test $(DIST_TOOLS) ## make check's formatting and lint gates, against the release install
	@$(MAKE) --no-print-directory format-check-with LINT_PY=$(PY)
	@$(MAKE) --no-print-directory lint-with LINT_PY=$(PY)

# Two workers, a file each at a time (--dist loadfile: a module's fixtures, such as the Kubernetes
# control plane, stay in one worker); each worker has its own ports and network namespaces.
test-python: install-test ## every Python and end-to-end test (real Caddy, servers, namespaces, Kubernetes)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# With Go, the demo's Caddy has the beacon module (built once); without, the demo says so in one
# line and runs stock Caddy.
demo: install $(if $(shell command -v go 2>/dev/null),$(CADDY_BIN)) ## the main job: Caddy and two replicas under companions, Prometheus if present; Ctrl-C stops all
	$(PY) -m examples.demo $(DEMO_ARGS)

bench: install ## throughput of the example app: bare vs caddy-beacon vs the libraries users run today
	$(PIP) install --quiet -r bench/requirements.txt
	$(PY) bench/throughput.py $(BENCH_ARGS)

$(DIST_TOOLS): release/requirements.txt | $(PY)
	$(PIP) install --quiet -r release/requirements.txt
	@touch $@

dist: $(DIST_SUMS) ## dist/: manylinux wheels for every supported CPython (x86_64, aarch64), the sdist, SHA256SUMS

$(DIST_SUMS): $(PACKAGE_SOURCES) $(REGISTRY_SOURCES) $(RELEASE_SOURCES) $(DIST_TOOLS)
	$(PY) -m release.dist

# make test builds what a release builds into target/dist-test/, less three of the four wheels
# of the other architecture (release/dist.py says why: they differ from the one built only in
# pyo3's interpreter; `make dist` builds all eight). Every supported CPython must be here (one
# line naming a missing one, then failure: CI never skips a version); then tests/dist, which
# pytest's default run leaves out, reads what was built from the same arguments.
DIST_TEST_ARGS := --cross-python newest --out target/dist-test
DIST_TEST_SUMS := target/dist-test/SHA256SUMS

$(DIST_TEST_SUMS): $(PACKAGE_SOURCES) $(REGISTRY_SOURCES) $(RELEASE_SOURCES) $(DIST_TOOLS)
	$(PY) -m release.dist $(DIST_TEST_ARGS)

dist-test: $(DIST_TEST_SUMS) $(CADDY_BIN) install-test ## the release build less 3 cross wheels; each x86_64 wheel installed into its own CPython (no Rust) and run
	@$(PY) -m release.interpreters >/dev/null
	BEACON_DIST_ARGS="$(DIST_TEST_ARGS)" $(PY) -m pytest tests/dist

clean: ## removes the virtualenvs, target/, dist/ and wheel-data/
	rm -rf $(VENV) $(CHECK_VENV) target dist wheel-data
