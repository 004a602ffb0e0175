"""Unit tests for mitigate.evaluation: anomalies against labelled windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mitigate.cli import main
from mitigate.evaluation import EvaluationError, Window, episodes, evaluate, load_windows
from mitigate.models import AnomalyEvent
from tests.unit.builders import CONFIG_DIR, anomaly_event

LABELS = CONFIG_DIR.parent / "data" / "nab" / "machine_temperature_system_failure.windows.json"
START = datetime(2014, 1, 1, tzinfo=UTC)
WINDOWS = [Window(START, START + timedelta(hours=10)), Window(START + timedelta(days=2), START + timedelta(days=3))]


def event(hours: float, status: str = "firing", fingerprint: str = "m:spike", source: bool = True) -> AnomalyEvent:
    moment = START + timedelta(hours=hours)
    annotations = {"source_time": moment.replace(tzinfo=None).isoformat()} if source else {}
    # The event time is the replay time; the reading's time is in source_time.
    return anomaly_event(event_time=datetime(2026, 12, 4, tzinfo=UTC) if source else moment, status=status,
                         fingerprint=fingerprint, annotations=annotations)


def test_window_detected_with_delay() -> None:
    result = evaluate([event(2), event(3, "resolved")], WINDOWS, UTC)

    assert result.windows[0].delay_s == 7200
    assert result.windows[1].detected_at is None
    assert result.recall == 0.5


def test_false_alarm_episode() -> None:
    result = evaluate([event(2), event(3, "resolved"), event(30), event(31, "resolved")], WINDOWS, UTC)

    assert (result.episodes_inside, result.episodes_outside) == (1, 1)
    assert result.episode_precision == 0.5
    assert result.false_alarms[0].start == START + timedelta(hours=30)


def test_episode_placed_at_first_event() -> None:
    # The episode starts inside the first window and goes on past its end: it counts as inside,
    # while its later firing event (a severity rise) counts as outside at event level.
    result = evaluate([event(9), event(11), event(12, "resolved")], WINDOWS, UTC)

    assert (result.episodes_inside, result.episodes_outside) == (1, 0)
    assert (result.events_inside, result.events_outside) == (1, 1)


def test_fingerprints_are_separate_episodes() -> None:
    found = episodes([event(1), event(2, fingerprint="m:dip"), event(3, "resolved")], UTC)

    assert [(episode.fingerprint, episode.events) for episode in found] == [("m:spike", 1), ("m:dip", 1)]


def test_event_time_without_annotation() -> None:
    result = evaluate([event(50, source=False)], WINDOWS, UTC)

    assert result.windows[1].delay_s == 2 * 3600


def test_no_events_gives_no_precision() -> None:
    result = evaluate([], WINDOWS, UTC)

    assert result.episode_precision is None
    assert result.recall == 0.0


def test_shipped_labels() -> None:
    windows = load_windows(LABELS, None, UTC)

    assert [window.start for window in windows][0] == datetime(2013, 12, 10, 6, 25, tzinfo=UTC)
    assert len(windows) == 4


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2]", "expected an object that maps a series name"),
    ('{"a": [], "b": []}', "contains 2 series (a, b, ...); choose one with --series"),
    ('{"a": [["2014-01-01", "x"]]}', "a[0]: invalid timestamp 'x'"),
    ('{"a": [["2014-01-02", "2014-01-01"]]}', "a[0]: the window ends before it starts"),
    ('{"a": [["2014-01-02"]]}', "a[0]: expected [start, end] as two timestamps"),
    ("{", "invalid JSON"),
])
def test_invalid_labels(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(content)

    with pytest.raises(EvaluationError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_windows(path, None, UTC)


def test_unknown_series(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"a": []}')

    with pytest.raises(EvaluationError, match="no series 'b'; it contains: a"):
        load_windows(path, "b", UTC)


def test_command_on_written_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    series = CONFIG_DIR.parent / "data" / "nab" / "machine_temperature_system_failure.csv"
    assert main(["detect", "--write", str(events), "--allow-unordered", str(series)]) == 0
    capsys.readouterr()

    assert main(["evaluate", "--labels", str(LABELS), "--events", str(events), "--json"]) == 0

    figures = json.loads(capsys.readouterr().out)
    assert figures["windows"] == 4
    assert 0 < figures["episode_precision"] <= 1
    assert figures["windows_detected"] == len([item for item in figures["per_window"] if item["detected_at"]])
