"""mitigate simulate: offline replay of recorded anomalies through policy files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mitigate.automation import AutomationSettings
from mitigate.cli import main
from mitigate.errors import MitigateError
from mitigate.policy import load_policy_files
from mitigate.simulation import differences, read_events, replay, summarise, write_events
from tests.unit.builders import NOW, POLICY_DIR, anomaly_event, asset_context


def recorded(tmp_path: Path) -> Path:
    events = [
        anomaly_event(event_id=f"e{index}", event_time=NOW + timedelta(minutes=index), anomaly_type=kind,
                      confidence=confidence, fingerprint=f"machine-temperature-01:{kind}")
        for index, (kind, confidence) in enumerate([("spike", 0.95), ("spike", 0.95), ("dip", 0.8)])
    ]
    path = tmp_path / "events.jsonl"
    write_events(path, events)
    return path


def run(path: Path, policies: Path = POLICY_DIR) -> list:  # type: ignore[type-arg]
    return replay(read_events(path), load_policy_files([policies]), automation=AutomationSettings(),
                  assets={"machine-temperature-01": asset_context()}, silences=[], source=str(path))


def test_replay_decides_each_event(tmp_path: Path) -> None:
    replayed = run(recorded(tmp_path))

    assert [item.decision.record.outcome for item in replayed] == ["auto", "suppress", "auto"]
    assert replayed[1].decision.record.reason_code == "duplicate"


def test_replay_is_deterministic(tmp_path: Path) -> None:
    path = recorded(tmp_path)

    first = [item.decision.record for item in run(path)]
    second = [item.decision.record for item in run(path)]

    assert first == second


def test_summary_counts_incidents(tmp_path: Path) -> None:
    lines = summarise(run(recorded(tmp_path)))

    assert lines == ["3 events, 2 incidents, 2 commands", "outcomes: auto 2, suppress 1"]


def test_differences_between_policy_sets(tmp_path: Path) -> None:
    path = recorded(tmp_path)
    stricter = tmp_path / "stricter"
    stricter.mkdir()
    for source in POLICY_DIR.glob("*.yaml"):
        text = source.read_text().replace("min_confidence: 0.75", "min_confidence: 0.9")
        (stricter / source.name).write_text(text)

    changed = differences(run(path), run(path, stricter))

    assert changed == [
        "line 3 machine-temperature-01 dip high firing: auto/policy-matched [machine-temperature-high] -> "
        "review/gate-failed [machine-temperature-high]"
    ]


def test_invalid_line_named(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "x"}\n')

    with pytest.raises(MitigateError, match="events.jsonl: line 1: invalid AnomalyEvent"):
        list(read_events(path))


def test_cli_prints_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recorded(tmp_path)

    status = main(["simulate", "--events", str(path), "--policies", str(POLICY_DIR), "--against", str(POLICY_DIR),
                   "--quiet", "--assets", str(Path(POLICY_DIR).parent / "assets.yaml")])

    output = capsys.readouterr().out
    assert status == 0
    assert "0 of 3 decisions differ" in output
