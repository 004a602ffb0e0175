"""Generated malformed anomaly inputs, each with the dead-letter reason code it must get.

Every kind is built from a real event, so the bytes around the fault are what
a detector would send.
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastavro import parse_schema, schemaless_writer

from mitigate.codec import AvroCodec
from mitigate.schemas import SchemaVersion
from tests.faults.harness import Input, event_record

Maker = Callable[[random.Random], tuple[bytes | None, str]]


class Malformed:
    """Builds malformed inputs of every kind, round robin, from a seeded random source."""

    def __init__(self, codec: AvroCodec, seed: int) -> None:
        self.codec = codec
        self.random = random.Random(seed)
        self.current: SchemaVersion = codec.repository.current("AnomalyEvent")
        self.kinds: dict[str, Maker] = {
            "random-bytes": self._random_bytes,
            "empty": lambda _: (b"", "empty-message"),
            "tombstone": lambda _: (None, "empty-message"),
            "truncated-header": self._truncated_header,
            "truncated-body": self._truncated_body,
            "trailing-bytes": lambda r: (self._good() + r.randbytes(r.randrange(1, 20)), "undecodable"),
            "other-record": self._other_record,
            "unknown-fingerprint": self._unknown_fingerprint,
            "registry-framing": self._registry_framing,
            "plain-json": self._plain_json,
            "json-naive-time": lambda _: (self._json("2026-12-05T10:00:00"), "unknown-wire-format"),
            "json-offset-time": lambda _: (self._json("2026-12-05T10:00:00+02:00"), "unknown-wire-format"),
            "empty-id": lambda _: (self._raw(event_id=""), "invalid-field"),
            "empty-entity": lambda _: (self._raw(entity=""), "invalid-field"),
            "nan-score": lambda _: (self._raw(score=math.nan), "invalid-field"),
            "infinite-score": lambda _: (self._raw(score=-math.inf), "invalid-field"),
            "huge-confidence": lambda _: (self._raw(confidence=1e308), "invalid-field"),
            "negative-confidence": lambda _: (self._raw(confidence=-0.5), "invalid-field"),
            "zero-date": lambda _: (self._raw(event_time=datetime(1970, 1, 1, tzinfo=UTC)), "event-time-stale"),
            "before-epoch": lambda _: (self._raw(event_time=datetime(1900, 1, 1, tzinfo=UTC)), "event-time-stale"),
            "far-past": lambda _: (self._raw(event_time=datetime.now(UTC) - timedelta(days=3650)),
                                   "event-time-stale"),
            "far-future": lambda _: (self._raw(event_time=datetime.now(UTC) + timedelta(days=3650)),
                                     "event-time-future"),
            "beyond-year-9999": self._beyond_year_9999,
            "unknown-detector": lambda _: (self._raw(detector_id="isolation-forest"), "unknown-detector"),
            "unknown-version": lambda _: (self._raw(detector_version="9.0.0"), "unknown-detector-version"),
            "missing-label": lambda _: (self._raw(labels={"site": "plant-north"}), "missing-label"),
        }

    def inputs(self, count: int) -> list[Input]:
        names = sorted(self.kinds)
        made = []
        for index in range(count):
            kind = names[index % len(names)]
            value, reason = self.kinds[kind](self.random)
            made.append(Input(str(uuid.uuid4()), kind, b"host-00", value, expected_reason=reason))
        return made

    def oversized(self, count: int, size: int) -> list[Input]:
        """Events that are valid but larger than the intake's size limit."""
        return [Input(str(uuid.uuid4()), "oversized", b"host-00",
                      self._raw(annotations={"summary": "x" * size}), expected_reason="oversized")
                for _ in range(count)]

    # Makers

    def _good(self) -> bytes:
        return self.codec.encode("AnomalyEvent", event_record())

    def _raw(self, **changes: Any) -> bytes:
        """Single-object encoding with fastavro alone, so values the pipeline's model rejects are written."""
        buffer = io.BytesIO()
        buffer.write(b"\xc3\x01" + self.current.fingerprint)
        schemaless_writer(buffer, self.current.parsed, event_record(**changes))
        return buffer.getvalue()

    def _random_bytes(self, r: random.Random) -> tuple[bytes, str]:
        first = r.choice([byte for byte in range(256) if byte not in (0x00, 0xC3)])
        return bytes([first]) + r.randbytes(r.randrange(0, 300)), "unknown-wire-format"

    def _truncated_header(self, r: random.Random) -> tuple[bytes, str]:
        return self._good()[:r.randrange(2, 10)], "undecodable"

    def _truncated_body(self, r: random.Random) -> tuple[bytes, str]:
        good = self._good()
        return good[:r.randrange(10, len(good))], "undecodable"

    def _other_record(self, r: random.Random) -> tuple[bytes, str]:
        # A valid record of another schema in the pipeline's repository: a Silence on the anomalies topic.
        silence = {
            "silence_id": str(uuid.uuid4()), "matchers": [], "starts_at": datetime.now(UTC),
            "ends_at": datetime.now(UTC) + timedelta(hours=1), "author": "fault-suite",
            "reason": "wrong topic", "created_at": datetime.now(UTC), "expired_by": None,
        }
        return self.codec.encode("Silence", silence), "schema-mismatch"

    def _unknown_fingerprint(self, r: random.Random) -> tuple[bytes, str]:
        return b"\xc3\x01" + r.randbytes(8) + self._good()[10:], "unknown-schema"

    def _registry_framing(self, r: random.Random) -> tuple[bytes, str]:
        return b"\x00" + struct.pack(">I", r.randrange(1, 10_000)) + self._good()[10:], "registry-unavailable"

    def _plain_json(self, r: random.Random) -> tuple[bytes, str]:
        record = event_record()
        record["event_time"] = record["event_time"].isoformat()
        return json.dumps(record).encode(), "unknown-wire-format"

    @staticmethod
    def _json(event_time: str) -> bytes:
        record = event_record()
        record["event_time"] = event_time
        return json.dumps(record).encode()

    def _beyond_year_9999(self, r: random.Random) -> tuple[bytes, str]:
        # timestamp-millis past what a datetime holds: written with the logical type removed.
        schema = json.loads(json.dumps(self.current.definition))
        for item in schema["fields"]:
            if item["name"] == "event_time":
                item["type"] = "long"
        buffer = io.BytesIO()
        buffer.write(b"\xc3\x01" + self.current.fingerprint)
        record = event_record()
        record["event_time"] = 2**62
        schemaless_writer(buffer, parse_schema(schema, named_schemas={}), record)
        return buffer.getvalue(), "undecodable"
