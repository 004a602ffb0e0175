"""pydantic models that mirror the Avro schemas in schemas/.

Avro checks structure; these models check meaning (ranges, finiteness, time
zones). Field names and order follow the schemas exactly, which a unit test
verifies, so that `model_dump()` is a valid Avro record.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

Severity = Literal["low", "medium", "high", "critical"]
SignalStatus = Literal["firing", "resolved"]
Outcome = Literal["auto", "review", "shadow", "suppress"]
Criticality = Literal["low", "medium", "high", "critical"]

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

NonEmpty = Annotated[str, Field(min_length=1, max_length=1024)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]


class AvroModel(BaseModel):
    """Base of the models that are encoded with an Avro schema of the same name."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_name: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump()


class AnomalyEvent(AvroModel):
    schema_name: ClassVar[str] = "AnomalyEvent"

    event_id: NonEmpty
    detector_id: NonEmpty
    detector_version: NonEmpty
    event_time: AwareDatetime
    entity: NonEmpty
    subsystem: NonEmpty
    anomaly_type: NonEmpty
    severity: Severity
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    score: Finite
    status: SignalStatus
    fingerprint: NonEmpty
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Header(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    value: bytes | None = None


class DeadLetter(AvroModel):
    schema_name: ClassVar[str] = "DeadLetter"

    dead_letter_id: NonEmpty
    failed_at: AwareDatetime
    stage: NonEmpty
    reason_code: NonEmpty
    reason: str
    source_topic: NonEmpty
    source_partition: int
    source_offset: int
    source_timestamp: AwareDatetime | None = None
    key: bytes | None = None
    value: bytes | None = None
    headers: list[Header] = Field(default_factory=list)
    writer_schema: str | None = None
    trace_id: str | None = None
    pipeline_version: NonEmpty


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime
    end: AwareDatetime
    reason: str = ""

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


class AssetContext(AvroModel):
    schema_name: ClassVar[str] = "AssetContext"

    entity: NonEmpty
    owner: NonEmpty
    tier: NonEmpty
    criticality: Criticality
    environment: NonEmpty
    change_freeze: bool = False
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    updated_at: AwareDatetime

    def maintenance_at(self, moment: datetime) -> MaintenanceWindow | None:
        return next((window for window in self.maintenance_windows if window.covers(moment)), None)


class PolicyVersion(AvroModel):
    schema_name: ClassVar[str] = "PolicyVersion"

    policy_id: NonEmpty
    version: Annotated[int, Field(ge=1)]
    author: NonEmpty
    published_at: AwareDatetime
    change_note: str
    content_hash: NonEmpty
    document: str
    deleted: bool = False


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: NonEmpty
    passed: bool
    value: str
    threshold: str


class Lineage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source_topic: str
    source_partition: int
    source_offset: int
    detector_id: str
    detector_version: str
    writer_schema: str
    event_time: AwareDatetime
    ingest_time: AwareDatetime
    clock_skew_ms: int
    pipeline_version: str


class AssetSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    tier: str
    criticality: str
    environment: str
    change_freeze: bool


class DecisionRecord(AvroModel):
    schema_name: ClassVar[str] = "DecisionRecord"

    decision_id: NonEmpty
    decided_at: AwareDatetime
    event_id: NonEmpty
    trace_id: NonEmpty
    incident_id: str | None = None
    fingerprint: NonEmpty
    entity: NonEmpty
    subsystem: NonEmpty
    anomaly_type: NonEmpty
    severity: Severity
    confidence: float
    signal_status: SignalStatus
    outcome: Outcome
    reason_code: NonEmpty
    reason: str
    policy_id: str | None = None
    policy_version: int | None = None
    rule: str | None = None
    risk_score: Annotated[float, Field(ge=0.0, le=1.0)]
    gates: list[GateResult] = Field(default_factory=list)
    command_ids: list[str] = Field(default_factory=list)
    review_id: str | None = None
    lineage: Lineage
    asset: AssetSnapshot | None = None
    incident_signals: int = 1
    cancelled_steps: list[str] = Field(default_factory=list)
    silence_id: str | None = None
    plan_id: str | None = None
    verdict_id: str | None = None
    operators: list[str] = Field(default_factory=list)


class ActionCommand(AvroModel):
    schema_name: ClassVar[str] = "ActionCommand"

    command_id: NonEmpty
    idempotency_key: NonEmpty
    decision_id: NonEmpty
    event_id: NonEmpty
    incident_id: str | None = None
    trace_id: NonEmpty
    issued_at: AwareDatetime
    deadline: AwareDatetime
    attempt: Annotated[int, Field(ge=1)] = 1
    executor: NonEmpty
    action: NonEmpty
    target: NonEmpty
    parameters: dict[str, str] = Field(default_factory=dict)
    step_id: NonEmpty
    depends_on: list[str] = Field(default_factory=list)
    policy_id: NonEmpty
    policy_version: int
    preconditions: dict[str, str] = Field(default_factory=dict)
    compensates: str | None = None


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step_id: NonEmpty
    executor: NonEmpty
    action: NonEmpty
    target: NonEmpty
    parameters: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)


class CompensationSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    executor: NonEmpty
    action: NonEmpty
    parameters: dict[str, str] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(gt=0)]


class PlanStepSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step_id: NonEmpty
    executor: NonEmpty
    action: NonEmpty
    target: NonEmpty
    parameters: dict[str, str] = Field(default_factory=dict)
    preconditions: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    timeout_ms: Annotated[int, Field(gt=0)]
    retries: Annotated[int, Field(ge=0)] = 0
    compensate: CompensationSpec | None = None


ReviewStatus = Literal["pending", "approved", "modified", "vetoed", "expired", "closed", "superseded"]
ExpiryAction = Literal["escalate", "close"]
VerdictKind = Literal["approve", "modify", "veto"]


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    operator: NonEmpty
    approved_at: AwareDatetime
    verdict_id: NonEmpty


class ReviewRequest(AvroModel):
    # The decision record inside is binary Avro: as JSON (in the orchestrator's table) it is base64.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")
    schema_name: ClassVar[str] = "ReviewRequest"

    review_id: NonEmpty
    decision_id: NonEmpty
    event_id: NonEmpty
    trace_id: NonEmpty
    created_at: AwareDatetime
    deadline: AwareDatetime
    incident_id: str | None = None
    entity: NonEmpty
    subsystem: NonEmpty
    anomaly_type: NonEmpty
    severity: Severity
    confidence: float
    score: float
    risk_score: Annotated[float, Field(ge=0.0, le=1.0)]
    reason_code: NonEmpty
    reason: str
    policy_id: str | None = None
    policy_version: int | None = None
    gates: list[GateResult] = Field(default_factory=list)
    recommended_plan: list[PlanStep] = Field(default_factory=list)
    signal_count: int = 1
    first_seen: AwareDatetime | None = None
    last_seen: AwareDatetime | None = None
    revision: Annotated[int, Field(ge=1)] = 1
    status: ReviewStatus = "pending"
    status_reason: str = ""
    updated_at: AwareDatetime | None = None
    quorum: Annotated[int, Field(ge=1)] = 1
    approvals: list[Approval] = Field(default_factory=list)
    on_expiry: ExpiryAction = "escalate"
    risk_inputs: dict[str, str] = Field(default_factory=dict)
    predicted_impact: list[str] = Field(default_factory=list)
    steps: list[PlanStepSpec] = Field(default_factory=list)
    decision: bytes | None = None


