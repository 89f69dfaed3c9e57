# syntax=docker/dockerfile:1
#
# The `cairn` image: the one binary, on debian:bookworm-slim, run as an unprivileged user.
#
#   docker build -t cairn:dev .
#
# Not built in this repository's CI: its machines reach package registries only, no container
# registry, so this file is checked by reading. What it relies on:
#   - builder and runtime share Debian bookworm, so the binary's glibc and libstdc++ (RocksDB is C++)
#     are the runtime's; ldd of the binary: libstdc++.so.6, libgcc_s.so.1, libm, libc;
#   - RocksDB and LZ4 are compiled from source (librocksdb-sys with bindgen-runtime needs libclang at
#     build time; about 20 minutes on 2 cores, cached by the cache mounts below);
#   - protoc is vendored (protoc-bin-vendored); protobuf-compiler is there for platforms that crate
#     lacks: build with --build-arg SYSTEM_PROTOC=/usr/bin/protoc on those;
#   - the runtime has a shell (/bin/sh): the Kubernetes manifests (deploy/k8s) start cairn through
#     deploy/k8s/base/start.sh, which assembles each pod's cairn.toml; a distroless image would not do;
#   - ca-certificates: TLS to object storage (S3, GCS, Azure) verifies against the system roots.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG SYSTEM_PROTOC=
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler cmake make g++ pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The workspace: every member (Cargo needs them all to load the workspace), nothing else.
COPY Cargo.toml Cargo.lock ./
COPY tlog tlog
COPY store store
COPY proto proto
COPY sigstore sigstore
COPY witness witness
COPY search search
COPY sequencer sequencer
COPY log-server log-server
COPY tile-server tile-server
COPY tsa tsa
COPY client client
COPY cli cli
COPY bench bench
COPY chaos chaos
# The target directory is a cache mount: copy the binary out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    if [ -n "$SYSTEM_PROTOC" ]; then export PROTOC="$SYSTEM_PROTOC"; fi \
 && cargo build --locked --release --bin cairn \
 && install -D -m 0755 target/release/cairn /out/cairn

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cairn \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/cairn --no-create-home \
      --shell /usr/sbin/nologin cairn \
 && install -d -m 0750 -o 10001 -g 10001 /var/lib/cairn
COPY --from=build /out/cairn /usr/local/bin/cairn
# Numeric, so that Kubernetes can check runAsNonRoot without a runAsUser.
USER 10001:10001
WORKDIR /var/lib/cairn
# gRPC API, Raft, HTTP (read path, Rekor v2, TSA, /healthz /readyz /metrics).
EXPOSE 7400 7401 7480
ENTRYPOINT ["/usr/local/bin/cairn"]
# The embedded default listens on loopback only: give a container a configuration, e.g.
#   docker run -v $PWD/cairn.toml:/etc/cairn/cairn.toml:ro -v cairn-data:/var/lib/cairn \
#     -p 7480:7480 cairn:dev serve --config /etc/cairn/cairn.toml
CMD ["serve"]
