"""Unit tests for mitigate.intake: decoding, validation and data-quality checks of anomaly events."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.codec import AvroCodec
from mitigate.errors import ConfigurationError
from mitigate.intake import DetectorCatalog, Intake, IntakeRejected, SourceMessage, dead_letter
from mitigate.models import DeadLetter, Header
from mitigate.schemas import SchemaRepository
from tests.unit.builders import DETECTORS_FILE, NOW, SCHEMA_DIR, anomaly_event, event_fields, single_object

MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_EVENT_AGE = timedelta(days=1)


@pytest.fixture(scope="module")
def repository() -> SchemaRepository:
    return SchemaRepository(SCHEMA_DIR)


@pytest.fixture(scope="module")
def codec(repository: SchemaRepository) -> AvroCodec:
    return AvroCodec(repository)


@pytest.fixture(scope="module")
def intake(codec: AvroCodec) -> Intake:
    return Intake(
        codec,
        DetectorCatalog.load(DETECTORS_FILE),
        max_future_skew=MAX_FUTURE_SKEW,
        max_event_age=MAX_EVENT_AGE,
    )


def raw_event(repository: SchemaRepository, **changes: Any) -> bytes:
    """Encode an event with fastavro alone, so that values the model rejects reach intake."""
    return single_object(repository.current("AnomalyEvent"), event_fields(**changes))


# (case, changed fields, reason code, reason text)
REJECTIONS = [
    ("confidence-above-one", {"confidence": 1.5}, "invalid-field",
     "confidence: Input should be less than or equal to 1 (got 1.5)"),
    ("confidence-negative", {"confidence": -0.25}, "invalid-field",
     "confidence: Input should be greater than or equal to 0 (got -0.25)"),
    ("score-nan", {"score": math.nan}, "invalid-field",
     "score: must be a finite number (got nan)"),
    ("score-infinite", {"score": -math.inf}, "invalid-field",
     "score: must be a finite number (got -inf)"),
    ("empty-entity", {"entity": ""}, "invalid-field",
     "entity: String should have at least 1 character (got '')"),
    ("event-time-future", {"event_time": NOW + timedelta(minutes=10)}, "event-time-future",
     "event_time 2026-03-02T10:40:15.250000+00:00 is 600 s ahead of the pipeline clock (limit 300 s); "
     "check the detector's clock"),
    ("event-time-stale", {"event_time": NOW - timedelta(days=2)}, "event-time-stale",
     "event_time 2026-02-28T10:30:15.250000+00:00 is 172800 s old (limit 86400 s); "
     "replay old series with a rebased clock"),
    ("unknown-detector", {"detector_id": "isolation-forest"}, "unknown-detector",
     "detector 'isolation-forest' is not registered; known: robust-zscore, alertmanager"),
    ("unknown-detector-version", {"detector_version": "2.0.0"}, "unknown-detector-version",
     "detector 'robust-zscore' version '2.0.0' does not match the accepted versions ['1.*']"),
    ("missing-label", {"labels": {"site": "plant-north"}}, "missing-label",
     "detector 'robust-zscore' must set labels ['metric']; the event has ['site']"),
    ("empty-label", {"labels": {"metric": ""}}, "missing-label",
     "detector 'robust-zscore' must set labels ['metric']; the event has ['metric']"),
    ("alertmanager-without-alertname", {"detector_id": "alertmanager", "detector_version": "0.27.0"},
     "missing-label", "detector 'alertmanager' must set labels ['alertname']; the event has ['metric']"),
]
REJECTION_IDS = [case[0] for case in REJECTIONS]


@pytest.mark.parametrize(
    ("changes", "reason_code"), [(case[1], case[2]) for case in REJECTIONS], ids=REJECTION_IDS
)
def test_rejection_reason_code(
    intake: Intake, repository: SchemaRepository, changes: dict[str, Any], reason_code: str
) -> None:
    with pytest.raises(IntakeRejected) as caught:
        intake.accept(raw_event(repository, **changes), NOW)

    assert caught.value.reason_code == reason_code


@pytest.mark.parametrize(("changes", "reason"), [(case[1], case[3]) for case in REJECTIONS], ids=REJECTION_IDS)
def test_rejection_reason_text(
    intake: Intake, repository: SchemaRepository, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(IntakeRejected) as caught:
        intake.accept(raw_event(repository, **changes), NOW)

    assert caught.value.reason == reason
    assert str(caught.value) == reason


@pytest.mark.parametrize("changes", [case[1] for case in REJECTIONS], ids=REJECTION_IDS)
def test_rejection_names_writer(intake: Intake, repository: SchemaRepository, changes: dict[str, Any]) -> None:
    with pytest.raises(IntakeRejected) as caught:
        intake.accept(raw_event(repository, **changes), NOW)

    assert caught.value.writer_schema == repository.current("AnomalyEvent").identifier


def test_two_invalid_fields_listed(intake: Intake, repository: SchemaRepository) -> None:
    with pytest.raises(IntakeRejected) as caught:
        intake.accept(raw_event(repository, confidence=2.0, score=math.inf), NOW)

    assert caught.value.reason == (
        "confidence: Input should be less than or equal to 1 (got 2.0); "
        "score: must be a finite number (got inf)"
    )


@pytest.mark.parametrize(
    ("value", "reason_code"),
    [
        (b"", "empty-message"),
        (None, "empty-message"),
        (b'{"entity": "machine-temperature-01"}', "unknown-wire-format"),
        (b"\xc3\x01\x00", "undecodable"),
        (b"\x00\x00\x00\x00\x07\x02", "registry-unavailable"),
    ],
    ids=["empty", "tombstone", "json", "truncated", "registry-framing"],
)
def test_decode_error_passes_code(intake: Intake, value: bytes | None, reason_code: str) -> None:
    with pytest.raises(IntakeRejected) as caught:
        intake.accept(value, NOW)

    assert caught.value.reason_code == reason_code


def test_oversized_value_rejected_before_decoding(codec: AvroCodec) -> None:
    small = Intake(codec, DetectorCatalog.load(DETECTORS_FILE), max_future_skew=MAX_FUTURE_SKEW,
                   max_event_age=MAX_EVENT_AGE, max_event_bytes=2048)
    value = codec.encode("AnomalyEvent", anomaly_event(annotations={"summary": "x" * 4096}).to_avro())

    with pytest.raises(IntakeRejected) as caught:
        small.accept(value, NOW)

    assert caught.value.reason_code == "oversized"
    assert f"message value is {len(value)} bytes, more than the limit of 2048 bytes" in caught.value.reason


def test_good_event_accepted(intake: Intake, codec: AvroCodec) -> None:
    accepted = intake.accept(codec.encode("AnomalyEvent", anomaly_event().to_avro()), NOW)

    assert accepted.event == anomaly_event()


def test_accepted_names_writer(intake: Intake, codec: AvroCodec, repository: SchemaRepository) -> None:
    accepted = intake.accept(codec.encode("AnomalyEvent", anomaly_event().to_avro()), NOW)

    assert accepted.writer_schema == repository.current("AnomalyEvent").identifier


@pytest.mark.parametrize(
    "event_time",
    [NOW + MAX_FUTURE_SKEW, NOW - MAX_EVENT_AGE, NOW],
    ids=["future-at-limit", "age-at-limit", "now"],
)
def test_event_time_limits_inclusive(intake: Intake, repository: SchemaRepository, event_time: Any) -> None:
    accepted = intake.accept(raw_event(repository, event_time=event_time), NOW)

    assert accepted.event.event_time == event_time


@pytest.mark.parametrize("version", ["1.0.0", "1.12.3-rc1"])
def test_matching_version_accepted(intake: Intake, repository: SchemaRepository, version: str) -> None:
    assert intake.accept(raw_event(repository, detector_version=version), NOW).event.detector_version == version


# Detector catalog


def test_shipped_catalog_loads() -> None:
    catalog = DetectorCatalog.load(DETECTORS_FILE)

    assert [rule.id for rule in catalog.detectors] == ["robust-zscore", "alertmanager"]


def test_catalog_default_accepts_any_version() -> None:
    catalog = DetectorCatalog.model_validate({"detectors": [{"id": "robust-zscore"}]})

    catalog.check(anomaly_event(detector_version="99.1", labels={}))


def test_catalog_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "detectors.yaml"

    with pytest.raises(ConfigurationError) as caught:
        DetectorCatalog.load(missing)

    assert str(caught.value) == f"{missing}: cannot read detector catalog: No such file or directory"


@pytest.mark.parametrize(
    "text",
    ["detectors: [\n", "detectors:\n  - id: robust-zscore\n    version: ['1.*']\n", "- robust-zscore\n"],
    ids=["invalid-yaml", "unknown-field", "not-a-mapping"],
)
def test_catalog_invalid_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "detectors.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigurationError) as caught:
        DetectorCatalog.load(path)

    assert str(caught.value).startswith(f"{path}: invalid detector catalog: ")


# Dead letters

ODD_BYTES = bytes(range(256))

SOURCE = SourceMessage(
    topic="anomalies",
    partition=2,
    offset=98_765_432_101,
    timestamp=NOW - timedelta(seconds=3),
    key=b"\x00machine-temperature-01\xff",
    value=b"\xc3\x01" + ODD_BYTES,
    headers=(("trace-id", b"abc123"), ("binary", b"\xff\xfe\x00"), ("empty", None), ("trace-id", b"second")),
)


@pytest.fixture
def letter() -> DeadLetter:
    rejection = IntakeRejected("undecodable", "single-object header truncated", "fingerprint:0011223344556677")
    return dead_letter(SOURCE, rejection, now=NOW, pipeline_version="0.1.0", trace_id="abc123")


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("key", SOURCE.key),
        ("value", SOURCE.value),
        ("source_topic", "anomalies"),
        ("source_partition", 2),
        ("source_offset", 98_765_432_101),
        ("source_timestamp", NOW - timedelta(seconds=3)),
        ("headers", [Header(key="trace-id", value=b"abc123"), Header(key="binary", value=b"\xff\xfe\x00"),
                     Header(key="empty", value=None), Header(key="trace-id", value=b"second")]),
        ("stage", "intake"),
        ("reason_code", "undecodable"),
        ("reason", "single-object header truncated"),
        ("writer_schema", "fingerprint:0011223344556677"),
        ("trace_id", "abc123"),
        ("failed_at", NOW),
        ("pipeline_version", "0.1.0"),
    ],
)
def test_dead_letter_keeps_field(letter: DeadLetter, attribute: str, expected: Any) -> None:
    assert getattr(letter, attribute) == expected


@pytest.mark.parametrize("attribute", ["key", "value"])
def test_dead_letter_survives_encoding(letter: DeadLetter, codec: AvroCodec, attribute: str) -> None:
    decoded = codec.decode(codec.encode("DeadLetter", letter.to_avro()), "DeadLetter")

    assert decoded.record[attribute] == getattr(SOURCE, attribute)


def test_dead_letter_headers_survive_encoding(letter: DeadLetter, codec: AvroCodec) -> None:
    decoded = codec.decode(codec.encode("DeadLetter", letter.to_avro()), "DeadLetter")

    assert [(header["key"], header["value"]) for header in decoded.record["headers"]] == list(SOURCE.headers)


def test_dead_letter_id_stable(letter: DeadLetter) -> None:
    again = dead_letter(SOURCE, IntakeRejected("other", "other"), now=NOW, pipeline_version="0.1.0", trace_id=None)

    assert again.dead_letter_id == letter.dead_letter_id


def test_dead_letter_id_per_offset(letter: DeadLetter) -> None:
    message = SourceMessage("anomalies", 2, SOURCE.offset + 1, None, None, None)
    other = dead_letter(message, IntakeRejected("undecodable", ""), now=NOW, pipeline_version="0.1.0", trace_id=None)

    assert other.dead_letter_id != letter.dead_letter_id


def test_dead_letter_of_tombstone() -> None:
    message = SourceMessage("anomalies", 0, 7, None, None, None)

    letter = dead_letter(message, IntakeRejected("empty-message", "message value is empty"),
                         now=NOW, pipeline_version="0.1.0", trace_id=None)

    assert letter.value is None
    assert letter.key is None
    assert letter.headers == []


def test_source_coordinates() -> None:
    assert SOURCE.coordinates() == "anomalies[2]@98765432101"


def test_source_header_first_match() -> None:
    assert SOURCE.header("trace-id") == b"abc123"


def test_source_header_missing() -> None:
    assert SOURCE.header("traceparent") is None
