#!/usr/bin/env bash
# The main job on its embedded default: a local broker, the shipped policies
# and assets, the demo-target and ticket executors, and the shipped sample
# series fed through the reference detector. Answers a review request with
# `mitigate review`, prints each decision and each plan's progress as they
# happen and a summary, then stops what it started.
#
# KEEP_RUNNING=1 leaves the broker, the worker and the executors running
# afterwards, with one review request still pending, to try the tools by hand;
# `scripts/run-sample.sh stop` (or `make stop`) stops them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bin=${BIN:-.venv/bin}
run_dir=.run/sample
export KAFKA_PORT=${KAFKA_PORT:-9092}
export KAFKA_DATA_DIR="$root/$run_dir/kafka"
export MITIGATE_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export MITIGATE_DATA_DIR="$root/$run_dir/worker"
export MITIGATE_READY_FILE="$root/$run_dir/worker.ready"
# The sample replays 79 days of readings in seconds, with their timestamps
# shifted so that the last one is now (detect --event-time rebase). The
# sample's worker accepts events up to 90 days old so that none is stale.
export MITIGATE_MAX_EVENT_AGE_S=7776000
series=data/nab/machine_temperature_system_failure.csv
worker_pid=""
executor_pids=()
pid_file="$run_dir/pids"

step() { printf '\n== %s\n' "$*"; }

stop_process() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() {
  local status=$?
  if ((${#executor_pids[@]})); then
    step "stopping the executors"
    for pid in "${executor_pids[@]}"; do stop_process "$pid"; done
  fi
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    step "stopping the worker"
    stop_process "$worker_pid"
  fi
  step "stopping the broker"
  scripts/kafka.sh stop || true
  if [[ $status -ne 0 && -n "$worker_pid" ]]; then
    echo "run-sample: failed (exit $status); logs are in $run_dir (worker.log, executor-*.log)" >&2
  elif [[ $status -ne 0 ]]; then
    echo "run-sample: failed (exit $status) before the worker started" >&2
  fi
  exit "$status"
}

wait_for_worker() {
  # The worker rewrites its ready file once a second after it has started; wait
  # until its tables hold the policies and assets published above.
  local policies=$1 assets=$2
  for _ in $(seq 1 120); do
    if ! kill -0 "$worker_pid" 2>/dev/null; then
      echo "run-sample: the worker exited during startup; last lines of its log:" >&2
      tail -n 30 "$run_dir/worker.log" >&2
      return 1
    fi
    if [[ -s "$MITIGATE_READY_FILE" ]] && "$bin/python" - "$MITIGATE_READY_FILE" "$policies" "$assets" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
sys.exit(0 if state["policies"] >= int(sys.argv[2]) and state["assets"] >= int(sys.argv[3]) else 1)
PY
    then
      return 0
    fi
    sleep 1
  done
  echo "run-sample: the worker did not load the tables within 120 s; see $run_dir/worker.log" >&2
  return 1
}

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$pid_file" ]]; then
    step "stopping the executors and the worker"
    while read -r pid; do stop_process "$pid"; done <"$pid_file"
    rm -f "$pid_file"
  fi
  step "stopping the broker"
  scripts/kafka.sh stop
  exit 0
fi

wait_for_review() {
  # Print the id of the pending review request of a subsystem once the worker has raised it.
  local subsystem=$1
  for _ in $(seq 1 60); do
    local id
    id=$("$bin/mitigate" review list --subsystem "$subsystem" --json | "$bin/python" -c \
      'import json, sys; requests = json.load(sys.stdin); print(requests[0]["review_id"] if requests else "")')
    if [[ -n "$id" ]]; then
      echo "$id"
      return 0
    fi
    sleep 1
  done
  echo "run-sample: no review request for $subsystem within 60 s; see $run_dir/worker.log" >&2
  return 1
}

# Start from empty topics so that the summary counts this run only.
step "starting a fresh local Kafka broker on 127.0.0.1:$KAFKA_PORT"
scripts/kafka.sh reset >/dev/null
rm -rf "$run_dir"
mkdir -p "$run_dir"
trap stop_all EXIT
scripts/kafka.sh start

# The sample's worker publishes 5-second metrics windows, so that the summary
# can check them against the topics without waiting for a one-minute window.
sed 's/^  window: 1m$/  window: 5s/' config/automation.yaml >"$run_dir/automation.yaml"
export MITIGATE_AUTOMATION_FILE="$root/$run_dir/automation.yaml"

step "creating topics"
"$bin/mitigate" topics create

step "publishing policies and assets"
"$bin/mitigate" policy publish config/policies --author sample-run --note "policies shipped with mitigate"
"$bin/mitigate" asset publish config/assets.yaml
policy_count=$(ls config/policies/*.yaml | wc -l)
asset_count=$(grep -c '^  - entity:' config/assets.yaml)

step "starting the worker (log: $run_dir/worker.log)"
"$bin/mitigate" worker >"$run_dir/worker.log" 2>&1 &
worker_pid=$!
wait_for_worker "$policy_count" "$asset_count"
echo "worker ready with $policy_count policies and $asset_count assets"

step "starting the demo-target and ticket executors (logs: $run_dir/executor-*.log)"
for name in demo-target ticket; do
  "$bin/mitigate" executor run "$name" --state-dir "$run_dir/executors/$name" >"$run_dir/executor-$name.log" 2>&1 &
  executor_pids+=($!)
done

step "running the reference detector over $series"
# The series repeats one hour of readings (the clock went back at 2014-01-07
# 02:55); --allow-unordered reads those rows in file order.
"$bin/mitigate" detect --allow-unordered --event-time rebase "$series"
"$bin/mitigate" sample edge-cases
"$bin/mitigate" sample containment
"$bin/mitigate" sample review

step "answering a review request as operator alice"
review_id=$(wait_for_review industrial/line-3)
wait_for_review industrial/line-4 >/dev/null
"$bin/mitigate" review list
echo
"$bin/mitigate" review show "$review_id"
echo
"$bin/mitigate" review approve "$review_id" --operator alice --reason "sample run: the overheating is real"

step "decisions as the worker makes them, and the progress of each plan"
"$bin/mitigate" report --timeout 180 --wait-for-plans --check-metrics

step "the story of the approved incident, read back from the topics"
"$bin/mitigate" audit trace "$review_id"

if [[ "${KEEP_RUNNING:-}" == "1" ]]; then
  printf '%s\n' "${executor_pids[@]}" "$worker_pid" >"$pid_file"
  trap - EXIT
  step "left running: broker on 127.0.0.1:$KAFKA_PORT, the worker and the executors (logs in $run_dir)"
  echo "the request for machine-temperature-04 is still pending; try:"
  echo "  export MITIGATE_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT"
  echo "  $bin/mitigate review list"
  echo "  $bin/mitigate review show ID"
  echo "  $bin/mitigate review approve ID --operator bob"
  echo "the worker's dashboard: http://127.0.0.1:${MITIGATE_WEB_PORT:-6066}/dashboard/"
  stop="make stop"
  [[ "$KAFKA_PORT" == "9092" ]] || stop="KAFKA_PORT=$KAFKA_PORT make stop"
  echo "stop everything with: $stop"
fi
