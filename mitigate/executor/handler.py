"""The contract between the executor service and the code that performs actions.

A handler performs the actions of one executor (the part after `actions.` in
the command topic's name). The service calls `check` and then `run` for each
new command, one command at a time. `run` runs in a thread of its own, so it
may block.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mitigate.errors import MitigateError
from mitigate.models import ActionCommand, ResultStatus


class ExecutorError(MitigateError):
    """The executor cannot start or cannot go on: its state store, lock, topics or broker failed."""


class CommandRejected(MitigateError):
    """Raised by a handler for a command it cannot accept: unknown action, invalid parameter or precondition.

    The service reports the command as rejected, with the message as the
    reason, and does not run it.
    """


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of a handler for one command, which the service turns into an ActionResult."""

    status: ResultStatus
    reason: str = ""
    output: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deadline:
    """The time after which an action must not start or go on.

    `at` is the command's wall-clock deadline. Time left is measured on the
    monotonic clock from the moment the Deadline was made, so that a wall-clock
    step during a run does not stretch or cut it.
    """

    at: datetime
    monotonic_at: float

    @classmethod
    def of(cls, at: datetime, now: datetime) -> Deadline:
        return cls(at, time.monotonic() + (at - now).total_seconds())

    def remaining(self) -> float:
        """Return the seconds left, 0 once the deadline has passed."""
        return max(0.0, self.monotonic_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.monotonic_at


class Handler(Protocol):
    """Performs the actions of one executor.

    `check` validates the command and evaluates `command.preconditions`
    against the target's current state, without changing anything. It raises
    CommandRejected for an unknown action, an invalid parameter or an unknown
    precondition, and returns a reason when a precondition does not hold
    (reported as skipped), or None.

    `run` performs the action and should return by `deadline`. The service
    reports timed_out for a handler that has not returned by then, but cannot
    stop its thread, so a handler must bound its own waits with
    `deadline.remaining()`. `run` may raise CommandRejected; any other
    exception is reported as failed.
    """

    @property
    def name(self) -> str:
        """The executor's name, as in `actions.<name>`."""
        ...

    def check(self, command: ActionCommand) -> str | None: ...

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome: ...
