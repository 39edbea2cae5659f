# syntax=docker/dockerfile:1
# swarmgate (tracker and bridge) and the example registry in one small image.
#   docker build -t swarmgate .
#   docker run --rm -p 6969:6969/tcp -p 6969:6969/udp \
#     -e SWARMGATE_AUTH__JWKS_URL=https://registry.example/keys/services/quay/keys \
#     -e SWARMGATE_AUTH__KEYS_DIR= -e SWARMGATE_AUTH__ISSUER=quay swarmgate
# The runtime image holds no development keys and will not start without
# auth.jwks_url (or a mounted keys_dir of public keys) and auth.issuer, or
# auth.mode = "open"; the error says so.

FROM rust:1.95-slim-bookworm AS build
# jemalloc (the binary's allocator) is built from source with make.
RUN apt-get update && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY examples examples
# The cache mounts keep crates and build output between builds on one machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin swarmgate --example registry \
 && cp target/release/swarmgate target/release/examples/registry /usr/local/bin/ \
 && mkdir -p /state/bridge-keys /state/bridge-cache

# distroless/cc: glibc, CA certificates (for an https JWKS), no shell; runs as
# uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/swarmgate /usr/local/bin/swarmgate
COPY --from=build /usr/local/bin/registry /usr/local/bin/swarmgate-example-registry
# State: the tracker's swarm snapshot, the bridge's keys and torrent cache.
# A named volume mounted here starts with this ownership, so the
# unprivileged user can write it.
COPY --from=build --chown=65532:65532 /state /var/lib/swarmgate
USER nonroot:nonroot
# The admin listener must listen beyond loopback for a scraper in another container.
# The swarm snapshot goes where the unprivileged user can write (mount a
# volume there to keep swarms across container restarts).
ENV SWARMGATE_ADMIN__LISTEN=0.0.0.0:6970 \
    SWARMGATE_AUTH__KEYS_DIR= \
    SWARMGATE_STORE__SNAPSHOT_PATH=/var/lib/swarmgate/swarmgate-snapshot.bin
# 6980 and 6981: the bridge's public and admin listeners (swarmgate bridge).
EXPOSE 6969/tcp 6969/udp 6970/tcp 6980/tcp 6981/tcp
ENTRYPOINT ["/usr/local/bin/swarmgate"]
CMD ["serve"]
