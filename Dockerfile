# The podmesh image: one binary for the control plane (`podmesh control --kube`), the sidecar (`podmesh proxy`)
# and the capture init container (`podmesh capture install`, which needs iptables). `podmesh install` runs the
# control plane from it and `podmesh inject` (or the webhook) points pods at it (--image, --proxy-image).
#   docker build -t ghcr.io/podmesh/podmesh:0.1.0 .
# A sidecar-only image, with no Kubernetes client crates in it (it cannot run `control --kube` or
# `install --apply`):
#   docker build --build-arg CARGO_FLAGS=--no-default-features -t ghcr.io/podmesh/podmesh-proxy:0.1.0 .
FROM rust:1-bookworm AS build
ARG CARGO_FLAGS=
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p podmesh $CARGO_FLAGS

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/podmesh /usr/local/bin/podmesh
# The sidecar's user; the init container and the control plane set their own in their securityContext.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/podmesh"]
