"""Unit tests for the shell executor, with runbooks written by the tests into a temporary folder."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mitigate.errors import ConfigurationError
from mitigate.executor.config import ShellAction, ShellSettings
from mitigate.executor.handler import CommandRejected, Deadline
from mitigate.executor.shell import ShellRunbooks
from mitigate.models import ActionCommand
from tests.unit.test_executor_processing import make_command

# Writes its argv and part of its environment to $RECORD, prints to both streams, and exits with $EXIT_CODE.
RECORDER = """\
import json, os, sys
with open(os.environ["RECORD"], "a") as stream:
    stream.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}) + "\\n")
print("changed " + " ".join(sys.argv[1:]))
print("warning: about to exit", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""

# Starts a child that sleeps, writes the child's pid to $PID_FILE, and sleeps as well.
SLEEPER = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.environ["PID_FILE"], "w") as stream:
    stream.write(str(child.pid))
print("sleeping", file=sys.stderr, flush=True)
time.sleep(60)
"""

# A precondition check: holds when --expected equals $CURRENT.
CHECK = """\
import os, sys
expected = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--expected=")][0]
if expected != os.environ["CURRENT"]:
    print(f"current is {os.environ['CURRENT']}", file=sys.stderr)
    sys.exit(1)
"""


def script(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def shell_command(action: str = "drain", parameters: dict[str, str] | None = None, **changes: Any) -> ActionCommand:
    return make_command(executor="shell", action=action, parameters=parameters or {}, target="node-7", **changes)


def minute() -> Deadline:
    now = datetime.now(UTC)
    return Deadline.of(now + timedelta(seconds=60), now)


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "record.jsonl"


@pytest.fixture
def runbooks(tmp_path: Path, record_file: Path) -> ShellRunbooks:
    recorder = script(tmp_path, "recorder.py", RECORDER)
    check = script(tmp_path, "check.py", CHECK)
    settings = ShellSettings(actions={
        "drain": ShellAction(argv=[recorder, "drain"], env={"RECORD": str(record_file), "CURRENT": "v2"},
                             preconditions={"config_version": [check]}),
        "fail": ShellAction(argv=[recorder], env={"RECORD": str(record_file), "EXIT_CODE": "3"}),
        "strict": ShellAction(argv=[recorder], env={"RECORD": str(record_file)}, parameters=["mode"]),
        "no-target": ShellAction(argv=[recorder], env={"RECORD": str(record_file)}, append_target=False),
        "sleep": ShellAction(argv=[script(tmp_path, "sleeper.py", SLEEPER)],
                             env={"PID_FILE": str(tmp_path / "child.pid")}),
    })
    return ShellRunbooks(settings, tmp_path)


def test_runbook_gets_target_and_parameters(runbooks: ShellRunbooks, record_file: Path) -> None:
    command = shell_command(parameters={"zone": "eu-1", "batch": "5"})

    assert runbooks.check(command) is None
    outcome = runbooks.run(command, minute())

    assert outcome.status == "succeeded"
    assert outcome.reason == ""
    [call] = records(record_file)
    assert call["argv"] == ["drain", "--target=node-7", "--batch=5", "--zone=eu-1"]
    assert outcome.output["exit_code"] == "0"
    assert outcome.output["stdout"] == "changed drain --target=node-7 --batch=5 --zone=eu-1\n"
    assert outcome.output["stderr"] == "warning: about to exit\n"
    assert outcome.output["argv"].endswith("drain --target=node-7 --batch=5 --zone=eu-1")
    assert float(outcome.output["duration_s"]) > 0


def test_runbook_environment(runbooks: ShellRunbooks, record_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "not-for-runbooks")
    command = shell_command(attempt=2)

    runbooks.run(command, minute())

    [call] = records(record_file)
    environment = call["env"]
    assert "DATABASE_PASSWORD" not in environment
    assert environment["MITIGATE_COMMAND_ID"] == command.command_id
    assert environment["MITIGATE_IDEMPOTENCY_KEY"] == command.idempotency_key
    assert environment["MITIGATE_TRACE_ID"] == command.trace_id
    assert environment["MITIGATE_TARGET"] == "node-7"
    assert environment["MITIGATE_ATTEMPT"] == "2"
    assert environment["PATH"] == os.environ["PATH"]


def test_values_not_interpreted_by_shell(runbooks: ShellRunbooks, record_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = shell_command(parameters={"note": f"$(touch {marker}); `touch {marker}` | rm -rf /", "x": "--y=z"})

    outcome = runbooks.run(command, minute())

    assert outcome.status == "succeeded"
    assert not marker.exists()
    [call] = records(record_file)
    assert call["argv"][2] == f"--note=$(touch {marker}); `touch {marker}` | rm -rf /"
    assert call["argv"][3] == "--x=--y=z"


def test_nonzero_exit_failed(runbooks: ShellRunbooks) -> None:
    outcome = runbooks.run(shell_command(action="fail"), minute())

    assert outcome.status == "failed"
    assert outcome.reason == "runbook exited with status 3: warning: about to exit"
    assert outcome.output["exit_code"] == "3"


def test_overrun_stopped_at_deadline(runbooks: ShellRunbooks, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    started = time.monotonic()

    outcome = runbooks.run(shell_command(action="sleep"), Deadline.of(now + timedelta(seconds=1), now))

    elapsed = time.monotonic() - started
    assert outcome.status == "timed_out"
    assert outcome.reason.startswith("runbook stopped at the deadline after")
    assert "sleeping" in outcome.reason
    assert outcome.output["exit_code"] == ""
    assert elapsed < 5
    child = int((tmp_path / "child.pid").read_text())
    time.sleep(0.2)
    assert not alive(child)  # the runbook's child died with its process group


def alive(pid: int) -> bool:
    """Return whether the process runs; a zombie that no parent has reaped yet counts as dead."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state


