#!/usr/bin/env bash
# `make run` until the local platform lands: the coffee example behind
# coldbrew's queue-proxy, with Knative's env contract, on loopback.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
PORT=${COFFEE_PORT:-8080}
USER_PORT=${COFFEE_USER_PORT:-18080}
PORT=$USER_PORT COFFEE_VERSION=v1 K_REVISION=coffee-00001 "$BUILD/bin/coffee" &
coffee=$!
export SERVING_NAMESPACE=default SERVING_SERVICE=coffee SERVING_CONFIGURATION=coffee \
  SERVING_REVISION=coffee-00001 SERVING_POD=coffee-00001-local SERVING_POD_IP=127.0.0.1 \
  QUEUE_SERVING_PORT=$PORT QUEUE_SERVING_TLS_PORT=8112 USER_PORT=$USER_PORT \
  CONTAINER_CONCURRENCY=10 REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= \
  SERVING_LOGGING_LEVEL=info COLDBREW_LISTEN_HOST=127.0.0.1 \
  QUEUE_ADMIN_PORT=${QUEUE_ADMIN_PORT:-18022} QUEUE_METRICS_PORT=${QUEUE_METRICS_PORT:-19090} \
  METRICS_PROMETHEUS_PORT=${METRICS_PROMETHEUS_PORT:-19091} QUEUE_DRAIN_QUIET_SECONDS=1 \
  OBSERVABILITY_CONFIG='{"requestMetrics":{"protocol":"prometheus"}}'
"$BUILD/bin/queue-proxy" &
qp=$!
trap 'kill -TERM $qp 2>/dev/null; wait $qp 2>/dev/null; kill -TERM $coffee 2>/dev/null; wait $coffee 2>/dev/null' EXIT INT TERM
sleep 0.3
cat <<MSG

coldbrew: started the coffee example (revision coffee-00001) behind coldbrew's queue-proxy.
  (The local platform, \`coldbrew run\`, is not built yet: this is the most complete thing there is.)

  curl http://127.0.0.1:$PORT/                 # coffee, through the queue-proxy (containerConcurrency 10)
  curl http://127.0.0.1:$PORT/?sleep=500       # a slow cup
  curl -s http://127.0.0.1:${QUEUE_METRICS_PORT:-19090}/metrics | xxd   # the autoscaler's protobuf Stat
  curl http://127.0.0.1:${METRICS_PROMETHEUS_PORT:-19091}/metrics      # Prometheus request metrics

Ctrl-C drains and stops both.
MSG
wait $qp
