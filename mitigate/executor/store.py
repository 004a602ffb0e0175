"""Durable record of the commands an executor has handled, in a SQLite file in its state folder.

A command is marked running before its action starts and gets its result when
it finishes, both committed to disk (WAL journal, synchronous=FULL) before the
service goes on. So after a crash the store distinguishes a command that
never started, one whose result may not have been published (its stored
result is published again), and one that was interrupted while it ran.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

from mitigate.executor.handler import ExecutorError
from mitigate.models import ActionCommand, ActionResult

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_metadata (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'finished')),
    status TEXT,
    result TEXT,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS commands_by_idempotency_key ON commands (idempotency_key, status);
CREATE INDEX IF NOT EXISTS commands_by_finished_at ON commands (finished_at);
"""

CommandState = Literal["running", "finished"]


@dataclass(frozen=True, slots=True)
class StoredCommand:
    """A command the store has seen: running (no result yet) or finished with its result."""

    command_id: str
    idempotency_key: str
    state: CommandState
    source: str  # topic[partition]@offset of the delivery that was handled
    received_at: datetime
    result: ActionResult | None


class CommandStore:
    """Commands of one executor by command_id, with their results.

    Not thread-safe: the service uses it from its main thread only.
    """

    def __init__(self, path: Path, executor: str) -> None:
        self.path = path
        self.executor = executor
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.executescript(_SCHEMA)
            self._check_owner()
        except (sqlite3.Error, OSError) as exc:
            raise ExecutorError(f"cannot open the command store {path}: {exc}") from exc

    def _check_owner(self) -> None:
        rows = dict(self._connection.execute("SELECT key, value FROM store_metadata").fetchall())
        if not rows:
            self._connection.executemany(
                "INSERT INTO store_metadata (key, value) VALUES (?, ?)",
                [("executor", self.executor), ("schema_version", SCHEMA_VERSION)],
            )
            return
        if rows.get("executor") != self.executor:
            raise ExecutorError(
                f"the command store {self.path} belongs to the {rows.get('executor')!r} executor, not "
                f"{self.executor!r}; give each executor its own --state-dir"
            )
        if rows.get("schema_version") != SCHEMA_VERSION:
            raise ExecutorError(
                f"the command store {self.path} has schema version {rows.get('schema_version')}, this version of "
                f"mitigate reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> CommandStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def get(self, command_id: str) -> StoredCommand | None:
        row = self._query_one(
            "SELECT command_id, idempotency_key, state, source, received_at, result FROM commands "
            "WHERE command_id = ?",
            (command_id,),
        )
        return None if row is None else _stored(row)

    def succeeded_for_key(self, idempotency_key: str) -> ActionResult | None:
        """Return the earliest succeeded result of a command with this idempotency key, if any."""
        row = self._query_one(
            "SELECT command_id, idempotency_key, state, source, received_at, result FROM commands "
            "WHERE idempotency_key = ? AND status = 'succeeded' ORDER BY finished_at LIMIT 1",
            (idempotency_key,),
        )
        return None if row is None else _stored(row).result

    def running(self) -> list[StoredCommand]:
        """Return the commands marked running: after a restart, those interrupted while they ran."""
        rows = self._query_all(
            "SELECT command_id, idempotency_key, state, source, received_at, result FROM commands "
            "WHERE state = 'running' ORDER BY received_at",
            (),
        )
        return [_stored(row) for row in rows]

    def mark_running(self, command: ActionCommand, source: str, now: datetime) -> None:
        self._write(
            "INSERT INTO commands (command_id, idempotency_key, state, source, received_at) "
            "VALUES (?, ?, 'running', ?, ?)",
            (command.command_id, command.idempotency_key, source, _timestamp(now)),
        )

    def save_result(self, result: ActionResult, source: str, now: datetime) -> None:
        """Store the result of a command, replacing its running mark if there is one."""
        self._write(
            "INSERT INTO commands (command_id, idempotency_key, state, status, result, source, received_at, "
            "finished_at) VALUES (?, ?, 'finished', ?, ?, ?, ?, ?) "
            "ON CONFLICT (command_id) DO UPDATE SET state = 'finished', status = excluded.status, "
            "result = excluded.result, finished_at = excluded.finished_at",
            (result.command_id, result.idempotency_key, result.status, result.model_dump_json(), source,
             _timestamp(now), _timestamp(result.finished_at)),
        )

    def prune(self, finished_before: datetime) -> int:
        """Delete finished commands older than `finished_before`; return how many were deleted.

        Running marks are kept, so an interrupted command is never forgotten.
        """
        cursor = self._write(
            "DELETE FROM commands WHERE state = 'finished' AND finished_at < ?", (_timestamp(finished_before),)
        )
        return cursor.rowcount

    def count(self) -> int:
        row = self._query_one("SELECT COUNT(*) FROM commands", ())
        return int(row[0]) if row else 0

    def _query_one(self, sql: str, parameters: tuple[str, ...]) -> tuple[str, ...] | None:
        try:
            row: tuple[str, ...] | None = self._connection.execute(sql, parameters).fetchone()
        except sqlite3.Error as exc:
            raise ExecutorError(f"reading the command store {self.path} failed: {exc}") from exc
        return row

    def _query_all(self, sql: str, parameters: tuple[str, ...]) -> list[tuple[str, ...]]:
        try:
            rows: list[tuple[str, ...]] = self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise ExecutorError(f"reading the command store {self.path} failed: {exc}") from exc
        return rows

    def _write(self, sql: str, parameters: tuple[str, ...]) -> sqlite3.Cursor:
        try:
            return self._connection.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise ExecutorError(f"writing the command store {self.path} failed: {exc}") from exc


def _timestamp(moment: datetime) -> str:
    # Fixed-width UTC text, so that SQL comparisons order it by time.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stored(row: tuple[str, ...]) -> StoredCommand:
    command_id, idempotency_key, state, source, received_at, result = row
    return StoredCommand(
        command_id=command_id,
        idempotency_key=idempotency_key,
        state="finished" if state == "finished" else "running",
        source=source,
        received_at=datetime.strptime(received_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
        result=ActionResult.model_validate_json(result) if result else None,
    )
