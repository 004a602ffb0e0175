"""Enrich stage: lineage of each signal and the context of the asset it concerns."""

from __future__ import annotations

import uuid
from datetime import datetime

from mitigate.intake import Accepted, SourceMessage
from mitigate.models import AssetContext, AssetSnapshot, Lineage, Signal

TRACE_HEADER = "trace-id"


def asset_snapshot(asset: AssetContext | None) -> AssetSnapshot | None:
    """Return the part of the asset context that decision records keep."""
    if asset is None:
        return None
    return AssetSnapshot(
        owner=asset.owner,
        tier=asset.tier,
        criticality=asset.criticality,
        environment=asset.environment,
        change_freeze=asset.change_freeze,
    )


def trace_id_for(message: SourceMessage, event_id: str | None) -> str:
    """Use the producer's trace id header when present, else derive one from the event id.

    Deriving it (rather than drawing a random one) keeps the trace id stable when
    a message is processed again after a crash.
    """
    header = message.header(TRACE_HEADER)
    if header:
        try:
            return header.decode("ascii")
        except UnicodeDecodeError:
            pass
    seed = event_id if event_id is not None else message.coordinates()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"trace:{seed}").hex


def enrich(
    message: SourceMessage,
    accepted: Accepted,
    asset: AssetContext | None,
    *,
    ingest_time: datetime,
    pipeline_version: str,
) -> Signal:
    """Attach lineage (where the event came from, with which schema, how late) and asset context."""
    event = accepted.event
    skew_ms = int((ingest_time - event.event_time).total_seconds() * 1000)
    lineage = Lineage(
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        detector_id=event.detector_id,
        detector_version=event.detector_version,
        writer_schema=accepted.writer_schema,
        event_time=event.event_time,
        ingest_time=ingest_time,
        clock_skew_ms=skew_ms,
        pipeline_version=pipeline_version,
    )
    return Signal(event=event, trace_id=trace_id_for(message, event.event_id), lineage=lineage, asset=asset)
