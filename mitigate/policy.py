"""Policy documents: the file format, its validation, and matching signals to policies.

A policy names the signals it covers (match), the conditions that must hold
before it acts without a human (gates), and the commands to send (plan). The format is documented in
docs/policies.md with a complete example.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mitigate.errors import PolicyError
from mitigate.durations import Duration
from mitigate.models import SEVERITIES, AnomalyEvent, Criticality, Severity
from mitigate.topology import ExecutorName

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
WILDCARD = "*"


def PolicyFieldError(field: str, message: str) -> PydanticCustomError:  # noqa: N802 - reads as an exception
    """Create the validation error of a whole-document check, attributed to one field."""
    return PydanticCustomError("policy_field", "{field}: {message}", {"field": field, "message": message})


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


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
    max_criticality: Criticality = "critical"
    require_approval_for: list[Severity] = Field(default_factory=lambda: list[Severity](["critical"]))
    environments: list[str] = Field(default_factory=lambda: [WILDCARD], min_length=1)
    require_known_asset: bool = True
    respect_change_freeze: bool = True
    respect_maintenance: bool = True


class Compensation(Strict):
    """The command that undoes a step, run in reverse order when a later step fails for good."""

    executor: ExecutorName | None = None  # default: the executor of the step it undoes
    action: Identifier
    parameters: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(300.0, gt=0, le=86400)

    @field_validator("parameters", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        return _parameters_as_text(value)


class Step(Strict):
    """One step of a plan: a command to one executor."""

    id: Identifier
    executor: ExecutorName
    action: Identifier
    target: str = "{entity}"
    parameters: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(300.0, gt=0, le=86400)
    retries: int = Field(0, ge=0, le=10)
    depends_on: list[str] = Field(default_factory=list)
    # Checked by the executor against the target before acting: a step whose
    # precondition does not hold is skipped and changes nothing.
    preconditions: dict[str, str] = Field(default_factory=dict)
    compensate: Compensation | None = None

    @field_validator("parameters", "preconditions", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        return _parameters_as_text(value)

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


def _parameters_as_text(value: Any) -> Any:
    # YAML reads `limit: 50` as an int; command parameters are text on the wire.
    if isinstance(value, Mapping):
        return {key: _scalar_text(item) for key, item in value.items()}
    return value


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class RunCap(Strict):
    """At most `runs` plan runs within any `window`."""

    runs: int = Field(ge=1, le=10_000)
    window: Duration

    def describe(self) -> str:
        return f"{self.runs} per {format_duration(self.window)}"


class Limits(Strict):
    """How often the plan may run for one fingerprint and for one target."""

    per_fingerprint: list[RunCap] = Field(default_factory=list)
    per_target: list[RunCap] = Field(default_factory=list)


class ReviewRules(Strict):
    """Rules for the review requests of this policy: the approvals needed, and what happens without a verdict."""

    quorum: int = Field(1, ge=1, le=10)  # approvals from distinct operators before the plan runs
    on_expiry: Literal["escalate", "close"] = "escalate"  # both take no action; escalate also notifies


class PolicyDocument(Strict):
    """A policy as written in config/policies/*.yaml."""

    id: Identifier
    description: str = ""
    mode: Literal["enforce", "shadow", "canary"] = "enforce"
    canary_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    match: Match = Field(default_factory=lambda: Match())
    gates: Gates = Field(default_factory=lambda: Gates())
    limits: Limits = Field(default_factory=lambda: Limits())
    review_timeout_s: float = Field(1800.0, gt=0, le=7 * 86400)
    review: ReviewRules = Field(default_factory=lambda: ReviewRules())
    plan: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _canary_has_fraction(self) -> PolicyDocument:
        if self.mode == "canary" and self.canary_fraction is None:
            raise PolicyFieldError("canary_fraction", "mode canary needs canary_fraction, for example 0.1 for 10%")
        if self.mode != "canary" and self.canary_fraction is not None:
            raise PolicyFieldError("canary_fraction", f"canary_fraction applies only to mode canary, not {self.mode}")
        return self

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
    if data is None:
        raise PolicyError(source, "(document)", "the file is empty; a policy needs at least id and plan")
    if not isinstance(data, dict):
        raise PolicyError(source, "(document)", f"expected a mapping of policy fields, got {type(data).__name__}")
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(error) for error in exc.errors()]
        field, message = problems[0]
        more = len(problems) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''} in this file)"
        error = PolicyError(source, field, message)
        error.others = [f"{other_field}: {other_message}" for other_field, other_message in problems[1:]]
        raise error from exc


REQUIRED_HINTS = {
    "plan": "; add a plan with at least one step (id, executor, action)",
    "id": "; give the policy an id such as cpu-saturation",
}


def _suggestion(error: Any) -> str:
    """Name the known field closest to a misspelt one, if there is a close one."""
    name = str(error["loc"][-1])
    model = _section_model(error["loc"][:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(name, list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_model(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = PolicyDocument
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = next((item for item in candidates if isinstance(item, type) and issubclass(item, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def _describe_error(error: Any) -> tuple[str, str]:
    """Return the field path and a plain message for one pydantic error."""
    field = ".".join(str(part) for part in error["loc"]) or "(document)"
    message = str(error["msg"])
    if error["type"] == "policy_field":
        field = str(error["ctx"]["field"])
        message = str(error["ctx"]["message"])
    elif error["type"] == "value_error":
        message = str(error["ctx"]["error"])  # without pydantic's "Value error, " prefix
    elif error["type"] == "extra_forbidden":
        message = "unknown field" + _suggestion(error) + "; the fields of each section are listed in docs/policies.md"
    elif error["type"] == "missing":
        message = "required field is missing" + REQUIRED_HINTS.get(field, "")
    elif error["type"] == "too_short" and field == "plan":
        message = "the plan is empty; add at least one step with id, executor and action"
    elif error["type"] in ("literal_error", "enum"):
        message = f"invalid value {error.get('input')!r}; {message[0].lower()}{message[1:]}"
    elif error["type"] == "string_pattern_mismatch":
        message = (f"invalid name {error.get('input')!r}; use lowercase letters, digits, '.', '_' and '-', "
                   "starting with a letter or digit")
    return field, message


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
    return load_policy_set(paths)[0]


def load_policy_set(paths: Iterable[Path]) -> tuple[list[PolicyDocument], dict[str, str]]:
    """Load policy files and check them as a set: unique ids and no ties.

    Returns the documents and, by policy id, the file each came from.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    if not files:
        raise PolicyError(", ".join(str(path) for path in paths) or "(no paths)", "(file)",
                          "no policy files found (*.yaml or *.yml)")

    documents: list[PolicyDocument] = []
    origin: dict[str, Path] = {}
    for file in files:
        document = load_policy_file(file)
        if document.id in origin:
            raise PolicyError(str(file), "id", f"policy id {document.id!r} is already used by {origin[document.id]}")
        origin[document.id] = file
        documents.append(document)
    sources = {policy_id: str(path) for policy_id, path in origin.items()}
    check_ties(documents, sources)
    return documents, sources


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

    def get(self, policy_id: str) -> ActivePolicy | None:
        return next((policy for policy in self._ordered if policy.policy_id == policy_id), None)

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


# Overlap checks at publish time


def _literal_prefix(pattern: str) -> str:
    for index, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:index]
    return pattern


def _literal_suffix(pattern: str) -> str:
    for index in range(len(pattern) - 1, -1, -1):
        if pattern[index] in "*?]":
            return pattern[index + 1:]
    return pattern


def patterns_may_overlap(first: str, second: str) -> bool:
    """Tell whether some text could match both shell-style patterns.

    Exact when at least one pattern has no wildcard. For two patterns with
    wildcards it compares their literal prefixes and suffixes, so it may report
    an overlap that no text produces (for example `a*b*c` and `a*d*c`), never
    miss one.
    """
    if not _is_glob(first):
        return fnmatchcase(first, second)
    if not _is_glob(second):
        return fnmatchcase(second, first)
    prefix_a, prefix_b = _literal_prefix(first), _literal_prefix(second)
    suffix_a, suffix_b = _literal_suffix(first), _literal_suffix(second)
    prefixes_agree = prefix_a.startswith(prefix_b) or prefix_b.startswith(prefix_a)
    suffixes_agree = suffix_a.endswith(suffix_b) or suffix_b.endswith(suffix_a)
    return prefixes_agree and suffixes_agree


def matches_may_overlap(first: Match, second: Match) -> bool:
    """Tell whether one signal could match both selectors."""
    for patterns_a, patterns_b in ((first.anomaly_types, second.anomaly_types), (first.subsystems, second.subsystems)):
        if not any(patterns_may_overlap(a, b) for a in patterns_a for b in patterns_b):
            return False
    if not set(first.severities) & set(second.severities):
        return False
    for name in first.labels.keys() & second.labels.keys():
        if not patterns_may_overlap(first.labels[name], second.labels[name]):
            return False
    return True


def check_ties(documents: Iterable[PolicyDocument], sources: Mapping[str, str]) -> None:
    """Reject two policies that could match the same signal with the same specificity.

    `sources` names where each policy id comes from (a file, or the policies
    topic for published policies), for the error message.
    """
    ordered = sorted(documents, key=lambda document: document.id)
    for index, first in enumerate(ordered):
        for second in ordered[index + 1:]:
            if first.match.specificity() != second.match.specificity():
                continue
            if matches_may_overlap(first.match, second.match):
                culprit = first if sources.get(first.id, "").endswith((".yaml", ".yml")) else second
                other = second if culprit is first else first
                raise PolicyError(
                    sources.get(culprit.id, culprit.id),
                    "match",
                    f"policy {culprit.id!r} can match the same signals as policy {other.id!r} "
                    f"({sources.get(other.id, other.id)}) with the same specificity, so neither would win; "
                    "make one of them more specific, for example with a label or a narrower subsystem",
                )
