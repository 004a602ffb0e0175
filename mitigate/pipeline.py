"""The stages of one anomaly event, composed as plain functions in two steps.

The first step (intake, enrich) runs on the anomalies topic, keyed by entity;
the second (correlate, decide) on the signals topic, keyed by subsystem.

The Faust agent only moves bytes. Everything between the consumed message and
the messages to produce happens here, so it can be tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import UTC, datetime

from pydantic import ValidationError

from mitigate import __version__
from mitigate.codec import AvroCodec
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decision
from mitigate.enrichment import TRACE_HEADER, enrich, trace_id_for
from mitigate.errors import DecodeError
from mitigate.intake import Intake, IntakeRejected, SourceMessage, dead_letter
from mitigate.limits import Breaker
from mitigate.models import AssetContext, AvroModel, Signal
from mitigate.topology import Topology

if TYPE_CHECKING:
    from mitigate.redelivery import Journal, SentLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Processed:
    """Everything one input produced: a decision or a dead letter, and the messages to send."""

    messages: tuple[Outgoing, ...]
    decision: Decision | None = None
    rejection: IntakeRejected | None = None
    signal: Signal | None = None


class Pipeline:
    """intake -> enrich, for one message at a time: a Signal re-keyed by subsystem, or a dead letter."""

    def __init__(
        self,
        *,
        topology: Topology,
        codec: AvroCodec,
        intake: Intake,
        assets: Callable[[str], AssetContext | None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pipeline_version: str = __version__,
    ) -> None:
        self.topology = topology
        self.codec = codec
        self.intake = intake
        self.assets = assets
        self.clock = clock
        self.pipeline_version = pipeline_version

    def process(self, message: SourceMessage) -> Processed:
        now = self.clock()
        try:
            accepted = self.intake.accept(message.value, now)
        except IntakeRejected as rejection:
            return reject(self.codec, self.topology, message, rejection, now, self.pipeline_version)

        event = accepted.event
        signal = enrich(
            message, accepted, self.assets(event.entity), ingest_time=now, pipeline_version=self.pipeline_version
        )
        # Re-keyed by subsystem: incidents, budgets and run caps of one subsystem
        # then live on one partition of the signals topic.
        outgoing = encode_message(self.codec, self.topology.signals, event.subsystem.encode(), signal, signal.trace_id)
        return Processed((outgoing,), signal=signal)


class DecisionStage:
    """correlate -> decide -> encode, for one Signal at a time."""

    def __init__(
        self,
        *,
        topology: Topology,
        codec: AvroCodec,
        engine: IncidentEngine,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pipeline_version: str = __version__,
        sent: SentLog | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.topology = topology
        self.codec = codec
        self.engine = engine
        self.clock = clock
        self.pipeline_version = pipeline_version
        # With both, a redelivered signal gets its logged messages (mitigate.redelivery).
        # The journal must be the one the engine's stores write through.
        self.sent = sent
        self.journal = journal

    def process(self, message: SourceMessage, breaker: Breaker) -> Processed:
        try:
            decoded = self.codec.decode(message.value, "Signal")
            signal = Signal.model_validate(decoded.record)
        except (DecodeError, ValidationError) as exc:
            # Only the intake agent writes this topic, so this is a bug or a stray producer.
            if isinstance(exc, DecodeError):
                rejection = IntakeRejected(exc.reason_code, f"invalid signal: {exc}", exc.writer_schema)
            else:
                rejection = IntakeRejected("invalid-field", f"invalid signal: {exc}")
            return reject(self.codec, self.topology, message, rejection, self.clock(), self.pipeline_version,
                          stage="correlate")
        if self.sent is not None:
            again = self.sent.get(signal.event.event_id)
            if again is not None:
                logger.debug("signal delivered again event_id=%s source=%s: sending its %d messages again",
                            signal.event.event_id, message.coordinates(), len(again.messages))
                if self.journal is not None and again.source == f"{message.partition}@{message.offset}":
                    self.journal.apply(again.writes)  # completes what a crash may have cut short
                return Processed(again.messages, signal=signal)

        if self.journal is not None:
            self.journal.begin()
        try:
            decision = self.engine.process(signal, breaker)
            messages = self._encode(decision, signal.event.entity, signal.trace_id)
        finally:
            writes = self.journal.end() if self.journal is not None else ()
        if self.sent is not None:
            # Logged before the writes are applied: see mitigate.redelivery.
            self.sent.put(message.partition, message.offset, signal.event.event_id, messages, writes)
        if self.journal is not None:
            self.journal.apply(writes)
        return Processed(messages, decision=decision, signal=signal)

    def _encode(self, decision: Decision, entity: str, trace_id: str) -> tuple[Outgoing, ...]:
        key = entity.encode()
        messages = []
        # The orchestrate agent builds the records of a plan and of a review's verdicts from this record.
        record_bytes = None
        if decision.plan is not None or decision.review is not None:
            record_bytes = self.codec.encode("DecisionRecord", decision.record.to_avro())
        if decision.plan is not None:
            control = decision.plan.model_copy(update={"decision": record_bytes})
            messages.append(encode_message(self.codec, self.topology.plans, control.incident_id.encode(), control,
                                           trace_id))
        if decision.review is not None:
            review = decision.review.model_copy(update={"decision": record_bytes})
            review_key = (review.incident_id or review.event_id).encode()
            messages.append(encode_message(self.codec, self.topology.review_requests, review_key, review, trace_id))
        # Queued last, after the commands and the review request it names.
        messages.append(encode_message(self.codec, self.topology.decisions, key, decision.record, trace_id))
        return tuple(messages)


def reject(
    codec: AvroCodec,
    topology: Topology,
    message: SourceMessage,
    rejection: IntakeRejected,
    now: datetime,
    pipeline_version: str,
    *,
    stage: str = "intake",
) -> Processed:
    """Turn a rejected message into one dead letter that keeps its bytes and coordinates."""
    trace_id = trace_id_for(message, None)
    logger.warning(
        "dead letter stage=%s reason=%s source=%s trace_id=%s: %s",
        stage, rejection.reason_code, message.coordinates(), trace_id, rejection.reason,
        extra={"trace_id": trace_id, "source": message.coordinates()},
    )
    letter = dead_letter(message, rejection, now=now, pipeline_version=pipeline_version, trace_id=trace_id,
                         stage=stage)
    outgoing = encode_message(codec, topology.dead_letters, message.key, letter, trace_id)
    return Processed((outgoing,), rejection=rejection)


def encode_message(codec: AvroCodec, topic: str, key: bytes | None, model: AvroModel, trace_id: str) -> Outgoing:
    value = codec.encode(model.schema_name, model.to_avro())
    return Outgoing(topic, key, value, ((TRACE_HEADER, trace_id.encode()),))
