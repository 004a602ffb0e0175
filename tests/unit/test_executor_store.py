"""Unit tests for the executor's command store and the state-folder lock."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.executor.handler import ExecutorError
from mitigate.executor.service import StateLock
from mitigate.executor.store import CommandStore
from mitigate.models import ActionResult
from tests.unit.test_executor_processing import make_command

NOW = datetime(2026, 3, 2, 10, 30, 15, 250000, tzinfo=UTC)
SOURCE = "actions.ticket[0]@7"


def result_for(command_id: str = "command-1", **changes: Any) -> ActionResult:
    fields: dict[str, Any] = {
        "command_id": command_id,
        "idempotency_key": "step-key-1",
        "decision_id": "decision-1",
        "incident_id": "incident-1",
        "trace_id": "trace-1",
        "executor": "ticket",
        "step_id": "open-ticket",
        "attempt": 1,
        "status": "succeeded",
        "reason": "",
        "finished_at": NOW,
        "output": {"ticket_id": "MIT-1"},
    }
    fields.update(changes)
    return ActionResult.model_validate(fields)


@pytest.fixture
def store(tmp_path: Path) -> CommandStore:
    return CommandStore(tmp_path / "state" / "commands.sqlite", "ticket")


def test_unknown_command_not_found(store: CommandStore) -> None:
    assert store.get("command-1") is None
    assert store.running() == []
    assert store.count() == 0


def test_running_mark_stored(store: CommandStore) -> None:
    store.mark_running(make_command(), SOURCE, NOW)

    stored = store.get("command-1")

    assert stored is not None
    assert stored.state == "running"
    assert stored.result is None
    assert stored.source == SOURCE
    assert stored.received_at == NOW
    assert [item.command_id for item in store.running()] == ["command-1"]


def test_result_replaces_running_mark(store: CommandStore) -> None:
    store.mark_running(make_command(), SOURCE, NOW)
    result = result_for()

    store.save_result(result, "actions.ticket[0]@9", NOW + timedelta(seconds=2))

    stored = store.get("command-1")
    assert stored is not None
    assert stored.state == "finished"
    assert stored.result == result
    assert stored.source == SOURCE  # where the command was first received
    assert store.running() == []
    assert store.count() == 1


def test_result_without_running_mark(store: CommandStore) -> None:
    result = result_for(status="rejected", reason="deadline passed")

    store.save_result(result, SOURCE, NOW)

    stored = store.get("command-1")
    assert stored is not None
    assert stored.result == result


def test_second_running_mark_raises(store: CommandStore) -> None:
    store.mark_running(make_command(), SOURCE, NOW)

    with pytest.raises(ExecutorError, match="writing the command store"):
        store.mark_running(make_command(), SOURCE, NOW)


def test_succeeded_for_key_earliest(store: CommandStore) -> None:
    store.save_result(result_for("command-1", status="failed", finished_at=NOW), SOURCE, NOW)
    store.save_result(result_for("command-3", finished_at=NOW + timedelta(seconds=20)), SOURCE, NOW)
    store.save_result(result_for("command-2", finished_at=NOW + timedelta(seconds=10)), SOURCE, NOW)
    store.save_result(result_for("other", idempotency_key="step-key-2"), SOURCE, NOW)

    earlier = store.succeeded_for_key("step-key-1")

    assert earlier is not None
    assert earlier.command_id == "command-2"
    assert store.succeeded_for_key("step-key-9") is None


def test_failed_result_not_succeeded_for_key(store: CommandStore) -> None:
    store.save_result(result_for(status="failed"), SOURCE, NOW)
    store.save_result(result_for("command-2", status="skipped"), SOURCE, NOW)

    assert store.succeeded_for_key("step-key-1") is None


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    with CommandStore(path, "ticket") as store:
        store.save_result(result_for(), SOURCE, NOW)
        store.mark_running(make_command(command_id="command-2"), SOURCE, NOW)

    with CommandStore(path, "ticket") as reopened:
        stored = reopened.get("command-1")
        running = reopened.running()

    assert stored is not None
    assert stored.result == result_for()
    assert [item.command_id for item in running] == ["command-2"]


def test_prune_keeps_recent_and_running(store: CommandStore) -> None:
    store.save_result(result_for("old", finished_at=NOW - timedelta(days=20)), SOURCE, NOW)
    store.save_result(result_for("recent", finished_at=NOW - timedelta(days=1)), SOURCE, NOW)
    store.mark_running(make_command(command_id="interrupted"), SOURCE, NOW - timedelta(days=30))

    removed = store.prune(NOW - timedelta(days=14))

    assert removed == 1
    assert store.get("old") is None
    assert store.get("recent") is not None
    assert store.get("interrupted") is not None


def test_store_of_other_executor_rejected(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    CommandStore(path, "ticket").close()

    with pytest.raises(ExecutorError, match="belongs to the 'ticket' executor, not 'shell'"):
        CommandStore(path, "shell")


def test_store_of_other_schema_rejected(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    CommandStore(path, "ticket").close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE store_metadata SET value = '99' WHERE key = 'schema_version'")
    connection.close()

    with pytest.raises(ExecutorError, match="schema version 99"):
        CommandStore(path, "ticket")


def test_unreadable_store_raises(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    path.write_bytes(b"this is not a database, " * 100)

    with pytest.raises(ExecutorError, match="cannot open the command store"):
        CommandStore(path, "ticket")


def test_state_lock_exclusive(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(ExecutorError, match="in use by another executor process"):
            StateLock(tmp_path).acquire()
    finally:
        first.release()

    again = StateLock(tmp_path)
    again.acquire()
    again.release()
