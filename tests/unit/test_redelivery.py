"""SentLog: a signal delivered again after a crash gets the messages it got the first time."""

from __future__ import annotations

from datetime import timedelta

from mitigate.automation import AutomationSettings
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider
from mitigate.limits import ShardedBreaker
from mitigate.pipeline import DecisionStage, Outgoing
from mitigate.redelivery import SentLog
from tests.unit.builders import CONFIG_DIR
# The pipeline tests' fixtures (codec, pipeline, tables) build the first step and the shipped policy table.
from tests.unit.test_pipeline import TOPOLOGY, codec, event_message, pipeline, signal_message, tables  # noqa: F401

MESSAGES = (
    Outgoing("unit.plans", b"incident-1", b"\xc3\x01\x00\xff", (("trace-id", b"abc"),)),
    Outgoing("unit.decisions", None, b"\x00\x01", ()),
)


def test_sent_log_round_trip() -> None:
    log = SentLog({})
    log.put(3, "event-1", MESSAGES)

    assert log.get("event-1") == MESSAGES


def test_sent_log_unknown_event() -> None:
    assert SentLog({}).get("event-1") is None


def test_sent_log_drops_oldest() -> None:
    store: dict[str, bytes] = {}
    log = SentLog(store, capacity=2)
    for index in range(3):
        log.put(0, f"event-{index}", MESSAGES)

    assert log.get("event-0") is None
    assert log.get("event-1") == MESSAGES
    assert log.get("event-2") == MESSAGES
    assert len([key for key in store if key.startswith("event|")]) == 2


def test_sent_log_rings_per_partition() -> None:
    log = SentLog({}, capacity=1)
    log.put(0, "event-a", MESSAGES)
    log.put(1, "event-b", MESSAGES)

    assert log.get("event-a") == MESSAGES
    assert log.get("event-b") == MESSAGES


def test_redelivered_signal_same_messages(codec, pipeline, tables) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    automation = AutomationSettings.load(CONFIG_DIR / "automation.yaml")
    engine = IncidentEngine(
        settings=automation, decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=tables.policies, silences=list, incidents={}, fingerprints={}, budgets={}, runs={},
    )
    stage = DecisionStage(topology=TOPOLOGY, codec=codec, engine=engine, sent=SentLog({}))
    breaker = ShardedBreaker(automation.circuit_breaker, {}, "signals:1")
    (sent,) = pipeline.process(event_message(codec)).messages

    first = stage.process(signal_message(sent), breaker)
    again = stage.process(signal_message(sent), breaker)

    assert first.decision is not None
    assert first.decision.record.outcome == "auto"
    assert again.messages == first.messages
    assert again.decision is None


def test_without_log_decided_twice(codec, pipeline, tables) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    automation = AutomationSettings.load(CONFIG_DIR / "automation.yaml")
    engine = IncidentEngine(
        settings=automation, decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=tables.policies, silences=list, incidents={}, fingerprints={}, budgets={}, runs={},
    )
    stage = DecisionStage(topology=TOPOLOGY, codec=codec, engine=engine)
    breaker = ShardedBreaker(automation.circuit_breaker, {}, "signals:1")
    (sent,) = pipeline.process(event_message(codec)).messages

    stage.process(signal_message(sent), breaker)
    again = stage.process(signal_message(sent), breaker)

    assert again.decision is not None
    assert again.decision.record.reason_code == "duplicate"
