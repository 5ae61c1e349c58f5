# syntax=docker/dockerfile:1
#
# One image, two binaries: `mesos-operator` (the operator, run by the chart) and
# `mesos-master` (the ensemble members it starts). The operator's StatefulSets use
# this same image by default and set `command: ["/usr/local/bin/mesos-master"]`.
#
#   docker build -t mesos-operator:dev .
#
# The runtime image runs as a non-root user with a read-only root filesystem: the
# master's only state is its --work_dir, a mounted volume.

# Debian bookworm, to match the glibc of the distroless runtime below. The version
# is the toolchain we build and test with (Cargo.toml's rust-version is the minimum).
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# --locked: the image is built from exactly the dependency versions CI tested.
# The cache mounts keep the registry and target/ between builds (BuildKit); the
# binaries are copied out of the cached target/ because cache mounts are not part
# of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mesos-master --bin mesos-operator \
 && mkdir -p /out \
 && cp target/release/mesos-master target/release/mesos-operator /out/

# distroless/cc: glibc, libgcc, ca-certificates and (via base) libssl, nothing else:
# no shell, no package manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="mesos-operator" \
      org.opencontainers.image.description="Kubernetes operator for Mesos master ensembles, and the mesos-master it runs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mesos-master /out/mesos-operator /usr/local/bin/
USER 65532:65532
# mesos-master: HTTP API and replica protocol. mesos-operator: probes, metrics.
EXPOSE 5050 8080 9090
# No ENTRYPOINT: Kubernetes `command` picks the binary (the chart and deploy/ run
# the operator; the operator's StatefulSets run mesos-master). Bare `docker run`
# starts the operator.
CMD ["/usr/local/bin/mesos-operator", "run"]
