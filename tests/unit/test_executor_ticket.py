"""Unit tests for the ticket executor and its SQLite ticket database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.executor.config import TicketSettings
from mitigate.executor.handler import CommandRejected, Deadline, Outcome
from mitigate.executor.ticket import TicketTracker
from mitigate.models import ActionCommand
from tests.unit.test_executor_processing import make_command


def ticket_command(action: str = "open-ticket", parameters: dict[str, str] | None = None,
                   **changes: Any) -> ActionCommand:
    return make_command(executor="ticket", action=action, step_id="open-ticket",
                        parameters=parameters if parameters is not None else {"queue": "plant-operations"}, **changes)


def perform(tracker: TicketTracker, command: ActionCommand) -> Outcome:
    assert tracker.check(command) is None
    now = datetime.now(UTC)
    return tracker.run(command, Deadline.of(now + timedelta(seconds=60), now))


@pytest.fixture
def tracker(tmp_path: Path) -> TicketTracker:
    return TicketTracker(TicketSettings(), tmp_path)


def test_open_returns_ticket_id(tracker: TicketTracker) -> None:
    command = ticket_command(parameters={"queue": "plant-operations", "title": "Machine overheating contained",
                                         "severity": "high"})

    outcome = perform(tracker, command)

    assert outcome.status == "succeeded"
    assert outcome.output == {"ticket_id": "MIT-1", "queue": "plant-operations", "status": "open", "reused": "false"}
    ticket = tracker.ticket("MIT-1")
    assert ticket is not None
    assert ticket["title"] == "Machine overheating contained"
    assert ticket["status"] == "open"
    assert ticket["target"] == command.target
    assert ticket["incident_id"] == "incident-1"
    assert ticket["command_id"] == command.command_id
    assert ticket["trace_id"] == command.trace_id
    assert ticket["fields"] == {"severity": "high"}
    assert "Decision: decision-1" in str(ticket["description"])


def test_open_defaults(tracker: TicketTracker) -> None:
    outcome = perform(tracker, ticket_command(parameters={}))

    assert outcome.output["queue"] == "operations"
    ticket = tracker.ticket(outcome.output["ticket_id"])
    assert ticket is not None
    assert ticket["title"] == "open-ticket for machine-temperature-01 by policy machine-temperature-high"


def test_ticket_ids_increase(tracker: TicketTracker) -> None:
    first = perform(tracker, ticket_command(command_id="command-1", idempotency_key="key-1"))
    second = perform(tracker, ticket_command(command_id="command-2", idempotency_key="key-2"))

    assert first.output["ticket_id"] == "MIT-1"
    assert second.output["ticket_id"] == "MIT-2"


def test_same_idempotency_key_reuses_ticket(tracker: TicketTracker) -> None:
    perform(tracker, ticket_command(command_id="command-1"))

    retry = perform(tracker, ticket_command(command_id="command-2", attempt=2))

    assert retry.status == "succeeded"
    assert retry.output["ticket_id"] == "MIT-1"
    assert retry.output["reused"] == "true"
    assert tracker.ticket("MIT-2") is None


def test_no_open_ticket_precondition(tracker: TicketTracker) -> None:
    perform(tracker, ticket_command(command_id="command-1", idempotency_key="key-1"))
    same_queue = ticket_command(command_id="command-2", idempotency_key="key-2",
                                preconditions={"no_open_ticket": "true"})
    other_queue = ticket_command(command_id="command-3", idempotency_key="key-3", parameters={"queue": "network"},
                                 preconditions={"no_open_ticket": "true"})
    other_target = ticket_command(command_id="command-4", idempotency_key="key-4", target="pump-3",
                                  preconditions={"no_open_ticket": "true"})

    assert tracker.check(same_queue) == ("machine-temperature-01 already has open ticket MIT-1 in queue "
                                         "plant-operations")
    assert tracker.check(other_queue) is None
    assert tracker.check(other_target) is None


def test_no_open_ticket_false_ignored(tracker: TicketTracker) -> None:
    perform(tracker, ticket_command(command_id="command-1", idempotency_key="key-1"))
    command = ticket_command(command_id="command-2", idempotency_key="key-2", preconditions={"no_open_ticket": "false"})

    assert tracker.check(command) is None


def test_close_ticket(tracker: TicketTracker) -> None:
    perform(tracker, ticket_command())
    close = ticket_command("close-ticket", {"ticket_id": "MIT-1", "resolution": "contained"}, command_id="command-2",
                           idempotency_key="key-2")

    outcome = perform(tracker, close)
    again = perform(tracker, close.model_copy(update={"command_id": "command-3"}))

    assert outcome.status == "succeeded"
    assert outcome.output == {"ticket_id": "MIT-1", "status": "closed", "changed": "true"}
    ticket = tracker.ticket("MIT-1")
    assert ticket is not None
    assert ticket["status"] == "closed"
    assert ticket["resolution"] == "contained"
    assert ticket["closed_at"] is not None
    assert again.output["changed"] == "false"
    assert again.reason == "ticket MIT-1 was already closed"


def test_open_ticket_closed_allows_precondition(tracker: TicketTracker) -> None:
    perform(tracker, ticket_command())
    perform(tracker, ticket_command("close-ticket", {"ticket_id": "MIT-1"}, command_id="command-2",
                                    idempotency_key="key-2"))
    command = ticket_command(command_id="command-3", idempotency_key="key-3", preconditions={"no_open_ticket": "true"})

    assert tracker.check(command) is None


def test_close_unknown_ticket_failed(tracker: TicketTracker) -> None:
    outcome = perform(tracker, ticket_command("close-ticket", {"ticket_id": "MIT-42"}))

    assert outcome.status == "failed"
    assert outcome.reason.startswith("ticket MIT-42 not found")


@pytest.mark.parametrize(("action", "parameters", "preconditions", "message"), [
    ("escalate", {}, {}, "unknown action 'escalate' for the ticket executor; known: close-ticket, open-ticket"),
    ("close-ticket", {}, {}, "missing parameter 'ticket_id'"),
    ("close-ticket", {"ticket_id": "JIRA-1"}, {}, "invalid parameter ticket_id='JIRA-1': expected MIT-<number>"),
    ("close-ticket", {"ticket_id": "MIT-1", "queue": "x"}, {}, "unknown parameter 'queue' for action close-ticket"),
    ("close-ticket", {"ticket_id": "MIT-1"}, {"no_open_ticket": "true"}, "unknown precondition 'no_open_ticket'"),
    ("open-ticket", {"queue": "a b"}, {}, "invalid parameter queue='a b'"),
    ("open-ticket", {}, {"assignee": "bob"}, "unknown precondition 'assignee' for action open-ticket"),
    ("open-ticket", {}, {"no_open_ticket": "often"}, "expected true or false"),
])
def test_invalid_commands_rejected(
    tracker: TicketTracker, action: str, parameters: dict[str, str], preconditions: dict[str, str], message: str
) -> None:
    with pytest.raises(CommandRejected, match=message):
        tracker.check(ticket_command(action, parameters, preconditions=preconditions))


def test_database_in_state_folder(tmp_path: Path) -> None:
    TicketTracker(TicketSettings(database=Path("nested/tickets.db"), id_prefix="OPS"), tmp_path)

    assert (tmp_path / "nested" / "tickets.db").exists()


def test_custom_prefix(tmp_path: Path) -> None:
    tracker = TicketTracker(TicketSettings(id_prefix="OPS"), tmp_path)

    outcome = perform(tracker, ticket_command())

    assert outcome.output["ticket_id"] == "OPS-1"
    assert tracker.ticket("OPS-1") is not None
