"""Unit tests for mitigate.correlation: incidents, repeats, flapping, silences and resolution over dict stores.

The engine runs on the signals' event times, so each test sets the clock by
choosing event times, in minutes after builders.NOW.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from mitigate.automation import AutomationSettings
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider, Decision
from mitigate.enrichment import enrich
from mitigate.intake import Accepted, SourceMessage
from mitigate.limits import ShardedBreaker
from mitigate.models import Signal, Silence
from mitigate.policy import ActivePolicy, PolicyIndex
from tests.unit.builders import NOW, active_policy, anomaly_event, asset_context, silence_record

# active_policy() covers spikes in industrial/* of medium severity or more. An auto
# decision starts with rollback-config and open-ticket, and verify waits for rollback-config.
COOLING = active_policy()
SETTINGS = AutomationSettings.model_validate({
    "correlation": {
        "group_window": "10m",
        "repeat_interval": "1h",
        "flapping": {"transitions": 3, "window": "1h"},
    },
    "budgets": {"window": "10m", "max_commands": 10},
})
OTHER_FINGERPRINT = {"fingerprint": "machine-temperature-02:spike", "entity": "machine-temperature-02"}


def signal(minute: float, **changes: Any) -> Signal:
    """A Signal whose event time is `minute` minutes after NOW, with an event id unique to its fields."""
    fields = {"event_time": NOW + timedelta(minutes=minute), **changes}
    fields.setdefault(
        "event_id",
        f"{fields.get('fingerprint', 'machine-temperature-01:spike')}/{fields.get('status', 'firing')}/{minute}",
    )
    event = anomaly_event(**fields)
    message = SourceMessage("unit.anomalies", 0, 1, NOW, event.entity.encode(), b"\xc3\x01", ())
    return enrich(message, Accepted(event, "fingerprint:2a11a66bf2fb32de"), asset_context(), ingest_time=NOW,
                  pipeline_version="0.1.0-unit")


class Harness:
    """An IncidentEngine over fresh dict stores, with a circuit breaker over a dict."""

    def __init__(
        self,
        settings: AutomationSettings = SETTINGS,
        policies: list[ActivePolicy] | None = None,
        silences: list[Silence] | None = None,
    ) -> None:
        self.incidents: dict[str, bytes] = {}
        self.fingerprints: dict[str, bytes] = {}
        self.budgets: dict[str, bytes] = {}
        self.runs: dict[str, bytes] = {}
        self.silences = silences or []
        index = PolicyIndex(policies if policies is not None else [COOLING])
        self.engine = IncidentEngine(
            settings=settings,
            decider=Decider(default_review_timeout=timedelta(minutes=30)),
            policies=lambda: index,
            silences=lambda: self.silences,
            incidents=self.incidents,
            fingerprints=self.fingerprints,
            budgets=self.budgets,
            runs=self.runs,
        )
        self.breaker = ShardedBreaker(settings.circuit_breaker, {}, "signals:0")

    def send(self, minute: float, **changes: Any) -> Decision:
        return self.engine.process(signal(minute, **changes), self.breaker)

    def replay(self, signals: list[Signal]) -> list[Decision]:
        return [self.engine.process(item, self.breaker) for item in signals]




# A first signal


def test_first_signal_decided() -> None:
    decision = Harness().send(0)

    assert decision.record.outcome == "auto"
    assert decision.record.reason_code == "policy-matched"


def test_first_signal_opens_incident() -> None:
    record = Harness().send(0).record

    assert record.incident_id is not None
    assert record.incident_signals == 1


def test_first_signal_sends_commands() -> None:
    decision = Harness().send(0)

    assert [command.step_id for command in decision.commands] == ["rollback-config", "open-ticket"]


def test_commands_name_incident() -> None:
    decision = Harness().send(0)

    assert {command.incident_id for command in decision.commands} == {decision.record.incident_id}


@pytest.mark.parametrize(
    ("group_labels", "labels", "key"),
    [
        ([], {"metric": "machine_temperature"}, "industrial/cooling|spike||"),
        (["metric"], {"metric": "machine_temperature"}, "industrial/cooling|spike||metric=machine_temperature"),
        (["site", "metric"], {"metric": "machine_temperature"},
         "industrial/cooling|spike||site=,metric=machine_temperature"),
    ],
    ids=["no-labels", "one-label", "missing-label"],
)
def test_group_key_format(group_labels: list[str], labels: dict[str, str], key: str) -> None:
    settings = AutomationSettings.model_validate({"correlation": {"group_labels": group_labels}})

    assert Harness(settings).engine.group_key(signal(0, labels=labels)) == key


def test_group_label_splits_incidents() -> None:
    settings = AutomationSettings.model_validate({"correlation": {"group_labels": ["metric"]}})
    harness = Harness(settings, policies=[active_policy(match={"subsystems": ["industrial/*"]})])

    first = harness.send(0, labels={"metric": "machine_temperature"})
    second = harness.send(1, labels={"metric": "coolant_flow"}, **OTHER_FINGERPRINT)

    assert second.record.incident_id != first.record.incident_id


# Repeats and related signals on an open incident


def test_repeat_suppressed_as_duplicate() -> None:
    harness = Harness()
    first = harness.send(0)
    repeat = harness.send(1)

    assert repeat.record.outcome == "suppress"
    assert repeat.record.reason_code == "duplicate"
    assert repeat.record.incident_id == first.record.incident_id


def test_repeat_sends_nothing() -> None:
    harness = Harness()
    harness.send(0)

    assert harness.send(1).commands == ()


def test_repeat_reason_text() -> None:
    harness = Harness()
    incident_id = harness.send(0).record.incident_id

    assert harness.send(1).record.reason == (
        f"counted on incident {incident_id} (2 signals), which was decided already"
    )


def test_repeat_counts_signals() -> None:
    harness = Harness()
    for minute in range(4):
        record = harness.send(minute).record

    assert record.incident_signals == 4


def test_other_fingerprint_correlated() -> None:
    harness = Harness()
    first = harness.send(0)
    related = harness.send(1, **OTHER_FINGERPRINT)

    assert related.record.outcome == "suppress"
    assert related.record.reason_code == "correlated"
    assert related.record.incident_id == first.record.incident_id


def test_other_type_own_incident() -> None:
    harness = Harness(policies=[active_policy(match={"anomaly_types": ["spike", "dip"]})])
    first = harness.send(0)
    other = harness.send(1, anomaly_type="dip", fingerprint="machine-temperature-01:dip")

    assert other.record.incident_id != first.record.incident_id
    assert other.record.outcome == "auto"


def test_other_subsystem_own_incident() -> None:
    harness = Harness()
    first = harness.send(0)
    other = harness.send(1, subsystem="industrial/pumps", fingerprint="pump-01:spike")

    assert other.record.incident_id != first.record.incident_id


# (case, severities in order, outcome of the last signal)
SEVERITY_CASES = [
    ("rises", ["medium", "high"], "auto"),
    ("rises-twice", ["medium", "high", "critical"], "review"),
    ("same", ["high", "high"], "suppress"),
    ("falls", ["high", "medium"], "suppress"),
    ("falls-then-back", ["high", "medium", "high"], "suppress"),
]


@pytest.mark.parametrize(
    ("severities", "outcome"), [case[1:] for case in SEVERITY_CASES], ids=[case[0] for case in SEVERITY_CASES]
)
def test_severity_change_outcome(severities: list[str], outcome: str) -> None:
    harness = Harness()
    for minute, severity in enumerate(severities):
        decision = harness.send(minute, severity=severity)

    assert decision.record.outcome == outcome


def test_higher_severity_sends_again() -> None:
    harness = Harness()
    harness.send(0, severity="medium")
    decision = harness.send(1, severity="high")

    assert [command.step_id for command in decision.commands] == ["rollback-config", "open-ticket"]


def test_higher_severity_same_incident() -> None:
    harness = Harness()
    first = harness.send(0, severity="medium")

    assert harness.send(1, severity="high").record.incident_id == first.record.incident_id


def test_higher_severity_other_fingerprint() -> None:
    harness = Harness()
    harness.send(0, severity="medium")
    decision = harness.send(1, severity="high", **OTHER_FINGERPRINT)

    assert decision.record.outcome == "auto"


# (case, minutes between the first decision and the repeat, outcome of the repeat)
REPEAT_CASES = [
    ("before-interval", 14, "suppress"),
    ("at-interval", 15, "auto"),
    ("after-interval", 16, "auto"),
]


@pytest.mark.parametrize(
    ("repeat_minute", "outcome"), [case[1:] for case in REPEAT_CASES], ids=[case[0] for case in REPEAT_CASES]
)
def test_repeat_interval_outcome(repeat_minute: int, outcome: str) -> None:
    settings = AutomationSettings.model_validate({"correlation": {"group_window": "10m", "repeat_interval": "15m"}})
    harness = Harness(settings)
    harness.send(0)
    harness.send(7)  # keeps the incident open: the group window is 10 minutes

    assert harness.send(repeat_minute).record.outcome == outcome


def test_repeat_interval_restarts() -> None:
    settings = AutomationSettings.model_validate({"correlation": {"group_window": "10m", "repeat_interval": "15m"}})
    harness = Harness(settings)
    outcomes = [harness.send(minute).record.outcome for minute in (0, 7, 15, 22, 29, 30)]

    assert outcomes == ["auto", "suppress", "auto", "suppress", "suppress", "auto"]


# (case, quiet time after the last signal, whether a new signal of the group joins the incident)
GROUP_WINDOW_CASES = [
    ("within-window", timedelta(minutes=9), True),
    ("at-window", timedelta(minutes=10), True),
    ("after-window", timedelta(minutes=10, seconds=1), False),
]


@pytest.mark.parametrize(
    ("quiet", "joins"), [case[1:] for case in GROUP_WINDOW_CASES], ids=[case[0] for case in GROUP_WINDOW_CASES]
)
def test_group_window_joins(quiet: timedelta, joins: bool) -> None:
    harness = Harness()
    first = harness.send(0)
    later = harness.send(quiet.total_seconds() / 60, **OTHER_FINGERPRINT)

    assert (later.record.incident_id == first.record.incident_id) is joins


def test_after_window_decided_again() -> None:
    harness = Harness()
    harness.send(0)
    later = harness.send(11, **OTHER_FINGERPRINT)

    assert later.record.outcome == "auto"
    assert later.record.incident_signals == 1


def test_window_counts_from_last_signal() -> None:
    harness = Harness()
    first = harness.send(0)
    for minute in (8, 16, 24):
        later = harness.send(minute, fingerprint=f"machine-{minute}:spike", entity=f"machine-{minute}")

    assert later.record.incident_id == first.record.incident_id


def test_firing_repeat_keeps_incident() -> None:
    # A signal that never resolved stays on its incident however long it fires.
    harness = Harness()
    first = harness.send(0)
    repeat = harness.send(30)

    assert repeat.record.incident_id == first.record.incident_id
    assert repeat.record.reason_code == "duplicate"


# Flapping: transitions 3 within 1h in SETTINGS


def flapping_run(harness: Harness) -> list[Decision]:
    """A steady signal keeps the incident open while a second signal of it starts firing four times."""
    decisions = [harness.send(0)]
    for start in range(4):
        decisions.append(harness.send(1 + 2 * start, **OTHER_FINGERPRINT))
        decisions.append(harness.send(2 + 2 * start, status="resolved", **OTHER_FINGERPRINT))
    return decisions


def test_flapping_reason_codes() -> None:
    codes = [decision.record.reason_code for decision in flapping_run(Harness())]

    assert codes == [
        "policy-matched",
        "correlated", "signal-resolved",
        "correlated", "signal-resolved",
        "flapping", "signal-resolved",
        "flapping", "signal-resolved",
    ]


def test_flapping_reviewed_once() -> None:
    outcomes = Counter(decision.record.outcome for decision in flapping_run(Harness()))

    assert outcomes["review"] == 1


def test_flapping_review_request() -> None:
    review = flapping_run(Harness())[5].review

    assert review is not None
    assert review.reason_code == "flapping"
    assert [step.step_id for step in review.recommended_plan] == ["rollback-config", "open-ticket", "verify"]


def test_flapping_review_reason() -> None:
    record = flapping_run(Harness())[5].record

    assert record.reason == (
        "signal started firing 3 times within 1h (limit 3); a human decides instead of repeated actions"
    )


def test_flapping_then_suppressed() -> None:
    decision = flapping_run(Harness())[7]

    assert decision.record.outcome == "suppress"
    assert decision.review is None


def test_flapping_single_fingerprint() -> None:
    # Each resolution closes the incident, so every start opens a new one. The
    # flapping state must survive that.
    harness = Harness()
    outcomes = []
    for start in range(5):
        outcomes.append(harness.send(2 * start).record.reason_code)
        harness.send(2 * start + 1, status="resolved")

    assert outcomes == ["policy-matched", "policy-matched", "flapping", "flapping", "flapping"]
    assert Counter(outcomes)["flapping"] == 3


def test_flapping_single_fingerprint_reviews() -> None:
    harness = Harness()
    reviews = 0
    for start in range(5):
        reviews += harness.send(2 * start).review is not None
        harness.send(2 * start + 1, status="resolved")

    assert reviews == 1


def test_flapping_clears_when_steady() -> None:
    harness = Harness()
    for start in (0, 2, 4):
        harness.send(start)
        harness.send(start + 1, status="resolved")
    harness.send(6)
    for minute in range(10, 125, 5):
        decision = harness.send(minute)

    assert decision.record.reason_code != "flapping"


def test_starts_outside_window_ignored() -> None:
    harness = Harness()
    for start in (0, 40, 80, 120):
        decision = harness.send(start)
        harness.send(start + 1, status="resolved")

    assert decision.record.reason_code == "policy-matched"


def test_repeats_are_not_starts() -> None:
    harness = Harness()
    codes = [harness.send(minute).record.reason_code for minute in range(6)]

    assert "flapping" not in codes


# Resolution


def test_resolved_closes_incident() -> None:
    harness = Harness()
    harness.send(0)
    decision = harness.send(1, status="resolved")

    assert decision.record.outcome == "suppress"
    assert decision.record.reason_code == "incident-resolved"


def test_resolved_sends_plan_cancel() -> None:
    harness = Harness()
    first = harness.send(0).record
    decision = harness.send(1, status="resolved")

    assert decision.plan is not None
    assert decision.plan.kind == "cancel"
    assert decision.plan.plan_id == first.decision_id
    assert decision.plan.incident_id == first.incident_id


def test_plan_cancel_fields() -> None:
    harness = Harness()
    harness.send(0)
    resolved = signal(1, status="resolved")
    decision = harness.engine.process(resolved, harness.breaker)

    assert decision.plan is not None
    assert decision.plan.reason == f"incident resolved by signal {resolved.event.event_id}"
    assert decision.plan.trace_id == resolved.trace_id
    assert decision.plan.issued_at == resolved.event.event_time
    assert decision.plan.steps == []


def test_resolved_leaves_steps_to_orchestrator() -> None:
    # Only the orchestrator tracks which steps started, so the record names none.
    harness = Harness()
    harness.send(0)

    assert harness.send(1, status="resolved").record.cancelled_steps == []


def test_resolved_reason_text() -> None:
    harness = Harness()
    first = harness.send(0).record

    assert harness.send(1, status="resolved").record.reason == (
        f"incident {first.incident_id} resolved: no signal of it fires any more; "
        f"plan {first.decision_id} is cancelled: its steps not yet started will not run"
    )


def test_resolved_closes_pending_review() -> None:
    harness = Harness()
    review = harness.send(0, confidence=0.6).review
    assert review is not None

    assert harness.send(1, status="resolved").record.reason == (
        f"incident {review.incident_id} resolved: no signal of it fires any more; "
        f"review {review.review_id} closes without action if it is still pending"
    )


def test_resolved_review_sends_cancel_to_close_it() -> None:
    # An approved review may run a plan the decide stage does not know of, so the
    # orchestrate agent gets the cancel and closes or stops whatever is open.
    harness = Harness()
    review = harness.send(0, confidence=0.6).review
    assert review is not None
    decision = harness.send(1, status="resolved")

    assert decision.record.cancelled_steps == []
    assert decision.plan is not None
    assert (decision.plan.kind, decision.plan.incident_id) == ("cancel", review.incident_id)


def test_resolved_while_other_fires() -> None:
    harness = Harness()
    harness.send(0)
    harness.send(1, **OTHER_FINGERPRINT)
    decision = harness.send(2, status="resolved")

    assert decision.record.reason_code == "signal-resolved"
    assert decision.record.cancelled_steps == []
    assert decision.plan is None


def test_resolved_while_other_fires_text() -> None:
    harness = Harness()
    harness.send(0)
    harness.send(1, **OTHER_FINGERPRINT)

    assert harness.send(2, status="resolved").record.reason == (
        "signal resolved; still firing on the incident: 1 other signal"
    )


def test_last_resolution_closes_incident() -> None:
    harness = Harness()
    harness.send(0)
    harness.send(1, **OTHER_FINGERPRINT)
    harness.send(2, status="resolved")
    decision = harness.send(3, status="resolved", **OTHER_FINGERPRINT)

    assert decision.record.reason_code == "incident-resolved"
    assert decision.plan is not None
    assert decision.plan.kind == "cancel"


def test_resolved_without_incident() -> None:
    decision = Harness().send(0, status="resolved")

    assert decision.record.reason_code == "signal-resolved"
    assert decision.record.reason == (
        "the detector reports the signal as resolved; no open incident has it firing"
    )


def test_firing_after_resolution_new_incident() -> None:
    harness = Harness()
    first = harness.send(0)
    harness.send(1, status="resolved")
    again = harness.send(2)

    assert again.record.incident_id != first.record.incident_id
    assert again.record.outcome == "auto"


def test_resolution_counts_own_signal() -> None:
    harness = Harness()
    harness.send(0)

    assert harness.send(1, status="resolved").record.incident_signals == 2


# Silences


def test_silence_suppresses() -> None:
    decision = Harness(silences=[silence_record()]).send(0)

    assert decision.record.outcome == "suppress"
    assert decision.record.reason_code == "silenced"
    assert decision.commands == ()


def test_silence_id_recorded() -> None:
    record = Harness(silences=[silence_record()]).send(0).record

    assert record.silence_id == "silence-1"


def test_silence_reason_text() -> None:
    silence = silence_record()
    record = Harness(silences=[silence]).send(0).record

    assert record.reason == f"silenced by operator until {silence.ends_at.isoformat()}: pump maintenance"


@pytest.mark.parametrize(
    "silence",
    [
        silence_record(matchers={"subsystem": "network/*"}),
        silence_record(ends_at=NOW),
        silence_record(starts_at=NOW + timedelta(minutes=1)),
        silence_record(matchers={"labels.site": "*"}),
    ],
    ids=["other-subsystem", "ended", "not-started", "label-missing"],
)
def test_silence_not_applied(silence: Silence) -> None:
    assert Harness(silences=[silence]).send(0).record.outcome == "auto"


def test_silence_latest_end_named() -> None:
    silences = [
        silence_record(silence_id="short", ends_at=NOW + timedelta(minutes=30)),
        silence_record(silence_id="long", ends_at=NOW + timedelta(hours=3)),
        silence_record(silence_id="middle", ends_at=NOW + timedelta(hours=2)),
    ]

    assert Harness(silences=silences).send(0).record.silence_id == "long"


def test_silence_ended_decides_again() -> None:
    harness = Harness(silences=[silence_record(ends_at=NOW + timedelta(minutes=5))])
    harness.send(0)
    harness.send(1, status="resolved")

    assert harness.send(20).record.outcome == "auto"


def test_silence_end_decides_open_incident() -> None:
    harness = Harness(silences=[silence_record(ends_at=NOW + timedelta(minutes=10))])
    for minute in (0, 4, 8):
        harness.send(minute)

    assert harness.send(12).record.outcome == "auto"


# Limits through the engine


def test_budget_sends_review() -> None:
    settings = AutomationSettings.model_validate({"budgets": {"window": "10m", "max_commands": 3}})
    harness = Harness(settings, policies=[active_policy(match={"anomaly_types": ["spike", "dip"]})])
    harness.send(0)
    decision = harness.send(1, anomaly_type="dip", fingerprint="machine-temperature-01:dip")

    assert decision.record.outcome == "review"
    assert decision.record.reason_code == "limit-reached"
    assert decision.record.reason == (
        "automation limits reached: subsystem-budget 3 + 3 commands in 10m (needs <= 3)"
    )


def test_run_cap_blocks_repeat() -> None:
    settings = AutomationSettings.model_validate({"correlation": {"group_window": "1h", "repeat_interval": "10m"}})
    policy = active_policy(limits={"per_fingerprint": [{"runs": 1, "window": "1h"}]})
    harness = Harness(settings, policies=[policy])
    harness.send(0)
    decision = harness.send(10)

    assert decision.record.reason_code == "limit-reached"
    assert decision.commands == ()


# An alert storm

STORM_TYPES = [f"type-{index}" for index in range(8)]
STORM_SIZE = 10_000
STORM_POLICY = active_policy(id="industrial-any", match={"subsystems": ["industrial/*"]})


def storm_signals(count: int = STORM_SIZE) -> list[Signal]:
    """`count` signals of one subsystem within 200 s: 8 anomaly types, 1,000 fingerprints, severity rising halfway."""
    signals = []
    for index in range(count):
        anomaly_type = STORM_TYPES[index % len(STORM_TYPES)]
        entity = f"machine-{(index // len(STORM_TYPES)) % 125:03d}"
        signals.append(signal(
            index * 0.02 / 60,
            event_id=f"storm-{index}",
            entity=entity,
            anomaly_type=anomaly_type,
            fingerprint=f"{entity}:{anomaly_type}",
            severity="medium" if index < count // 2 else "high",
        ))
    return signals


@pytest.fixture(scope="module")
def storm() -> list[Decision]:
    return Harness(policies=[STORM_POLICY]).replay(storm_signals())


def test_storm_incidents_bounded(storm: list[Decision]) -> None:
    assert len({decision.record.incident_id for decision in storm}) == len(STORM_TYPES)


def test_storm_commands_within_budget(storm: list[Decision]) -> None:
    sent = sum(len(decision.commands) for decision in storm)

    assert sent <= SETTINGS.budgets.limit_for("industrial/cooling")


def test_storm_budget_used(storm: list[Decision]) -> None:
    assert sum(len(decision.commands) for decision in storm) > 0


def test_storm_decisions_bounded(storm: list[Decision]) -> None:
    # One decision when an incident opens and one when its severity rises.
    decided = [decision for decision in storm if decision.record.outcome != "suppress"]

    assert len(decided) <= 2 * len(STORM_TYPES)


def test_storm_rest_suppressed(storm: list[Decision]) -> None:
    codes = Counter(decision.record.reason_code for decision in storm)

    assert codes["duplicate"] + codes["correlated"] >= STORM_SIZE - 2 * len(STORM_TYPES)


def test_storm_one_record_each(storm: list[Decision]) -> None:
    assert len({decision.record.decision_id for decision in storm}) == STORM_SIZE


# Replay


def test_replay_same_incident_ids() -> None:
    signals = storm_signals(400) + [signal(1, status="resolved", fingerprint="machine-000:type-0")]
    first = Harness(policies=[STORM_POLICY]).replay(signals)
    again = Harness(policies=[STORM_POLICY]).replay(signals)

    assert [decision.record.incident_id for decision in again] == [decision.record.incident_id for decision in first]


def test_replay_same_records() -> None:
    signals = [signal(0), signal(1, **OTHER_FINGERPRINT), signal(2, severity="critical"), signal(3, status="resolved")]
    first = Harness().replay(signals)
    again = Harness().replay(signals)

    assert [decision.record for decision in again] == [decision.record for decision in first]


def test_replay_same_stores() -> None:
    signals = storm_signals(400)
    first = Harness(policies=[STORM_POLICY])
    first.replay(signals)
    again = Harness(policies=[STORM_POLICY])
    again.replay(signals)

    assert again.incidents == first.incidents
    assert again.fingerprints == first.fingerprints
    assert again.budgets == first.budgets
