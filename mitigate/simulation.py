"""Offline replay of recorded anomalies through policy files, with no broker.

The same correlation and decision code as the worker runs over in-memory
stores, with each signal's event time as the clock, so a replay of the same
events gives the same incidents and decisions every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
from pydantic import ValidationError

from mitigate.automation import AutomationSettings
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider, Decision
from mitigate.errors import MitigateError
from mitigate.limits import ShardedBreaker
from mitigate.models import AnomalyEvent, AssetContext, Lineage, Signal, Silence
from mitigate.policy import ActivePolicy, PolicyDocument, PolicyIndex

UNPUBLISHED_VERSION = 0  # version shown for policies read from files rather than the policies topic


def read_events(path: Path) -> Iterator[tuple[int, AnomalyEvent]]:
    """Yield (line number, event) from a JSON Lines file of AnomalyEvent records."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise MitigateError(f"{path}: cannot read: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, AnomalyEvent.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise MitigateError(f"{path}: line {number}: invalid JSON: {exc}") from exc
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            field = ".".join(str(part) for part in first["loc"]) or "(record)"
            more = f" (and {len(errors) - 1} more problems on this line)" if len(errors) > 1 else ""
            raise MitigateError(f"{path}: line {number}: invalid AnomalyEvent: {field}: {first['msg']}{more}; "
                                "the file must hold one AnomalyEvent per line, as `mitigate detect --write` "
                                "writes it") from exc


def write_events(path: Path, events: Iterable[AnomalyEvent]) -> int:
    count = 0
    with path.open("wb") as file:
        for event in events:
            file.write(orjson.dumps(event.model_dump(mode="json")) + b"\n")
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class Replayed:
    """One input event and the decision the replay made for it."""

    line: int
    event: AnomalyEvent
    decision: Decision


def replay(
    events: Iterable[tuple[int, AnomalyEvent]],
    documents: list[PolicyDocument],
    *,
    automation: AutomationSettings,
    assets: Mapping[str, AssetContext],
    silences: list[Silence],
    source: str,
) -> list[Replayed]:
    index = PolicyIndex([ActivePolicy(document, UNPUBLISHED_VERSION) for document in documents])
    engine = IncidentEngine(
        settings=automation,
        decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=lambda: index,
        silences=lambda: silences,
        incidents={},
        fingerprints={},
        budgets={},
        runs={},
    )
    breaker = ShardedBreaker(automation.circuit_breaker, {}, "simulation")
    replayed = []
    for line, event in events:
        lineage = Lineage(
            source_topic=source, source_partition=0, source_offset=line, detector_id=event.detector_id,
            detector_version=event.detector_version, writer_schema="simulation", event_time=event.event_time,
            ingest_time=event.event_time, clock_skew_ms=0, pipeline_version="simulation",
        )
        signal = Signal(event=event, trace_id=f"simulation-{line}", lineage=lineage, asset=assets.get(event.entity))
        replayed.append(Replayed(line, event, engine.process(signal, breaker)))
    return replayed


def summarise(replayed: list[Replayed]) -> list[str]:
    outcomes = Counter(item.decision.record.outcome for item in replayed)
    incidents = {item.decision.record.incident_id for item in replayed if item.decision.record.incident_id}
    commands = sum(len(item.decision.commands) for item in replayed)
    return [
        f"{len(replayed)} events, {len(incidents)} incidents, {commands} commands",
        "outcomes: " + (", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())) or "none"),
    ]


def differences(first: list[Replayed], second: list[Replayed]) -> list[str]:
    """Describe every event whose decision differs between two replays of the same events."""
    lines = []
    for before, after in zip(first, second, strict=True):
        a, b = before.decision.record, after.decision.record
        if (a.outcome, a.reason_code, a.policy_id, len(before.decision.commands)) == \
                (b.outcome, b.reason_code, b.policy_id, len(after.decision.commands)):
            continue
        lines.append(
            f"line {before.line} {before.event.entity} {before.event.anomaly_type} {before.event.severity} "
            f"{before.event.status}: {a.outcome}/{a.reason_code} [{a.policy_id or 'no policy'}] -> "
            f"{b.outcome}/{b.reason_code} [{b.policy_id or 'no policy'}]"
        )
    return lines
