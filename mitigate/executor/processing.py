"""The rules an executor applies to each command, whatever transport delivered it.

The rules, in the order they apply:

1. A command that is not a valid ActionCommand is rejected. Without a usable
   command_id and the other fields a result needs, it is only logged.
2. A command_id seen before is not run again. Its stored result is returned to
   be published again, so that a result lost before delivery is recovered. A
   command that was marked running but has no result was interrupted by a
   crash. It is reported as failed, because whether its action took effect is
   unknown, and it is not run again.
3. A command for another executor is rejected.
4. A command whose idempotency_key already has a succeeded result is not run
   again. It is reported as succeeded, naming the earlier command.
5. A command whose deadline has passed is rejected.
6. The handler's check rejects invalid commands (unknown action, invalid
   parameter) and reports skipped when a precondition does not hold.
7. The handler runs with the deadline enforced: a handler that has not
   returned by the deadline, or returns after it, is reported as timed_out.

Every result is stored under its command_id before it is returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mitigate.executor.handler import CommandRejected, Deadline, Handler, Outcome
from mitigate.executor.store import CommandStore, StoredCommand
from mitigate.models import ActionCommand, ActionResult, ResultStatus

logger = logging.getLogger(__name__)

# How long past the deadline the service waits for a handler's own outcome,
# so that a handler that stops itself at the deadline (and reports what it
# saw, such as a runbook's stderr) wins over the generic timed_out.
DEFAULT_GRACE_S = 2.0

MAX_REASON_CHARS = 2000

FutureWaiter = Callable[["Future[tuple[Outcome, float]]", float], bool]


def wait_for_future(future: Future[tuple[Outcome, float]], timeout_s: float) -> bool:
    """Block until the future is done or `timeout_s` passed; return whether it is done."""
    wait([future], timeout=timeout_s)
    return future.done()


def utc_now() -> datetime:
    return datetime.now(UTC)


class CommandProcessor:
    """Apply the dedupe, validation, deadline and precondition rules, and run the handler.

    `wait` blocks until a running handler finishes or a timeout passes. The
    Kafka service passes one that keeps polling its consumer meanwhile.
    """

    def __init__(
        self,
        handler: Handler,
        store: CommandStore,
        *,
        clock: Callable[[], datetime] = utc_now,
        wait: FutureWaiter = wait_for_future,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.handler = handler
        self.store = store
        self.clock = clock
        self.wait = wait
        self.grace_s = grace_s

    def process(self, record: Mapping[str, Any], source: str) -> ActionResult | None:
        """Handle one decoded ActionCommand record from `source` (topic[partition]@offset).

        Return the result to publish, or None when the record lacks the fields
        a result needs. Raises ExecutorError when the store fails.
        """
        try:
            command = ActionCommand.model_validate(record)
        except ValidationError as exc:
            return self._reject_invalid(record, exc, source)

        stored = self.store.get(command.command_id)
        if stored is not None:
            return self._replay(command, stored, source)

        if command.executor != self.handler.name:
            return self._finish(command, source, Outcome(
                "rejected",
                f"command is for the {command.executor!r} executor, not {self.handler.name!r}; "
                "a handler must be named like the executor of the topic it consumes",
            ))

        earlier = self.store.succeeded_for_key(command.idempotency_key)
        if earlier is not None:
            return self._finish(command, source, Outcome(
                "succeeded",
                f"not run again: command {earlier.command_id} with the same idempotency key "
                f"{command.idempotency_key} already succeeded at {earlier.finished_at.isoformat()}",
                {**earlier.output, "earlier_command_id": earlier.command_id},
            ))

        now = self.clock()
        if command.deadline <= now:
            return self._finish(command, source, Outcome(
                "rejected",
                f"deadline {command.deadline.isoformat()} passed {(now - command.deadline).total_seconds():.1f} s "
                "before the command was received; not run",
            ))
        deadline = Deadline.of(command.deadline, now)

        refusal = self._check(command, source)
        if refusal is not None:
            return self._finish(command, source, refusal)
        if deadline.expired():
            return self._finish(command, source, Outcome(
                "rejected", f"deadline {command.deadline.isoformat()} passed while checking preconditions; not run"
            ))

        logger.info("command %s (%s on %s) from %s: started", command.command_id, command.action, command.target,
                    source)
        self.store.mark_running(command, source, self.clock())
        outcome = self._run(command, deadline, source)
        return self._finish(command, source, outcome)

    # Rules that return a result without running the handler

    def _reject_invalid(self, record: Mapping[str, Any], error: ValidationError, source: str) -> ActionResult | None:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(record)'}: {item['msg']}" for item in error.errors()
        )
        identity = _result_identity(record)
        if identity is None:
            logger.error("command from %s is invalid and lacks the ids a result needs, so it gets none: %s",
                         source, problems)
            return None
        stored = self.store.get(identity["command_id"])
        if stored is not None and stored.result is not None:
            logger.info("command %s from %s: handled before at %s; publishing its stored result again",
                        identity["command_id"], source, stored.source)
            return stored.result
        result = ActionResult(
            **identity,
            executor=self.handler.name,
            status="rejected",
            reason=_shorten(f"invalid command: {problems}"),
            finished_at=self.clock(),
        )
        logger.warning("command %s from %s: rejected: %s", result.command_id, source, result.reason)
        self.store.save_result(result, source, self.clock())
        return result

    def _replay(self, command: ActionCommand, stored: StoredCommand, source: str) -> ActionResult:
        if stored.result is not None:
            logger.info("command %s from %s: handled before at %s with status %s; not run again, publishing its "
                        "stored result again", command.command_id, source, stored.source, stored.result.status)
            return stored.result
        logger.error("command %s from %s: it was running at %s when the executor stopped; not run again, "
                     "reported as failed", command.command_id, source, stored.source)
        return self._finish(command, source, Outcome(
            "failed",
            f"interrupted: the executor stopped while this command was running (received at "
            f"{stored.received_at.isoformat()} from {stored.source}); whether the action took effect is unknown, "
            "so it is not run again",
            {"interrupted": "true"},
        ))

    def _check(self, command: ActionCommand, source: str) -> Outcome | None:
        try:
            reason = self.handler.check(command)
        except CommandRejected as exc:
            return Outcome("rejected", str(exc))
        except Exception as exc:  # noqa: BLE001 - a faulty handler must not stop the executor
            logger.exception("command %s from %s: precondition check raised", command.command_id, source)
            return Outcome("failed", f"precondition check raised {type(exc).__name__}: {exc}; not run")
        if reason is not None:
            return Outcome("skipped", f"precondition does not hold: {reason}; nothing changed")
        return None

    # Running the handler

    def _run(self, command: ActionCommand, deadline: Deadline, source: str) -> Outcome:
        future: Future[tuple[Outcome, float]] = Future()

        def perform() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                outcome = self.handler.run(command, deadline)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)
            else:
                future.set_result((outcome, time.monotonic()))

        thread = threading.Thread(target=perform, name=f"{self.handler.name}-{command.command_id[:12]}", daemon=True)
        thread.start()
        if not self.wait(future, deadline.remaining() + self.grace_s):
            future.add_done_callback(lambda late: _log_late(late, command.command_id, source))
            logger.error("command %s from %s: the handler did not return by the deadline %s; its thread is "
                         "abandoned and may still change the target", command.command_id, source,
                         command.deadline.isoformat())
            return Outcome("timed_out", f"the {self.handler.name} handler did not finish by the deadline "
                                        f"{command.deadline.isoformat()}; it may still take effect")

        try:
            outcome, finished = future.result()
        except CommandRejected as exc:
            return Outcome("rejected", str(exc))
        except Exception as exc:  # noqa: BLE001 - a faulty handler must not stop the executor
            logger.error("command %s from %s: the handler raised", command.command_id, source, exc_info=exc)
            return Outcome("failed", f"the {self.handler.name} handler raised {type(exc).__name__}: {exc}")

        late_s = finished - deadline.monotonic_at
        if late_s > 0 and outcome.status != "timed_out":
            return Outcome(
                "timed_out",
                f"the handler finished {late_s:.1f} s after the deadline {command.deadline.isoformat()} with status "
                f"{outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""),
                {**outcome.output, "late_status": outcome.status},
            )
        return outcome

    def _finish(self, command: ActionCommand, source: str, outcome: Outcome) -> ActionResult:
        result = ActionResult(
            command_id=command.command_id,
            idempotency_key=command.idempotency_key,
            decision_id=command.decision_id,
            incident_id=command.incident_id,
            trace_id=command.trace_id,
            executor=self.handler.name,
            step_id=command.step_id,
            attempt=command.attempt,
            status=outcome.status,
            reason=_shorten(outcome.reason),
            finished_at=self.clock(),
            output=dict(outcome.output),
        )
        self.store.save_result(result, source, self.clock())
        level = logging.INFO if result.status in _QUIET_STATUSES else logging.WARNING
        logger.log(level, "command %s (%s on %s) from %s: %s%s", command.command_id, command.action, command.target,
                   source, result.status, f": {result.reason}" if result.reason else "")
        return result


_QUIET_STATUSES: frozenset[ResultStatus] = frozenset({"succeeded", "skipped"})

_IDENTITY_FIELDS = ("command_id", "idempotency_key", "decision_id", "trace_id", "step_id")


def _result_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the fields an ActionResult copies from its command, when the invalid record has them."""
    identity: dict[str, Any] = {}
    for name in _IDENTITY_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value or len(value) > 1024:
            return None
        identity[name] = value
    incident_id = record.get("incident_id")
    identity["incident_id"] = incident_id if isinstance(incident_id, str) and incident_id else None
    attempt = record.get("attempt")
    identity["attempt"] = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1 else 1
    return identity


def _log_late(future: Future[tuple[Outcome, float]], command_id: str, source: str) -> None:
    error = future.exception()
    if error is not None:
        logger.error("command %s from %s: the abandoned handler raised after its deadline: %s", command_id, source,
                     error)
        return
    outcome, _ = future.result()
    logger.warning("command %s from %s: the abandoned handler returned after its deadline with status %s%s; the "
                   "published result stays timed_out", command_id, source, outcome.status,
                   f" ({outcome.reason})" if outcome.reason else "")


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
