"""The Avro schemas in schemas/: loading, fingerprints and lookup by name or fingerprint."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from mitigate.errors import SchemaError

NAMESPACE = "mitigate.v1"


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One parsed schema file with its identity."""

    name: str
    path: Path
    definition: dict[str, Any]
    parsed: Any
    canonical_form: str
    fingerprint: bytes

    @property
    def identifier(self) -> str:
        return "fingerprint:" + self.fingerprint.hex()


def default_schema_dir() -> Path:
    """Locate schemas/: MITIGATE_SCHEMA_DIR, else beside the package in a source tree, else the installed copy."""
    configured = os.environ.get("MITIGATE_SCHEMA_DIR")
    if configured:
        return Path(configured)
    candidates = [
        Path(__file__).resolve().parent.parent / "schemas",
        Path(sys.prefix) / "share" / "mitigate" / "schemas",
    ]
    for candidate in candidates:
        if (candidate / "AnomalyEvent.avsc").is_file():
            return candidate
    searched = ", ".join(str(path) for path in candidates)
    raise SchemaError(f"schema folder not found (searched {searched}); reinstall mitigate or set MITIGATE_SCHEMA_DIR")


def load_schema_file(path: Path) -> SchemaVersion:
    """Parse one .avsc file; older versions of a schema keep their record name."""
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse_schema(definition, named_schemas={})
    except (OSError, ValueError, SchemaParseException) as exc:
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        name=definition["name"],
        path=path,
        definition=definition,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


class SchemaRepository:
    """The current schema of every record type, plus older versions kept for reading.

    Files directly in the folder are the current versions. Files under `history/`
    are earlier versions that writers may still use. They serve only as writer
    schemas, which Avro's resolution rules map onto the current version.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_schema_dir()
        self._current: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}

        for path in sorted(self.directory.glob("*.avsc")):
            version = load_schema_file(path)
            self._current[version.name] = version
            self._by_fingerprint[version.fingerprint] = version
        for path in sorted(self.directory.glob("history/*.avsc")):
            version = load_schema_file(path)
            self._by_fingerprint.setdefault(version.fingerprint, version)

        if not self._current:
            raise SchemaError(f"{self.directory}: no .avsc files found")

    def current(self, name: str) -> SchemaVersion:
        try:
            return self._current[name]
        except KeyError:
            known = ", ".join(sorted(self._current))
            raise SchemaError(f"unknown schema {name!r}; known schemas: {known}") from None

    def by_fingerprint(self, value: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(value)

    def names(self) -> list[str]:
        return sorted(self._current)
