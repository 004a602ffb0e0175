"""Worker crash: SIGKILL the worker again and again while anomalies, verdicts and results flow.

Asserts that every input ends in exactly one place (a decision or a dead
letter), that the executor's runbook runs once per step, that every plan
started reaches its end, and that every approval sent starts exactly one plan.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.conftest import Figures, full_size
from tests.faults.harness import Feeder, Rig, Traffic, read_topic, settle

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


def pending_reviews(rig: Rig, approved: set[str]) -> list[str]:
    latest: dict[str, str] = {}
    for message in read_topic(rig.bootstrap, rig.topology.review_requests):
        request = rig.codec.decode(message.value(), "ReviewRequest").record
        latest[request["review_id"]] = request["status"]
    return sorted(review for review, status in latest.items() if status == "pending" and review not in approved)


@pytest.mark.timeout(1200)
def test_sigkill_loop_loses_and_repeats_nothing(rig: Rig, figures: Figures) -> None:
    inputs, rate, kills = (3000, 40.0, 8) if full_size() else (600, 30.0, 3)
    chance = random.Random(20261205)
    worker = rig.worker("a")
    worker.start()
    executor = rig.executor()
    feeder = Feeder(rig, Traffic(rig.codec, seed=7), rate, inputs).start()

    approved: set[str] = set()
    started = time.monotonic()
    for _ in range(kills):
        time.sleep(chance.uniform(2.0, 6.0) if full_size() else chance.uniform(2.0, 4.0))
        worker.kill()
        worker.start()
        for review_id in pending_reviews(rig, approved)[:2]:
            answer = rig.review("approve", review_id, "--operator", "alice", "--no-wait",
                                "--reason", "fault suite approval")
            assert answer.returncode == 0, answer.stdout + answer.stderr
            approved.add(review_id)
    feeder.join()
    ledger = settle(rig, timeout_s=300)

    counts = ledger.figures()
    figures.record("worker crash", {"kills": kills, "worker_starts": worker.starts, "approvals_sent": len(approved),
                                    "seconds": round(time.monotonic() - started), **counts})
    ledger.assert_sound()
    assert executor.alive()
    assert ledger.review_approved == approved
    assert counts["plans_started"] > 0
    assert counts["runbook_runs"] > 0
