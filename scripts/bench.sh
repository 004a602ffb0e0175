#!/usr/bin/env bash
# `make bench`: start a fresh local broker of its own, run the three arms of
# benchmarks/run.py against it one after another, then stop the broker.
# Arguments are passed to benchmarks/run.py (--events, --rate, --arms, ...).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${BIN:-.venv/bin}
export KAFKA_PORT=${BENCH_KAFKA_PORT:-19792}
export KAFKA_DATA_DIR="$root/.run/bench/kafka"
export MITIGATE_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
# The backlog and the million assets need more than the broker's default heap.
export KAFKA_HEAP=${KAFKA_HEAP:--Xms1g -Xmx2g}

mkdir -p .run/bench
scripts/kafka.sh reset >/dev/null
trap 'scripts/kafka.sh stop || true' EXIT
scripts/kafka.sh start
"$bin/python" -m benchmarks.run "$@"
