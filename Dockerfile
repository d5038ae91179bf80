# syntax=docker/dockerfile:1
#
# shop's container image: one image with all five binaries; docker-compose.yml runs it once per
# service (`shop serve <service>`), and `docker run shop` alone runs all four in one process
# (`shop up`).
#
# Stage 1, `builder` (rust:1.95-bookworm): copies the whole workspace and compiles the release
#   binaries `shop`, `shop-user`, `shop-order`, `shop-inventory` and `shop-notification`.
#   SQLX_OFFLINE=true makes sqlx's query macros use the metadata committed in .sqlx/ instead of a
#   live database; the protos are compiled by build.rs with protox (no protoc needed). The cargo
#   registry and target/ are BuildKit cache mounts, so the binaries are copied out to /out in the
#   same RUN (a cache mount is not part of the stage's filesystem afterwards).
#
# Stage 2, runtime (debian:bookworm-slim, same Debian as the builder so glibc matches): only
#   ca-certificates, a non-root `shop` user, the five binaries and grpc_health_probe (copied
#   from its official image, nothing is downloaded) for the containers' health checks.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,id=shop-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=shop-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
        --bin shop --bin shop-user --bin shop-order --bin shop-inventory --bin shop-notification \
    && mkdir -p /out \
    && cp target/release/shop target/release/shop-user target/release/shop-order \
          target/release/shop-inventory target/release/shop-notification /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system shop \
    && useradd --system --gid shop --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin shop
COPY --from=ghcr.io/grpc-ecosystem/grpc-health-probe:v0.4.28 /ko-app/grpc-health-probe /usr/local/bin/grpc_health_probe
COPY --from=builder /out/ /usr/local/bin/
USER shop
# user, order, inventory, notification
EXPOSE 50051 50052 50053 50054
ENTRYPOINT ["/usr/local/bin/shop"]
CMD ["up"]
