"""Operator rights: who may answer which review requests, read from config/operators.yaml.

Roles grant verdict kinds for severities, subsystems and executors; operators
hold roles. A verdict is allowed when one role of its operator covers all of
it: the kind, the request's severity and subsystem and, for approve and modify,
every executor the plan would send commands to. A veto runs nothing, so it
needs no executor right.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mitigate.errors import ConfigurationError
from mitigate.models import SEVERITIES, Severity, VerdictKind

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")]
VERDICT_KINDS: tuple[VerdictKind, ...] = ("approve", "modify", "veto")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Role(Strict):
    """What holders of a role may answer. Subsystem and executor entries are shell-style patterns."""

    verdicts: list[VerdictKind] = Field(min_length=1)
    severities: list[Severity] = Field(default_factory=lambda: list[Severity](SEVERITIES), min_length=1)
    subsystems: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    executors: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    def missing(self, kind: VerdictKind, severity: str, subsystem: str, executors: Iterable[str]) -> list[str]:
        """Return the rights this role lacks for the verdict, as readable phrases; empty when it allows it."""
        lacking = []
        if kind not in self.verdicts:
            lacking.append(f"verdict {kind} (allows {', '.join(self.verdicts)})")
        if severity not in self.severities:
            lacking.append(f"severity {severity} (allows {', '.join(self.severities)})")
        if not any(fnmatchcase(subsystem, pattern) for pattern in self.subsystems):
            lacking.append(f"subsystem {subsystem} (allows {', '.join(self.subsystems)})")
        if kind != "veto":
            outside = sorted({name for name in executors
                              if not any(fnmatchcase(name, pattern) for pattern in self.executors)})
            if outside:
                lacking.append(f"executor {', '.join(outside)} (allows {', '.join(self.executors)})")
        return lacking


class Operator(Strict):
    name: str = ""  # display name
    roles: list[Name] = Field(min_length=1)


class OperatorDirectory(Strict):
    """The contents of config/operators.yaml."""

    roles: dict[Name, Role] = Field(default_factory=dict)
    operators: dict[Name, Operator] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _roles_exist(self) -> OperatorDirectory:
        for operator_id, operator in self.operators.items():
            for role in operator.roles:
                if role not in self.roles:
                    known = ", ".join(sorted(self.roles)) or "none defined"
                    raise ValueError(f"operators.{operator_id}.roles: unknown role {role!r}; roles: {known}")
        return self

    def check(self, operator: str, kind: VerdictKind, severity: str, subsystem: str,
              executors: Iterable[str]) -> str | None:
        """Return why `operator` may not give this verdict, or None when one of their roles allows it."""
        executors = list(executors)
        entry = self.operators.get(operator)
        if entry is None:
            return (f"operator {operator!r} is not listed in the operators file, so it has no rights; answer "
                    "under your listed name (--operator NAME or MITIGATE_OPERATOR), or ask an administrator to add it")
        gaps = {role: self.roles[role].missing(kind, severity, subsystem, executors) for role in entry.roles}
        if any(not lacking for lacking in gaps.values()):
            return None
        closest = min(gaps, key=lambda role: len(gaps[role]))
        allowed = self.allowed(kind, severity, subsystem, executors)
        who = f"; operators who may: {', '.join(allowed)}" if allowed else "; no operator has this right"
        return (f"operator {operator} may not {kind} this request: role {closest} lacks "
                f"{'; '.join(gaps[closest])}{who}")

    def allowed(self, kind: VerdictKind, severity: str, subsystem: str, executors: Iterable[str]) -> list[str]:
        executors = list(executors)
        return sorted(
            operator_id for operator_id, entry in self.operators.items()
            if any(not self.roles[role].missing(kind, severity, subsystem, executors) for role in entry.roles)
        )


def load_operators(path: Path) -> OperatorDirectory:
    """Read and check an operators file; errors name the file, the field and the fix."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}; set MITIGATE_OPERATORS_FILE to the "
                                 "operators file (config/operators.yaml in the source tree)") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping with roles and operators, got {type(data).__name__}")
    try:
        return OperatorDirectory.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key shows as an unknown field and as a missing one; the unknown one names the typo.
        first = next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])
        field = ".".join(str(part) for part in first["loc"] if part != "[key]") or "(document)"
        if first["type"] == "value_error":
            message = str(first["ctx"]["error"])
            if message.startswith("operators."):
                field, _, message = message.partition(": ")
        elif first["type"] == "extra_forbidden":
            message = "unknown field; roles take verdicts, severities, subsystems and executors, operators take name and roles"
        elif first["type"] == "missing":
            message = "required field is missing"
        elif first["type"] == "too_short":
            message = "the list is empty; name at least one entry"
        elif first["type"] == "string_pattern_mismatch":
            message = (f"invalid name {first.get('input')!r}; use letters, digits, '.', '_', '@' and '-', "
                       "starting with a letter or digit")
        else:
            message = str(first["msg"])
            if first["type"] in ("literal_error", "enum"):
                message = f"invalid value {first.get('input')!r}; {message[0].lower()}{message[1:]}"
        raise ConfigurationError(f"{path}: {field}: {message}") from exc
