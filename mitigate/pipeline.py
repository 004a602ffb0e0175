"""The stages of one anomaly event, composed as plain functions.

The Faust agent only moves bytes. Everything between the consumed message and
the messages to produce happens here, so it can be tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mitigate import __version__
from mitigate.codec import AvroCodec
from mitigate.decision import Decider, Decision
from mitigate.enrichment import TRACE_HEADER, enrich, trace_id_for
from mitigate.intake import Intake, IntakeRejected, SourceMessage, dead_letter
from mitigate.models import AssetContext, AvroModel
from mitigate.policy import PolicyIndex
from mitigate.topology import Topology

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


class Pipeline:
    """intake -> enrich -> decide -> encode, for one message at a time."""

    def __init__(
        self,
        *,
        topology: Topology,
        codec: AvroCodec,
        intake: Intake,
        decider: Decider,
        policies: Callable[[], PolicyIndex],
        assets: Callable[[str], AssetContext | None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pipeline_version: str = __version__,
    ) -> None:
        self.topology = topology
        self.codec = codec
        self.intake = intake
        self.decider = decider
        self.policies = policies
        self.assets = assets
        self.clock = clock
        self.pipeline_version = pipeline_version

    def process(self, message: SourceMessage) -> Processed:
        now = self.clock()
        try:
            accepted = self.intake.accept(message.value, now)
        except IntakeRejected as rejection:
            return self._reject(message, rejection, now)

        event = accepted.event
        enriched = enrich(
            message, accepted, self.assets(event.entity), ingest_time=now, pipeline_version=self.pipeline_version
        )
        decision = self.decider.decide(enriched, self.policies(), now)
        return Processed(self._encode(decision, event.entity, enriched.trace_id), decision=decision)

    def _reject(self, message: SourceMessage, rejection: IntakeRejected, now: datetime) -> Processed:
        trace_id = trace_id_for(message, None)
        logger.warning(
            "dead letter reason=%s source=%s trace_id=%s: %s",
            rejection.reason_code, message.coordinates(), trace_id, rejection.reason,
        )
        letter = dead_letter(message, rejection, now=now, pipeline_version=self.pipeline_version, trace_id=trace_id)
        outgoing = self._message(self.topology.dead_letters, message.key, letter, trace_id)
        return Processed((outgoing,), rejection=rejection)

    def _encode(self, decision: Decision, entity: str, trace_id: str) -> tuple[Outgoing, ...]:
        key = entity.encode()
        messages = [self._message(self.topology.actions(command.executor), command.target.encode(), command, trace_id)
                    for command in decision.commands]
        if decision.review is not None:
            messages.append(self._message(self.topology.review_requests, key, decision.review, trace_id))
        # Queued last, after the commands and the review request it names.
        messages.append(self._message(self.topology.decisions, key, decision.record, trace_id))
        return tuple(messages)

    def _message(self, topic: str, key: bytes | None, model: AvroModel, trace_id: str) -> Outgoing:
        value = self.codec.encode(model.schema_name, model.to_avro())
        return Outgoing(topic, key, value, ((TRACE_HEADER, trace_id.encode()),))
