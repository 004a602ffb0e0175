"""Avro encoding and decoding in the two wire formats the pipeline accepts.

- Avro single-object encoding (Avro specification): marker C3 01, the writer
  schema's 8-byte CRC-64-AVRO fingerprint (little-endian, as the Java library
  writes it), then the Avro binary body. Fingerprints resolve against schemas/,
  so the embedded default needs no registry.
- Confluent Schema Registry framing: magic byte 0, a 4-byte big-endian schema
  id, then the Avro binary body. Needs a registry client.

The first bytes of each message identify its format.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException

from mitigate.errors import DecodeError, EncodeError
from mitigate.schemas import SchemaRepository, SchemaVersion

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = 5

WireFormat = Literal["single-object", "confluent"]

# Errors fastavro raises on bytes that are not valid Avro for the schema: a short
# buffer, a length or enum index out of range, invalid UTF-8, and so on.
_BODY_ERRORS = (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError, struct.error)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded record and what it was written with."""

    record: dict[str, Any]
    writer_schema: str
    wire_format: WireFormat


class AvroCodec:
    """Encode and decode records of the schemas in a SchemaRepository."""

    def __init__(self, repository: SchemaRepository, registry: Any | None = None) -> None:
        self.repository = repository
        self.registry = registry
        self._registry_schemas: dict[int, Any] = {}
        self._registry_ids: dict[tuple[str, str], int] = {}

    # Encoding

    def encode(
        self,
        name: str,
        record: dict[str, Any],
        *,
        wire_format: WireFormat = "single-object",
        subject: str | None = None,
    ) -> bytes:
        """Encode `record` with the current schema `name` in the given wire format."""
        schema = self.repository.current(name)
        buffer = io.BytesIO()
        if wire_format == "single-object":
            buffer.write(SINGLE_OBJECT_MARKER)
            buffer.write(schema.fingerprint)
        else:
            schema_id = self._register(schema, subject or name)
            buffer.write(CONFLUENT_MAGIC)
            buffer.write(struct.pack(">I", schema_id))
        try:
            schemaless_writer(buffer, schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"record does not fit schema {name}: {exc}") from exc
        return buffer.getvalue()

    def _register(self, schema: SchemaVersion, subject: str) -> int:
        if self.registry is None:
            raise EncodeError("Schema Registry framing needs a registry; set MITIGATE_SCHEMA_REGISTRY_URL")
        cache_key = (subject, schema.identifier)
        schema_id = self._registry_ids.get(cache_key)
        if schema_id is None:
            schema_id = int(self.registry.register_schema(subject, Schema(json.dumps(schema.definition), "AVRO")))
            self._registry_ids[cache_key] = schema_id
            self._registry_schemas[schema_id] = schema.parsed
        return schema_id

    # Decoding

    def decode(self, data: bytes | None, name: str) -> Decoded:
        """Decode `data` as a record of schema `name`, whatever version wrote it.

        Raises DecodeError with a reason code: empty-message, unknown-wire-format,
        unknown-schema, registry-unavailable, schema-mismatch or undecodable.
        """
        if not data:
            raise DecodeError("empty-message", "message value is empty")

        reader = self.repository.current(name)
        if data[:2] == SINGLE_OBJECT_MARKER:
            writer_parsed, writer_id, header_size = self._single_object_writer(data, reader)
            wire_format: WireFormat = "single-object"
        elif data[:1] == CONFLUENT_MAGIC:
            writer_parsed, writer_id, header_size = self._registry_writer(data)
            wire_format = "confluent"
        else:
            raise DecodeError(
                "unknown-wire-format",
                f"first bytes {data[:2].hex()} are neither Avro single-object encoding (c301) "
                "nor Schema Registry framing (00)",
            )

        record = self._read_body(data, header_size, writer_parsed, reader, writer_id)
        return Decoded(record=record, writer_schema=writer_id, wire_format=wire_format)

    def _single_object_writer(self, data: bytes, reader: SchemaVersion) -> tuple[Any, str, int]:
        if len(data) < SINGLE_OBJECT_HEADER_SIZE:
            raise DecodeError("undecodable", f"single-object header truncated: {len(data)} bytes, need 10")
        fingerprint = data[2:SINGLE_OBJECT_HEADER_SIZE]
        writer_id = "fingerprint:" + fingerprint.hex()
        writer = self.repository.by_fingerprint(fingerprint)
        if writer is None:
            raise DecodeError(
                "unknown-schema",
                f"writer schema {writer_id} is not among the schemas shipped in {self.repository.directory}; "
                f"the reader expects {reader.name} {reader.identifier}",
                writer_schema=writer_id,
            )
        return writer.parsed, writer_id, SINGLE_OBJECT_HEADER_SIZE

    def _registry_writer(self, data: bytes) -> tuple[Any, str, int]:
        if len(data) < CONFLUENT_HEADER_SIZE:
            raise DecodeError("undecodable", f"Schema Registry header truncated: {len(data)} bytes, need 5")
        (schema_id,) = struct.unpack(">I", data[1:CONFLUENT_HEADER_SIZE])
        writer_id = f"registry:{schema_id}"
        parsed = self._registry_schemas.get(schema_id)
        if parsed is None:
            if self.registry is None:
                raise DecodeError(
                    "registry-unavailable",
                    f"message uses Schema Registry framing (schema id {schema_id}) but no registry is "
                    "configured; set MITIGATE_SCHEMA_REGISTRY_URL or produce single-object encoded Avro",
                    writer_schema=writer_id,
                )
            parsed = self._fetch_registry_schema(schema_id, writer_id)
        return parsed, writer_id, CONFLUENT_HEADER_SIZE

    def _fetch_registry_schema(self, schema_id: int, writer_id: str) -> Any:
        # NOTE: the registry client is synchronous. The first message of each
        # unseen schema id blocks the event loop for one HTTP round trip, and
        # later messages hit the cache.
        try:
            schema = self.registry.get_schema(schema_id)  # type: ignore[union-attr]
        except SchemaRegistryError as exc:
            code = "unknown-schema" if exc.http_status_code == 404 else "registry-unavailable"
            raise DecodeError(code, f"schema id {schema_id} lookup failed: {exc}", writer_schema=writer_id) from exc
        try:
            parsed = parse_schema(json.loads(schema.schema_str), named_schemas={})
        except (ValueError, SchemaParseException) as exc:
            raise DecodeError("unknown-schema", f"schema id {schema_id} is not valid Avro: {exc}") from exc
        self._registry_schemas[schema_id] = parsed
        return parsed

    @staticmethod
    def _read_body(data: bytes, offset: int, writer: Any, reader: SchemaVersion, writer_id: str) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        reader_schema = None if writer is reader.parsed else reader.parsed
        try:
            record = schemaless_reader(buffer, writer, reader_schema)
        except SchemaResolutionError as exc:
            raise DecodeError(
                "schema-mismatch",
                f"writer schema {writer_id} cannot be read as {reader.name} {reader.identifier}: "
                f"{_shorten(str(exc))}",
                writer_schema=writer_id,
            ) from exc
        except _BODY_ERRORS as exc:
            raise DecodeError(
                "undecodable",
                f"Avro body does not match writer schema {writer_id}: {type(exc).__name__}: {exc}",
                writer_schema=writer_id,
            ) from exc
        if not isinstance(record, dict):
            raise DecodeError("undecodable", f"expected a record, got {type(record).__name__}", writer_schema=writer_id)
        trailing = len(data) - buffer.tell()
        if trailing:
            raise DecodeError(
                "undecodable",
                f"{trailing} bytes left after the Avro body; the message is longer than the record",
                writer_schema=writer_id,
            )
        return record


def create_registry_client(url: str) -> Any:
    """Create a Schema Registry client; a mock:// URL gives confluent-kafka's in-memory registry."""
    return SchemaRegistryClient.new_client({"url": url})


def _shorten(text: str, limit: int = 300) -> str:
    # fastavro's resolution errors embed both schemas, several kilobytes of JSON.
    return text if len(text) <= limit else text[:limit] + "..."
