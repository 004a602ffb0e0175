"""Unit tests for mitigate.executor.processing: dedupe, validation, deadlines, preconditions and overruns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.executor.handler import CommandRejected, Deadline, Outcome
from mitigate.executor.processing import MAX_REASON_CHARS, CommandProcessor, wait_for_future
from mitigate.executor.store import CommandStore
from mitigate.models import ActionCommand

SOURCE = "actions.demo-target[2]@41"


def command_fields(**changes: Any) -> dict[str, Any]:
    """Fields of a valid ActionCommand for the demo-target executor, with a deadline a minute ahead."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "command_id": "command-1",
        "idempotency_key": "step-key-1",
        "decision_id": "decision-1",
        "event_id": "event-1",
        "incident_id": "incident-1",
        "trace_id": "trace-1",
        "issued_at": now,
        "deadline": now + timedelta(seconds=60),
        "attempt": 1,
        "executor": "demo-target",
        "action": "rollback-config",
        "target": "machine-temperature-01",
        "parameters": {"to_version": "last-known-good"},
        "step_id": "rollback-config",
        "depends_on": [],
        "policy_id": "machine-temperature-high",
        "policy_version": 3,
        "preconditions": {},
        "compensates": None,
    }
    fields.update(changes)
    return fields


def make_command(**changes: Any) -> ActionCommand:
    return ActionCommand.model_validate(command_fields(**changes))


class FakeHandler:
    """A handler whose check and run behaviour each test sets, counting its runs."""

    def __init__(
        self,
        name: str = "demo-target",
        check: Callable[[ActionCommand], str | None] = lambda command: None,
        run: Callable[[ActionCommand, Deadline], Outcome] = lambda command, deadline: Outcome(
            "succeeded", "", {"changed": "true"}
        ),
    ) -> None:
        self.name = name
        self._check = check
        self._run = run
        self.checked: list[str] = []
        self.runs: list[str] = []

    def check(self, command: ActionCommand) -> str | None:
        self.checked.append(command.command_id)
        return self._check(command)

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome:
        self.runs.append(command.command_id)
        return self._run(command, deadline)


@pytest.fixture
def store(tmp_path: Path) -> CommandStore:
    return CommandStore(tmp_path / "commands.sqlite", "demo-target")


def test_new_command_runs_once(store: CommandStore) -> None:
    handler = FakeHandler()
    command = make_command(attempt=3)

    result = CommandProcessor(handler, store).process(command.to_avro(), SOURCE)

    assert result is not None
    assert handler.runs == ["command-1"]
    assert result.status == "succeeded"
    assert result.command_id == command.command_id
    assert result.idempotency_key == command.idempotency_key
    assert result.decision_id == command.decision_id
    assert result.incident_id == command.incident_id
    assert result.trace_id == command.trace_id
    assert result.step_id == command.step_id
    assert result.attempt == 3
    assert result.executor == "demo-target"
    assert result.output == {"changed": "true"}


def test_duplicate_returns_stored_result(store: CommandStore) -> None:
    handler = FakeHandler()
    processor = CommandProcessor(handler, store)
    record = make_command().to_avro()

    first = processor.process(record, SOURCE)
    second = processor.process(record, "actions.demo-target[2]@42")

    assert handler.runs == ["command-1"]
    assert second == first


def test_duplicate_after_restart_not_run(tmp_path: Path) -> None:
    record = make_command().to_avro()
    with CommandStore(tmp_path / "commands.sqlite", "demo-target") as store:
        first = CommandProcessor(FakeHandler(), store).process(record, SOURCE)

    handler = FakeHandler()
    with CommandStore(tmp_path / "commands.sqlite", "demo-target") as reopened:
        second = CommandProcessor(handler, reopened).process(record, SOURCE)

    assert handler.runs == []
    assert second == first


def test_duplicate_past_deadline_still_replayed(store: CommandStore) -> None:
    handler = FakeHandler()
    now = datetime.now(UTC)
    clock = [now]
    processor = CommandProcessor(handler, store, clock=lambda: clock[0])
    record = make_command(deadline=now + timedelta(seconds=5)).to_avro()
    first = processor.process(record, SOURCE)

    clock[0] = now + timedelta(minutes=5)
    second = processor.process(record, SOURCE)

    assert first is not None
    assert first.status == "succeeded"
    assert second == first


