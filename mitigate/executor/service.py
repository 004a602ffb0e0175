"""The executor service: consumes one executor's command topic, handles each command once, publishes its result.

Delivery and offsets: the service commits a command's offset only after its
result has been stored and delivered to the action-results topic. After a
crash in between, the command is delivered again, and the command store
returns the stored result instead of running it again (see processing.py).

Slow actions: while a handler runs, or a result is being delivered, the
service pauses its assigned partitions and keeps calling poll(). librdkafka
then serves the group protocol and counts the consumer as alive, so an action
may take longer than max.poll.interval.ms without costing a rebalance. Pausing
drops messages fetched ahead for those partitions, and resuming fetches them
again from the next offset.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mitigate.codec import AvroCodec
from mitigate.enrichment import TRACE_HEADER
from mitigate.errors import DecodeError
from mitigate.executor.config import ConsumerSettings
from mitigate.executor.handler import ExecutorError, Handler
from mitigate.executor.processing import CommandProcessor, utc_now
from mitigate.executor.store import CommandStore
from mitigate.kafka import KafkaAdminError, client_config, create_producer, flush_or_raise
from mitigate.models import ActionResult
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
PAUSED_POLL_TIMEOUT_S = 0.1
# A wait shorter than this is spent without pausing the partitions, because
# pausing drops the messages fetched ahead and they have to be fetched again.
UNPAUSED_WAIT_S = 0.2
DELIVERY_TIMEOUT_S = 30.0
RETRY_DELIVERY_AFTER_S = 5.0
PRUNE_INTERVAL_S = 3600.0
CLOSE_FLUSH_TIMEOUT_S = 10.0
# The same client error is logged at most once in this many seconds, and its repeats are counted.
ERROR_LOG_INTERVAL_S = 60.0

STORE_FILE = "commands.sqlite"
LOCK_FILE = "executor.lock"


def consumer_group(topology: Topology, executor: str) -> str:
    return f"{topology.prefix}mitigate-executor-{executor}"


class StateLock:
    """An exclusive lock on a state folder, so that two executor processes never share a command store.

    The lock is an flock on a file, so the operating system releases it when
    the process dies, however it dies.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._handle: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ExecutorError(f"cannot create the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode("ascii", errors="replace").strip() or "unknown"
            os.close(handle)
            raise ExecutorError(
                f"the state folder {self.path.parent} is in use by another executor process (pid {holder}); "
                "give each executor process its own --state-dir"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode("ascii"))
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing the descriptor releases the flock
            self._handle = None


class _RepeatedErrors:
    """Rate limit for the log lines of repeated errors.

    Each kind of error is logged at most once per interval. The next line of
    that kind counts the repeats dropped meanwhile.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def log(self, level: int, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] += 1
            return
        repeats = self._suppressed.pop(kind, 0)
        suffix = f" ({repeats} more like it in the last {now - last:.0f} s)" if repeats and last is not None else ""
        logger.log(level, "%s%s", message, suffix)
        self._last_logged[kind] = now


class ExecutorService:
    """Runs one handler against its command topic until stopped.

    `command_topic` defaults to the topology's `actions.<handler name>`, so a
    handler whose name is not one of the topology's executors needs it.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        bootstrap_servers: str,
        topology: Topology,
        state_dir: Path,
        consumer_settings: ConsumerSettings | None = None,
        result_retention_s: float = 14 * 86400.0,
        command_topic: str | None = None,
        codec: AvroCodec | None = None,
    ) -> None:
        self.handler = handler
        self.bootstrap_servers = bootstrap_servers
        self.topology = topology
        self.state_dir = state_dir
        self.consumer_settings = consumer_settings or ConsumerSettings()
        self.result_retention_s = result_retention_s
        self.codec = codec or AvroCodec(SchemaRepository())
        if command_topic is None:
            try:
                command_topic = topology.actions(handler.name)
            except ValueError as exc:
                raise ExecutorError(f"{exc}; pass command_topic for an executor of another name") from exc
        self.command_topic = command_topic
        self.results_topic = topology.action_results
        self.group_id = consumer_group(topology, handler.name)

        self.handled = 0
        self._stop_requested = False
        self._busy = False
        self._fatal: KafkaError | None = None
        self._backlog: deque[Message] = deque()
        self._errors = _RepeatedErrors(ERROR_LOG_INTERVAL_S)
        self._next_prune = 0.0
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._started = False
        self._store: CommandStore | None = None
        self._processor: CommandProcessor | None = None

    # Lifecycle

    def stop(self) -> None:
        """Ask the service to stop after the command it is handling; safe to call from a signal handler."""
        self._stop_requested = True

    def run(self, *, handle_signals: bool = True) -> None:
        """Consume and handle commands until stop() or SIGTERM/SIGINT; raise ExecutorError when it cannot go on.

        With handle_signals, the first SIGTERM or SIGINT stops the service
        after the current command. A second one raises KeyboardInterrupt at
        once and leaves the command marked running, so it is reported as
        interrupted when it is delivered again.
        """
        lock = StateLock(self.state_dir)
        lock.acquire()
        previous_handlers = self._install_signal_handlers() if handle_signals else {}
        try:
            self._store = CommandStore(self.state_dir / STORE_FILE, self.handler.name)
            self._processor = CommandProcessor(self.handler, self._store, wait=self._wait_for_handler)
            self._report_interrupted(self._store)
            self._prune()
            self._consume()
        finally:
            self._close()
            for signal_number, previous in previous_handlers.items():
                signal.signal(signal_number, previous)
            lock.release()

    def _consume(self) -> None:
        consumer = Consumer(client_config(self.bootstrap_servers, **{
            "group.id": self.group_id,
            "client.id": f"mitigate-executor-{self.handler.name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(self.consumer_settings.session_timeout * 1000),
            "max.poll.interval.ms": int(self.consumer_settings.max_poll_interval * 1000),
            "error_cb": self._on_client_error,
        }))
        self._consumer = consumer
        self._producer = create_producer(self.bootstrap_servers, **{
            "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
            "error_cb": self._on_client_error,
        })
        self._check_topics(consumer)
        consumer.subscribe([self.command_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        logger.info("executor %s started: consuming %s as group %s, results to %s, state in %s",
                    self.handler.name, self.command_topic, self.group_id, self.results_topic, self.state_dir)
        self._started = True

        while not self._stop_requested:
            if self._fatal is not None:
                raise ExecutorError(f"the Kafka client reported a fatal error: {self._fatal.str()}")
            message = self._backlog.popleft() if self._backlog else consumer.poll(POLL_TIMEOUT_S)
            if message is None:
                self._prune()
                continue
            if message.error() is not None:
                self._on_message_error(message)
                continue
            self._handle(message)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group, so its partitions move at once
            except (KafkaException, RuntimeError) as exc:
                logger.warning("closing the consumer failed: %s", exc)
        if self._producer is not None:
            try:
                flush_or_raise(self._producer, CLOSE_FLUSH_TIMEOUT_S)
            except KafkaAdminError as exc:
                logger.warning("%s; their commands are not committed, so they will be delivered again and get "
                               "their stored results", exc)
        if self._store is not None:
            self._store.close()
        if self._started:
            logger.info("executor %s stopped after handling %d commands", self.handler.name, self.handled)

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            previous[signal_number] = signal.signal(signal_number, self._on_signal)
        return previous

    def _on_signal(self, signal_number: int, frame: FrameType | None) -> None:
        name = signal.Signals(signal_number).name
        if self._stop_requested:
            logger.warning("received %s again; stopping at once", name)
            raise KeyboardInterrupt
        logger.info("received %s; stopping after the current command (send it again to stop at once)", name)
        self.stop()

    # Commands

    def _handle(self, message: Message) -> None:
        source = _coordinates(message)
        assert self._processor is not None
        try:
            decoded = self.codec.decode(message.value(), "ActionCommand")
        except DecodeError as exc:
            logger.error("message at %s is not an ActionCommand (%s: %s); skipped without a result",
                         source, exc.reason_code, exc)
            self._commit(message, source)
            return

        result = self._processor.process(decoded.record, source)
        if result is not None:
            while not self._publish(result, source):
                if self._stop_requested:
                    logger.warning("stopping with the result of command %s from %s undelivered; the command is not "
                                   "committed, so its stored result is published when it is delivered again",
                                   result.command_id, source)
                    return
                logger.warning("publishing the result of command %s from %s again in %.0f s",
                               result.command_id, source, RETRY_DELIVERY_AFTER_S)
                self._poll_paused(lambda: self._stop_requested, RETRY_DELIVERY_AFTER_S)
        self._commit(message, source)
        self.handled += 1

    def _publish(self, result: ActionResult, source: str) -> bool:
        """Send the result keyed by incident (or decision) and wait for its delivery; return whether it arrived."""
        key = (result.incident_id or result.decision_id).encode("utf-8")
        value = self.codec.encode("ActionResult", result.to_avro())
        producer = self._producer
        assert producer is not None
        reports: list[KafkaError | None] = []

        def record_report(error: KafkaError | None, _message: Message) -> None:
            reports.append(error)

        def delivered() -> bool:
            producer.poll(0)
            return bool(reports)

        try:
            producer.produce(self.results_topic, key=key, value=value,
                                   headers=[(TRACE_HEADER, result.trace_id.encode("utf-8"))], on_delivery=record_report)
        except (KafkaException, BufferError) as exc:
            logger.error("result of command %s from %s: producing to %s failed: %s", result.command_id, source,
                         self.results_topic, exc)
            return False
        if not self._poll_paused(delivered, DELIVERY_TIMEOUT_S + 5.0):
            logger.error("result of command %s from %s: no delivery report from %s within %.0f s",
                         result.command_id, source, self.results_topic, DELIVERY_TIMEOUT_S + 5.0)
            return False
        if reports[0] is not None:
            logger.error("result of command %s from %s: delivery to %s failed: %s", result.command_id, source,
                         self.results_topic, reports[0].str())
            return False
        return True

    def _commit(self, message: Message, source: str) -> None:
        assert self._consumer is not None
        topic, partition, position = _position(message)
        offset = TopicPartition(topic, partition, position + 1)
        try:
            self._consumer.commit(offsets=[offset], asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition meanwhile, and its new owner gets the command again.
            # If that is this process, its store returns the stored result without running the command.
            logger.warning("committing the offset of %s failed: %s; the command will be delivered again",
                           source, exc.args[0].str() if exc.args else exc)

    def _wait_for_handler(self, future: Any, timeout_s: float) -> bool:
        return self._poll_paused(future.done, timeout_s)

    def _poll_paused(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until done() or the timeout, polling the consumer on paused partitions; return done()."""
        ends = time.monotonic() + timeout_s
        unpaused_until = min(ends, time.monotonic() + UNPAUSED_WAIT_S)
        while not done() and time.monotonic() < unpaused_until:
            time.sleep(0.002)
        if done() or time.monotonic() >= ends:
            return done()

        assert self._consumer is not None
        self._busy = True
        self._set_paused(self._consumer.assignment(), paused=True)
        try:
            while not done():
                left = ends - time.monotonic()
                if left <= 0:
                    return False
                message = self._consumer.poll(min(PAUSED_POLL_TIMEOUT_S, left))
                if message is None:
                    continue
                if message.error() is not None:
                    self._on_message_error(message)
                else:
                    # Only a partition assigned after the pause can deliver; keep its message, in order.
                    self._backlog.append(message)
            return True
        finally:
            self._busy = False
            self._set_paused(self._consumer.assignment(), paused=False)

    def _set_paused(self, partitions: list[TopicPartition], *, paused: bool) -> None:
        if not partitions:
            return
        assert self._consumer is not None
        try:
            if paused:
                self._consumer.pause(partitions)
            else:
                self._consumer.resume(partitions)
        except KafkaException as exc:
            logger.warning("%s partitions %s failed: %s", "pausing" if paused else "resuming",
                           _partition_list(partitions), exc)

    # Store upkeep

    def _report_interrupted(self, store: CommandStore) -> None:
        for stored in store.running():
            logger.warning("command %s was running at %s when the executor last stopped; it will be reported as "
                           "failed (interrupted) when it is delivered again", stored.command_id, stored.source)

    def _prune(self) -> None:
        if time.monotonic() < self._next_prune or self._store is None:
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
        removed = self._store.prune(utc_now() - timedelta(seconds=self.result_retention_s))
        if removed:
            logger.info("removed %d commands finished more than %.0f days ago from the command store", removed,
                        self.result_retention_s / 86400)

    # Kafka callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("partitions assigned: %s", _partition_list(partitions))
        consumer.assign(partitions)
        # librdkafka keeps a partition's pause state across rebalances; set it to match what the service does now.
        self._set_paused(partitions, paused=self._busy)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("partitions revoked: %s", _partition_list(partitions))
        self._drop_backlog(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning("partitions lost (the group moved on without this consumer): %s", _partition_list(partitions))
        self._drop_backlog(partitions)

    def _drop_backlog(self, partitions: list[TopicPartition]) -> None:
        gone = {(partition.topic, partition.partition) for partition in partitions}
        kept = [message for message in self._backlog if (message.topic(), message.partition()) not in gone]
        self._backlog = deque(kept)

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            logger.error("Kafka client fatal error: %s", error.str())
            self._fatal = error
            self.stop()
            return
        self._errors.log(logging.WARNING, error.name(), f"Kafka client error: {error.str()}")

    def _on_message_error(self, message: Message) -> None:
        error = message.error()
        assert error is not None
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            self._fatal = error
            self.stop()
        self._errors.log(logging.ERROR, error.name(), f"consuming {self.command_topic} failed: {error.str()}")

    def _check_topics(self, consumer: Consumer) -> None:
        try:
            metadata = consumer.list_topics(timeout=10.0)
        except KafkaException as exc:
            raise ExecutorError(f"cannot list the topics of {self.bootstrap_servers}: {exc}") from exc
        for topic in (self.command_topic, self.results_topic):
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise ExecutorError(f"topic {topic} not found on {self.bootstrap_servers}; run `mitigate topics "
                                    "create` with the same MITIGATE_TOPIC_PREFIX first")


def _position(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    # Set on every message a consumer returns.
    assert topic is not None
    assert partition is not None
    assert offset is not None
    return topic, partition, offset


def _coordinates(message: Message) -> str:
    topic, partition, offset = _position(message)
    return f"{topic}[{partition}]@{offset}"


def _partition_list(partitions: list[TopicPartition]) -> str:
    if not partitions:
        return "none"
    by_topic: dict[str, list[int]] = {}
    for partition in partitions:
        by_topic.setdefault(partition.topic, []).append(partition.partition)
    return ", ".join(f"{topic}[{','.join(str(number) for number in sorted(numbers))}]"
                     for topic, numbers in sorted(by_topic.items()))

