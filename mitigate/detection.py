"""Run the reference detector over a metric series and publish what it flags as AnomalyEvents."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mitigate.codec import AvroCodec, WireFormat
from mitigate.detector import Reading, RobustZScoreDetector, confidence_for, severity_for
from mitigate.enrichment import TRACE_HEADER
from mitigate.kafka import create_producer, flush_or_raise
from mitigate.models import SEVERITIES, AnomalyEvent

DETECTOR_ID = "robust-zscore"
DETECTOR_VERSION = "1.0.0"

EventTime = Literal["replay", "rebase", "original"]


@dataclass(frozen=True, slots=True)
class SeriesSource:
    """Origin of a series: the entity and subsystem its events concern, and the metric name."""

    entity: str
    subsystem: str
    metric: str


def fingerprint(source: SeriesSource, anomaly_type: str) -> str:
    """Same condition on the same entity, same fingerprint, across episodes."""
    identity = "|".join((DETECTOR_ID, source.entity, source.metric, anomaly_type))
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def detect(
    readings: Iterable[Reading],
    detector: RobustZScoreDetector,
    source: SeriesSource,
    *,
    event_time: EventTime = "replay",
) -> Iterator[AnomalyEvent]:
    """Yield AnomalyEvents for what the detector flags in `readings`.

    An episode yields a firing event when it starts and a resolved event when it
    ends. Like an alerting rule that notifies again on escalation, it also yields
    a firing event each time its severity rises. All carry the same fingerprint.

    Event times: "replay" stamps each event with the current time, as a live
    detector would. "rebase" shifts the readings' times so that the last reading
    is now, keeping their spacing. "original" uses the readings' times. The
    reading's own time is kept in the annotation source_time.
    """
    readings = list(readings)
    shift = datetime.now(UTC) - readings[-1].timestamp if readings and event_time == "rebase" else None
    anomaly_type = "spike"
    reported = "low"
    episode_start: datetime | None = None
    for reading in readings:
        transition = detector.update(reading)
        if transition is not None:
            if transition.status == "firing":
                anomaly_type = "spike" if transition.score >= 0 else "dip"
                reported = severity_for(transition.score)
                episode_start = transition.started_at
            score, peak = transition.score, transition.peak_score
        elif detector.firing and detector.last_score is not None and _rises(detector.last_score, reported):
            score = detector.last_score
            peak = abs(score)
            reported = severity_for(score)
        else:
            continue
        status = transition.status if transition is not None else "firing"
        if event_time == "replay":
            stamp = datetime.now(UTC)
        else:
            stamp = reading.timestamp + shift if shift is not None else reading.timestamp
        # A detector handed in while already firing has an episode start this loop never saw.
        started = episode_start or reading.timestamp
        yield _event(status, reading, score, peak, started, source, anomaly_type, stamp, detector.threshold)


def _rises(score: float, reported: str) -> bool:
    return SEVERITIES.index(severity_for(score)) > SEVERITIES.index(reported)


def _event(
    status: Literal["firing", "resolved"],
    reading: Reading,
    score: float,
    peak_score: float,
    episode_start: datetime,
    source: SeriesSource,
    anomaly_type: str,
    stamp: datetime,
    threshold: float,
) -> AnomalyEvent:
    # A resolved event reports the episode's peak, so it keeps the episode's severity.
    rated = peak_score if status == "resolved" else score
    return AnomalyEvent(
        event_id=str(uuid.uuid4()),
        detector_id=DETECTOR_ID,
        detector_version=DETECTOR_VERSION,
        event_time=stamp,
        entity=source.entity,
        subsystem=source.subsystem,
        anomaly_type=anomaly_type,
        severity=severity_for(rated),
        confidence=confidence_for(rated, threshold),
        score=score,
        status=status,
        fingerprint=fingerprint(source, anomaly_type),
        labels={"metric": source.metric},
        annotations={
            "source_time": reading.timestamp.isoformat(),
            "value": repr(reading.value),
            "peak_score": f"{peak_score:.3f}",
            "episode_start": episode_start.isoformat(),
        },
    )


def publish_events(
    bootstrap_servers: str,
    topic: str,
    codec: AvroCodec,
    events: Iterable[AnomalyEvent],
    *,
    wire_format: WireFormat = "single-object",
) -> int:
    producer = create_producer(bootstrap_servers)
    count = 0
    for event in events:
        trace_id = uuid.uuid4().hex
        value = codec.encode("AnomalyEvent", event.to_avro(), wire_format=wire_format, subject=f"{topic}-value")
        producer.produce(topic, key=event.entity.encode(), value=value, headers=[(TRACE_HEADER, trace_id.encode())])
        producer.poll(0)
        count += 1
    flush_or_raise(producer)
    return count
