"""Read compacted reference topics (policies, assets, silences) into memory in a background thread.

The compacted topics already hold the latest record of every key, so each
worker reads them itself from the beginning, with every partition assigned
and no consumer group. So every worker reads every record, a restarted worker
reads the whole topic again, and later records and tombstones apply while
the worker runs.

A confluent-kafka consumer runs in its own thread and writes each batch into
the mappings under a lock. `loaded` is set once every partition has been read
up to its end offset as of the start, so the agents can wait for it before
they process events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from mitigate.kafka import client_config

logger = logging.getLogger(__name__)

BATCH_SIZE = 5_000
POLL_TIMEOUT_S = 0.2
METADATA_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
RETRY_INTERVAL_S = 0.5
RETRY_LOG_INTERVAL_S = 10.0
# Retried without end, as Faust waits for the broker: no broker reachable yet, or a partition
# whose leader is not elected yet (right after the topic is created). librdkafka does not mark
# the leader errors as retriable in get_watermark_offsets.
TRANSIENT_ERRORS = frozenset({
    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
})
T = TypeVar("T")


class _Stopped(Exception):
    """The reader was stopped while it waited for the broker."""


@dataclass
class ReferenceSource:
    """One compacted topic and the mapping that mirrors it: a value sets its key, a tombstone deletes it.

    `version` grows with every applied batch that changed the mapping, so a
    reader can tell whether a view it derived from the mapping is stale.
    """

    topic: str
    kind: str
    records: dict[bytes, bytes] = field(default_factory=dict)
    version: int = 0


class ReferenceReader:
    """Keeps each source's mapping equal to its topic, from a consumer thread."""

    def __init__(self, bootstrap_servers: str, sources: list[ReferenceSource], client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.sources = {source.topic: source for source in sources}
        self.client_id = client_id
        # Held while a batch is applied. Hold it to iterate over a mapping or to take a consistent snapshot.
        self.lock = threading.Lock()
        self.loaded = threading.Event()
        self.failed: BaseException | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="reference-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning("reference reader did not stop within %.0f s", STOP_TIMEOUT_S)

    async def wait_loaded(self, poll_s: float = 0.05) -> None:
        """Wait until every reference topic has been read up to its end offset as of the start."""
        while not self.loaded.is_set():
            if self.failed is not None:
                raise RuntimeError("the reference reader failed; see the log") from self.failed
            await asyncio.sleep(poll_s)

    def snapshot(self, source: ReferenceSource) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Return the source's version and a copy of its records, consistent with each other."""
        with self.lock:
            return source.version, list(source.records.items())

    def _run(self) -> None:
        try:
            self._consume()
        except _Stopped:
            logger.info("reference reader stopped before the topics were read")
        except BaseException as exc:  # the thread has no caller, so wait_loaded raises it in the agents
            self.failed = exc
            logger.exception("reference reader stopped: %s", exc)

    def _consume(self) -> None:
        consumer = Consumer(client_config(self.bootstrap_servers, **{
            # No offsets are committed and no group is joined (partitions are assigned),
            # but librdkafka requires a group id.
            "group.id": f"{self.client_id}-reference-{uuid.uuid4().hex[:8]}",
            "client.id": f"{self.client_id}-reference",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # Larger fetches than the defaults, as the topics are read from the beginning on every
            # start, but a smaller prefetch queue (default 64 MiB), because the records are kept too.
            "fetch.max.bytes": 16 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "queued.max.messages.kbytes": 16 * 1024,
        }))
        try:
            pending: dict[tuple[str, int], int] | None = self._assign(consumer)
            started = time.monotonic()
            if not pending:
                self._report_loaded(started)
                pending = None
            while not self._stopping.is_set():
                messages = consumer.consume(BATCH_SIZE, timeout=POLL_TIMEOUT_S)
                if not messages:
                    continue
                self._apply(messages, pending)
                if pending is not None and not pending:
                    self._report_loaded(started)
                    pending = None
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """Assign every partition from the beginning; return the end offset to reach for each non-empty one."""
        assignment = []
        pending: dict[tuple[str, int], int] = {}
        for topic in self.sources:
            metadata = self._retrying(lambda: consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S),
                                      f"metadata of {topic}").topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                reason = metadata.error if metadata is not None else "not found"
                raise KafkaException(f"reference topic {topic} cannot be read: {reason}; "
                                     "create it with `mitigate topics create`")
            for number in metadata.partitions:
                partition = TopicPartition(topic, number)
                low, high = self._retrying(
                    lambda: consumer.get_watermark_offsets(partition, timeout=METADATA_TIMEOUT_S),
                    f"end offset of {topic}[{number}]")
                if high > low:
                    pending[(topic, number)] = high
                assignment.append(TopicPartition(topic, number, OFFSET_BEGINNING))
        consumer.assign(assignment)
        logger.info("reference reader assigned partitions=%d to read=%d", len(assignment), len(pending))
        return pending

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """Return `call()`, retrying while the broker is unreachable or a partition has no leader yet."""
        logged = 0.0
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0]
                transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in TRANSIENT_ERRORS)
                if not transient:
                    raise
                if time.monotonic() - logged >= RETRY_LOG_INTERVAL_S:
                    logged = time.monotonic()
                    logger.warning("reference reader: %s not available yet, retrying every %.1f s: %s",
                                   what, RETRY_INTERVAL_S, error.str())
                if self._stopping.wait(RETRY_INTERVAL_S):
                    raise _Stopped from exc

    def _apply(self, messages: list[Message], pending: dict[tuple[str, int], int] | None) -> None:
        changed: set[str] = set()
        with self.lock:
            for message in messages:
                # Messages from an assigned partition always carry their topic, partition and offset.
                topic = cast(str, message.topic())
                partition = cast(int, message.partition())
                offset = cast(int, message.offset())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if pending is not None and offset >= pending.get((topic, partition), 0):
                            pending.pop((topic, partition), None)
                    else:
                        logger.error("reading reference topic %s[%s] failed: %s", topic, partition, error)
                    continue
                source = self.sources[topic]
                key = message.key()
                if key is None:
                    logger.error("%s message without key ignored source=%s[%d]@%d", source.kind, topic,
                                 partition, offset)
                    continue
                value = message.value()
                if value is None:
                    source.records.pop(key, None)
                else:
                    source.records[key] = value
                changed.add(topic)
                if pending is not None and offset + 1 >= pending.get((topic, partition), 0):
                    pending.pop((topic, partition), None)
            for topic in changed:
                self.sources[topic].version += 1

    def _report_loaded(self, started: float) -> None:
        counts = " ".join(f"{source.kind}={len(source.records)}" for source in self.sources.values())
        logger.info("reference topics read in %.1f s: %s", time.monotonic() - started, counts)
        self.loaded.set()
