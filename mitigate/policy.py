"""Policy documents: the file format, its validation, and matching signals to policies.

A policy names the signals it covers (match), the conditions that must hold
before it acts without a human (gates), and the commands to send (plan). The format is documented in
docs/policies.md with a complete example.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mitigate.errors import PolicyError
from mitigate.models import SEVERITIES, AnomalyEvent, Severity
from mitigate.topology import EXECUTORS

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
WILDCARD = "*"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Match(Strict):
    """Signal selector of a policy: each list matches any of its entries, and every field must match."""

    anomaly_types: list[str] = Field(default_factory=lambda: [WILDCARD], min_length=1)
    subsystems: list[str] = Field(default_factory=lambda: [WILDCARD], min_length=1)
    severities: list[Severity] = Field(default_factory=lambda: list[Severity](SEVERITIES), min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)

    def covers(self, signal: AnomalyEvent) -> bool:
        if not any(fnmatchcase(signal.anomaly_type, pattern) for pattern in self.anomaly_types):
            return False
        if not any(fnmatchcase(signal.subsystem, pattern) for pattern in self.subsystems):
            return False
        if signal.severity not in self.severities:
            return False
        for name, pattern in self.labels.items():
            value = signal.labels.get(name)
            if value is None or not fnmatchcase(value, pattern):
                return False
        return True

    def specificity(self) -> tuple[int, int]:
        """Rank for "specific beats general": constrained fields first, then exact (glob-free) patterns."""
        constrained = 0
        exact = 0
        for patterns in (self.anomaly_types, self.subsystems):
            if patterns != [WILDCARD]:
                constrained += 1
                exact += sum(1 for pattern in patterns if not _is_glob(pattern))
        if set(self.severities) != set(SEVERITIES):
            constrained += 1
        constrained += len(self.labels)
        exact += sum(1 for pattern in self.labels.values() if not _is_glob(pattern))
        return constrained, exact

    def describe(self) -> str:
        parts = [
            f"anomaly_types={','.join(self.anomaly_types)}",
            f"subsystems={','.join(self.subsystems)}",
            f"severities={','.join(self.severities)}",
        ]
        parts.extend(f"labels.{name}={pattern}" for name, pattern in sorted(self.labels.items()))
        return " ".join(parts)


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class Gates(Strict):
    """Conditions that must all hold before the plan runs without a human."""

    min_confidence: float = Field(0.9, ge=0.0, le=1.0)
    require_approval_for: list[Severity] = Field(default_factory=lambda: list[Severity](["critical"]))
    environments: list[str] = Field(default_factory=lambda: [WILDCARD], min_length=1)
    require_known_asset: bool = True
    respect_change_freeze: bool = True


class Step(Strict):
    """One step of a plan: a command to one executor."""

    id: Identifier
    executor: str
    action: Identifier
    target: str = "{entity}"
    parameters: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(300.0, gt=0, le=86400)
    depends_on: list[str] = Field(default_factory=list)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}; use one of: {', '.join(EXECUTORS)}")
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # YAML reads `limit: 50` as an int; command parameters are text on the wire.
        if isinstance(value, Mapping):
            return {key: _scalar_text(item) for key, item in value.items()}
        return value

    @field_validator("target")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format_map(_PLACEHOLDER_CHECK)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(
                f"invalid target template {value!r}; placeholders allowed: "
                f"{', '.join('{' + name + '}' for name in TARGET_PLACEHOLDERS)}"
            ) from exc
        return value


TARGET_PLACEHOLDERS = ("entity", "subsystem", "fingerprint")
_PLACEHOLDER_CHECK = {name: "" for name in TARGET_PLACEHOLDERS}


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class PolicyDocument(Strict):
    """A policy as written in config/policies/*.yaml."""

    id: Identifier
    description: str = ""
    mode: Literal["enforce", "shadow"] = "enforce"
    match: Match = Field(default_factory=lambda: Match())
    gates: Gates = Field(default_factory=lambda: Gates())
    review_timeout_s: float = Field(1800.0, gt=0, le=7 * 86400)
    plan: list[Step] = Field(min_length=1)

    @field_validator("plan")
    @classmethod
    def _plan_is_a_dag(cls, plan: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in plan:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} appears twice; give each step its own id")
            for dependency in step.depends_on:
                if dependency not in seen:
                    raise ValueError(
                        f"step {step.id!r} depends on {dependency!r}, which is not an earlier step; "
                        "list steps after the steps they depend on"
                    )
            seen.add(step.id)
        return plan

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def parse_policy(data: Any, source: str) -> PolicyDocument:
    """Validate one policy document; errors name the source, the field and the problem."""
    if not isinstance(data, dict):
        raise PolicyError(source, "(document)", f"expected a mapping of policy fields, got {type(data).__name__}")
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        message = first["msg"]
        if first["type"] == "value_error":
            message = str(first["ctx"]["error"])  # without pydantic's "Value error, " prefix
        elif first["type"] == "extra_forbidden":
            message = f"unknown field; the fields of this section are listed in docs/policies.md ({message})"
        elif first["type"] == "missing":
            message = "required field is missing"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''} in this file)"
        raise PolicyError(source, field, message) from exc


def load_policy_file(path: Path) -> PolicyDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), "(file)", f"cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(str(path), "(file)", f"invalid YAML: {exc}") from exc
    return parse_policy(data, str(path))


def load_policy_files(paths: Iterable[Path]) -> list[PolicyDocument]:
    """Load policy files (a folder stands for its *.yaml and *.yml files); ids must be unique."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    if not files:
        raise PolicyError(", ".join(str(path) for path in paths) or "(no paths)", "(file)", "no policy files found")

    documents: list[PolicyDocument] = []
    origin: dict[str, Path] = {}
    for file in files:
        document = load_policy_file(file)
        if document.id in origin:
            raise PolicyError(str(file), "id", f"policy id {document.id!r} is already used by {origin[document.id]}")
        origin[document.id] = file
        documents.append(document)
    return documents


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """A published policy version, as the decide stage uses it."""

    document: PolicyDocument
    version: int

    @property
    def policy_id(self) -> str:
        return self.document.id


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    policy: ActivePolicy
    tied_with: tuple[str, ...]


class PolicyIndex:
    """All active policies, ordered so that the most specific match wins.

    Order: more constrained fields first, then more exact patterns, then policy
    id, so that the outcome never depends on arrival order. Two matches with the
    same specificity are reported as a tie in the decision record.
    """

    def __init__(self, policies: Iterable[ActivePolicy]) -> None:
        self._ordered = sorted(
            policies,
            key=lambda item: (tuple(-rank for rank in item.document.match.specificity()), item.policy_id),
        )

    def __len__(self) -> int:
        return len(self._ordered)

    def match(self, signal: AnomalyEvent) -> PolicyMatch | None:
        best: ActivePolicy | None = None
        tied: list[str] = []
        for policy in self._ordered:
            if not policy.document.match.covers(signal):
                continue
            if best is None:
                best = policy
            elif policy.document.match.specificity() == best.document.match.specificity():
                tied.append(policy.policy_id)
            else:
                break
        if best is None:
            return None
        return PolicyMatch(best, tuple(tied))


def policy_from_json(document: str, version: int) -> ActivePolicy:
    return ActivePolicy(PolicyDocument.model_validate(orjson.loads(document)), version)
