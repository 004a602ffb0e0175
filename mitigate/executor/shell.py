"""The shell executor: runs the allow-listed runbook of each action as an argv list, never through a shell.

The argv of an action comes from the configuration. The command adds only
`--target=<target>` (unless append_target is off) and one `--name=value`
argument per parameter, sorted by name, each a single argv item, so no value
can become a separate option or shell syntax. A runbook runs in a session of
its own, so that the whole process group can be stopped at the deadline.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mitigate.errors import ConfigurationError
from mitigate.executor.config import NAME_PATTERN, ShellAction, ShellSettings
from mitigate.executor.handler import CommandRejected, Deadline, Outcome
from mitigate.executor.parameters import reject_unknown
from mitigate.models import ActionCommand

# Seconds a runbook gets to exit after SIGTERM at its deadline, before SIGKILL.
TERMINATE_GRACE_S = 0.5
# Seconds to wait for the pipes to close once the process group was killed.
# A grandchild that left the session could keep them open longer.
DRAIN_TIMEOUT_S = 2.0
REASON_TAIL_CHARS = 500

# Variables passed on from the executor's environment; everything else a
# runbook needs goes into its `env` setting.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


@dataclass(frozen=True, slots=True)
class Finished:
    """Exit status and output of one runbook or check process."""

    exit_code: int | None  # None when it was stopped at the deadline
    stdout: str
    stderr: str
    duration_s: float


class ShellRunbooks:
    """Handler of the shell executor."""

    name = "shell"

    def __init__(self, settings: ShellSettings, state_dir: Path) -> None:
        if not settings.actions:
            raise ConfigurationError("shell: no actions are configured, so every command would be rejected; "
                                     "add runbooks under shell.actions")
        self.settings = settings
        self.state_dir = state_dir
        self._argv: dict[str, list[str]] = {}
        self._checks: dict[tuple[str, str], list[str]] = {}
        for action_name, action in settings.actions.items():
            self._argv[action_name] = _resolve(action.argv, f"shell.actions.{action_name}.argv", action)
            for check_name, argv in action.preconditions.items():
                self._checks[action_name, check_name] = _resolve(
                    argv, f"shell.actions.{action_name}.preconditions.{check_name}", action
                )

    # Handler protocol

    def check(self, command: ActionCommand) -> str | None:
        action = self._action(command)
        self._arguments(command, action)
        reject_unknown("precondition", command.preconditions, action.preconditions, f"action {command.action}")
        for name, expected in sorted(command.preconditions.items()):
            reason = self._check_precondition(command, action, name, expected)
            if reason is not None:
                return reason
        return None

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome:
        action = self._action(command)
        argv = self._argv[command.action] + self._arguments(command, action)
        try:
            finished = self._execute(argv, action, command, deadline.remaining())
        except OSError as exc:
            return Outcome("failed", f"runbook {argv[0]} could not start: {exc}", {"argv": shlex.join(argv)})

        output = {
            "argv": shlex.join(argv),
            "exit_code": "" if finished.exit_code is None else str(finished.exit_code),
            "stdout": finished.stdout,
            "stderr": finished.stderr,
            "duration_s": f"{finished.duration_s:.3f}",
        }
        if finished.exit_code is None:
            return Outcome("timed_out", f"runbook stopped at the deadline after {finished.duration_s:.1f} s: "
                                        f"{_reason_tail(finished.stderr)}", output)
        if finished.exit_code != 0:
            return Outcome("failed", f"runbook {_status_text(finished.exit_code)}: {_reason_tail(finished.stderr)}",
                           output)
        return Outcome("succeeded", "", output)

    # Validation

    def _action(self, command: ActionCommand) -> ShellAction:
        action = self.settings.actions.get(command.action)
        if action is None:
            known = ", ".join(sorted(self.settings.actions))
            raise CommandRejected(f"unknown action {command.action!r} for the shell executor; known: {known}")
        return action

    def _arguments(self, command: ActionCommand, action: ShellAction) -> list[str]:
        """Return the arguments the command adds to the runbook's argv; raise CommandRejected when invalid."""
        for name, value in command.parameters.items():
            if not NAME_PATTERN.match(name):
                raise CommandRejected(f"invalid parameter name {name!r}: use letters, digits, '_', '-' and '.', "
                                      "starting with a letter or digit")
            if "\x00" in value:
                raise CommandRejected(f"invalid parameter {name}: the value contains a NUL character")
        if action.parameters is not None:
            reject_unknown("parameter", command.parameters, action.parameters, f"action {command.action}")
        arguments = []
        if action.append_target:
            if "target" in command.parameters:
                raise CommandRejected("parameter 'target' conflicts with the --target argument the shell executor "
                                      "adds; rename it or set append_target: false for this action")
            if "\x00" in command.target:
                raise CommandRejected("invalid target: it contains a NUL character")
            arguments.append(f"--target={command.target}")
        arguments.extend(f"--{name}={value}" for name, value in sorted(command.parameters.items()))
        return arguments

    # Processes

    def _check_precondition(self, command: ActionCommand, action: ShellAction, name: str, expected: str) -> str | None:
        if "\x00" in expected:
            raise CommandRejected(f"invalid precondition {name}: the value contains a NUL character")
        argv = self._checks[command.action, name] + [f"--target={command.target}", f"--expected={expected}"]
        left = (command.deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return f"no time left before the deadline to run the check for {name}={expected}"
        try:
            finished = self._execute(argv, action, command, left)
        except OSError as exc:
            return f"the check for {name}={expected} could not start: {exc}"
        if finished.exit_code is None:
            return f"the check for {name}={expected} did not finish before the deadline"
        if finished.exit_code != 0:
            detail = _reason_tail(finished.stderr or finished.stdout)
            return f"{name}={expected}: check {_status_text(finished.exit_code)}: {detail}"
        return None

    def _execute(self, argv: list[str], action: ShellAction, command: ActionCommand, timeout_s: float) -> Finished:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=action.working_dir,
            env=_environment(action.env, command),
            start_new_session=True,
        )
        # NOTE: communicate() keeps all of stdout and stderr in memory; only the tails go into the result.
        try:
            stdout, stderr = process.communicate(timeout=max(timeout_s, 0.001))
            exit_code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            stdout, stderr = _stop(process)
            exit_code = None
        return Finished(
            exit_code=exit_code,
            stdout=self._tail(stdout),
            stderr=self._tail(stderr),
            duration_s=time.monotonic() - started,
        )

    def _tail(self, data: bytes | None) -> str:
        text = (data or b"").decode("utf-8", errors="replace")
        limit = self.settings.output_tail_chars
        return text if len(text) <= limit else "..." + text[-limit:]


