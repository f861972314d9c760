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
# iptables for `capture install`; curl for the tour's clients (`kubectl exec … -- curl`), as Istio's proxy image has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/podmesh /usr/local/bin/podmesh
# Not the sidecar's uid (1337): the capture rules let that uid's traffic out uncaptured, so an application run
# from this image (the quickstart's `podmesh echo`, a `kubectl exec … curl`) must not be it. The sidecar, the
# capture init container and the control plane each set their user in their securityContext.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podmesh"]
