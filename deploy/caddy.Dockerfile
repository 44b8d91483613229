# Caddy with the beacon module, built the standard way (xcaddy in Caddy's builder image) from
# this repository's Go module, which embeds the registry compiled to WebAssembly
# (caddy/beacon_registry.wasm, refreshed by `make wasm`): no Rust toolchain needed here.
FROM caddy:2.11.7-builder AS builder
COPY caddy/ /src/caddy/
RUN xcaddy build v2.11.7 --with github.com/caddy-beacon/caddy-beacon/caddy=/src/caddy

FROM caddy:2.11.7-alpine
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
