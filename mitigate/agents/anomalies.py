"""The anomaly agent: every event through intake, enrich and decide, then out to its topics."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust

from mitigate.intake import SourceMessage
from mitigate.pipeline import Processed, Pipeline

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


class AnomalyAgent:
    """Runs the pipeline for each event of the anomalies topic and sends what it produces."""

    def __init__(self, app: faust.App, source: faust.TopicT, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline
        self._topics: dict[str, faust.TopicT] = {}
        self.processed = 0
        app.agent(source, name="anomalies")(self._run)

    def _topic(self, name: str) -> faust.TopicT:
        topic = self._topics.get(name)
        if topic is None:
            topic = self.app.topic(name, key_serializer="raw", value_serializer="raw")
            self._topics[name] = topic
        return topic

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            outcome = self.pipeline.process(source_message(event.message))
            await self._send(outcome)
            self.processed += 1

    async def _send(self, outcome: Processed) -> None:
        for message in outcome.messages:
            await self._topic(message.topic).send(key=message.key, value=message.value, headers=list(message.headers))
        if outcome.decision is not None:
            record = outcome.decision.record
            logger.info(
                "decision outcome=%s reason=%s policy=%s/%s entity=%s event_id=%s trace_id=%s",
                record.outcome, record.reason_code, record.policy_id, record.policy_version,
                record.entity, record.event_id, record.trace_id,
            )
