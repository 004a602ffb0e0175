"""The worker's producer for outputs and table changelogs: confluent-kafka, flushed before every offset commit.

Faust's own send path (Topic.send or a table's changelog buffer, then
aiokafka) runs tens of microseconds of Python per message, and the pipeline
produces several messages per event. librdkafka queues a message in a few
microseconds and batches in its own thread. (Both figures are estimates from
py-spy profiles of `make bench`.)

At-least-once delivery still holds: Faust flushes its producer before it
commits consumer offsets, and `attach` wraps that flush so that it first waits
until every message queued before it is acknowledged. A delivery that fails is
raised from that flush, so the offsets are not committed and the input is
processed again after a restart.

NOTE: the hook relies on faust-streaming 0.15.3 calling `app.producer.flush()`
in `Consumer._commit_offsets`, and only in at-least-once mode. With Faust's
exactly-once mode (transactions) these messages would not be part of the
transaction; the worker does not enable that mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
from confluent_kafka import KafkaError, Message, Producer
from faust.types import TP

from mitigate.kafka import create_producer

logger = logging.getLogger(__name__)

# Serve delivery reports after this many messages, because polling after each one would cost more than it saves.
POLL_EVERY = 256
FLUSH_POLL_S = 0.002


class DeliveryError(Exception):
    """A message could not be delivered, so the offsets of its input must not be committed."""


class OffsetSink:
    """The latest delivered changelog offset per partition of one table, written to its store as the persisted offset."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.latest: dict[TP, int] = {}

    def delivered(self, topic: str, partition: int, offset: int) -> None:
        tp = TP(topic, partition)
        if offset > self.latest.get(tp, -1):
            self.latest[tp] = offset

    def persist(self) -> None:
        # The local store already contains every value whose changelog offset is here, because
        # a table writes its store before it queues the changelog message.
        for tp, offset in self.latest.items():
            self.table.data.set_persisted_offset(tp, offset)
        self.latest.clear()


class WorkerProducer:
    """Queues messages on a librdkafka producer and waits for them before Faust commits offsets.

    Messages are counted per epoch, and each flush starts a new epoch, so a flush
    waits for the messages queued before it started and not for those that the
    agents keep queuing while it waits.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, max_request_bytes: int) -> None:
        self.producer: Producer = create_producer(bootstrap_servers, **{
            "client.id": f"{client_id}-output",
            "linger.ms": 5,
            "batch.size": 262144,
            "message.max.bytes": max_request_bytes,
        })
        self.sinks: list[OffsetSink] = []
        self._failure: KafkaError | None = None
        self._unpolled = 0
        self._epoch = 0
        self._outstanding: dict[int, int] = {0: 0}  # epoch -> messages without a delivery report yet
        self._callbacks: dict[OffsetSink | None, Callable[[KafkaError | None, Message], None]] = {}
        self._app: faust.App | None = None
        self._attached = False

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None = None, partition: int | None = None,
                sink: OffsetSink | None = None) -> None:
        """Queue one message. With `sink`, its offset is recorded there once it is delivered."""
        if not self._attached and self._app is not None:
            # Hooked at the latest before the first message, so no commit can skip waiting for one.
            self.attach(self._app)
        header_list = cast(list[tuple[str, str | bytes | None]], list(headers)) if headers else None
        callback = self._callbacks.get(sink)
        if callback is None:
            callback = self._callbacks[sink] = self._callback(self._epoch, sink)
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value, key, headers=header_list, on_delivery=callback)
                else:
                    self.producer.produce(topic, value, key, partition, headers=header_list, on_delivery=callback)
                break
            except BufferError:
                # librdkafka's queue is full: serve deliveries until there is room.
                self.producer.poll(0.05)
        self._outstanding[self._epoch] += 1
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self.producer.poll(0)

    def _callback(self, epoch: int, sink: OffsetSink | None) -> Callable[[KafkaError | None, Message], None]:
        outstanding = self._outstanding

        def delivered(error: KafkaError | None, message: Message) -> None:
            outstanding[epoch] -= 1
            if error is not None:
                logger.error("delivery to %s[%s] failed: %s", message.topic(), message.partition(), error)
                if self._failure is None:
                    self._failure = error
            elif sink is not None:
                sink.delivered(cast(str, message.topic()), cast(int, message.partition()),
                               cast(int, message.offset()))

        return delivered

    async def flush(self) -> None:
        """Wait until every message queued before this call is acknowledged, and raise DeliveryError if one failed."""
        last = self._epoch
        self._epoch += 1
        self._outstanding[self._epoch] = 0
        self._callbacks = {}
        while True:
            self.producer.poll(0)
            waiting = [epoch for epoch in self._outstanding if epoch <= last and self._outstanding[epoch] > 0]
            if not waiting:
                break
            await asyncio.sleep(FLUSH_POLL_S)
        for epoch in [epoch for epoch in self._outstanding if epoch <= last]:
            del self._outstanding[epoch]
        for sink in self.sinks:
            sink.persist()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise DeliveryError(f"a message could not be delivered: {failure}")

    def close(self, timeout_s: float = 30.0) -> None:
        """Wait up to `timeout_s` for every queued message, as the worker stops."""
        remaining = self.producer.flush(timeout_s)
        if remaining:
            logger.error("%d messages were not delivered within %.0f s of the worker's stop", remaining, timeout_s)
        for sink in self.sinks:
            sink.persist()

    def bind(self, app: faust.App) -> None:
        """Set the app whose producer flush is wrapped at the first message, unless `attach` ran before."""
        self._app = app

    def attach(self, app: faust.App) -> None:
        """Make Faust's producer flush, which runs before every offset commit, flush this producer first."""
        if self._attached:
            return
        self._attached = True
        faust_producer = app.producer
        faust_flush = faust_producer.flush

        async def flush_both() -> None:
            await self.flush()
            await faust_flush()

        faust_producer.flush = flush_both  # type: ignore[method-assign]