def _resolve(argv: list[str], field: str, action: ShellAction) -> list[str]:
    """Return argv with its program as an absolute path; raise ConfigurationError when it is not executable."""
    program = argv[0]
    if "/" in program:
        base = action.working_dir or Path.cwd()
        path = Path(program) if Path(program).is_absolute() else base / program
        resolved = str(path.resolve()) if path.is_file() and os.access(path, os.X_OK) else None
    else:
        search_path = action.env.get("PATH", os.environ.get("PATH", os.defpath))
        resolved = shutil.which(program, path=search_path)
    if resolved is None:
        raise ConfigurationError(f"{field}: program {program!r} not found or not executable")
    return [resolved, *argv[1:]]


def _environment(extra: Mapping[str, str], command: ActionCommand) -> dict[str, str]:
    environment = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    environment.update(extra)
    environment.update({
        "MITIGATE_COMMAND_ID": command.command_id,
        "MITIGATE_IDEMPOTENCY_KEY": command.idempotency_key,
        "MITIGATE_TRACE_ID": command.trace_id,
        "MITIGATE_ACTION": command.action,
        "MITIGATE_TARGET": command.target,
        "MITIGATE_DEADLINE": command.deadline.isoformat(),
        "MITIGATE_ATTEMPT": str(command.attempt),
    })
    return environment


def _stop(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Stop the process group with SIGTERM, then SIGKILL; return what it wrote."""
    for signal_number, wait_s in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, DRAIN_TIMEOUT_S)):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            pass
        try:
            return process.communicate(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    # The group is gone but a process outside it still keeps the pipes open, so the rest of the output is dropped.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    process.wait()
    return b"", b""


def _status_text(exit_code: int) -> str:
    if exit_code < 0:
        return f"was killed by signal {-exit_code}"
    return f"exited with status {exit_code}"


def _reason_tail(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "no output on stderr"
    return stripped if len(stripped) <= REASON_TAIL_CHARS else "..." + stripped[-REASON_TAIL_CHARS:]
