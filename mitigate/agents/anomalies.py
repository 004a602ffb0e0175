"""The stream agents: anomalies through intake and enrich, signals through correlate and decide."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import ValidationError

from mitigate.automation import CircuitBreaker
from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError
from mitigate.intake import SourceMessage
from mitigate.limits import ShardedBreaker
from mitigate.models import ActionResult
from mitigate.pipeline import DecisionStage, Pipeline, Processed
from mitigate.producer import WorkerProducer
from mitigate.reference_reader import ReferenceReader
from mitigate.telemetry import Telemetry

logger = logging.getLogger(__name__)


def source_message(message: Any) -> SourceMessage:
    """Copy what the pipeline needs out of a Faust message."""
    timestamp = datetime.fromtimestamp(message.timestamp, UTC) if message.timestamp else None
    return SourceMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=timestamp,
        key=message.key,
        value=message.value,
        headers=tuple(_headers(message.headers)),
    )


def _headers(headers: Any) -> Iterable[tuple[str, bytes | None]]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return ((str(key), value) for key, value in items)


class Sender:
    """Queues what a stage produced on the worker's producer."""

    def __init__(self, producer: WorkerProducer) -> None:
        self.producer = producer

    def produce(self, topic: str, key: bytes | None, value: bytes,
                headers: tuple[tuple[str, bytes], ...] | None = None) -> None:
        self.producer.produce(topic, key, value, headers)

    def send(self, processed: Processed) -> None:
        for message in processed.messages:
            self.producer.produce(message.topic, message.key, message.value, message.headers)


class AnomalyAgent:
    """Runs intake and enrich for each event of the anomalies topic."""

    def __init__(self, app: faust.App, source: faust.TopicT, pipeline: Pipeline, sender: Sender,
                 telemetry: Telemetry, reference: ReferenceReader) -> None:
        self.pipeline = pipeline
        self.reference = reference
        self.sender = sender
        self.telemetry = telemetry
        self.processed = 0
        app.agent(source, name="anomalies")(self._run)

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        # Enrichment needs the assets published before the worker started.
        await self.reference.wait_loaded()
        async for event in stream.events():
            processed = self.pipeline.process(source_message(event.message))
            self.sender.send(processed)
            self.processed += 1
            self.telemetry.anomaly_in()
            if processed.rejection is not None:
                self.telemetry.dead_letter(processed.rejection.reason_code)


class SignalAgent:
    """Runs correlate and decide for each signal, with the state tables of its partition."""

    def __init__(
        self, app: faust.App, source: faust.TopicT, stage: DecisionStage, sender: Sender,
        breaker_settings: CircuitBreaker, breaker_store: Any, telemetry: Telemetry, reference: ReferenceReader,
    ) -> None:
        self.stage = stage
        self.reference = reference
        self.sender = sender
        self.telemetry = telemetry
        self.breaker_settings = breaker_settings
        self.breaker_store = breaker_store
        self.decided = 0
        app.agent(source, name="signals")(self._run)

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        # Deciding needs the policies and silences published before the worker started.
        await self.reference.wait_loaded()
        async for event in stream.events():
            message = source_message(event.message)
            breaker = ShardedBreaker(self.breaker_settings, self.breaker_store, f"signals:{message.partition}")
            processed = self.stage.process(message, breaker)
            self.sender.send(processed)
            self.decided += 1
            if processed.rejection is not None:
                self.telemetry.dead_letter(processed.rejection.reason_code)
            if processed.decision is not None:
                record = processed.decision.record
                self.telemetry.decision(record, processed.decision.opened_incident)
                if processed.decision.review is not None:
                    self.telemetry.review_request(processed.decision.review)
                # Suppressed signals are the bulk of an alert storm; they are in the decisions topic.
                level = logging.DEBUG if record.outcome == "suppress" else logging.INFO
                logger.log(
                    level,
                    "decision outcome=%s reason=%s policy=%s/%s incident=%s entity=%s event_id=%s trace_id=%s",
                    record.outcome, record.reason_code, record.policy_id or "-", record.policy_version or "-",
                    record.incident_id, record.entity, record.event_id, record.trace_id,
                    extra={"incident_id": record.incident_id, "trace_id": record.trace_id,
                           "event_id": record.event_id, "review_id": record.review_id, "plan_id": record.plan_id},
                )


class ResultAgent:
    """Counts action results into the circuit breaker's failure rate."""

    def __init__(
        self, app: faust.App, source: faust.TopicT, codec: AvroCodec,
        breaker_settings: CircuitBreaker, breaker_store: Any, telemetry: Telemetry,
    ) -> None:
        self.codec = codec
        self.telemetry = telemetry
        self.breaker_settings = breaker_settings
        self.breaker_store = breaker_store
        app.agent(source, name="action-results")(self._run)

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                result = ActionResult.model_validate(self.codec.decode(message.value, "ActionResult").record)
            except (DecodeError, ValidationError) as exc:
                logger.error("action result ignored source=%s[%d]@%d: %s",
                             message.topic, message.partition, message.offset, exc,
                             extra={"source": f"{message.topic}[{message.partition}]@{message.offset}"})
                continue
            self.telemetry.result(result)
            breaker = ShardedBreaker(self.breaker_settings, self.breaker_store, f"results:{message.partition}")
            # Only outcomes of actions that ran count; a skipped or rejected command changed nothing.
            if result.status in ("succeeded", "failed", "timed_out"):
                breaker.record_result(result.status != "succeeded", result.finished_at, result.command_id)
