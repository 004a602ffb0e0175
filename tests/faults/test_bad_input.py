"""Bad input: ten thousand malformed messages of every kind, with good events between them.

Each malformed input must become one dead letter with the reason code its kind
calls for, each good event one decision, and the worker must keep running.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.conftest import Figures
from tests.faults.harness import Input, Rig, event_record, settle
from tests.faults.malformed import Malformed

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

MALFORMED = 10_000
GOOD_EVERY = 20  # one good event after every 20 malformed ones
OVERSIZED = 20


@pytest.mark.timeout(900)
def test_malformed_inputs_become_dead_letters(rig: Rig, figures: Figures) -> None:
    worker = rig.worker("a")
    worker.start()
    malformed = Malformed(rig.codec, seed=11)
    inputs: list[Input] = []
    for index, item in enumerate(malformed.inputs(MALFORMED) + malformed.oversized(OVERSIZED, 100_000)):
        inputs.append(item)
        if index % GOOD_EVERY == GOOD_EVERY - 1:
            # Below the policy's confidence gate: a review request, no plan to run.
            record = event_record(confidence=0.6)
            inputs.append(Input(record["event_id"], "good", record["entity"].encode(),
                                rig.codec.encode("AnomalyEvent", record)))
    started = time.monotonic()
    rig.send(inputs)
    ledger = settle(rig, timeout_s=600)
    seconds = round(time.monotonic() - started)

    reasons = Counter(reason for input_id, item in rig.inputs.items() if item.malformed
                      for reason in ledger.dead_letters.get(input_id, []))
    kinds = Counter(item.kind for item in rig.inputs.values() if item.malformed)
    counts = ledger.figures()
    figures.record("bad input", {"seconds": seconds, "kinds": len(kinds), "by_reason": dict(sorted(reasons.items())),
                                 **{name: counts[name] for name in (
                                     "inputs", "malformed_inputs", "good_inputs", "dead_lettered", "decided", "lost",
                                     "in_two_places", "wrong_reason")}})
    ledger.assert_sound()
    assert worker.alive(), f"the worker stopped; log: {worker.log_path}"
    assert counts["malformed_inputs"] >= 10_000
    assert counts["dead_lettered"] == counts["malformed_inputs"]
    assert counts["decided"] == counts["good_inputs"]
