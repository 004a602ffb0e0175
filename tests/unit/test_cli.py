"""Unit tests for mitigate.cli: argument errors, `policy validate` and `topics list`, with no broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mitigate import __version__
from mitigate.cli import main
from mitigate.topology import TopicSpec, Topology
from tests.unit.builders import POLICY_DIR, policy_data


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop MITIGATE_* variables of the calling shell, so that the defaults apply."""
    for name in list(os.environ):
        if name.startswith("MITIGATE_"):
            monkeypatch.delenv(name)


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    code = caught.value.code
    assert isinstance(code, int)
    return code


# (case, arguments, usage line, error line)
BAD_ARGUMENTS = [
    ("unknown-subcommand", ["frobnicate"], "usage: mitigate ",
     "mitigate: error: argument COMMAND: invalid choice: 'frobnicate'"),
    ("no-subcommand", [], "usage: mitigate ", "mitigate: error: the following arguments are required: COMMAND"),
    ("threshold-not-a-number", ["detect", "series.csv", "--threshold", "high"], "usage: mitigate detect ",
     "mitigate detect: error: argument --threshold: expected a number, got 'high'"),
    ("threshold-zero", ["detect", "series.csv", "--threshold", "0"], "usage: mitigate detect ",
     "mitigate detect: error: argument --threshold: must be greater than 0, got 0"),
    ("threshold-nan", ["detect", "series.csv", "--threshold", "nan"], "usage: mitigate detect ",
     "mitigate detect: error: argument --threshold: must be greater than 0, got nan"),
    ("window-not-an-integer", ["detect", "series.csv", "--window", "2.5"], "usage: mitigate detect ",
     "mitigate detect: error: argument --window: expected an integer, got '2.5'"),
    ("window-zero", ["detect", "series.csv", "--window", "0"], "usage: mitigate detect ",
     "mitigate detect: error: argument --window: must be at least 1, got 0"),
    ("unknown-timezone", ["detect", "series.csv", "--timezone", "Mars/Olympus_Mons"], "usage: mitigate detect ",
     "mitigate detect: error: argument --timezone: unknown time zone 'Mars/Olympus_Mons'; "
     "use an IANA name such as UTC or Europe/Berlin"),
    ("timezone-path", ["detect", "series.csv", "--timezone", "../etc/localtime"], "usage: mitigate detect ",
     "mitigate detect: error: argument --timezone: unknown time zone '../etc/localtime'; "
     "use an IANA name such as UTC or Europe/Berlin"),
    ("unknown-event-time", ["detect", "series.csv", "--event-time", "now"], "usage: mitigate detect ",
     "mitigate detect: error: argument --event-time: invalid choice: 'now'"),
    ("detect-without-csv", ["detect"], "usage: mitigate detect ",
     "mitigate detect: error: the following arguments are required: CSV"),
    ("validate-without-path", ["policy", "validate"], "usage: mitigate policy validate ",
     "mitigate policy validate: error: the following arguments are required: PATH"),
    ("unknown-topics-action", ["topics", "delete"], "usage: mitigate topics ",
     "mitigate topics: error: argument ACTION: invalid choice: 'delete'"),
    ("report-negative-timeout", ["report", "--timeout", "-5"], "usage: mitigate report ",
     "mitigate report: error: argument --timeout: must be greater than 0, got -5"),
]
BAD_ARGUMENT_IDS = [case[0] for case in BAD_ARGUMENTS]


@pytest.mark.parametrize("argv", [case[1] for case in BAD_ARGUMENTS], ids=BAD_ARGUMENT_IDS)
def test_bad_argument_exits_2(argv: list[str]) -> None:
    assert exit_code(argv) == 2


@pytest.mark.parametrize(("argv", "usage"), [case[1:3] for case in BAD_ARGUMENTS], ids=BAD_ARGUMENT_IDS)
def test_bad_argument_prints_usage(capsys: pytest.CaptureFixture[str], argv: list[str], usage: str) -> None:
    exit_code(argv)

    assert capsys.readouterr().err.startswith(usage)


