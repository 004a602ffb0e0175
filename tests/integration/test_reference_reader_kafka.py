"""ReferenceReader on the real broker: reads compacted topics to their end, then follows updates and tombstones."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from mitigate.kafka import create_producer, ensure_topics, flush_or_raise
from mitigate.reference_reader import ReferenceReader, ReferenceSource
from mitigate.topology import Topology

pytestmark = pytest.mark.kafka


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout_s} s")


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = create_producer(bootstrap)
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    flush_or_raise(producer)


def start_reader(bootstrap: str, topology: Topology) -> tuple[ReferenceReader, ReferenceSource, ReferenceSource]:
    assets = ReferenceSource(topology.assets, "asset")
    policies = ReferenceSource(topology.policies, "policy")
    reader = ReferenceReader(bootstrap, [assets, policies], f"test-{uuid.uuid4().hex[:8]}")
    reader.start()
    asyncio.run(asyncio.wait_for(reader.wait_loaded(), timeout=30))
    return reader, assets, policies


@pytest.fixture
def topology(kafka_bootstrap: str) -> Topology:
    topology = Topology(prefix=f"it-ref-{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka_bootstrap, topology)
    return topology


def test_reader_loads_every_partition(kafka_bootstrap: str, topology: Topology) -> None:
    records: list[tuple[bytes, bytes | None]] = [(f"asset-{index}".encode(), b"v1") for index in range(500)]
    produce(kafka_bootstrap, topology.assets, records)
    produce(kafka_bootstrap, topology.assets, [(b"asset-7", b"v2"), (b"asset-8", None)])

    reader, assets, policies = start_reader(kafka_bootstrap, topology)
    try:
        # Loaded means read up to the end offsets as of the start, so nothing is missing yet.
        assert len(assets.records) == 499
        assert assets.records[b"asset-7"] == b"v2"
        assert b"asset-8" not in assets.records
        assert policies.records == {}
    finally:
        reader.stop()


def test_reader_loaded_on_empty_topics(kafka_bootstrap: str, topology: Topology) -> None:
    reader, assets, _ = start_reader(kafka_bootstrap, topology)
    try:
        assert reader.loaded.is_set()
        assert assets.records == {}
    finally:
        reader.stop()


def test_reader_applies_live_updates(kafka_bootstrap: str, topology: Topology) -> None:
    produce(kafka_bootstrap, topology.assets, [(b"asset-1", b"v1"), (b"asset-2", b"v1")])
    reader, assets, policies = start_reader(kafka_bootstrap, topology)
    try:
        version = assets.version
        produce(kafka_bootstrap, topology.assets, [(b"asset-1", b"v2"), (b"asset-2", None), (b"asset-3", b"v1")])
        produce(kafka_bootstrap, topology.policies, [(b"policy@1", b"document")])

        wait_until(lambda: b"asset-3" in assets.records and b"policy@1" in policies.records)
        assert assets.records == {b"asset-1": b"v2", b"asset-3": b"v1"}
        assert assets.version > version
        assert reader.snapshot(policies) == (policies.version, [(b"policy@1", b"document")])
    finally:
        reader.stop()


def test_new_reader_sees_latest_state(kafka_bootstrap: str, topology: Topology) -> None:
    produce(kafka_bootstrap, topology.assets, [(b"asset-1", b"v1"), (b"asset-2", b"v1")])
    first, _, _ = start_reader(kafka_bootstrap, topology)
    first.stop()
    produce(kafka_bootstrap, topology.assets, [(b"asset-1", None), (b"asset-2", b"v2")])

    second, assets, _ = start_reader(kafka_bootstrap, topology)
    try:
        assert assets.records == {b"asset-2": b"v2"}
    finally:
        second.stop()


def test_reader_fails_on_missing_topic(kafka_bootstrap: str) -> None:
    missing = ReferenceSource(f"it-ref-missing-{uuid.uuid4().hex[:8]}", "asset")
    reader = ReferenceReader(kafka_bootstrap, [missing], "test-missing")
    reader.start()
    try:
        with pytest.raises(RuntimeError, match="reference reader failed"):
            asyncio.run(asyncio.wait_for(reader.wait_loaded(), timeout=30))
    finally:
        reader.stop()
