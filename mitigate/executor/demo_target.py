"""The demo-target executor: simulated services to contain, with their state in a JSON file.

Each target (the command's `target`, usually the entity) is one simulated
service with a configuration version, a traffic limit, a replica count and a
healthy flag. A service is healthy exactly when it runs a version outside
`faulty_versions`, as of its last configuration change or restart. Every
result carries the state before and after the action, so that containment
can be followed from the action-results topic alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from mitigate.executor.config import NAME_PATTERN, DemoTargetSettings, DemoTargetState
from mitigate.executor.handler import CommandRejected, Deadline, ExecutorError, Outcome
from mitigate.executor.parameters import as_bool, as_int, reject_unknown, required
from mitigate.models import ActionCommand

LAST_KNOWN_GOOD = "last-known-good"
PREVIOUS = "previous"

# Parameters each action accepts.
ACTION_PARAMETERS: dict[str, frozenset[str]] = {
    "rollback-config": frozenset({"to_version"}),
    "restore-config": frozenset({"to_version"}),
    "set-traffic-limit": frozenset({"limit_percent"}),
    "restart": frozenset(),
    "scale-out": frozenset({"replicas"}),
}

PRECONDITIONS = ("config_version", "config_version_not", "healthy", "replicas_below", "traffic_limit_percent_above")


class ChangeRefused(Exception):
    """The action is valid but cannot apply to the target's current state; reported as failed."""


class DemoTarget:
    """Handler of the demo-target executor."""

    name = "demo-target"

    def __init__(self, settings: DemoTargetSettings, state_dir: Path) -> None:
        self.settings = settings
        self.state_path = state_dir / settings.state_file
        self._lock = threading.Lock()

    # Handler protocol

    def check(self, command: ActionCommand) -> str | None:
        reject_unknown("action", [command.action], ACTION_PARAMETERS, "the demo-target executor")
        reject_unknown("parameter", command.parameters, ACTION_PARAMETERS[command.action], f"action {command.action}")
        reject_unknown("precondition", command.preconditions, PRECONDITIONS, "the demo-target executor")
        with self._lock:
            state = self.state_of(command.target)
        try:
            _apply(command, state, self.settings)  # a dry run, to reject invalid parameters before anything runs
        except ChangeRefused:
            pass  # run reports it as failed
        for name, expected in sorted(command.preconditions.items()):
            reason = _precondition_failure(name, expected, state)
            if reason is not None:
                return reason
        return None

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome:
        delay = self.settings.action_delay
        if delay > 0:
            left = deadline.remaining()
            time.sleep(min(delay, left))
            if delay > left:
                return Outcome("timed_out", f"the change takes {delay:g} s but only {left:.1f} s were left before "
                                            "the deadline; nothing changed")
        with self._lock:
            states = self._load()
            before = states.get(command.target) or self._initial(command.target)
            try:
                after, note = _apply(command, before, self.settings)
            except ChangeRefused as exc:
                return Outcome("failed", str(exc), _describe(command.target, before, before))
            if after != before:
                states[command.target] = after
                self._save(states)
        return Outcome("succeeded", note, _describe(command.target, before, after))

    # State file

    def state_of(self, target: str) -> DemoTargetState:
        """Return the current state of `target`, its initial state if no action has changed it yet."""
        return self._load().get(target) or self._initial(target)

    def _initial(self, target: str) -> DemoTargetState:
        return self.settings.targets.get(target, self.settings.initial)

    def _load(self) -> dict[str, DemoTargetState]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ExecutorError(f"cannot read the demo-target state {self.state_path}: {exc}") from exc
        try:
            return {target: DemoTargetState.model_validate(state) for target, state in data["targets"].items()}
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ExecutorError(f"the demo-target state {self.state_path} is invalid: {exc}") from exc

    def _save(self, states: dict[str, DemoTargetState]) -> None:
        document = {"targets": {target: state.model_dump() for target, state in sorted(states.items())}}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary file and renamed, so a crash leaves the old or the new state, never half of one.
        handle, temporary = tempfile.mkstemp(prefix=".demo-target-", dir=self.state_path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=2)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.state_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# Actions


def _apply(command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings) -> tuple[DemoTargetState, str]:
    """Return the state after the action and a note; raise CommandRejected or ChangeRefused."""
    actions: dict[str, Callable[[ActionCommand, DemoTargetState, DemoTargetSettings], tuple[DemoTargetState, str]]] = {
        "rollback-config": _rollback_config,
        "restore-config": _restore_config,
        "set-traffic-limit": _set_traffic_limit,
        "restart": _restart,
        "scale-out": _scale_out,
    }
    return actions[command.action](command, state, settings)