def test_interrupted_command_reported_failed(store: CommandStore) -> None:
    command = make_command()
    store.mark_running(command, "actions.demo-target[2]@40", datetime.now(UTC))
    handler = FakeHandler()
    processor = CommandProcessor(handler, store)

    result = processor.process(command.to_avro(), SOURCE)
    again = processor.process(command.to_avro(), SOURCE)

    assert handler.runs == []
    assert result is not None
    assert result.status == "failed"
    assert result.reason.startswith("interrupted:")
    assert "actions.demo-target[2]@40" in result.reason
    assert result.output == {"interrupted": "true"}
    assert again == result


def test_succeeded_idempotency_key_not_run(store: CommandStore) -> None:
    handler = FakeHandler(run=lambda command, deadline: Outcome("succeeded", "", {"ticket_id": "MIT-7"}))
    processor = CommandProcessor(handler, store)
    processor.process(make_command(command_id="command-1", attempt=1).to_avro(), SOURCE)

    retry = processor.process(make_command(command_id="command-2", attempt=2).to_avro(), SOURCE)

    assert handler.runs == ["command-1"]
    assert retry is not None
    assert retry.status == "succeeded"
    assert retry.command_id == "command-2"
    assert retry.attempt == 2
    assert "command command-1" in retry.reason
    assert "step-key-1" in retry.reason
    assert retry.output == {"ticket_id": "MIT-7", "earlier_command_id": "command-1"}


def test_failed_idempotency_key_runs_again(store: CommandStore) -> None:
    outcomes = iter([Outcome("failed", "target unreachable"), Outcome("succeeded")])
    handler = FakeHandler(run=lambda command, deadline: next(outcomes))
    processor = CommandProcessor(handler, store)
    processor.process(make_command(command_id="command-1").to_avro(), SOURCE)

    retry = processor.process(make_command(command_id="command-2", attempt=2).to_avro(), SOURCE)

    assert handler.runs == ["command-1", "command-2"]
    assert retry is not None
    assert retry.status == "succeeded"


def test_past_deadline_rejected(store: CommandStore) -> None:
    handler = FakeHandler()
    now = datetime.now(UTC)
    command = make_command(deadline=now - timedelta(seconds=3))

    result = CommandProcessor(handler, store, clock=lambda: now).process(command.to_avro(), SOURCE)

    assert result is not None
    assert result.status == "rejected"
    assert "deadline" in result.reason
    assert "passed 3.0 s before" in result.reason
    assert handler.checked == []
    assert handler.runs == []


