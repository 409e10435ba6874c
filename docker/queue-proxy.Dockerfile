# coldbrew queue-proxy: a drop-in for Knative Serving v1.23's queue-proxy image.
#
#   docker build -f docker/queue-proxy.Dockerfile -t <registry>/coldbrew-queue-proxy:<tag> .
#   podman build -f docker/queue-proxy.Dockerfile -t <registry>/coldbrew-queue-proxy:<tag> .   (no Docker needed)
#
# tests/images/run.sh builds this file with podman and runs the image as
# Kubernetes would (read-only, uid 65532, no capabilities).
#
# Knative runs the sidecar with readOnlyRootFilesystem, runAsNonRoot and all
# capabilities dropped; this image writes nothing at run time (logs go to
# stdout, no temp files) and runs as a numeric non-root user, so it meets that
# as shipped. The ENTRYPOINT takes no flags: everything comes from the
# environment Knative sets (see README "queue-proxy").

# ---- build: the same packages `make deps-build` installs on a workstation
FROM debian:bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
RUN make deps-build && rm -rf /var/lib/apt/lists/*
COPY common/ common/
COPY queue-proxy/ queue-proxy/
RUN make build/bin/queue-proxy && strip build/bin/queue-proxy

# ---- run: exactly the shared libraries the binary links (ldd; the check in
# tests/packaging/test_docker.py keeps this list honest)
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libevent-core-2.1-7 libjansson4 libjemalloc2 libnghttp2-14 libprotobuf-c1 libssl3 libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/queue-proxy /ko-app/queue-proxy
LABEL org.opencontainers.image.title="coldbrew-queue-proxy" \
      org.opencontainers.image.description="Knative Serving queue-proxy, drop-in, written in C" \
      org.opencontainers.image.source="https://github.com/coldbrew-dev/coldbrew" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532: the "nonroot" uid of distroless and ko images, which Knative's own use.
USER 65532:65532
ENTRYPOINT ["/ko-app/queue-proxy"]
