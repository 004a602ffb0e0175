"""Unit tests for mitigate.detector: the CSV reader, the robust z-score and the hysteresis."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from mitigate.detector import (
    MAD_FLOOR_ABSOLUTE,
    MAD_FLOOR_RELATIVE,
    MAD_TO_SIGMA,
    Reading,
    RobustZScoreDetector,
    SeriesFormatError,
    Transition,
    confidence_for,
    read_series,
    robust_z_score,
    severity_for,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)

# A window of 210 points over the base pattern contains each of 9.0, 9.1, ..., 11.0 ten
# times: median 10.0, MAD 0.5, so the score scale is MAD_TO_SIGMA * 0.5 = 0.74.
WINDOW = 210
SPIKE = 15.0  # z is about +6.7
DIP = 5.0  # z is about -6.7
BETWEEN_THRESHOLDS = 12.4  # z is about 3.2: not anomalous, but not calm either
CALM = 10.0  # z is about 0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def base_value(index: int) -> float:
    """Return the value at `index` of a pattern that visits each of 9.0, 9.1, ..., 11.0
    once in every 21 points, in a fixed scrambled order."""
    return 10.0 + ((index * 8) % 21 - 10) * 0.1


def make_readings(values: Iterable[float]) -> list[Reading]:
    return [Reading(START + index * STEP, value) for index, value in enumerate(values)]


def run_detector(
    detector: RobustZScoreDetector, values: Iterable[float]
) -> list[tuple[int, Transition]]:
    """Feed the values in order and return each transition with the index that caused it."""
    transitions: list[tuple[int, Transition]] = []
    for index, reading in enumerate(make_readings(values)):
        transition = detector.update(reading)
        if transition is not None:
            transitions.append((index, transition))
    return transitions


def baseline_values(count: int = WINDOW) -> list[float]:
    return [base_value(index) for index in range(count)]


def write_file(directory: Path, content: str | bytes) -> Path:
    path = directory / "series.csv"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def zone_or_skip(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pytest.skip(f"time zone data for {name} is not installed")


# read_series: valid input


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            "timestamp,value\n2024-01-01T00:00:00Z,1.5\n2024-01-01T00:05:00Z,-2\n",
            [(utc(2024, 1, 1, 0, 0), 1.5), (utc(2024, 1, 1, 0, 5), -2.0)],
            id="two-columns",
        ),
        pytest.param(
            "id,value,timestamp,note\n7,3.25,2024-01-01 00:00:00,first\n8,4,2024-01-01 00:05:00,\n",
            [(utc(2024, 1, 1, 0, 0), 3.25), (utc(2024, 1, 1, 0, 5), 4.0)],
            id="extra-columns-any-order",
        ),
        pytest.param(
            "\ufeff timestamp , value \r\n\r\n2024-01-01T00:00:00Z, 1e3 \r\n   \r\n",
            [(utc(2024, 1, 1), 1000.0)],
            id="bom-crlf-blank-lines-spaces",
        ),
        pytest.param(
            "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:00:00Z,2\n",
            [(utc(2024, 1, 1), 1.0), (utc(2024, 1, 1), 2.0)],
            id="equal-timestamps",
        ),
        pytest.param(
            'timestamp,value,note\n2024-01-01T00:00:00Z,5,"two\nlines"\n',
            [(utc(2024, 1, 1), 5.0)],
            id="quoted-line-break",
        ),
        pytest.param("timestamp,value\n", [], id="header-only"),
    ],
)
def test_read_series_valid(
    tmp_path: Path, content: str, expected: list[tuple[datetime, float]]
) -> None:
    readings = list(read_series(write_file(tmp_path, content)))

    assert readings == [Reading(timestamp, value) for timestamp, value in expected]


def test_read_series_timestamps_are_utc(tmp_path: Path) -> None:
    path = write_file(tmp_path, "timestamp,value\n2024-01-01T12:00:00+02:00,1\n")

    (reading,) = read_series(path)

    assert reading.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("zone", "text", "expected"),
    [
        pytest.param(None, "2024-01-01 12:00:00", utc(2024, 1, 1, 12, 0), id="default-utc"),
        pytest.param(
            timezone(timedelta(hours=2)), "2024-01-01 12:00", utc(2024, 1, 1, 10, 0), id="plus-2"
        ),
        pytest.param(
            timezone(timedelta(hours=-5)),
            "2024-01-01T12:00:00",
            utc(2024, 1, 1, 17, 0),
            id="minus-5",
        ),
        pytest.param(
            "Europe/Berlin", "2024-01-15 12:00", utc(2024, 1, 15, 11, 0), id="berlin-winter"
        ),
        pytest.param(
            "Europe/Berlin", "2024-07-15 12:00", utc(2024, 7, 15, 10, 0), id="berlin-summer"
        ),
        # 02:30 happens twice on 2024-10-27 in Berlin, and the first (summer time) is used.
        pytest.param(
            "Europe/Berlin", "2024-10-27 02:30", utc(2024, 10, 27, 0, 30), id="berlin-ambiguous"
        ),
    ],
)
def test_read_series_naive_timestamps(
    tmp_path: Path, zone: tzinfo | str | None, text: str, expected: datetime
) -> None:
    path = write_file(tmp_path, f"timestamp,value\n{text},1\n")
    if isinstance(zone, str):
        zone = zone_or_skip(zone)

    readings = list(read_series(path) if zone is None else read_series(path, timezone=zone))

    assert readings == [Reading(expected, 1.0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T12:00:00Z", utc(2024, 1, 1, 12, 0)),
        ("2024-01-01T12:00:00+02:00", utc(2024, 1, 1, 10, 0)),
        ("2024-01-01 12:00:00-03:30", utc(2024, 1, 1, 15, 30)),
        ("2024-01-01T12:00:00.250+00:00", datetime(2024, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_read_series_offset_timestamps_ignore_timezone(
    tmp_path: Path, text: str, expected: datetime
) -> None:
    path = write_file(tmp_path, f"timestamp,value\n{text},1\n")

    readings = list(read_series(path, timezone=timezone(timedelta(hours=5))))

    assert readings == [Reading(expected, 1.0)]


# read_series: invalid input


@pytest.mark.parametrize(
    ("content", "line", "column", "reason"),
    [
        pytest.param(b"", 1, None, "missing header row: the file is empty", id="empty-file"),
        pytest.param(
            b"time,value\n2024-01-01T00:00:00Z,1\n",
            1,
            "timestamp",
            "missing column 'timestamp' in the header (found 'time', 'value')",
            id="missing-timestamp-column",
        ),
        pytest.param(
            b"timestamp,val\n2024-01-01T00:00:00Z,1\n",
            1,
            "value",
            "missing column 'value' in the header (found 'timestamp', 'val')",
            id="missing-value-column",
        ),
        pytest.param(
            b"\n2024-01-01T00:00:00Z,1\n",
            1,
            "timestamp",
            "missing column 'timestamp' in the header (found no columns)",
            id="blank-header",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,1\nyesterday,2\n",
            3,
            "timestamp",
            "invalid ISO 8601 timestamp 'yesterday'",
            id="invalid-timestamp",
        ),
        pytest.param(
            b"timestamp,value\n2024-13-01T00:00:00Z,1\n",
            2,
            "timestamp",
            "invalid ISO 8601 timestamp '2024-13-01T00:00:00Z'",
            id="month-out-of-range",
        ),
        pytest.param(
            b"timestamp,value\n,1\n",
            2,
            "timestamp",
            "invalid ISO 8601 timestamp ''",
            id="empty-timestamp",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,abc\n",
            2,
            "value",
            "invalid number 'abc'",
            id="non-numeric-value",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,\n",
            2,
            "value",
            "invalid number ''",
            id="empty-value",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,1,5\n",
            2,
            None,
            "wrong number of fields: the row has 3, but the header has 2. Quote fields "
            "that contain commas.",
            id="decimal-comma-unquoted",
        ),
        pytest.param(
            b'timestamp,value\n2024-01-01T00:00:00Z,"1,5"\n',
            2,
            "value",
            "invalid number '1,5'",
            id="decimal-comma",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,nan\n",
            2,
            "value",
            "invalid value 'nan': it must be finite",
            id="nan",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,inf\n",
            2,
            "value",
            "invalid value 'inf': it must be finite",
            id="infinity",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,-Infinity\n",
            2,
            "value",
            "invalid value '-Infinity': it must be finite",
            id="negative-infinity",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,1e999\n",
            2,
            "value",
            "invalid value '1e999': it must be finite",
            id="overflow",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:10:00Z,1\n2024-01-01T00:05:00Z,2\n",
            3,
            "timestamp",
            "timestamp 2024-01-01T00:05:00+00:00 is earlier than the previous row's "
            "2024-01-01T00:10:00+00:00: rows must be sorted by time",
            id="backwards",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T01:00:00+01:00,1\n2024-01-01T00:30:00Z,2\n"
            b"2024-01-01T01:00:00+02:00,3\n",
            4,
            "timestamp",
            "timestamp 2023-12-31T23:00:00+00:00 is earlier than the previous row's "
            "2024-01-01T00:30:00+00:00",
            id="backwards-across-offsets",
        ),
        pytest.param(
            b"value,note,timestamp\n1,a\n",
            2,
            None,
            "wrong number of fields: the row has 2, but the header has 3",
            id="short-row",
        ),
        pytest.param(
            b"timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,\xff\n",
            3,
            None,
            "invalid UTF-8 at byte 21 of the line",
            id="invalid-utf8",
        ),
        pytest.param(
            b'timestamp,value\n2024-01-01T00:00:00Z,"1\n',
            2,
            None,
            "invalid CSV: unexpected end of data",
            id="unterminated-quote",
        ),
        pytest.param(
            b'timestamp,value\n2024-01-01T00:00:00Z,"1"2\n',
            2,
            None,
            "invalid CSV: ',' expected after '\"'",
            id="text-after-quote",
        ),
    ],
)
def test_read_series_invalid(
    tmp_path: Path, content: bytes, line: int, column: str | None, reason: str
) -> None:
    path = write_file(tmp_path, content)

    with pytest.raises(SeriesFormatError) as caught:
        list(read_series(path))

    error = caught.value
    assert error.path == path
    assert error.line == line
    assert error.column == column
    assert reason in error.reason
    assert str(error).startswith(f"{path}: line {line}")
    assert reason in str(error)


def test_read_series_error_names_column(tmp_path: Path) -> None:
    path = write_file(tmp_path, "timestamp,value\n2024-01-01T00:00:00Z,abc\n")

    with pytest.raises(SeriesFormatError) as caught:
        list(read_series(path))

    assert str(caught.value) == f"{path}: line 2, column 'value': invalid number 'abc'"


def test_read_series_yields_rows_before_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,x\n")
    readings = read_series(path)

    first = next(readings)

    assert first == Reading(utc(2024, 1, 1), 1.0)
    with pytest.raises(SeriesFormatError, match="line 3"):
        next(readings)


def test_read_series_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_series(tmp_path / "absent.csv"))


def test_series_format_error_is_value_error() -> None:
    assert issubclass(SeriesFormatError, ValueError)


def test_series_format_error_pickles() -> None:
    error = SeriesFormatError(Path("/data/a.csv"), 7, "value", "invalid number 'x'")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.path, copy.line, copy.column, copy.reason) == (
        Path("/data/a.csv"),
        7,
        "value",
        "invalid number 'x'",
    )
    assert str(copy) == str(error)


# Reading


def test_reading_rejects_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        Reading(datetime(2024, 1, 1), 1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_reading_rejects_non_finite_value(value: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number"):
        Reading(START, value)


def test_reading_converts_to_utc() -> None:
    reading = Reading(datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))), 1.0)

    assert reading.timestamp.tzinfo is UTC
    assert reading.timestamp == utc(2024, 1, 1, 10)


# robust_z_score


@pytest.mark.parametrize(
    ("window", "value", "expected"),
    [
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 10.0, 7 / MAD_TO_SIGMA, id="odd-count"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 2.5, 0.0, id="even-count-at-median"),
        pytest.param(
            [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0],
            9.0,
            4.5 / (MAD_TO_SIGMA * 0.5),
            id="even-count",
        ),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], -1.0, -4 / MAD_TO_SIGMA, id="negative"),
        pytest.param([7.0], 8.0, 1 / (MAD_TO_SIGMA * 7 * MAD_FLOOR_RELATIVE), id="single-value"),
        pytest.param(
            [1.0, 1.0, 1.0, 5.0, 9.0], 5.0, 4 / (MAD_TO_SIGMA * MAD_FLOOR_RELATIVE), id="mad-zero"
        ),
        pytest.param([0.0, 0.0, 0.0], 1e-6, 1 / MAD_TO_SIGMA, id="mad-zero-at-zero"),
    ],
)
def test_robust_z_score_values(window: list[float], value: float, expected: float) -> None:
    assert math.isclose(robust_z_score(value, window), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_robust_z_score_matches_brute_force() -> None:
    generator = random.Random(20240101)
    for _ in range(2000):
        size = generator.randint(1, 60)
        if generator.random() < 0.4:
            # Few distinct values, so ties around the median are common.
            window = [float(generator.randint(-3, 3)) for _ in range(size)]
        else:
            window = [generator.gauss(50.0, 10.0) for _ in range(size)]
        value = generator.uniform(-100.0, 200.0)
        median = statistics.median(window)
        mad = statistics.median([abs(item - median) for item in window])
        scale = MAD_TO_SIGMA * max(mad, MAD_FLOOR_RELATIVE * abs(median), MAD_FLOOR_ABSOLUTE)

        score = robust_z_score(value, sorted(window))

        assert math.isclose(score, (value - median) / scale, rel_tol=1e-9), window


def test_robust_z_score_empty_window() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        robust_z_score(1.0, [])


# RobustZScoreDetector: constructor


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window": 2}, "invalid window 2: it must be an integer >= 3"),
        ({"window": -10, "warmup": 5}, "invalid window -10: it must be an integer >= 3"),
        ({"warmup": 0}, "invalid warmup 0: it must be an integer >= 1"),
        ({"threshold": 0.0}, "invalid threshold 0.0: it must be a finite number > 0"),
        ({"threshold": math.inf}, "invalid threshold inf: it must be a finite number > 0"),
        (
            {"clear_threshold": 0.0},
            "invalid clear_threshold 0.0: it must be > 0 and < threshold (4.0)",
        ),
        (
            {"clear_threshold": -1.0},
            "invalid clear_threshold -1.0: it must be > 0 and < threshold (4.0)",
        ),
        (
            {"clear_threshold": 4.0},
            "invalid clear_threshold 4.0: it must be > 0 and < threshold (4.0)",
        ),
        (
            {"threshold": 3.0, "clear_threshold": 3.5},
            "invalid clear_threshold 3.5: it must be > 0 and < threshold (3.0)",
        ),
        (
            {"clear_threshold": math.nan},
            "invalid clear_threshold nan: it must be > 0 and < threshold (4.0)",
        ),
        ({"clear_after": 0}, "invalid clear_after 0: it must be an integer >= 1"),
    ],
)
def test_detector_rejects_invalid_arguments(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RobustZScoreDetector(**arguments)  # type: ignore[arg-type]


def test_detector_accepts_minimum_arguments() -> None:
    detector = RobustZScoreDetector(
        window=3, warmup=1, threshold=0.2, clear_threshold=0.1, clear_after=1
    )

    assert not detector.firing


def test_detector_exposes_settings() -> None:
    detector = RobustZScoreDetector(
        window=50, warmup=20, threshold=6.0, clear_threshold=3.0, clear_after=4
    )

    assert detector.window == 50
    assert detector.warmup == 20
    assert detector.threshold == 6.0
    assert detector.clear_threshold == 3.0
    assert detector.clear_after == 4


def test_detector_default_settings() -> None:
    detector = RobustZScoreDetector()

    assert detector.window == 288
    assert detector.warmup == 288
    assert detector.threshold == 4.0
    assert detector.clear_threshold == 2.5
    assert detector.clear_after == 3


# RobustZScoreDetector: scoring and transitions


@pytest.mark.parametrize(
    "baseline",
    [
        pytest.param([10.0] * WINDOW, id="constant"),
        pytest.param(baseline_values(), id="small-noise"),
    ],
)
def test_single_spike_fires_and_resolves_once(baseline: list[float]) -> None:
    detector = RobustZScoreDetector(window=WINDOW)
    spike_index = WINDOW + 50
    values = baseline + baseline[:50] + [SPIKE] + baseline[:100]

    transitions = run_detector(detector, values)

    assert [(index, transition.status) for index, transition in transitions] == [
        (spike_index, "firing"),
        (spike_index + 3, "resolved"),
    ]
    firing = transitions[0][1]
    resolved = transitions[1][1]
    assert firing.reading.value == SPIKE
    assert firing.score >= 4.0
    assert firing.peak_score == firing.score
    assert firing.started_at == START + spike_index * STEP
    assert resolved.started_at == firing.started_at
    assert resolved.peak_score == firing.peak_score
    assert abs(resolved.score) < 2.5
    assert not detector.firing


def test_dip_scores_negative_with_positive_peak() -> None:
    detector = RobustZScoreDetector(window=WINDOW)

    transitions = run_detector(detector, [*baseline_values(), DIP, CALM, CALM, CALM])

    firing = transitions[0][1]
    assert firing.score <= -4.0
    assert firing.peak_score == -firing.score


@pytest.mark.parametrize("warmup", [1, 5, 50, WINDOW, 2 * WINDOW])
def test_no_transition_during_warmup(warmup: int) -> None:
    detector = RobustZScoreDetector(window=WINDOW, warmup=warmup)
    # Alternating huge values would fire at once if they were scored.
    values = [base_value(0)] + [1000.0 if index % 2 else -1000.0 for index in range(1, warmup)]

    transitions: list[Transition | None] = []
    scores: list[float | None] = []
    for reading in make_readings(values):
        transitions.append(detector.update(reading))
        scores.append(detector.last_score)

    assert transitions == [None] * warmup
    assert scores == [None] * warmup
    assert not detector.firing


@pytest.mark.parametrize("warmup", [5, 50, WINDOW, 2 * WINDOW])
def test_first_point_after_warmup_can_fire(warmup: int) -> None:
    detector = RobustZScoreDetector(window=WINDOW, warmup=warmup)

    transitions = run_detector(detector, [*baseline_values(warmup), SPIKE])

    assert [(index, transition.status) for index, transition in transitions] == [(warmup, "firing")]


def test_default_warmup_is_window() -> None:
    detector = RobustZScoreDetector(window=5)
    for reading in make_readings([1.0, 2.0, 3.0, 4.0, 5.0]):
        detector.update(reading)

    assert detector.last_score is None
    detector.update(Reading(START + 5 * STEP, 3.0))
    assert detector.last_score == 0.0


def test_scores_point_against_previous_window_only() -> None:
    detector = RobustZScoreDetector(window=3)
    for reading in make_readings([100.0, 100.0, 100.0, 1.0, 2.0, 3.0]):
        detector.update(reading)

    detector.update(Reading(START + 6 * STEP, 4.0))

    # The window contains 1, 2, 3 (median 2, MAD 1), and the 100s have left it.
    assert detector.last_score == pytest.approx(2 / MAD_TO_SIGMA)


@pytest.mark.parametrize(
    ("threshold_offset", "expected"),
    [
        pytest.param(0, ["firing"], id="equal-fires"),
        pytest.param(1, [], id="just-below-stays-quiet"),
    ],
)
def test_fires_at_threshold_inclusive(threshold_offset: int, expected: list[str]) -> None:
    score = robust_z_score(8.0, [1.0, 2.0, 3.0, 4.0, 5.0])
    threshold = math.nextafter(score, math.inf) if threshold_offset else score
    detector = RobustZScoreDetector(window=5, threshold=threshold, clear_threshold=1.0)

    transitions = run_detector(detector, [1.0, 2.0, 3.0, 4.0, 5.0, 8.0])

    assert [transition.status for _, transition in transitions] == expected


def test_stays_firing_while_anomalous() -> None:
    detector = RobustZScoreDetector(window=WINDOW)
    spikes = [SPIKE, SPIKE + 2.0, SPIKE + 1.0, SPIKE, SPIKE]

    firing_states: list[bool] = []
    transitions: list[Transition] = []
    scores: list[float | None] = []
    for reading in make_readings(baseline_values() + spikes + [CALM] * 3):
        transition = detector.update(reading)
        if transition is not None:
            transitions.append(transition)
        firing_states.append(detector.firing)
        scores.append(detector.last_score)

    assert [transition.status for transition in transitions] == ["firing", "resolved"]
    assert firing_states[WINDOW : WINDOW + len(spikes)] == [True] * len(spikes)
    episode_scores = [abs(score) for score in scores[WINDOW:] if score is not None]
    assert transitions[1].peak_score == max(episode_scores)
    assert transitions[1].peak_score > transitions[0].peak_score


@pytest.mark.parametrize("clear_after", [1, 3, 6])
def test_resolves_after_clear_after_calm_points(clear_after: int) -> None:
    detector = RobustZScoreDetector(window=WINDOW, clear_after=clear_after)

    transitions = run_detector(detector, baseline_values() + [SPIKE] + [CALM] * 10)

    assert [(index, transition.status) for index, transition in transitions] == [
        (WINDOW, "firing"),
        (WINDOW + clear_after, "resolved"),
    ]


def test_point_between_thresholds_restarts_calm_count() -> None:
    detector = RobustZScoreDetector(
        window=WINDOW, threshold=4.0, clear_threshold=2.5, clear_after=3
    )
    after_spike = [CALM, CALM, BETWEEN_THRESHOLDS, CALM, CALM, CALM, CALM]
    values = [*baseline_values(), SPIKE, *after_spike]
    scores: list[float] = []
    transitions: list[tuple[int, str]] = []
    for reading in make_readings(values):
        transition = detector.update(reading)
        if transition is not None:
            transitions.append((len(scores), transition.status))
        if detector.last_score is not None:
            scores.append(detector.last_score)

    assert 2.5 <= scores[3] < 4.0  # The point between thresholds scored as intended.
    assert transitions == [(0, "firing"), (6, "resolved")]


def test_level_shift_fires_then_resolves() -> None:
    detector = RobustZScoreDetector(window=WINDOW)
    shift_index = WINDOW + 20
    before = [base_value(index) for index in range(shift_index)]
    after = [base_value(index) + 10.0 for index in range(shift_index, shift_index + 2 * WINDOW)]

    transitions = run_detector(detector, before + after)

    assert [transition.status for _, transition in transitions] == ["firing", "resolved"]
    firing_index, firing = transitions[0]
    resolved_index, resolved = transitions[1]
    assert firing_index == shift_index
    assert resolved.started_at == firing.started_at
    # The episode resolves once more than half of the window is at the new level, which
    # moves the median there.
    assert shift_index + WINDOW // 2 <= resolved_index < shift_index + WINDOW
    assert not detector.firing


@pytest.mark.parametrize("level", [0.0, 5.0, -3.0, 1e9])
def test_constant_series_never_fires(level: float) -> None:
    detector = RobustZScoreDetector(window=20)

    transitions: list[Transition | None] = []
    scores: list[float | None] = []
    for reading in make_readings([level] * 500):
        transitions.append(detector.update(reading))
        scores.append(detector.last_score)

    assert transitions == [None] * 500
    assert scores[20:] == [0.0] * 480


@pytest.mark.parametrize(
    ("level", "change"),
    [(100.0, 1e-4), (100.0, -1e-4), (1e9, 1.0), (0.0, 1e-12), (-5.0, 1e-9)],
)
def test_tiny_change_on_flat_series_scores_small(level: float, change: float) -> None:
    detector = RobustZScoreDetector(window=20)
    for reading in make_readings([level] * 20):
        detector.update(reading)

    transition = detector.update(Reading(START + 20 * STEP, level + change))

    score = detector.last_score
    assert transition is None
    assert score is not None
    assert math.isfinite(score)
    assert abs(score) < 1.0


def test_change_on_flat_series_uses_floor() -> None:
    detector = RobustZScoreDetector(window=20)
    for reading in make_readings([100.0] * 20):
        detector.update(reading)

    transition = detector.update(Reading(START + 20 * STEP, 101.0))

    expected = 1.0 / (MAD_TO_SIGMA * MAD_FLOOR_RELATIVE * 100.0)
    assert detector.last_score == pytest.approx(expected)
    assert transition is not None
    assert transition.status == "firing"


# severity_for and confidence_for


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, "low"),
        (4.0, "low"),
        (4.999, "low"),
        (5.0, "medium"),
        (-5.0, "medium"),
        (7.999, "medium"),
        (8.0, "high"),
        (-11.9, "high"),
        (12.0, "critical"),
        (-100.0, "critical"),
        (math.inf, "critical"),
    ],
)
def test_severity_for(score: float, expected: str) -> None:
    assert severity_for(score) == expected


def test_severity_for_nan() -> None:
    with pytest.raises(ValueError, match="invalid score nan"):
        severity_for(math.nan)


@pytest.mark.parametrize(
    ("score", "threshold", "expected"),
    [
        (0.0, 4.0, 0.0),
        (1.0, 4.0, 0.0),
        (2.0, 4.0, 0.0),
        (3.0, 4.0, 1 / 3),
        (4.0, 4.0, 0.5),
        (-4.0, 4.0, 0.5),
        (8.0, 4.0, 0.75),
        (40.0, 4.0, 0.95),
        (6.0, 6.0, 0.5),
        (math.inf, 4.0, 1.0),
        (-math.inf, 4.0, 1.0),
    ],
)
def test_confidence_for(score: float, threshold: float, expected: float) -> None:
    assert confidence_for(score, threshold) == pytest.approx(expected)


@pytest.mark.parametrize("threshold", [0.5, 4.0, 10.0])
def test_confidence_for_monotone_and_bounded(threshold: float) -> None:
    magnitudes = [index / 10 for index in range(0, 2001)] + [1e6, 1e300, math.inf]

    confidences = [confidence_for(magnitude, threshold) for magnitude in magnitudes]
    negated = [confidence_for(-magnitude, threshold) for magnitude in magnitudes]

    assert all(0.0 <= confidence <= 1.0 for confidence in confidences)
    assert all(low <= high for low, high in itertools.pairwise(confidences))
    assert negated == confidences
    assert confidences[-2] > 0.99


@pytest.mark.parametrize(
    ("score", "threshold", "message"),
    [
        (math.nan, 4.0, "invalid score nan"),
        (5.0, 0.0, "invalid threshold 0.0"),
        (5.0, -1.0, "invalid threshold -1.0"),
        (5.0, math.nan, "invalid threshold nan"),
    ],
)
def test_confidence_for_invalid(score: float, threshold: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        confidence_for(score, threshold)


# Real series


MACHINE_TEMPERATURE_CSV = Path(__file__).resolve().parents[2] / "data" / "nab" / "machine_temperature_system_failure.csv"

# Failure windows labelled for the NAB series machine_temperature_system_failure.csv,
# as naive timestamps (the file's timestamps are naive and read as UTC here).
MACHINE_TEMPERATURE_FAILURES = [
    ("2013-12-10 06:25", "2013-12-12 05:35"),
    ("2013-12-15 17:50", "2013-12-17 17:00"),
    ("2014-01-27 14:20", "2014-01-29 13:30"),
    ("2014-02-07 14:55", "2014-02-09 14:05"),
]


def firing_transitions(readings: Sequence[Reading]) -> list[Transition]:
    detector = RobustZScoreDetector()
    transitions = (detector.update(reading) for reading in readings)
    return [
        transition for transition in transitions if transition and transition.status == "firing"
    ]


def test_machine_temperature_defaults() -> None:
    # The file repeats the hour 2014-01-07 02:00 to 02:55; the detector reads it in file order.
    readings = list(read_series(MACHINE_TEMPERATURE_CSV, allow_unordered=True))

    firings = firing_transitions(readings)

    print(f"\n{len(firings)} firing transitions with the default settings:")
    for transition in firings:
        print(f"  {transition.started_at:%Y-%m-%d %H:%M} score {transition.score:+.1f}")
    assert len(readings) == 22695
    assert 10 <= len(firings) <= 100
    for start_text, end_text in MACHINE_TEMPERATURE_FAILURES:
        start = datetime.fromisoformat(start_text).replace(tzinfo=UTC)
        end = datetime.fromisoformat(end_text).replace(tzinfo=UTC)
        inside = [transition for transition in firings if start <= transition.started_at <= end]
        assert inside, f"no firing transition in the failure window {start_text} to {end_text}"
