"""The ticket executor: a small ticket tracker in a local SQLite file.

Actions:

- open-ticket opens a ticket and returns its id in the result's output.
  `queue`, `title` and `description` are optional parameters; every other
  parameter is kept as a field of the ticket. A second command with the same
  idempotency key gets the ticket the first one opened, not a new one.
  Precondition `no_open_ticket: true` skips the command when the target
  already has an open ticket in the queue.
- close-ticket closes the ticket named by `ticket_id`, with an optional
  `resolution`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mitigate.executor.config import NAME_PATTERN, TicketSettings
from mitigate.executor.handler import CommandRejected, Deadline, ExecutorError, Outcome
from mitigate.executor.parameters import as_bool, reject_unknown, required
from mitigate.models import ActionCommand

ACTIONS = ("open-ticket", "close-ticket")
CLOSE_PARAMETERS = ("ticket_id", "resolution")
OPEN_PRECONDITIONS = ("no_open_ticket",)
MAX_TEXT_CHARS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    queue TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    target TEXT NOT NULL,
    incident_id TEXT,
    decision_id TEXT NOT NULL,
    command_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    fields TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    resolution TEXT
);
CREATE INDEX IF NOT EXISTS tickets_by_target ON tickets (target, queue, status);
CREATE INDEX IF NOT EXISTS tickets_by_idempotency_key ON tickets (idempotency_key);
"""


class TicketTracker:
    """Handler of the ticket executor. Each call opens its own connection, so any thread may use it."""

    name = "ticket"

    def __init__(self, settings: TicketSettings, state_dir: Path) -> None:
        self.settings = settings
        self.path = state_dir / settings.database
        self._ticket_id = re.compile(rf"^{re.escape(settings.id_prefix)}-([1-9][0-9]*)$")
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

    # Handler protocol

    def check(self, command: ActionCommand) -> str | None:
        reject_unknown("action", [command.action], ACTIONS, "the ticket executor")
        if command.action == "close-ticket":
            reject_unknown("parameter", command.parameters, CLOSE_PARAMETERS, "action close-ticket")
            reject_unknown("precondition", command.preconditions, (), "action close-ticket")
            self._number(required(command.parameters, "parameter", "ticket_id"))
            return None

        reject_unknown("precondition", command.preconditions, OPEN_PRECONDITIONS, "action open-ticket")
        queue = self._queue(command)
        text = command.preconditions.get("no_open_ticket")
        if text is None or not as_bool("precondition", "no_open_ticket", text):
            return None
        with self._connect() as connection:
            row = connection.execute(
                "SELECT number FROM tickets WHERE target = ? AND queue = ? AND status = 'open' ORDER BY number LIMIT 1",
                (command.target, queue),
            ).fetchone()
        if row is not None:
            return f"{command.target} already has open ticket {self._format(row[0])} in queue {queue}"
        return None

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome:
        if command.action == "close-ticket":
            return self._close(command)
        return self._open(command)

    # Actions

    def _open(self, command: ActionCommand) -> Outcome:
        queue = self._queue(command)
        title = command.parameters.get("title") or f"{command.action} for {command.target} by policy {command.policy_id}"
        description = command.parameters.get("description") or _description(command)
        fields = {name: value for name, value in command.parameters.items()
                  if name not in ("queue", "title", "description")}
        now = _timestamp(datetime.now(UTC))
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            existing = connection.execute(
                "SELECT number, queue, status FROM tickets WHERE idempotency_key = ? ORDER BY number LIMIT 1",
                (command.idempotency_key,),
            ).fetchone()
            if existing is not None:
                connection.execute("COMMIT")
                number, existing_queue, status = existing
                return Outcome("succeeded", f"ticket {self._format(number)} was opened before for this step",
                               {"ticket_id": self._format(number), "queue": existing_queue, "status": status,
                                "reused": "true"})
            cursor = connection.execute(
                "INSERT INTO tickets (status, queue, title, description, target, incident_id, decision_id, "
                "command_id, idempotency_key, policy_id, policy_version, trace_id, fields, opened_at) "
                "VALUES ('open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (queue, title[:MAX_TEXT_CHARS], description[:MAX_TEXT_CHARS], command.target, command.incident_id,
                 command.decision_id, command.command_id, command.idempotency_key, command.policy_id,
                 command.policy_version, command.trace_id, json.dumps(fields, sort_keys=True), now),
            )
            connection.execute("COMMIT")
        number = cursor.lastrowid
        assert number is not None  # set by every INSERT into a rowid table
        return Outcome("succeeded", "", {"ticket_id": self._format(number), "queue": queue, "status": "open",
                                         "reused": "false"})

    def _close(self, command: ActionCommand) -> Outcome:
        ticket_id = required(command.parameters, "parameter", "ticket_id")
        number = self._number(ticket_id)
        resolution = command.parameters.get("resolution", "")
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute("SELECT status FROM tickets WHERE number = ?", (number,)).fetchone()
            if row is None:
                connection.execute("ROLLBACK")
                return Outcome("failed", f"ticket {ticket_id} not found in {self.path}", {"ticket_id": ticket_id})
            if row[0] == "closed":
                connection.execute("ROLLBACK")
                return Outcome("succeeded", f"ticket {ticket_id} was already closed",
                               {"ticket_id": ticket_id, "status": "closed", "changed": "false"})
            connection.execute(
                "UPDATE tickets SET status = 'closed', closed_at = ?, resolution = ? WHERE number = ?",
                (_timestamp(datetime.now(UTC)), resolution[:MAX_TEXT_CHARS], number),
            )
            connection.execute("COMMIT")
        return Outcome("succeeded", "", {"ticket_id": ticket_id, "status": "closed", "changed": "true"})

    # Tickets

    def ticket(self, ticket_id: str) -> dict[str, object] | None:
        """Return the stored ticket with this id as a mapping of its columns, or None."""
        number = self._number(ticket_id)
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM tickets WHERE number = ?", (number,)).fetchone()
        if row is None:
            return None
        ticket = dict(row)
        ticket["ticket_id"] = self._format(number)
        ticket["fields"] = json.loads(ticket["fields"])
        return ticket

    def _queue(self, command: ActionCommand) -> str:
        queue = command.parameters.get("queue") or self.settings.default_queue
        if not NAME_PATTERN.match(queue):
            raise CommandRejected(f"invalid parameter queue={queue!r}: use letters, digits, '_', '-' and '.'")
        return queue

    def _number(self, ticket_id: str) -> int:
        match = self._ticket_id.match(ticket_id.strip())
        if match is None:
            raise CommandRejected(f"invalid parameter ticket_id={ticket_id!r}: expected "
                                  f"{self.settings.id_prefix}-<number>")
        return int(match.group(1))

    def _format(self, number: int) -> str:
        return f"{self.settings.id_prefix}-{number}"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as connection:
                yield connection
        except (sqlite3.Error, OSError) as exc:
            raise ExecutorError(f"ticket database {self.path}: {exc}") from exc


def _description(command: ActionCommand) -> str:
    lines = [
        f"Opened by policy {command.policy_id} version {command.policy_version}, step {command.step_id}.",
        f"Target: {command.target}",
        f"Decision: {command.decision_id}",
        f"Incident: {command.incident_id or '-'}",
        f"Trace: {command.trace_id}",
    ]
    return "\n".join(lines)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
