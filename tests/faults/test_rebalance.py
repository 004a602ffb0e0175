"""Scale-out and rebalance: a second worker joins mid-stream, then the first is killed.

Partitions move twice: to the new worker when it joins, and all to it when
the first one dies. Its tables are rebuilt from their changelogs, so the
incident state stays consistent: every incident counts its signals 1, 2, 3,
... exactly once across both workers.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Figures, full_size
from tests.faults.harness import Feeder, Rig, Traffic, settle

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


@pytest.mark.timeout(900)
def test_second_worker_joins_then_first_dies(rig: Rig, figures: Figures) -> None:
    inputs, rate = (2400, 40.0) if full_size() else (900, 30.0)
    first = rig.worker("a")
    first.start()
    rig.executor()
    started = time.monotonic()
    feeder = Feeder(rig, Traffic(rig.codec, seed=23), rate, inputs).start()

    time.sleep(inputs / rate / 4)
    second = rig.worker("b")
    second.start()
    time.sleep(inputs / rate / 4)
    first.kill()
    feeder.join()
    ledger = settle(rig, timeout_s=300)

    log = second.log_path.read_text()
    counts = ledger.figures()
    figures.record("scale-out and rebalance", {
        "seconds": round(time.monotonic() - started),
        "rebalances_seen_by_second_worker": log.count("Setting newly assigned partitions"), **counts})
    ledger.assert_sound()
    assert second.alive()
    assert log.count("Setting newly assigned partitions") >= 2, "the second worker never took over the partitions"
