"""Unit tests for the demo-target executor: each action, its preconditions and its state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.executor.config import DemoTargetSettings, DemoTargetState
from mitigate.executor.demo_target import DemoTarget
from mitigate.executor.handler import CommandRejected, Deadline, ExecutorError, Outcome
from mitigate.models import ActionCommand
from tests.unit.test_executor_processing import make_command

TARGET = "machine-temperature-01"


def demo_command(action: str, parameters: dict[str, str] | None = None, **changes: Any) -> ActionCommand:
    return make_command(action=action, parameters=parameters or {}, step_id=action, **changes)


def perform(target: DemoTarget, command: ActionCommand) -> Outcome:
    """Check the command, then run it with a minute left, as the service does."""
    assert target.check(command) is None
    return target.run(command, Deadline.of(datetime.now(UTC) + timedelta(seconds=60), datetime.now(UTC)))


@pytest.fixture
def target(tmp_path: Path) -> DemoTarget:
    return DemoTarget(DemoTargetSettings(), tmp_path)


def test_rollback_to_last_known_good(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("rollback-config", {"to_version": "last-known-good"}))

    assert outcome.status == "succeeded"
    assert outcome.reason == "configuration changed from v2 to v1"
    assert outcome.output["target"] == TARGET
    assert outcome.output["changed"] == "true"
    assert outcome.output["before.config_version"] == "v2"
    assert outcome.output["before.healthy"] == "false"
    assert outcome.output["after.config_version"] == "v1"
    assert outcome.output["after.previous_config_version"] == "v2"
    assert outcome.output["after.healthy"] == "true"
    state = target.state_of(TARGET)
    assert state.config_version == "v1"
    assert state.healthy is True


def test_rollback_to_named_version(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("rollback-config", {"to_version": "v0"}))

    assert outcome.output["after.config_version"] == "v0"
    assert target.state_of(TARGET).config_version == "v0"


def test_rollback_to_current_unchanged(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("rollback-config", {"to_version": "v2"}))

    assert outcome.status == "succeeded"
    assert outcome.reason == "configuration already at v2"
    assert outcome.output["changed"] == "false"


def test_rollback_without_version_rejected(target: DemoTarget) -> None:
    with pytest.raises(CommandRejected, match="missing parameter 'to_version'"):
        target.check(demo_command("rollback-config"))


def test_rollback_invalid_version_rejected(target: DemoTarget) -> None:
    with pytest.raises(CommandRejected, match="invalid parameter to_version='../etc'"):
        target.check(demo_command("rollback-config", {"to_version": "../etc"}))


def test_restore_previous_after_rollback(target: DemoTarget) -> None:
    perform(target, demo_command("rollback-config", {"to_version": "last-known-good"}))

    outcome = perform(target, demo_command("restore-config", {"to_version": "previous"}, command_id="command-2"))

    assert outcome.status == "succeeded"
    assert outcome.output["before.config_version"] == "v1"
    assert outcome.output["after.config_version"] == "v2"
    assert outcome.output["after.healthy"] == "false"


def test_restore_without_history_failed(target: DemoTarget) -> None:
    command = demo_command("restore-config")

    outcome = perform(target, command)

    assert outcome.status == "failed"
    assert "no earlier configuration of this target is recorded" in outcome.reason
    assert outcome.output["changed"] == "false"


def test_set_traffic_limit(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("set-traffic-limit", {"limit_percent": "50"}))

    assert outcome.status == "succeeded"
    assert outcome.reason == "traffic limit changed from 100% to 50%"
    assert outcome.output["before.traffic_limit_percent"] == "100"
    assert outcome.output["after.traffic_limit_percent"] == "50"


@pytest.mark.parametrize(("value", "message"), [
    ("150", "must be at most 100"),
    ("-1", "must be at least 0"),
    ("half", "expected an integer"),
])
def test_invalid_traffic_limit_rejected(target: DemoTarget, value: str, message: str) -> None:
    with pytest.raises(CommandRejected, match=message):
        target.check(demo_command("set-traffic-limit", {"limit_percent": value}))


def test_restart_heals_good_config(tmp_path: Path) -> None:
    initial = DemoTargetState(config_version="v1", last_known_good="v1", traffic_limit_percent=100, replicas=2,
                              healthy=False)
    target = DemoTarget(DemoTargetSettings(initial=initial), tmp_path)

    outcome = perform(target, demo_command("restart"))

    assert outcome.reason == "restarted; healthy on configuration v1"
    assert outcome.output["after.healthy"] == "true"
    assert outcome.output["after.restarts"] == "1"


def test_restart_keeps_faulty_config_unhealthy(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("restart"))

    assert outcome.reason == "restarted; still unhealthy on configuration v2"
    assert outcome.output["after.healthy"] == "false"
    assert outcome.output["changed"] == "true"


def test_scale_out(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("scale-out", {"replicas": "4"}))

    assert outcome.reason == "scaled out from 2 to 4 replicas"
    assert outcome.output["after.replicas"] == "4"


def test_scale_out_by_one_by_default(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("scale-out"))

    assert outcome.output["after.replicas"] == "3"


def test_scale_out_below_current_unchanged(target: DemoTarget) -> None:
    outcome = perform(target, demo_command("scale-out", {"replicas": "1"}))

    assert outcome.status == "succeeded"
    assert outcome.output["changed"] == "false"
    assert "already at 2 replicas" in outcome.reason


def test_scale_out_above_max_rejected(target: DemoTarget) -> None:
    with pytest.raises(CommandRejected, match="more than max_replicas"):
        target.check(demo_command("scale-out", {"replicas": "11"}))


def test_unknown_action_rejected(target: DemoTarget) -> None:
    with pytest.raises(CommandRejected, match="unknown action 'reboot' for the demo-target executor; known: "):
        target.check(demo_command("reboot"))


def test_unknown_parameter_rejected(target: DemoTarget) -> None:
    with pytest.raises(CommandRejected, match="unknown parameter 'force' for action restart"):
        target.check(demo_command("restart", {"force": "true"}))


# (case, preconditions, reason or None when all hold)
PRECONDITIONS = [
    ("version-matches", {"config_version": "v2"}, None),
    ("version-differs", {"config_version": "v3"}, "config_version is v2, expected v3"),
    ("version-not-holds", {"config_version_not": "v1"}, None),
    ("version-not-fails", {"config_version_not": "v2"}, "config_version is already v2"),
    ("not-last-known-good", {"config_version_not": "last-known-good"}, None),
    ("healthy-fails", {"healthy": "true"}, "healthy is false, expected true"),
    ("unhealthy-holds", {"healthy": "false"}, None),
    ("replicas-below-holds", {"replicas_below": "3"}, None),
    ("replicas-below-fails", {"replicas_below": "2"}, "replicas is 2, expected below 2"),
    ("traffic-above-holds", {"traffic_limit_percent_above": "50"}, None),
    ("traffic-above-fails", {"traffic_limit_percent_above": "100"}, "traffic_limit_percent is 100, expected above 100"),
]


@pytest.mark.parametrize(("case", "preconditions", "reason"), PRECONDITIONS, ids=[row[0] for row in PRECONDITIONS])
def test_preconditions(target: DemoTarget, case: str, preconditions: dict[str, str], reason: str | None) -> None:
    command = demo_command("rollback-config", {"to_version": "v1"}, preconditions=preconditions)

    assert target.check(command) == reason


def test_precondition_after_change(target: DemoTarget) -> None:
    perform(target, demo_command("rollback-config", {"to_version": "last-known-good"}))
    command = demo_command("rollback-config", {"to_version": "last-known-good"}, command_id="command-2",
                           preconditions={"config_version_not": "last-known-good"})

    assert target.check(command) == "config_version is already v1"


def test_failing_precondition_changes_nothing(target: DemoTarget, tmp_path: Path) -> None:
    command = demo_command("rollback-config", {"to_version": "v1"}, preconditions={"healthy": "true"})

    target.check(command)

    assert not (tmp_path / "demo-target.json").exists()
    assert target.state_of(TARGET).config_version == "v2"


def test_unknown_precondition_rejected(target: DemoTarget) -> None:
    command = demo_command("restart", preconditions={"uptime_above": "5"})

    with pytest.raises(CommandRejected, match="unknown precondition 'uptime_above'"):
        target.check(command)


def test_invalid_precondition_value_rejected(target: DemoTarget) -> None:
    command = demo_command("restart", preconditions={"healthy": "maybe"})

    with pytest.raises(CommandRejected, match="invalid precondition healthy='maybe': expected true or false"):
        target.check(command)


def test_state_file_written(target: DemoTarget, tmp_path: Path) -> None:
    perform(target, demo_command("set-traffic-limit", {"limit_percent": "25"}))

    document = json.loads((tmp_path / "demo-target.json").read_text())

    assert document["targets"][TARGET]["traffic_limit_percent"] == 25
    assert document["targets"][TARGET]["config_version"] == "v2"


def test_state_survives_new_handler(target: DemoTarget, tmp_path: Path) -> None:
    perform(target, demo_command("scale-out", {"replicas": "5"}))

    reopened = DemoTarget(DemoTargetSettings(), tmp_path)

    assert reopened.state_of(TARGET).replicas == 5


def test_targets_kept_apart(target: DemoTarget) -> None:
    perform(target, demo_command("scale-out", {"replicas": "5"}))
    perform(target, demo_command("scale-out", {"replicas": "3"}, target="other-machine", command_id="command-2"))

    assert target.state_of(TARGET).replicas == 5
    assert target.state_of("other-machine").replicas == 3


def test_named_target_initial_state(tmp_path: Path) -> None:
    special = DemoTargetState(config_version="v7", last_known_good="v6", traffic_limit_percent=40, replicas=6,
                              healthy=True)
    target = DemoTarget(DemoTargetSettings(targets={"special": special}), tmp_path)

    assert target.state_of("special") == special
    assert target.state_of(TARGET).config_version == "v2"


def test_delay_past_deadline_changes_nothing(tmp_path: Path) -> None:
    target = DemoTarget(DemoTargetSettings(action_delay=5.0), tmp_path)
    command = demo_command("set-traffic-limit", {"limit_percent": "50"})
    now = datetime.now(UTC)

    outcome = target.run(command, Deadline.of(now + timedelta(seconds=0.2), now))

    assert outcome.status == "timed_out"
    assert "the change takes 5 s" in outcome.reason
    assert target.state_of(TARGET).traffic_limit_percent == 100


def test_delay_within_deadline_applies(tmp_path: Path) -> None:
    target = DemoTarget(DemoTargetSettings(action_delay=0.1), tmp_path)

    outcome = perform(target, demo_command("set-traffic-limit", {"limit_percent": "50"}))

    assert outcome.status == "succeeded"
    assert target.state_of(TARGET).traffic_limit_percent == 50


def test_corrupt_state_file_raises(target: DemoTarget, tmp_path: Path) -> None:
    (tmp_path / "demo-target.json").write_text("{not json")

    with pytest.raises(ExecutorError, match="cannot read the demo-target state"):
        target.state_of(TARGET)


def test_invalid_state_file_raises(target: DemoTarget, tmp_path: Path) -> None:
    (tmp_path / "demo-target.json").write_text(json.dumps({"targets": {TARGET: {"replicas": 0}}}))

    with pytest.raises(ExecutorError, match="is invalid"):
        target.state_of(TARGET)
