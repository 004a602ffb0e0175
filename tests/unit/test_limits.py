"""Unit tests for mitigate.limits: subsystem budgets, run caps and the sharded circuit breaker over dicts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from mitigate.automation import Budgets, CircuitBreaker
from mitigate.limits import Budget, RunCaps, ShardedBreaker
from mitigate.models import GateResult
from tests.unit.builders import NOW, active_policy

BUDGETS = Budgets(window=600, max_commands=10, subsystems={"industrial/*": 12})
BREAKER = CircuitBreaker(window=300, max_commands=10, max_failure_rate=0.5, min_results=4, cool_down=900)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


# Budget per subsystem: at most 10 commands (12 for industrial/*) within 10 minutes


@pytest.mark.parametrize(
    ("subsystem", "limit"),
    [("network/edge", 10), ("industrial/cooling", 12), ("industrial", 10)],
    ids=["default", "pattern", "pattern-needs-slash"],
)
def test_budget_limit_for(subsystem: str, limit: int) -> None:
    assert BUDGETS.limit_for(subsystem) == limit


def test_budget_first_pattern_applies() -> None:
    budgets = Budgets(subsystems={"industrial/*": 12, "industrial/cooling": 3})

    assert budgets.limit_for("industrial/cooling") == 12


# (case, commands spent before, commands requested, gate passes)
BUDGET_CASES = [
    ("empty", 0, 3, True),
    ("fits-exactly", 7, 3, True),
    ("one-over", 8, 3, False),
    ("spent-fully", 10, 1, False),
    ("nothing-requested", 10, 0, True),
]


@pytest.mark.parametrize(
    ("spent", "requested", "passed"), [case[1:] for case in BUDGET_CASES], ids=[case[0] for case in BUDGET_CASES]
)
def test_budget_gate_passes(spent: int, requested: int, passed: bool) -> None:
    budget = Budget(BUDGETS, {})
    budget.spend("network/edge", spent, at(0))

    assert budget.gate("network/edge", requested, at(1)).passed is passed


def test_budget_gate_text() -> None:
    budget = Budget(BUDGETS, {})
    budget.spend("network/edge", 3, at(0))

    assert budget.gate("network/edge", 2, at(1)) == GateResult(
        name="subsystem-budget", passed=True, value="3 + 2 commands in 10m", threshold="<= 10"
    )


def test_budget_gate_pattern_threshold() -> None:
    assert Budget(BUDGETS, {}).gate("industrial/cooling", 2, at(0)).threshold == "<= 12"


def test_budget_spends_add_up() -> None:
    budget = Budget(BUDGETS, {})
    for minute in range(4):
        budget.spend("network/edge", 2, at(minute))

    assert budget.gate("network/edge", 0, at(4)).value == "8 + 0 commands in 10m"


def test_budget_gate_spends_nothing() -> None:
    budget = Budget(BUDGETS, {})
    budget.gate("network/edge", 5, at(0))

    assert budget.gate("network/edge", 0, at(1)).value == "0 + 0 commands in 10m"


# (case, minutes after the spend, commands still counted)
SLIDE_CASES = [
    ("inside-window", 9, 10),
    ("last-second", 9 + 59 / 60, 10),
    ("window-ends", 10, 0),
    ("after-window", 11, 0),
]


@pytest.mark.parametrize(
    ("minute", "counted"), [case[1:] for case in SLIDE_CASES], ids=[case[0] for case in SLIDE_CASES]
)
def test_budget_window_slides(minute: float, counted: int) -> None:
    budget = Budget(BUDGETS, {})
    budget.spend("network/edge", 10, at(0))

    assert budget.gate("network/edge", 0, at(minute)).value == f"{counted} + 0 commands in 10m"


def test_budget_partly_slid() -> None:
    budget = Budget(BUDGETS, {})
    budget.spend("network/edge", 6, at(0))
    budget.spend("network/edge", 4, at(5))

    assert budget.gate("network/edge", 6, at(11)).passed
    assert not budget.gate("network/edge", 7, at(11)).passed


def test_budget_per_subsystem() -> None:
    budget = Budget(BUDGETS, {})
    budget.spend("network/edge", 10, at(0))

    assert budget.gate("network/core", 10, at(1)).passed


def test_budget_spend_prunes_store() -> None:
    store: dict[str, bytes] = {}
    budget = Budget(BUDGETS, store)
    budget.spend("network/edge", 4, at(0))
    budget.spend("network/edge", 1, at(30))

    # Entries are [epoch milliseconds, commands]. The spend at minute 0 has left the window.
    assert json.loads(store["network/edge"]) == [[int(at(30).timestamp() * 1000), 1]]


def test_budget_state_survives_instance() -> None:
    store: dict[str, bytes] = {}
    Budget(BUDGETS, store).spend("network/edge", 10, at(0))

    assert not Budget(BUDGETS, store).gate("network/edge", 1, at(1)).passed


# Run caps: at most 2 runs in 10m and 3 runs in 1h per fingerprint, and 1 run in 30m per target

CAPPED = active_policy(limits={
    "per_fingerprint": [{"runs": 2, "window": "10m"}, {"runs": 3, "window": "1h"}],
    "per_target": [{"runs": 1, "window": "30m"}],
})
FINGERPRINT = "machine-temperature-01:spike"
TARGET = "machine-temperature-01"


def run_caps(*minutes: float, fingerprint: str = FINGERPRINT, target: str = TARGET) -> RunCaps:
    """RunCaps over a fresh dict with one run of CAPPED recorded at each of `minutes`."""
    caps = RunCaps({})
    for minute in minutes:
        caps.record(CAPPED, fingerprint, target, at(minute))
    return caps


def test_run_cap_gate_names() -> None:
    gates = run_caps().gates(CAPPED, FINGERPRINT, TARGET, at(0))

    assert [gate.name for gate in gates] == ["run-cap-fingerprint", "run-cap-fingerprint", "run-cap-target"]


def test_run_cap_fresh_passes() -> None:
    gates = run_caps().gates(CAPPED, FINGERPRINT, TARGET, at(0))

    assert [gate.passed for gate in gates] == [True, True, True]


def test_run_cap_gate_text() -> None:
    gates = run_caps(0).gates(CAPPED, FINGERPRINT, TARGET, at(1))

    assert gates == [
        GateResult(name="run-cap-fingerprint", passed=True, value="1 runs in 10m", threshold="< 2"),
        GateResult(name="run-cap-fingerprint", passed=True, value="1 runs in 1h", threshold="< 3"),
        GateResult(name="run-cap-target", passed=False, value="1 runs in 30m", threshold="< 1"),
    ]


# (case, minutes of the recorded runs, minute of the check, passed per gate: 10m, 1h, target 30m)
RUN_CAP_CASES = [
    ("one-run", [0], 1, [True, True, False]),
    ("target-slid", [0], 30, [True, True, True]),
    ("short-cap-full", [0, 5], 6, [False, True, False]),
    ("short-cap-slid", [0, 5], 15, [True, True, False]),
    ("long-cap-full", [0, 11, 22], 33, [True, False, False]),
    ("long-cap-slid", [0, 11, 22], 60, [True, True, True]),
]


@pytest.mark.parametrize(
    ("minutes", "check", "passed"), [case[1:] for case in RUN_CAP_CASES], ids=[case[0] for case in RUN_CAP_CASES]
)
def test_run_cap_windows(minutes: list[float], check: float, passed: list[bool]) -> None:
    gates = run_caps(*minutes).gates(CAPPED, FINGERPRINT, TARGET, at(check))

    assert [gate.passed for gate in gates] == passed


def test_run_cap_other_fingerprint() -> None:
    gates = run_caps(0, 5).gates(CAPPED, "machine-temperature-02:spike", TARGET, at(6))

    assert [gate.passed for gate in gates] == [True, True, False]


def test_run_cap_other_target() -> None:
    gates = run_caps(0).gates(CAPPED, FINGERPRINT, "machine-temperature-02", at(1))

    assert [gate.passed for gate in gates] == [True, True, True]


def test_run_cap_per_policy() -> None:
    other = active_policy(id="cooling-other", limits=CAPPED.document.limits.model_dump())
    gates = run_caps(0, 5).gates(other, FINGERPRINT, TARGET, at(6))

    assert [gate.passed for gate in gates] == [True, True, True]


def test_run_cap_none_without_limits() -> None:
    assert RunCaps({}).gates(active_policy(), FINGERPRINT, TARGET, at(0)) == []


def test_run_cap_record_without_limits() -> None:
    store: dict[str, bytes] = {}
    RunCaps(store).record(active_policy(), FINGERPRINT, TARGET, at(0))

    assert store == {}


def test_run_cap_store_keys() -> None:
    store: dict[str, bytes] = {}
    RunCaps(store).record(CAPPED, FINGERPRINT, TARGET, at(0))

    assert sorted(store) == [
        "cooling-spike|fingerprint|machine-temperature-01:spike",
        "cooling-spike|target|machine-temperature-01",
    ]


# Circuit breaker: trips at 10 commands in 5m, or when more than half of at least 4 results failed,
# and then stays open for 15m


def test_breaker_closed_text() -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")

    assert breaker.gate(at(0)) == GateResult(
        name="circuit-breaker",
        passed=True,
        value="closed: 0 commands, 0/0 failed in 5m",
        threshold="< 10 commands, failure rate <= 0.5",
    )


@pytest.mark.parametrize(("commands", "passed"), [(9, True), (10, False), (25, False)], ids=["below", "at", "above"])
def test_breaker_command_rate(commands: int, passed: bool) -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(commands, at(0))

    assert breaker.gate(at(1)).passed is passed


def test_breaker_command_trip_text() -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(10, at(0))

    assert breaker.gate(at(1)) == GateResult(
        name="circuit-breaker", passed=False, value="tripped now: 10 commands in 5m (limit 10)", threshold="closed"
    )


def test_breaker_commands_slide() -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(9, at(0))
    breaker.record_commands(1, at(5))

    assert breaker.gate(at(5)).passed


# (case, results as failed flags, gate passes)
FAILURE_CASES = [
    ("below-min-results", [True, True, True], True),
    ("half-failed", [True, True, False, False], True),
    ("most-failed", [True, True, True, False], False),
    ("all-succeeded", [False] * 8, True),
    ("all-failed", [True] * 4, False),
]


@pytest.mark.parametrize(
    ("failed", "passed"), [case[1:] for case in FAILURE_CASES], ids=[case[0] for case in FAILURE_CASES]
)
def test_breaker_failure_rate(failed: list[bool], passed: bool) -> None:
    breaker = ShardedBreaker(BREAKER, {}, "results:0")
    for flag in failed:
        breaker.record_result(flag, at(0))

    assert breaker.gate(at(1)).passed is passed


def test_breaker_failure_trip_text() -> None:
    breaker = ShardedBreaker(BREAKER, {}, "results:0")
    for flag in (True, True, True, False):
        breaker.record_result(flag, at(0))

    assert breaker.gate(at(1)).value == "tripped now: 3 of 4 results failed in 5m (limit 0.5)"


def test_breaker_old_results_ignored() -> None:
    breaker = ShardedBreaker(BREAKER, {}, "results:0")
    for _ in range(4):
        breaker.record_result(True, at(0))

    assert breaker.gate(at(5)).passed


# (case, minutes after the trip, gate passes, gate value)
COOL_DOWN_CASES = [
    ("just-tripped", 1, False, "open, 14m of cool-down left"),
    ("last-second", 15 - 1 / 60, False, "open, 1s of cool-down left"),
    ("cool-down-over", 15, True, "closed: 0 commands, 0/0 failed in 5m"),
]


@pytest.mark.parametrize(
    ("minute", "passed"), [case[1:3] for case in COOL_DOWN_CASES], ids=[case[0] for case in COOL_DOWN_CASES]
)
def test_breaker_cool_down_passes(minute: float, passed: bool) -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(10, at(0))
    breaker.gate(at(0))

    assert breaker.gate(at(minute)).passed is passed


@pytest.mark.parametrize(
    ("minute", "value"), [(case[1], case[3]) for case in COOL_DOWN_CASES], ids=[case[0] for case in COOL_DOWN_CASES]
)
def test_breaker_cool_down_text(minute: float, value: str) -> None:
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(10, at(0))
    breaker.gate(at(0))

    assert breaker.gate(at(minute)).value == value


def test_breaker_open_after_counts_slide() -> None:
    # The commands that tripped it leave the 5m window long before the 15m cool-down ends.
    breaker = ShardedBreaker(BREAKER, {}, "signals:0")
    breaker.record_commands(10, at(0))
    breaker.gate(at(0))

    assert not breaker.gate(at(6)).passed


def test_breaker_sums_command_shards() -> None:
    store: dict[str, bytes] = {}
    ShardedBreaker(BREAKER, store, "signals:0").record_commands(6, at(0))
    ShardedBreaker(BREAKER, store, "signals:1").record_commands(4, at(0))

    assert not ShardedBreaker(BREAKER, store, "signals:2").gate(at(1)).passed


def test_breaker_sums_result_shards() -> None:
    store: dict[str, bytes] = {}
    ShardedBreaker(BREAKER, store, "results:0").record_result(True, at(0))
    ShardedBreaker(BREAKER, store, "results:0").record_result(False, at(0))
    ShardedBreaker(BREAKER, store, "results:1").record_result(True, at(0))
    ShardedBreaker(BREAKER, store, "results:1").record_result(True, at(0))

    assert ShardedBreaker(BREAKER, store, "signals:0").gate(at(1)).value == (
        "tripped now: 3 of 4 results failed in 5m (limit 0.5)"
    )


def test_breaker_state_over_shards() -> None:
    store: dict[str, bytes] = {}
    ShardedBreaker(BREAKER, store, "signals:0").record_commands(3, at(0))
    ShardedBreaker(BREAKER, store, "signals:1").record_commands(2, at(0))
    ShardedBreaker(BREAKER, store, "results:0").record_result(True, at(0))

    assert ShardedBreaker(BREAKER, store, "signals:0").state(at(1)) == (5, 1, 1, None)


def test_breaker_trip_seen_by_shards() -> None:
    store: dict[str, bytes] = {}
    first = ShardedBreaker(BREAKER, store, "signals:0")
    first.record_commands(10, at(0))
    first.gate(at(0))

    assert ShardedBreaker(BREAKER, store, "signals:1").gate(at(6)).value == "open, 9m of cool-down left"


def test_breaker_writes_own_shard() -> None:
    store: dict[str, bytes] = {}
    ShardedBreaker(BREAKER, store, "signals:3").record_commands(1, at(0))
    ShardedBreaker(BREAKER, store, "results:1").record_result(False, at(0))

    assert sorted(store) == ["results:1", "signals:3"]