def test_wrong_executor_rejected(store: CommandStore) -> None:
    handler = FakeHandler(name="ticket")

    result = CommandProcessor(handler, store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert result.status == "rejected"
    assert "'demo-target' executor, not 'ticket'" in result.reason
    assert result.executor == "ticket"
    assert handler.runs == []


def test_invalid_record_rejected_and_stored(store: CommandStore) -> None:
    handler = FakeHandler()
    record = command_fields(attempt=0, target="")

    result = CommandProcessor(handler, store).process(record, SOURCE)

    assert result is not None
    assert result.status == "rejected"
    assert result.reason.startswith("invalid command: ")
    assert "attempt" in result.reason
    assert "target" in result.reason
    assert result.attempt == 1
    assert handler.runs == []
    stored = store.get("command-1")
    assert stored is not None
    assert stored.result == result


def test_invalid_record_without_ids_ignored(store: CommandStore) -> None:
    record = command_fields(command_id="")

    result = CommandProcessor(FakeHandler(), store).process(record, SOURCE)

    assert result is None
    assert store.count() == 0


def test_failing_precondition_skipped(store: CommandStore) -> None:
    handler = FakeHandler(check=lambda command: "config_version is v1, expected v2")

    result = CommandProcessor(handler, store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert result.status == "skipped"
    assert result.reason == "precondition does not hold: config_version is v1, expected v2; nothing changed"
    assert handler.runs == []


def test_check_rejection_rejected(store: CommandStore) -> None:
    def reject(command: ActionCommand) -> str | None:
        raise CommandRejected("unknown action 'reboot'")

    handler = FakeHandler(check=reject)

    result = CommandProcessor(handler, store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert result.status == "rejected"
    assert result.reason == "unknown action 'reboot'"
    assert handler.runs == []


def test_check_error_failed_not_run(store: CommandStore) -> None:
    def broken(command: ActionCommand) -> str | None:
        raise RuntimeError("state file locked")

    handler = FakeHandler(check=broken)

    result = CommandProcessor(handler, store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert result.status == "failed"
    assert "RuntimeError: state file locked" in result.reason
    assert handler.runs == []


@pytest.mark.parametrize(("error", "status", "reason"), [
    (CommandRejected("invalid parameter limit_percent='x'"), "rejected", "invalid parameter limit_percent='x'"),
    (OSError("disk full"), "failed", "the demo-target handler raised OSError: disk full"),
])
def test_run_exception_reported(store: CommandStore, error: Exception, status: str, reason: str) -> None:
    def explode(command: ActionCommand, deadline: Deadline) -> Outcome:
        raise error

    result = CommandProcessor(FakeHandler(run=explode), store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert result.status == status
    assert result.reason == reason


def test_overrunning_handler_timed_out(store: CommandStore) -> None:
    release = threading.Event()

    def hang(command: ActionCommand, deadline: Deadline) -> Outcome:
        release.wait(10)
        return Outcome("succeeded")

    now = datetime.now(UTC)
    command = make_command(deadline=now + timedelta(seconds=0.3))
    processor = CommandProcessor(FakeHandler(run=hang), store, grace_s=0.1)
    started = time.monotonic()

    result = processor.process(command.to_avro(), SOURCE)

    elapsed = time.monotonic() - started
    release.set()
    assert result is not None
    assert result.status == "timed_out"
    assert "did not finish by the deadline" in result.reason
    assert elapsed < 2.0
    stored = store.get(command.command_id)
    assert stored is not None
    assert stored.state == "finished"


def test_late_outcome_becomes_timed_out(store: CommandStore) -> None:
    def late(command: ActionCommand, deadline: Deadline) -> Outcome:
        time.sleep(deadline.remaining() + 0.2)
        return Outcome("succeeded", "", {"changed": "true"})

    command = make_command(deadline=datetime.now(UTC) + timedelta(seconds=0.2))

    result = CommandProcessor(FakeHandler(run=late), store, grace_s=2.0).process(command.to_avro(), SOURCE)

    assert result is not None
    assert result.status == "timed_out"
    assert "after the deadline" in result.reason
    assert "with status succeeded" in result.reason
    assert result.output == {"changed": "true", "late_status": "succeeded"}


def test_handler_timed_out_kept(store: CommandStore) -> None:
    def stops_itself(command: ActionCommand, deadline: Deadline) -> Outcome:
        time.sleep(deadline.remaining() + 0.05)
        return Outcome("timed_out", "runbook stopped at the deadline", {"exit_code": ""})

    command = make_command(deadline=datetime.now(UTC) + timedelta(seconds=0.2))

    result = CommandProcessor(FakeHandler(run=stops_itself), store, grace_s=2.0).process(command.to_avro(), SOURCE)

    assert result is not None
    assert result.status == "timed_out"
    assert result.reason == "runbook stopped at the deadline"
    assert result.output == {"exit_code": ""}


def test_handler_gets_remaining_deadline(store: CommandStore) -> None:
    seen: list[float] = []

    def record(command: ActionCommand, deadline: Deadline) -> Outcome:
        seen.append(deadline.remaining())
        return Outcome("succeeded")

    command = make_command(deadline=datetime.now(UTC) + timedelta(seconds=30))

    CommandProcessor(FakeHandler(run=record), store).process(command.to_avro(), SOURCE)

    assert len(seen) == 1
    assert 25 < seen[0] <= 30


def test_custom_wait_used(store: CommandStore) -> None:
    waits: list[float] = []

    def wait(future: Future[tuple[Outcome, float]], timeout_s: float) -> bool:
        waits.append(timeout_s)
        return wait_for_future(future, timeout_s)

    CommandProcessor(FakeHandler(), store, wait=wait, grace_s=1.0).process(make_command().to_avro(), SOURCE)

    assert len(waits) == 1
    assert 55 < waits[0] <= 61


def test_long_reason_shortened(store: CommandStore) -> None:
    handler = FakeHandler(run=lambda command, deadline: Outcome("failed", "x" * 10_000))

    result = CommandProcessor(handler, store).process(make_command().to_avro(), SOURCE)

    assert result is not None
    assert len(result.reason) == MAX_REASON_CHARS
    assert result.reason.endswith("...")


def test_running_mark_written_before_run(store: CommandStore) -> None:
    states: list[str | None] = []

    def look(command: ActionCommand, deadline: Deadline) -> Outcome:
        stored = CommandStore(store.path, "demo-target").get(command.command_id)
        states.append(stored.state if stored else None)
        return Outcome("succeeded")

    CommandProcessor(FakeHandler(run=look), store).process(make_command().to_avro(), SOURCE)

    assert states == ["running"]
