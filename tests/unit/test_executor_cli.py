"""Unit tests for the `executor` subcommand and `python -m mitigate.executor`, with no broker."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from mitigate.executor.__main__ import main
from mitigate.executor.cli import add_parser, run_executor


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop MITIGATE_* variables of the calling shell, so that the defaults apply."""
    for name in list(os.environ):
        if name.startswith("MITIGATE_"):
            monkeypatch.delenv(name)


def mitigate_parser() -> argparse.ArgumentParser:
    """A parser shaped like `mitigate`'s, with the executor subcommand added as cli.py would add it."""
    parser = argparse.ArgumentParser(prog="mitigate")
    parser.add_argument("--bootstrap-servers")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(commands)
    return parser


def test_run_arguments_parsed() -> None:
    args = mitigate_parser().parse_args(
        ["executor", "run", "ticket", "--config", "my.yaml", "--state-dir", "/var/lib/mitigate/ticket"]
    )

    assert args.command == "executor"
    assert args.action == "run"
    assert args.name == "ticket"
    assert args.config == Path("my.yaml")
    assert args.state_dir == Path("/var/lib/mitigate/ticket")
    assert args.handler is run_executor


def test_run_defaults() -> None:
    args = mitigate_parser().parse_args(["executor", "run", "demo-target"])

    assert args.config == Path("config/executors.yaml")
    assert args.state_dir is None


@pytest.mark.parametrize(("argv", "message"), [
    (["executor", "run", "pager"], "argument NAME: invalid choice: 'pager'"),
    (["executor", "run"], "the following arguments are required: NAME"),
    (["executor"], "the following arguments are required: ACTION"),
])
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        mitigate_parser().parse_args(argv)

    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_module_missing_config_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "demo-target", "--config", str(tmp_path / "absent.yaml"), "--state-dir", str(tmp_path)])

    assert code == 1
    assert f"mitigate executor: error: {tmp_path / 'absent.yaml'}: cannot read" in capsys.readouterr().err


def test_module_invalid_config_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "executors.yaml"
    config.write_text("shell:\n  actions:\n    drain: {argv: [no-such-runbook-program]}\n")

    code = main(["run", "shell", "--config", str(config), "--state-dir", str(tmp_path / "state")])

    assert code == 1
    assert "program 'no-such-runbook-program' not found" in capsys.readouterr().err


def test_module_invalid_setting_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MITIGATE_LOG_LEVEL", "loud")

    code = main(["run", "ticket", "--config", str(tmp_path / "absent.yaml")])

    assert code == 1
    assert "invalid setting MITIGATE_LOG_LEVEL='loud'" in capsys.readouterr().err


def test_module_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "pager"])

    assert caught.value.code == 2
    assert "usage: python -m mitigate.executor run" in capsys.readouterr().err