@pytest.mark.parametrize(("argv", "error"), [(case[1], case[3]) for case in BAD_ARGUMENTS], ids=BAD_ARGUMENT_IDS)
def test_bad_argument_names_problem(capsys: pytest.CaptureFixture[str], argv: list[str], error: str) -> None:
    exit_code(argv)

    assert error in capsys.readouterr().err


@pytest.mark.parametrize("argv", [case[1] for case in BAD_ARGUMENTS], ids=BAD_ARGUMENT_IDS)
def test_bad_argument_quiet_stdout(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    exit_code(argv)

    assert capsys.readouterr().out == ""


def test_timezone_folder_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["detect", "series.csv", "--timezone", "America"]) == 2
    assert "argument --timezone: unknown time zone 'America'" in capsys.readouterr().err


def test_version_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out == f"mitigate {__version__}\n"


# policy validate


def test_validate_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(POLICY_DIR)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "valid     industrial-low-shadow  mode=shadow steps=1",
        "valid     machine-temperature-high  mode=enforce steps=3",
    ]


def write_policy(folder: Path, data: object) -> Path:
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_validate_invalid_exits_1(tmp_path: Path) -> None:
    path = write_policy(tmp_path, policy_data(plan=[{"id": "page", "executor": "pagerduty", "action": "page"}]))

    assert main(["policy", "validate", str(path)]) == 1


def test_validate_names_file_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path, policy_data(plan=[{"id": "page", "executor": "pagerduty", "action": "page"}]))

    main(["policy", "validate", str(path)])

    assert capsys.readouterr().err == (
        f"mitigate: error: {path}: plan.0.executor: unknown executor 'pagerduty'; "
        "use one of: demo-target, shell, ticket, webhook\n"
    )


def test_validate_invalid_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path, policy_data(gates={"min_confidence": 2}))

    main(["policy", "validate", str(path)])

    assert capsys.readouterr().out == ""


def test_validate_invalid_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: broken\nplan: [\n", encoding="utf-8")

    assert main(["policy", "validate", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"mitigate: error: {path}: (file): invalid YAML: ")


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"

    assert main(["policy", "validate", str(path)]) == 1
    assert capsys.readouterr().err == f"mitigate: error: {path}: (file): cannot read: No such file or directory\n"


def test_validate_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy.yaml"
    copy.write_text((POLICY_DIR / "machine-temperature.yaml").read_text(encoding="utf-8"), encoding="utf-8")

    assert main(["policy", "validate", str(POLICY_DIR), str(copy)]) == 1
    assert capsys.readouterr().err == (
        f"mitigate: error: {copy}: id: policy id 'machine-temperature-high' is already used by "
        f"{POLICY_DIR / 'machine-temperature.yaml'}\n"
    )


# topics list


def test_topics_list_exits_0() -> None:
    assert main(["topics", "list"]) == 0


@pytest.mark.parametrize("spec", Topology().specs(), ids=lambda spec: spec.base_name)
def test_topics_list_names_topic(capsys: pytest.CaptureFixture[str], spec: TopicSpec) -> None:
    main(["topics", "list"])

    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert spec.base_name in names


def test_topics_list_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    main(["topics", "list"])

    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["topic", "partitions", "cleanup", "key", "schema"]
    assert [row[0] for row in rows[1:]] == [spec.base_name for spec in Topology().specs()]


def test_topics_list_settings(capsys: pytest.CaptureFixture[str]) -> None:
    main(["topics", "list"])

    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["anomalies"][1:3] == ["4", "delete"]
    assert rows["policies"][1:3] == ["1", "compact"]
    assert rows["assets"][-1] == "AssetContext"
    assert rows["actions.ticket"][-1] == "ActionCommand"


def test_topics_list_prefix(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MITIGATE_TOPIC_PREFIX", "staging.")

    main(["topics", "list"])

    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["staging." + spec.base_name for spec in Topology().specs()]


def test_topics_list_partitions(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MITIGATE_PARTITIONS", "12")

    main(["topics", "list"])

    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["decisions"][1] == "12"
    assert rows["policies"][1] == "1"


# detect, as far as it runs without a broker


def test_detect_missing_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.csv"

    assert main(["detect", str(path), "--dry-run"]) == 1
    assert capsys.readouterr().err == f"mitigate: error: {path}: cannot read: No such file or directory\n"
