"""Intake stage: decode, validate and check the quality of each anomaly event.

Anything that fails becomes a DeadLetter that keeps the original bytes, headers
and coordinates, so nothing is dropped silently and no message blocks a partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import ConfigurationError, DecodeError, MitigateError
from mitigate.models import AnomalyEvent, DeadLetter, Header

STAGE = "intake"
# A detector's event is a few hundred bytes; labels and annotations of a few
# kilobytes are generous. Anything far larger is a bug or a misrouted payload,
# and decoding it would only cost memory.
DEFAULT_MAX_EVENT_BYTES = 64 * 1024


class IntakeRejected(MitigateError):
    """An event failed intake; carries the dead letter's reason code."""

    def __init__(self, reason_code: str, reason: str, writer_schema: str | None = None) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason
        self.writer_schema = writer_schema


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """A consumed message as it arrived: coordinates, key, value and headers."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=tuple)

    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event that passed intake."""

    event: AnomalyEvent
    writer_schema: str


class DetectorRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    versions: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    required_labels: list[str] = Field(default_factory=list)


class DetectorCatalog(BaseModel):
    """Detectors the pipeline accepts events from, with version patterns and required labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detectors: list[DetectorRule]

    @classmethod
    def load(cls, path: Path) -> DetectorCatalog:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls.model_validate(data)
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read detector catalog: {exc.strerror}") from exc
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigurationError(f"{path}: invalid detector catalog: {exc}") from exc

    def check(self, event: AnomalyEvent) -> None:
        rule = next((rule for rule in self.detectors if rule.id == event.detector_id), None)
        if rule is None:
            known = ", ".join(rule.id for rule in self.detectors)
            raise IntakeRejected("unknown-detector", f"detector {event.detector_id!r} is not registered; known: {known}")
        if not any(fnmatchcase(event.detector_version, pattern) for pattern in rule.versions):
            raise IntakeRejected(
                "unknown-detector-version",
                f"detector {event.detector_id!r} version {event.detector_version!r} does not match "
                f"the accepted versions {rule.versions}",
            )
        missing = [label for label in rule.required_labels if not event.labels.get(label)]
        if missing:
            raise IntakeRejected(
                "missing-label",
                f"detector {event.detector_id!r} must set labels {missing}; the event has {sorted(event.labels)}",
            )


class Intake:
    """Turns raw message values into validated AnomalyEvents, or raises IntakeRejected."""

    def __init__(
        self,
        codec: AvroCodec,
        detectors: DetectorCatalog,
        *,
        max_future_skew: timedelta,
        max_event_age: timedelta,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.codec = codec
        self.detectors = detectors
        self.max_future_skew = max_future_skew
        self.max_event_age = max_event_age
        self.max_event_bytes = max_event_bytes

    def accept(self, value: bytes | None, now: datetime) -> Accepted:
        if value is not None and len(value) > self.max_event_bytes:
            raise IntakeRejected(
                "oversized",
                f"message value is {len(value)} bytes, more than the limit of {self.max_event_bytes} bytes "
                "(MITIGATE_MAX_EVENT_BYTES); events are expected to be a few hundred bytes",
            )
        try:
            decoded = self.codec.decode(value, "AnomalyEvent")
        except DecodeError as exc:
            raise IntakeRejected(exc.reason_code, str(exc), exc.writer_schema) from exc

        try:
            event = AnomalyEvent.model_validate(decoded.record)
        except ValidationError as exc:
            raise IntakeRejected("invalid-field", _describe_validation(exc), decoded.writer_schema) from exc

        try:
            self._check_event_time(event, now)
            self.detectors.check(event)
        except IntakeRejected as exc:
            exc.writer_schema = decoded.writer_schema
            raise
        return Accepted(event, decoded.writer_schema)

    def _check_event_time(self, event: AnomalyEvent, now: datetime) -> None:
        skew = event.event_time - now
        if skew > self.max_future_skew:
            raise IntakeRejected(
                "event-time-future",
                f"event_time {event.event_time.isoformat()} is {skew.total_seconds():.0f} s ahead of the "
                f"pipeline clock (limit {self.max_future_skew.total_seconds():.0f} s); check the detector's clock",
            )
        age = now - event.event_time
        if age > self.max_event_age:
            raise IntakeRejected(
                "event-time-stale",
                f"event_time {event.event_time.isoformat()} is {age.total_seconds():.0f} s old "
                f"(limit {self.max_event_age.total_seconds():.0f} s); replay old series with a rebased clock",
            )


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field_name = ".".join(str(part) for part in error["loc"])
        # Custom validators' messages without pydantic's "Value error, " prefix.
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        problems.append(f"{field_name}: {message} (got {error.get('input')!r})")
    return "; ".join(problems)


def dead_letter(
    message: SourceMessage,
    rejection: IntakeRejected,
    *,
    now: datetime,
    pipeline_version: str,
    trace_id: str | None,
    stage: str = STAGE,
) -> DeadLetter:
    """Build the DeadLetter for a rejected message, keeping its bytes and coordinates."""
    return DeadLetter(
        dead_letter_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"dead-letter:{message.coordinates()}")),
        failed_at=now,
        stage=stage,
        reason_code=rejection.reason_code,
        reason=rejection.reason,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        source_timestamp=message.timestamp,
        key=message.key,
        value=message.value,
        headers=[Header(key=key, value=value) for key, value in message.headers],
        writer_schema=rejection.writer_schema,
        trace_id=trace_id,
        pipeline_version=pipeline_version,
    )
