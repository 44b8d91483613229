# The example app with caddy-beacon, as a replica under `caddy-beacon run`.
# Build context: the repository root (compose.yml does this).
#   docker build -f deploy/app.Dockerfile --build-arg PYTHON_VERSION=3.13 .
# PYTHON_VERSION: any CPython caddy-beacon ships a wheel for (3.10-3.13); both stages use it.
ARG PYTHON_VERSION=3.12
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS rust

# Build stage: the wheel `make dist` builds for this Python and this machine's architecture,
# made by the same command (release/dist.py: maturin and cargo-zigbuild with zig, tagged
# manylinux_2_17, the companion binary inside). Rust comes from the official image; gcc only
# links the build scripts cargo runs here, zig links what ships.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG PYTHON_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
WORKDIR /src
COPY release/requirements.txt release/requirements.txt
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir -r release/requirements.txt
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust rust
COPY python python
COPY build_backend build_backend
COPY release release
RUN /venv/bin/python -m release.dist --python "${PYTHON_VERSION}" --arch native --no-sdist --out /wheels

# Run stage: the same Python, the wheel, the app. No compiler, no Rust.
FROM python:${PYTHON_VERSION}-slim-bookworm
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --only-binary=:all: /wheels/*.whl "fastapi>=0.110" "uvicorn[standard]>=0.29" \
    && rm -rf /wheels
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
