# The example user container for tests/images/run.sh: build/bin/coffee (made
# on the host by `make`) on debian:bookworm-slim with the one library it
# links (libevent-2.1-7). The build context is a directory holding only the
# binary, so nothing else of the tree is sent.
FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libevent-2.1-7 \
 && rm -rf /var/lib/apt/lists/*
COPY coffee /ko-app/coffee
USER 65532:65532
ENTRYPOINT ["/ko-app/coffee"]
