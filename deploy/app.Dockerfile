# The example app with caddy-beacon, as a replica under `caddy-beacon run`.
# Build context: the repository root (compose.yml does this).

# Build stage: Rust + maturin turn the repository into a wheel (through the repository's build
# backend, which also puts the companion's native binary into it). The native module is built for
# the Python that builds it (bookworm's python3, 3.11: the full C API, not abi3), so the run stage
# below must use the same minor version.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust rust
COPY python python
COPY build_backend build_backend
RUN /venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# Run stage: Python, the wheel, the app. No compiler, no Rust.
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl "fastapi>=0.110" "uvicorn[standard]>=0.29" && rm -rf /wheels
WORKDIR /srv
COPY examples examples
USER app

# The companion is PID 1: it starts uvicorn, registers the replica with Caddy once /ready
# passes, and on SIGTERM removes it, waits for Caddy's requests to it to finish, then stops
# uvicorn (which drains on its own for BEACON_DRAIN_SECONDS). Settings come from BEACON_* /
# CADDY_ADMIN in compose.yml. uvicorn's keep-alive (75 s) outlasts Caddy's (60 s).
EXPOSE 8000 9465
ENTRYPOINT ["caddy-beacon", "run", "--"]
CMD ["uvicorn", "examples.app:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-keep-alive", "75", "--no-access-log"]