def _rollback_config(
    command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings
) -> tuple[DemoTargetState, str]:
    version = _version(state, "to_version", required(command.parameters, "parameter", "to_version"))
    return _switch_config(state, version, settings)


def _restore_config(
    command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings
) -> tuple[DemoTargetState, str]:
    version = _version(state, "to_version", command.parameters.get("to_version") or PREVIOUS)
    return _switch_config(state, version, settings)


def _switch_config(state: DemoTargetState, version: str, settings: DemoTargetSettings) -> tuple[DemoTargetState, str]:
    if version == state.config_version:
        return state, f"configuration already at {version}"
    after = state.model_copy(update={
        "config_version": version,
        "previous_config_version": state.config_version,
        "healthy": version not in settings.faulty_versions,
    })
    return after, f"configuration changed from {state.config_version} to {version}"


def _set_traffic_limit(
    command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings
) -> tuple[DemoTargetState, str]:
    text = required(command.parameters, "parameter", "limit_percent")
    limit = as_int("parameter", "limit_percent", text, minimum=0, maximum=100)
    if limit == state.traffic_limit_percent:
        return state, f"traffic limit already at {limit}%"
    after = state.model_copy(update={"traffic_limit_percent": limit})
    return after, f"traffic limit changed from {state.traffic_limit_percent}% to {limit}%"


def _restart(
    command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings
) -> tuple[DemoTargetState, str]:
    healthy = state.config_version not in settings.faulty_versions
    after = state.model_copy(update={"restarts": state.restarts + 1, "healthy": healthy})
    return after, f"restarted; {'healthy' if healthy else 'still unhealthy'} on configuration {state.config_version}"


def _scale_out(
    command: ActionCommand, state: DemoTargetState, settings: DemoTargetSettings
) -> tuple[DemoTargetState, str]:
    text = command.parameters.get("replicas")
    replicas = state.replicas + 1 if text is None else as_int("parameter", "replicas", text, minimum=1)
    if replicas > settings.max_replicas:
        raise CommandRejected(f"invalid parameter replicas={replicas}: more than max_replicas "
                              f"({settings.max_replicas}) of the demo-target executor")
    if replicas <= state.replicas:
        return state, f"already at {state.replicas} replicas, at least the {replicas} requested"
    after = state.model_copy(update={"replicas": replicas})
    return after, f"scaled out from {state.replicas} to {replicas} replicas"


def _version(state: DemoTargetState, name: str, text: str) -> str:
    """Resolve last-known-good and previous to a version; raise for an invalid or missing one."""
    if text == LAST_KNOWN_GOOD:
        return state.last_known_good
    if text == PREVIOUS:
        if state.previous_config_version is None:
            raise ChangeRefused(f"{name}=previous, but no earlier configuration of this target is recorded")
        return state.previous_config_version
    if not NAME_PATTERN.match(text):
        raise CommandRejected(f"invalid parameter {name}={text!r}: expected a version name, {LAST_KNOWN_GOOD} "
                              f"or {PREVIOUS}")
    return text


# Preconditions


def _precondition_failure(name: str, expected: str, state: DemoTargetState) -> str | None:
    """Return why the precondition does not hold on `state`, or None; raise CommandRejected for an invalid value."""
    if name in ("config_version", "config_version_not"):
        try:
            version = _version(state, name, expected)
        except ChangeRefused:
            version = ""  # no previous version is recorded, so the current one is not it
        if name == "config_version" and state.config_version != version:
            return f"config_version is {state.config_version}, expected {version or expected}"
        if name == "config_version_not" and state.config_version == version:
            return f"config_version is already {state.config_version}"
        return None
    if name == "healthy":
        wanted = as_bool("precondition", name, expected)
        if state.healthy != wanted:
            return f"healthy is {str(state.healthy).lower()}, expected {str(wanted).lower()}"
        return None
    if name == "replicas_below":
        limit = as_int("precondition", name, expected, minimum=1)
        if state.replicas >= limit:
            return f"replicas is {state.replicas}, expected below {limit}"
        return None
    limit = as_int("precondition", name, expected, minimum=0, maximum=100)  # traffic_limit_percent_above
    if state.traffic_limit_percent <= limit:
        return f"traffic_limit_percent is {state.traffic_limit_percent}, expected above {limit}"
    return None


def _describe(target: str, before: DemoTargetState, after: DemoTargetState) -> dict[str, str]:
    output = {"target": target, "changed": str(after != before).lower()}
    for label, state in (("before", before), ("after", after)):
        for field, value in state.model_dump().items():
            output[f"{label}.{field}"] = _text(value)
    return output


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