def test_target_not_appended_when_off(runbooks: ShellRunbooks, record_file: Path) -> None:
    runbooks.run(shell_command(action="no-target", parameters={"a": "1"}), minute())

    [call] = records(record_file)
    assert call["argv"] == ["--a=1"]


def test_unknown_action_rejected(runbooks: ShellRunbooks) -> None:
    with pytest.raises(CommandRejected, match="unknown action 'reboot' for the shell executor; known: drain, fail"):
        runbooks.check(shell_command(action="reboot"))


def test_parameter_outside_allow_list_rejected(runbooks: ShellRunbooks) -> None:
    assert runbooks.check(shell_command(action="strict", parameters={"mode": "soft"})) is None
    with pytest.raises(CommandRejected, match="unknown parameter 'force' for action strict; known: mode"):
        runbooks.check(shell_command(action="strict", parameters={"force": "yes"}))


@pytest.mark.parametrize(("parameters", "message"), [
    ({"-rf": "x"}, "invalid parameter name '-rf'"),
    ({"a=b": "x"}, "invalid parameter name 'a=b'"),
    ({"note": "a\x00b"}, "contains a NUL character"),
    ({"target": "other"}, "parameter 'target' conflicts with the --target argument"),
])
def test_invalid_parameters_rejected(runbooks: ShellRunbooks, parameters: dict[str, str], message: str) -> None:
    with pytest.raises(CommandRejected, match=message):
        runbooks.check(shell_command(parameters=parameters))


def test_precondition_holds(runbooks: ShellRunbooks) -> None:
    assert runbooks.check(shell_command(preconditions={"config_version": "v2"})) is None


def test_precondition_fails(runbooks: ShellRunbooks, record_file: Path) -> None:
    reason = runbooks.check(shell_command(preconditions={"config_version": "v1"}))

    assert reason == "config_version=v1: check exited with status 1: current is v2"
    assert records(record_file) == []


def test_unknown_precondition_rejected(runbooks: ShellRunbooks) -> None:
    with pytest.raises(CommandRejected, match="unknown precondition 'healthy' for action drain; known: config_version"):
        runbooks.check(shell_command(preconditions={"healthy": "true"}))


def test_missing_program_rejected_at_start(tmp_path: Path) -> None:
    settings = ShellSettings(actions={"drain": ShellAction(argv=["no-such-runbook-program"])})

    with pytest.raises(ConfigurationError, match="shell.actions.drain.argv: program 'no-such-runbook-program' not found"):
        ShellRunbooks(settings, tmp_path)


def test_not_executable_rejected_at_start(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    settings = ShellSettings(actions={"drain": ShellAction(argv=[str(plain)])})

    with pytest.raises(ConfigurationError, match="not found or not executable"):
        ShellRunbooks(settings, tmp_path)


def test_no_actions_rejected_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no actions are configured"):
        ShellRunbooks(ShellSettings(), tmp_path)


def test_program_found_on_path(tmp_path: Path) -> None:
    runbooks = ShellRunbooks(ShellSettings(actions={"say": ShellAction(argv=["echo", "said:"])}), tmp_path)

    outcome = runbooks.run(shell_command(action="say", parameters={"word": "hello"}), minute())

    assert outcome.status == "succeeded"
    assert outcome.output["stdout"] == "said: --target=node-7 --word=hello\n"


def test_long_output_keeps_tail(tmp_path: Path) -> None:
    noisy = script(tmp_path, "noisy.py", "import sys\nsys.stdout.write('a' * 5000 + 'END')\nsys.exit(0)\n")
    runbooks = ShellRunbooks(ShellSettings(output_tail_chars=100, actions={"noisy": ShellAction(argv=[noisy])}),
                             tmp_path)

    outcome = runbooks.run(shell_command(action="noisy"), minute())

    assert outcome.output["stdout"].endswith("END")
    assert len(outcome.output["stdout"]) == 103
