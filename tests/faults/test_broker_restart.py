"""Broker restart: the only broker stops and starts again while anomalies and results flow.

The worker, the shell executor and a running `mitigate review watch` must
reconnect on their own, every input must still end in exactly one place, and
an approval sent after the restart must start its plan.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults.conftest import Figures, OwnBroker
from tests.faults.harness import Feeder, Input, Rig, Traffic, event_record, settle, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

OUTAGE_S = 15


@pytest.mark.timeout(900)
def test_worker_executor_and_review_tool_reconnect(own_broker: OwnBroker, tmp_path: Path,
                                                     figures: Figures) -> None:
    rig = Rig(own_broker.bootstrap, tmp_path / "rig")
    try:
        worker = rig.worker("a")
        worker.start()
        executor = rig.executor()
        # A request to approve once the broker is back.
        record = event_record(confidence=0.6)
        rig.send([Input(record["event_id"], "review", record["entity"].encode(),
                        rig.codec.encode("AnomalyEvent", record))])
        wait_until(lambda: bool(rig.ledger().review_requests), 60, "the review request")
        (review_id,) = rig.ledger().review_requests

        watch_log = tmp_path / "watch.jsonl"
        watch_errors = tmp_path / "watch.err"
        with watch_log.open("wb") as output, watch_errors.open("wb") as errors:
            watch = subprocess.Popen([sys.executable, "-m", "mitigate.cli", "review", "watch", "--json"],
                                     env=rig.env, cwd=ROOT, stdout=output, stderr=errors)
        time.sleep(5)  # the watch starts at the end of the topic
        feeder = Feeder(rig, Traffic(rig.codec, seed=31), 30.0, 900).start()
        time.sleep(8)
        started = time.monotonic()
        own_broker.stop()
        time.sleep(OUTAGE_S)
        own_broker.start()
        outage = round(time.monotonic() - started)
        answer = subprocess.run(
            [sys.executable, "-m", "mitigate.cli", "review", "approve", review_id, "--operator", "alice",
             "--timeout", "3m", "--reason", "approved right after the broker restart"],
            env=rig.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        feeder.join()
        ledger = settle(rig, timeout_s=300)

        time.sleep(3)
        watch_running = watch.poll() is None
        watch.terminate()
        watch.wait(timeout=60)
        watched = {json.loads(line)["review_id"] for line in watch_log.read_text().splitlines() if line.strip()}
        counts = ledger.figures()
        figures.record("broker restart", {"outage_seconds": outage, "review_tool_exit": answer.returncode,
                                          "watched_requests": len(watched),
                                          "watch_error_lines": len(watch_errors.read_text().splitlines()),
                                          "worker_alive": worker.alive(), "executor_alive": executor.alive(),
                                          **counts})
        ledger.assert_sound()
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert review_id in ledger.review_approved
        assert worker.alive()
        assert executor.alive()
        # The watch ran through the outage and saw every request raised while it ran.
        missed = ledger.review_requests - {review_id} - watched
        assert watch_running, f"the watch stopped: {watch_errors.read_text()[-2000:]}"
        assert not missed, f"{len(missed)} requests not shown; watch errors: {watch_errors.read_text()[-2000:]}"
    finally:
        rig.close()
