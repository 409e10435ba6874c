# coldbrew activator: a drop-in for Knative Serving v1.23's activator image.
#
#   docker build -f docker/activator.Dockerfile -t <registry>/coldbrew-activator:<tag> .
#   podman build -f docker/activator.Dockerfile -t <registry>/coldbrew-activator:<tag> .   (no Docker needed)
#
# tests/images/run.sh builds this file with podman and runs the image as
# Kubernetes would (read-only, uid 65532, no capabilities).
#
# Knative's activator Deployment sets readOnlyRootFilesystem and runAsNonRoot;
# this image writes nothing at run time and runs as a numeric non-root user.
# The ENTRYPOINT takes no flags: POD_NAME, POD_IP, SYSTEM_NAMESPACE and the
# rest come from the Deployment's env (README "activator"); the Kubernetes API
# is reached in-cluster with the service account's token and CA.

# ---- build: the same packages `make deps-build` installs on a workstation
FROM debian:bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
RUN make deps-build && rm -rf /var/lib/apt/lists/*
COPY common/ common/
COPY activator/ activator/
RUN make build/bin/activator && strip build/bin/activator

# ---- run: exactly the shared libraries the binary links (ldd; the check in
# tests/packaging/test_docker.py keeps this list honest). ca-certificates is
# not needed: the API server's CA comes from the service account.
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libevent-core-2.1-7 libevent-extra-2.1-7 libjansson4 libjemalloc2 libnghttp2-14 libprotobuf-c1 \
      libssl3 libstdc++6 libwslay1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/activator /ko-app/activator
LABEL org.opencontainers.image.title="coldbrew-activator" \
      org.opencontainers.image.description="Knative Serving activator, drop-in, written in C" \
      org.opencontainers.image.source="https://github.com/coldbrew-dev/coldbrew" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/ko-app/activator"]
