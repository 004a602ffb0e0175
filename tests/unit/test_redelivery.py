"""SentLog and Journal: a signal delivered again after a crash gets the messages it got the first time,
and the state ends as if it had been decided once."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from mitigate.automation import AutomationSettings
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider
from mitigate.limits import ShardedBreaker
from mitigate.pipeline import DecisionStage, Outgoing
from mitigate.redelivery import Journal, PrefixedStore, Sent, SentLog, engine_stores
from tests.unit.builders import CONFIG_DIR
# The pipeline tests' fixtures (codec, pipeline, tables) build the first step and the shipped policy table.
from tests.unit.test_pipeline import TOPOLOGY, codec, event_message, pipeline, signal_message, tables  # noqa: F401

MESSAGES = (
    Outgoing("unit.plans", b"incident-1", b"\xc3\x01\x00\xff", (("trace-id", b"abc"),)),
    Outgoing("unit.decisions", None, b"\x00\x01", ()),
)


def test_sent_log_round_trip() -> None:
    log = SentLog({})
    log.put(3, 17, "event-1", MESSAGES, (("incidents", "incident-1", b"{}"), ("runs", "cap", None)))

    assert log.get("event-1") == Sent(MESSAGES, (("incidents", "incident-1", b"{}"), ("runs", "cap", None)), "3@17")


def test_sent_log_unknown_event() -> None:
    assert SentLog({}).get("event-1") is None


def test_sent_log_drops_oldest() -> None:
    store: dict[str, bytes] = {}
    log = SentLog(store, capacity=2)
    for offset in range(3):
        log.put(0, offset, f"event-{offset}", MESSAGES)

    assert log.get("event-0") is None
    assert log.get("event-1") == Sent(MESSAGES, source="0@1")
    assert log.get("event-2") == Sent(MESSAGES, source="0@2")
    assert len([key for key in store if key.startswith("event|")]) == 2


class ReadRecorder(dict):  # type: ignore[type-arg]
    """A table that records the keys read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def __getitem__(self, key: str) -> bytes:
        self.read.append(key)
        value: bytes = super().__getitem__(key)
        return value

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.read.append(key)
        return super().get(key, default)


def test_sent_log_evicts_without_reading() -> None:
    table = ReadRecorder()
    log = SentLog(PrefixedStore(table, "sent:"), capacity=1)
    log.put(0, 0, "event-0", MESSAGES)
    log.put(0, 1, "event-1", MESSAGES)

    assert "sent:event|event-0" not in table
    assert "sent:event|event-0" not in table.read


def test_sent_log_same_offset_keeps_its_slot() -> None:
    store: dict[str, bytes] = {}
    log = SentLog(store, capacity=4)
    log.put(0, 6, "event-1", MESSAGES)
    before = dict(store)
    log.put(0, 6, "event-1", MESSAGES)

    assert store == before


def test_sent_log_rings_per_partition() -> None:
    log = SentLog({}, capacity=1)
    log.put(0, 5, "event-a", MESSAGES)
    log.put(1, 5, "event-b", MESSAGES)

    assert log.get("event-a") == Sent(MESSAGES, source="0@5")
    assert log.get("event-b") == Sent(MESSAGES, source="1@5")


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


def test_sent_log_reads_entries_without_writes() -> None:
    store: dict[str, bytes] = {}
    SentLog(store).put(0, 0, "event-1", MESSAGES)
    entry = orjson.loads(store["event|event-1"])
    store["event|event-1"] = orjson.dumps(entry["messages"])  # the format before writes were logged

    assert SentLog(store).get("event-1") == Sent(MESSAGES)


def test_journal_holds_writes_back_until_applied() -> None:
    backing: dict[str, bytes] = {"kept": b"1", "dropped": b"2"}
    journal = Journal()
    store = journal.store("state", backing)

    journal.begin()
    store["new"] = b"3"
    del store["dropped"]
    seen = (store.get("new"), store.get("dropped"), store.get("kept"))
    defaults = (store.get("dropped", b"default"), store.get("absent", b"default"))
    writes = journal.end()

    assert seen == (b"3", None, b"1")
    assert defaults == (b"default", b"default")
    assert backing == {"kept": b"1", "dropped": b"2"}
    assert writes == (("state", "new", b"3"), ("state", "dropped", None))
    journal.apply(writes)
    assert backing == {"kept": b"1", "new": b"3"}


def test_prefixed_stores_share_one_table() -> None:
    table: dict[str, bytes] = {}
    incidents, runs = PrefixedStore(table, "incident:"), PrefixedStore(table, "run:")
    incidents["a"] = b"1"
    runs["a"] = b"2"

    assert table == {"incident:a": b"1", "run:a": b"2"}
    assert list(incidents) == ["a"]
    assert len(runs) == 1
    assert (runs.get("a"), runs.get("b"), runs.get("b", b"0")) == (b"2", None, b"0")


def _journaled_stage(codec, tables, table: dict[str, bytes]):  # type: ignore[no-untyped-def]  # noqa: F811
    automation = AutomationSettings.load(CONFIG_DIR / "automation.yaml")
    journal = Journal()
    engine = IncidentEngine(
        settings=automation, decider=Decider(default_review_timeout=timedelta(minutes=30)),
        policies=tables.policies, silences=list,
        **engine_stores(journal, table),
    )
    stage = DecisionStage(topology=TOPOLOGY, codec=codec, engine=engine,
                          sent=SentLog(PrefixedStore(table, "sent:")), journal=journal)
    return stage, ShardedBreaker(automation.circuit_breaker, {}, "signals:1")


class CrashAfter(dict):  # type: ignore[type-arg]
    """A table that stops taking writes after `limit` of them, as a killed worker would."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.writes = 0

    def __setitem__(self, key: str, value: bytes) -> None:
        if self.writes >= self.limit:
            raise SystemExit("killed")
        self.writes += 1
        super().__setitem__(key, value)


def test_crash_at_any_write_decides_once(codec, pipeline, tables) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    (signal,) = pipeline.process(event_message(codec)).messages
    whole = CrashAfter(1_000)
    stage, breaker = _journaled_stage(codec, tables, whole)
    once = stage.process(signal_message(signal), breaker)
    assert once.decision is not None and once.decision.record.outcome == "auto"

    for kept in range(whole.writes):
        table = CrashAfter(kept)
        crashed, breaker = _journaled_stage(codec, tables, table)
        with pytest.raises(SystemExit):
            crashed.process(signal_message(signal), breaker)
        table.limit = 1_000
        restarted, breaker = _journaled_stage(codec, tables, table)
        again = restarted.process(signal_message(signal), breaker)

        assert again.messages == once.messages, f"crash after {kept} writes"
        assert table == whole, f"crash after {kept} writes"


def test_copy_at_another_offset_leaves_later_state(codec, pipeline, tables) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    (first,) = pipeline.process(event_message(codec, event_id="event-first")).messages
    (repeat,) = pipeline.process(event_message(codec, event_id="event-repeat")).messages
    table: dict[str, bytes] = {}
    stage, breaker = _journaled_stage(codec, tables, table)
    decided = stage.process(signal_message(first, offset=40), breaker)
    stage.process(signal_message(repeat, offset=41), breaker)
    after_repeat = dict(table)

    copy = stage.process(signal_message(first, offset=42), breaker)

    assert copy.messages == decided.messages
    assert table == after_repeat
