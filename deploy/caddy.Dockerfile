# Caddy with the beacon module, built the standard way (xcaddy in Caddy's builder image) from
# this repository's Go module, which embeds the registry compiled to WebAssembly
# (caddy/beacon_registry.wasm, refreshed by `make wasm`): no Rust toolchain needed here.
FROM caddy:2.11.7-builder AS builder
# Go build tags: `nokubernetes` leaves the Kubernetes source and client-go out (README). Setting
# XCADDY_GO_BUILD_FLAGS replaces xcaddy's defaults, so they are repeated.
ARG CADDY_BUILD_TAGS=""
COPY caddy/ /src/caddy/
RUN XCADDY_GO_BUILD_FLAGS="-ldflags='-w -s' -trimpath -tags=${CADDY_BUILD_TAGS}" xcaddy build v2.11.7 --with github.com/caddy-beacon/caddy-beacon/caddy=/src/caddy

FROM caddy:2.11.7-alpine
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
