"""WorkerProducer on the real broker: a flush waits for deliveries and records changelog offsets."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from mitigate.kafka import ensure_topics
from mitigate.producer import OffsetSink, WorkerProducer
from mitigate.topology import Topology

pytestmark = pytest.mark.kafka


class RecordingStore:
    def __init__(self) -> None:
        self.persisted: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


def test_flush_persists_changelog_offsets(kafka_bootstrap: str) -> None:
    topology = Topology(prefix=f"it-producer-{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka_bootstrap, topology)
    store = RecordingStore()
    table: Any = SimpleNamespace(data=store)
    producer = WorkerProducer(kafka_bootstrap, "test", 1024 * 1024)
    sink = OffsetSink(table)
    producer.sinks.append(sink)

    for index in range(3):
        producer.produce(topology.anomalies, f"key-{index}".encode(), b"value", partition=1, sink=sink)
    producer.produce(topology.anomalies, b"key", b"output")  # an output, with no sink
    asyncio.run(asyncio.wait_for(producer.flush(), timeout=30))

    assert store.persisted == {TP(topology.anomalies, 1): 2}
    assert len(producer.producer) == 0
