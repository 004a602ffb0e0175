"""Schema evolution: detectors on an older and a newer AnomalyEvent schema at once, and one incompatible.

The worker reads every writer schema it has a file for (schemas/ and
schemas/history/) and resolves it onto its current AnomalyEvent: an older
writer without `annotations` gets the default, a newer one with an extra field
has it dropped. A writer whose `confidence` is text cannot be resolved; its
events are dead-lettered with both schema identifiers in the reason.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from tests.conftest import ROOT
from tests.faults.conftest import Figures
from tests.faults.harness import Input, Rig, event_record, read_topic, settle

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

PER_DETECTOR = 300


class WriterSchema:
    """A variant of the current AnomalyEvent schema, written to a schema folder, that encodes records."""

    def __init__(self, folder: Path, name: str, change: Any) -> None:
        definition = json.loads((ROOT / "schemas" / "AnomalyEvent.avsc").read_text())
        change(definition["fields"])
        (folder / "history" / f"AnomalyEvent.{name}.avsc").write_text(json.dumps(definition, indent=2))
        self.parsed = parse_schema(definition, named_schemas={})
        self.fingerprint = bytes.fromhex(fingerprint(to_parsing_canonical_form(self.parsed), "CRC-64-AVRO"))
        self.identifier = "fingerprint:" + self.fingerprint.hex()

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(b"\xc3\x01" + self.fingerprint)
        schemaless_writer(buffer, self.parsed, record)
        return buffer.getvalue()


def without_annotations(fields: list[dict[str, Any]]) -> None:
    fields[:] = [item for item in fields if item["name"] != "annotations"]


def with_model_run(fields: list[dict[str, Any]]) -> None:
    fields.append({"name": "model_run", "type": "string", "default": "",
                   "doc": "Training run of the detector's model."})


def confidence_as_text(fields: list[dict[str, Any]]) -> None:
    for item in fields:
        if item["name"] == "confidence":
            item["type"] = "string"


@pytest.mark.timeout(600)
def test_older_and_newer_writers_read_incompatible_dead_lettered(rig: Rig, tmp_path: Path,
                                                                 figures: Figures) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    older = WriterSchema(schemas, "older", without_annotations)
    newer = WriterSchema(schemas, "newer", with_model_run)
    incompatible = WriterSchema(schemas, "incompatible", confidence_as_text)
    rig.env["MITIGATE_SCHEMA_DIR"] = str(schemas)
    worker = rig.worker("a")
    worker.start()

    def detector(schema: WriterSchema, kind: str, change: Any) -> None:
        items = []
        for _ in range(PER_DETECTOR):
            record = change(event_record(confidence=0.6))  # reviews: no plans to wait for
            items.append(Input(record["event_id"] if kind != "incompatible" else str(uuid.uuid4()), kind,
                               record["entity"].encode(), schema.encode(record),
                               expected_reason="schema-mismatch" if kind == "incompatible" else None))
        rig.send(items)

    def old_record(record: dict[str, Any]) -> dict[str, Any]:
        record.pop("annotations")
        return record

    def new_record(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "model_run": "run-2026-12-01"}

    def text_confidence(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "confidence": "high"}

    threads = [threading.Thread(target=detector, args=args) for args in (
        (older, "older", old_record), (newer, "newer", new_record), (incompatible, "incompatible", text_confidence))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    ledger = settle(rig, timeout_s=300)

    letters = {}
    for message in read_topic(rig.bootstrap, rig.topology.dead_letters):
        letter = rig.codec.decode(message.value(), "DeadLetter").record
        letters[letter["dead_letter_id"]] = letter
    writers = {}
    for message in read_topic(rig.bootstrap, rig.topology.decisions):
        record = rig.codec.decode(message.value(), "DecisionRecord").record
        writers[record["event_id"]] = record["lineage"]["writer_schema"]
    by_kind = {kind: sum(1 for item in rig.inputs.values() if item.kind == kind and ledger.decisions.get(item.input_id))
               for kind in ("older", "newer")}
    reader = rig.codec.repository.current("AnomalyEvent").identifier
    counts = ledger.figures()
    figures.record("schema evolution", {"decided_older": by_kind["older"], "decided_newer": by_kind["newer"],
                                        "dead_lettered_incompatible": counts["dead_lettered"],
                                        **{name: counts[name] for name in ("inputs", "lost", "in_two_places",
                                                                           "wrong_reason")}})
    ledger.assert_sound()
    assert by_kind == {"older": PER_DETECTOR, "newer": PER_DETECTOR}
    assert {writers[item.input_id] for item in rig.inputs.values() if item.kind == "older"} == {older.identifier}
    assert {writers[item.input_id] for item in rig.inputs.values() if item.kind == "newer"} == {newer.identifier}
    assert len(letters) == PER_DETECTOR
    for letter in letters.values():
        assert letter["writer_schema"] == incompatible.identifier
        assert incompatible.identifier in letter["reason"], letter["reason"]
        assert reader in letter["reason"], letter["reason"]
