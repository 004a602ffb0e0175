"""Slow and failing executors, with the real shell executor and the worker on the broker.

A runbook slower than the executor's max.poll.interval must not cost a
rebalance or a second run. A runbook that fails every time must trip the
circuit breaker; after that, automation sends nothing more and every decision goes to review.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Figures
from tests.faults.harness import AUTOMATION, Input, Rig, event_record, settle, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

SLOW_RUNBOOK_S = 10
POLL_INTERVAL = {"session_timeout": "6s", "max_poll_interval": "6s"}

TRIPPING = AUTOMATION.replace("""circuit_breaker:
  window: 5m
  max_commands: 100000
  cool_down: 15m""", """circuit_breaker:
  window: 10m
  max_commands: 100000
  max_failure_rate: 0.5
  min_results: 4
  cool_down: 15m""")


def auto_event(rig: Rig) -> Input:
    record = event_record()
    return Input(record["event_id"], "auto", record["entity"].encode(), rig.codec.encode("AnomalyEvent", record))


@pytest.mark.timeout(600)
@pytest.mark.rig(runbook_then=f"sleep {SLOW_RUNBOOK_S}", executor_consumer=POLL_INTERVAL)
def test_runbook_slower_than_poll_interval_runs_once(rig: Rig, figures: Figures) -> None:
    worker = rig.worker("a")
    worker.start()
    executor = rig.executor()
    started = time.monotonic()
    rig.send([auto_event(rig) for _ in range(2)])  # two plans of two steps: four runs of 10 s each
    ledger = settle(rig, timeout_s=300)

    log = executor.log_path.read_text()
    assigned = log.count("partitions assigned")
    counts = ledger.figures()
    figures.record("slow executor", {
        "runbook_seconds": SLOW_RUNBOOK_S, "max_poll_interval_seconds": 6, "seconds": round(time.monotonic() - started),
        "partition_assignments": assigned, "partitions_lost": log.count("partitions lost"),
        **{name: counts[name] for name in ("commands", "command_messages", "runbook_runs", "actions_run_twice",
                                           "plans_started", "plans_by_end")}})
    ledger.assert_sound()
    assert counts["runbook_runs"] == counts["commands"] == 4
    assert counts["plans_by_end"] == {"plan-completed": 2}
    assert assigned == 1, f"the executor's partitions moved {assigned - 1} times; log: {executor.log_path}"
    assert "partitions lost" not in log
    assert "partitions revoked" not in log


@pytest.mark.timeout(600)
@pytest.mark.rig(runbook_then="echo 'target refused the change' >&2; exit 1", automation=TRIPPING)
def test_failing_runbook_trips_circuit_breaker(rig: Rig, figures: Figures) -> None:
    worker = rig.worker("a")
    worker.start()
    rig.executor()

    decisions: list[str] = []

    def tripped() -> bool:
        item = auto_event(rig)
        rig.send([item])
        wait_until(lambda: bool(rig.ledger().decisions.get(item.input_id)), 60, f"the decision of {item.input_id}")
        ledger = rig.ledger()
        (decision_id,) = ledger.decisions[item.input_id]
        decisions.append(ledger.outcomes[decision_id])
        return decisions[-1] != "auto"

    wait_until(tripped, 240, "the circuit breaker to trip", interval_s=1.0)
    after = [auto_event(rig) for _ in range(5)]
    rig.send(after)
    ledger = settle(rig, timeout_s=120)

    counts = ledger.figures()
    outcomes_after = [ledger.outcomes[next(iter(ledger.decisions[item.input_id]))] for item in after]
    figures.record("failing executor", {
        "events_until_tripped": len(decisions), "outcomes_after_trip": outcomes_after,
        **{name: counts[name] for name in ("commands", "runbook_runs", "actions_run_twice", "plans_by_end",
                                           "review_requests")}})
    ledger.assert_sound()
    assert decisions[-1] == "review"
    assert outcomes_after == ["review"] * 5
    assert counts["runbook_runs"] == counts["commands"]
    assert set(counts["plans_by_end"]) == {"plan-failed"}