class ReviewVerdict(AvroModel):
    schema_name: ClassVar[str] = "ReviewVerdict"

    verdict_id: NonEmpty
    review_id: NonEmpty
    incident_id: str | None = None
    revision: Annotated[int, Field(ge=1)]
    kind: VerdictKind
    operator: NonEmpty
    issued_at: AwareDatetime
    reason: Annotated[str, Field(max_length=4096)] = ""
    drop_steps: list[str] = Field(default_factory=list)
    parameters: dict[str, dict[str, str]] = Field(default_factory=dict)
    client: str = ""


class Signal(AvroModel):
    """An accepted, enriched event between the intake and the correlation agent."""

    schema_name: ClassVar[str] = "Signal"

    event: AnomalyEvent
    trace_id: NonEmpty
    lineage: Lineage
    asset: AssetContext | None = None


ResultStatus = Literal["succeeded", "failed", "rejected", "skipped", "timed_out"]


class ActionResult(AvroModel):
    schema_name: ClassVar[str] = "ActionResult"

    command_id: NonEmpty
    idempotency_key: NonEmpty
    decision_id: NonEmpty
    incident_id: str | None = None
    trace_id: NonEmpty
    executor: NonEmpty
    step_id: NonEmpty
    attempt: Annotated[int, Field(ge=1)] = 1
    status: ResultStatus
    reason: str = ""
    finished_at: AwareDatetime
    output: dict[str, str] = Field(default_factory=dict)


class Silence(AvroModel):
    schema_name: ClassVar[str] = "Silence"

    silence_id: NonEmpty
    matchers: dict[str, str]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    author: NonEmpty
    reason: NonEmpty
    created_at: AwareDatetime
    expired_by: str | None = None

    def active_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


class PlanControl(AvroModel):
    # The decision record inside is binary Avro: as JSON (in the orchestrator's table) it is base64.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")
    schema_name: ClassVar[str] = "PlanControl"

    kind: Literal["start", "cancel", "tick"]
    incident_id: NonEmpty
    plan_id: NonEmpty
    trace_id: NonEmpty
    issued_at: AwareDatetime
    reason: str = ""
    policy_id: str | None = None
    policy_version: int | None = None
    steps: list[PlanStepSpec] = Field(default_factory=list)
    decision: bytes | None = None
    signal_score: float = 0.0
    origin: Literal["policy", "review", "escalation"] = "policy"
    first_seen: AwareDatetime | None = None


class Percentiles(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int
    p50: float
    p90: float
    p99: float
    max: float


class MetricsWindow(AvroModel):
    schema_name: ClassVar[str] = "MetricsWindow"

    window_start: AwareDatetime
    window_end: AwareDatetime
    worker: NonEmpty
    complete: bool = True
    anomalies_in: int = 0
    dead_letters: dict[str, int] = Field(default_factory=dict)
    incidents_opened: int = 0
    decisions: dict[str, int] = Field(default_factory=dict)
    decisions_by_policy: dict[str, int] = Field(default_factory=dict)
    review_requests: int = 0
    commands: dict[str, int] = Field(default_factory=dict)
    results: dict[str, int] = Field(default_factory=dict)
    verdicts: dict[str, int] = Field(default_factory=dict)
    review_wait_ms: Percentiles | None = None
    event_to_command_ms: Percentiles | None = None
    ingest_to_command_ms: Percentiles | None = None
    time_to_containment_ms: Percentiles | None = None
    plans_completed_automated: int = 0
    plans_completed_approved: int = 0
    mitigated_without_human: float | None = None
    signals_confirmed: int = 0
    signals_rejected: int = 0
    precision: float | None = None
    cost: float = 0.0
    incidents_touched: int = 0
    cost_per_incident: float | None = None
    cost_unit: str = ""


RECORD_MODELS: tuple[type[AvroModel], ...] = (
    PlanControl,
    ActionResult,
    Signal,
    Silence,
    AnomalyEvent,
    DeadLetter,
    AssetContext,
    PolicyVersion,
    DecisionRecord,
    ActionCommand,
    ReviewRequest,
    ReviewVerdict,
    MetricsWindow,
)
