"""Unit tests for mitigate.schemas: loading the shipped .avsc files and their CRC-64-AVRO fingerprints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastavro.schema import SchemaParseException

from mitigate.errors import SchemaError
from mitigate.models import RECORD_MODELS
from mitigate.schemas import NAMESPACE, SchemaRepository, default_schema_dir, load_schema_file
from tests.unit.builders import SCHEMA_DIR

SHIPPED_FILES = sorted(SCHEMA_DIR.glob("*.avsc"))
SHIPPED_NAMES = [path.stem for path in SHIPPED_FILES]

# Written out so that adding, renaming or dropping a schema file is a visible change.
EXPECTED_NAMES = [
    "ActionCommand",
    "ActionResult",
    "AnomalyEvent",
    "AssetContext",
    "DeadLetter",
    "DecisionRecord",
    "MetricsWindow",
    "PlanControl",
    "PolicyVersion",
    "ReviewRequest",
    "ReviewVerdict",
    "Signal",
    "Silence",
]

CRC_64_AVRO_EMPTY = 0xC15D213AA4D7A795


def crc_64_avro(data: bytes) -> int:
    """Compute the Rabin fingerprint that the Avro specification calls CRC-64-AVRO, bit by bit."""
    fingerprint = CRC_64_AVRO_EMPTY
    for byte in data:
        fingerprint ^= byte
        for _ in range(8):
            low_bit = fingerprint & 1
            fingerprint >>= 1
            if low_bit:
                fingerprint ^= CRC_64_AVRO_EMPTY
    return fingerprint


@pytest.fixture(scope="module")
def repository() -> SchemaRepository:
    return SchemaRepository(SCHEMA_DIR)


def test_shipped_schema_names() -> None:
    assert SHIPPED_NAMES == EXPECTED_NAMES


def test_every_model_has_schema() -> None:
    assert sorted(model.schema_name for model in RECORD_MODELS) == EXPECTED_NAMES


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=SHIPPED_NAMES)
def test_shipped_schema_parses(path: Path) -> None:
    version = load_schema_file(path)

    assert version.name == path.stem
    assert version.definition["namespace"] == NAMESPACE
    assert version.definition["type"] == "record"
    assert version.canonical_form.startswith('{"name":"' + NAMESPACE + "." + path.stem + '"')


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=SHIPPED_NAMES)
def test_fingerprint_is_eight_bytes(path: Path) -> None:
    assert len(load_schema_file(path).fingerprint) == 8


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=SHIPPED_NAMES)
def test_fingerprint_matches_crc_64_avro(path: Path) -> None:
    version = load_schema_file(path)
    expected = crc_64_avro(version.canonical_form.encode("utf-8")).to_bytes(8, "little")

    # Little-endian, as the Avro Java library writes it in single-object encoding.
    assert version.fingerprint == expected


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=SHIPPED_NAMES)
def test_fingerprint_stable_across_loads(path: Path) -> None:
    assert load_schema_file(path).fingerprint == load_schema_file(path).fingerprint


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=SHIPPED_NAMES)
def test_fingerprint_ignores_docs_and_layout(path: Path, tmp_path: Path) -> None:
    definition = json.loads(path.read_text(encoding="utf-8"))
    definition["doc"] = "A different description, which the parsing canonical form drops."
    reformatted = tmp_path / path.name
    reformatted.write_text(json.dumps(definition, indent=7, sort_keys=True), encoding="utf-8")

    assert load_schema_file(reformatted).fingerprint == load_schema_file(path).fingerprint


def test_fingerprints_differ_between_schemas() -> None:
    fingerprints = {load_schema_file(path).fingerprint for path in SHIPPED_FILES}

    assert len(fingerprints) == len(SHIPPED_FILES)


def test_fingerprint_changes_with_field(tmp_path: Path) -> None:
    source = SCHEMA_DIR / "AnomalyEvent.avsc"
    definition = json.loads(source.read_text(encoding="utf-8"))
    definition["fields"].append({"name": "region", "type": "string", "default": ""})
    changed = tmp_path / "AnomalyEvent.avsc"
    changed.write_text(json.dumps(definition), encoding="utf-8")

    assert load_schema_file(changed).fingerprint != load_schema_file(source).fingerprint


def test_identifier_is_fingerprint_hex() -> None:
    version = load_schema_file(SCHEMA_DIR / "AnomalyEvent.avsc")

    assert version.identifier == "fingerprint:" + version.fingerprint.hex()


def test_default_dir_is_source_tree() -> None:
    assert default_schema_dir() == SCHEMA_DIR


def test_repository_lists_names(repository: SchemaRepository) -> None:
    assert repository.names() == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_repository_current_by_name(repository: SchemaRepository, name: str) -> None:
    assert repository.current(name).fingerprint == load_schema_file(SCHEMA_DIR / f"{name}.avsc").fingerprint


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_repository_finds_fingerprint(repository: SchemaRepository, name: str) -> None:
    version = repository.current(name)

    assert repository.by_fingerprint(version.fingerprint) is version


def test_unknown_fingerprint_is_none(repository: SchemaRepository) -> None:
    assert repository.by_fingerprint(bytes(8)) is None


def test_unknown_name_lists_known(repository: SchemaRepository) -> None:
    with pytest.raises(SchemaError) as caught:
        repository.current("AnomalyEvnt")

    assert str(caught.value) == "unknown schema 'AnomalyEvnt'; known schemas: " + ", ".join(EXPECTED_NAMES)


def test_history_version_readable_not_current(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, folder)
    definition = json.loads((folder / "AnomalyEvent.avsc").read_text(encoding="utf-8"))
    definition["fields"] = [field for field in definition["fields"] if field["name"] != "annotations"]
    (folder / "history").mkdir(exist_ok=True)
    (folder / "history" / "AnomalyEvent-1.avsc").write_text(json.dumps(definition), encoding="utf-8")
    older = load_schema_file(folder / "history" / "AnomalyEvent-1.avsc")
    repository = SchemaRepository(folder)

    found = repository.by_fingerprint(older.fingerprint)

    assert found is not None
    assert found.path == folder / "history" / "AnomalyEvent-1.avsc"
    assert repository.current("AnomalyEvent").fingerprint != older.fingerprint
    assert repository.names() == EXPECTED_NAMES


def test_history_copy_keeps_current(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, folder)
    (folder / "history").mkdir(exist_ok=True)
    shutil.copy(folder / "AnomalyEvent.avsc", folder / "history" / "AnomalyEvent-copy.avsc")

    repository = SchemaRepository(folder)
    current = repository.current("AnomalyEvent")

    assert repository.by_fingerprint(current.fingerprint) is current


def test_empty_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as caught:
        SchemaRepository(tmp_path)

    assert str(caught.value) == f"{tmp_path}: no .avsc files found"


def test_invalid_json_names_file(tmp_path: Path) -> None:
    broken = tmp_path / "Broken.avsc"
    broken.write_text('{"type": "record", "name": ', encoding="utf-8")

    with pytest.raises(SchemaError) as caught:
        load_schema_file(broken)

    assert str(caught.value).startswith(f"{broken}: invalid Avro schema: ")


def test_unknown_type_names_file(tmp_path: Path) -> None:
    broken = tmp_path / "Broken.avsc"
    broken.write_text(json.dumps({"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "strin"}]}),
                      encoding="utf-8")

    with pytest.raises(SchemaError) as caught:
        load_schema_file(broken)

    assert str(caught.value).startswith(f"{broken}: invalid Avro schema: ")


# fastavro raises SchemaParseException, which is not a ValueError, for these mistakes.
UNPARSABLE_SCHEMAS = [
    ("field-without-type", {"type": "record", "name": "Broken", "fields": [{"name": "x"}]}),
    ("duplicate-enum-symbol", {"type": "enum", "name": "Broken", "symbols": ["low", "low"]}),
    ("default-of-wrong-type",
     {"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "int", "default": "zero"}]}),
]


@pytest.mark.parametrize(
    "definition", [case[1] for case in UNPARSABLE_SCHEMAS], ids=[case[0] for case in UNPARSABLE_SCHEMAS]
)
def test_unparsable_schema_names_file(tmp_path: Path, definition: dict[str, object]) -> None:
    broken = tmp_path / "Broken.avsc"
    broken.write_text(json.dumps(definition), encoding="utf-8")

    with pytest.raises(SchemaError) as caught:
        load_schema_file(broken)

    assert str(caught.value).startswith(f"{broken}: invalid Avro schema: ")


HISTORY_FILES = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[path.name for path in HISTORY_FILES])
def test_history_version_resolves_to_current(path: Path) -> None:
    older = load_schema_file(path)
    repository = SchemaRepository()
    current = repository.current(older.name)

    assert older.fingerprint != current.fingerprint
    assert repository.by_fingerprint(older.fingerprint) == older
    # Every field the current version added has a default, so old records stay readable.
    old_fields = {field["name"] for field in older.definition["fields"]}
    added = [field for field in current.definition["fields"] if field["name"] not in old_fields]
    assert all("default" in field for field in added), [field["name"] for field in added]
