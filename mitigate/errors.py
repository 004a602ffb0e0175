"""Exception hierarchy: every error the package raises derives from MitigateError."""

from __future__ import annotations


class MitigateError(Exception):
    """Root of all errors raised by mitigate."""


class ConfigurationError(MitigateError):
    """A configuration file or setting is invalid."""


class SchemaError(MitigateError):
    """An Avro schema shipped with the package is missing or invalid."""


class DecodeError(MitigateError):
    """A message could not be decoded; carries the reason code a dead letter needs."""

    def __init__(self, reason_code: str, message: str, *, writer_schema: str | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.writer_schema = writer_schema


class EncodeError(MitigateError):
    """A record does not fit the schema it was encoded with."""


class PolicyError(ConfigurationError):
    """A policy document is invalid; names the file and the field."""

    def __init__(self, source: str, field: str, message: str) -> None:
        super().__init__(f"{source}: {field}: {message}")
        self.source = source
        self.field = field
        self.detail = message
        self.others: list[str] = []  # further problems in the same file, as "field: message"
