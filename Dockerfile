# syntax=docker/dockerfile:1
# One image per ticketmesh binary, from one build:
#   docker build --build-arg BIN=app-gateway -t ticketmesh/app-gateway:dev .
# The builder compiles every binary once (the BIN argument is only used in the
# last stage), so building the four images reuses one cached build. For amd64
# and arm64 at once: docker buildx build --platform linux/amd64,linux/arm64 …
# (make images-multiarch); each platform builds natively or under emulation.

# Build on Debian 12 to match the runtime image's glibc (2.36).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The dependency recipe: changes only when Cargo.toml/Cargo.lock do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies alone, in their own cached layer. BuildKit cache mounts keep
# the crate registry and the target directory between builds too, so a source
# change recompiles only the workspace's own crates (the binaries are copied
# out of the mounted target in the same step).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
      --bin app-gateway --bin app-event --bin app-notifier --bin app-storage --bin app-simulator \
 && mkdir /out \
 && cp target/release/app-gateway target/release/app-event target/release/app-notifier \
       target/release/app-storage target/release/app-simulator /out/

# Distroless: glibc, libgcc, CA certificates and nothing else (no shell, no
# package manager); runs as uid 65532.
FROM ${RUNTIME_IMAGE}
ARG BIN=app-gateway
COPY --from=builder /out/${BIN} /usr/local/bin/ticketmesh
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ticketmesh"]
