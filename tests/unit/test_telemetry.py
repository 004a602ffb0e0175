"""Unit tests for mitigate.telemetry: windows, percentiles and the Prometheus registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from mitigate.automation import Costs, MetricsSettings
from mitigate.models import ActionCommand, DecisionRecord, PlanControl
from mitigate.telemetry import Telemetry, percentiles
from tests.unit.builders import NOW
from tests.unit.test_review import CODEC, request

SETTINGS = MetricsSettings(window=60.0, costs=Costs(unit="minutes", review=10.0, executors={"ticket": 2.0}))
START = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)  # a window boundary


def telemetry() -> Telemetry:
    return Telemetry(SETTINGS, worker="unit:1")


def command(executor: str = "ticket", incident: str = "incident-1") -> ActionCommand:
    return ActionCommand(command_id="c", idempotency_key="k", decision_id="d", event_id="e", incident_id=incident,
                         trace_id="t", issued_at=NOW, deadline=NOW, executor=executor, action="open-ticket",
                         target="x", step_id="s", policy_id="p", policy_version=1)


def test_percentiles_nearest_rank() -> None:
    result = percentiles([float(value) for value in range(1, 101)])

    assert result is not None
    assert (result.count, result.p50, result.p90, result.p99, result.max) == (100, 50.0, 90.0, 99.0, 100.0)


def test_percentiles_empty() -> None:
    assert percentiles([]) is None


def test_ended_window_published_once() -> None:
    counter = telemetry()
    counter.anomaly_in()
    now = datetime.now(UTC)
    later = now + timedelta(seconds=120)

    (window,) = counter.ended_windows(later)

    assert window.anomalies_in == 1
    assert window.complete is True
    assert counter.ended_windows(later) == []


def test_current_window_waits() -> None:
    counter = telemetry()
    counter.anomaly_in()

    assert counter.ended_windows(datetime.now(UTC) - timedelta(seconds=1)) == []


def test_flush_marks_current_incomplete() -> None:
    counter = telemetry()
    counter.dead_letter("undecodable")

    (window,) = counter.flush(datetime.now(UTC))

    assert window.complete is False
    assert window.dead_letters == {"undecodable": 1}


def test_cost_per_incident() -> None:
    counter = telemetry()
    counter.command(command("ticket", "incident-1"))
    counter.command(command("ticket", "incident-2"))
    counter.review_request(request())  # incident-1

    (window,) = counter.flush(datetime.now(UTC))

    assert (window.cost, window.incidents_touched, window.cost_per_incident) == (14.0, 2, 7.0)


def test_unpriced_executor_costs_nothing() -> None:
    counter = telemetry()
    counter.command(command("demo-target"))

    assert counter.flush(datetime.now(UTC))[0].cost == 0.0


def test_latency_observed() -> None:
    counter = telemetry()
    control = PlanControl(kind="start", incident_id="i", plan_id="p", trace_id="t", issued_at=START)
    counter.plan_started(control, START - timedelta(seconds=2), START - timedelta(milliseconds=250), START)

    (window,) = counter.flush(START + timedelta(seconds=1))

    assert window.event_to_command_ms is not None and window.event_to_command_ms.p50 == 2000.0
    assert window.ingest_to_command_ms is not None and window.ingest_to_command_ms.max == 250.0


@pytest.mark.parametrize(("origin", "changed", "automated", "approved", "confirmed", "rejected"), [
    ("policy", True, 1, 0, 1, 0),
    ("policy", False, 1, 0, 0, 1),
    ("review", True, 0, 1, 0, 0),  # the verdict judged this signal already
])
def test_plan_completed(origin: str, changed: bool, automated: int, approved: int, confirmed: int,
                        rejected: int) -> None:
    counter = telemetry()
    counter.plan_completed(origin, changed)

    (window,) = counter.flush(datetime.now(UTC))

    assert (window.plans_completed_automated, window.plans_completed_approved) == (automated, approved)
    assert (window.signals_confirmed, window.signals_rejected) == (confirmed, rejected)


def test_veto_rejects_signal_and_times_wait() -> None:
    counter = telemetry()
    now = datetime.now(UTC)
    vetoed = request().model_copy(update={"status": "vetoed", "created_at": now - timedelta(minutes=5)})
    counter.verdict("veto", True, "incident-1", vetoed, now)

    (window,) = counter.flush(datetime.now(UTC))

    assert window.verdicts == {"veto-applied": 1}
    assert (window.signals_rejected, window.precision) == (1, 0.0)
    assert window.review_wait_ms is not None and window.review_wait_ms.p50 == 300_000.0


def test_rejected_verdict_judges_nothing() -> None:
    counter = telemetry()
    counter.verdict("approve", False, "incident-1", None, datetime.now(UTC))

    (window,) = counter.flush(datetime.now(UTC))

    assert window.verdicts == {"approve-rejected": 1}
    assert window.precision is None


def test_pending_reviews_gauge() -> None:
    counter = telemetry()
    counter.reviews_pending_change(opened=3, ended=1)

    assert "mitigate_pending_reviews 2.0" in generate_latest(counter.registry).decode()


def test_registry_has_no_created_series() -> None:
    counter = telemetry()
    counter.anomaly_in()

    assert "_created" not in generate_latest(counter.registry).decode()


def test_summary_recent_decisions() -> None:
    counter = telemetry()
    review = request()
    assert review.decision is not None
    record = DecisionRecord.model_validate(CODEC.decode(review.decision, "DecisionRecord").record)
    counter.decision(record, opened_incident=True)

    summary = counter.summary()

    assert summary["decisions"] == {"review": 1}
    assert summary["incidents_opened"] == 1
    assert summary["recent_decisions"][0]["reason_code"] == "gate-failed"
