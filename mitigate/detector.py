"""Reference anomaly detector: a streaming robust z-score with alert-style hysteresis.

The module is pure logic with no I/O besides `read_series`, so the Kafka stages and the
offline tools can share one definition of "anomalous".
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

__all__ = [
    "MAD_FLOOR_ABSOLUTE",
    "MAD_FLOOR_RELATIVE",
    "MAD_TO_SIGMA",
    "Reading",
    "RobustZScoreDetector",
    "SeriesFormatError",
    "Transition",
    "confidence_for",
    "read_series",
    "robust_z_score",
    "severity_for",
]

# Consistency constant that makes 1.4826 * MAD estimate the standard deviation of
# normally distributed data (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826

# Lower bound for the MAD used as the score's scale: max(MAD_FLOOR_RELATIVE * |median|,
# MAD_FLOOR_ABSOLUTE). It applies whenever the window's MAD is smaller, for example when
# more than half of the window has one value and the MAD is 0. Without it a flat series
# would divide by zero. With it a change on a flat series scores about
# (change / |median|) * 674, so a 1% step scores 6.7 and fires at the default threshold,
# while a 0.01% step scores 0.07. A flat series at zero uses the absolute floor, so there
# a step of 1e-5 already scores about 6.7.
MAD_FLOOR_RELATIVE = 1e-3
MAD_FLOOR_ABSOLUTE = 1e-6

_TIMESTAMP_COLUMN = "timestamp"
_VALUE_COLUMN = "value"

Severity = Literal["low", "medium", "high", "critical"]

# Minimum |score| of each severity, checked from the top. Scores below 5 are "low".
_SEVERITY_LEVELS: tuple[tuple[float, Severity], ...] = (
    (12.0, "critical"),
    (8.0, "high"),
    (5.0, "medium"),
)


@dataclass(frozen=True, slots=True)
class Reading:
    """One point of a time series.

    The timestamp must be timezone-aware and is converted to UTC. The value must be
    finite. Construction raises ValueError otherwise.
    """

    timestamp: datetime
    value: float

    def __post_init__(self) -> None:
        if self.timestamp.utcoffset() is None:
            raise ValueError(
                f"invalid Reading timestamp {self.timestamp.isoformat()}: it must be "
                "timezone-aware, for example with tzinfo=datetime.UTC"
            )
        if not math.isfinite(self.value):
            raise ValueError(f"invalid Reading value {self.value!r}: it must be a finite number")
        if self.timestamp.tzinfo is not UTC:
            # Frozen dataclasses allow assignment only through object.__setattr__.
            object.__setattr__(self, "timestamp", self.timestamp.astimezone(UTC))


class SeriesFormatError(ValueError):
    """Invalid content in a series CSV file, with the file, line and column where it was found.

    `line` is the 1-based physical line number in the file, which for a row with a quoted
    line break is the row's last line. `column` is the CSV column name, or None when the
    problem concerns the whole line or file. `reason` is the description without the
    location, and str() of the error contains all four parts.
    """

    def __init__(self, path: Path, line: int, column: str | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason
        location = f"{path}: line {line}"
        if column is not None:
            location += f", column '{column}'"
        super().__init__(f"{location}: {reason}")

    def __reduce__(self) -> tuple[type[SeriesFormatError], tuple[Path, int, str | None, str]]:
        # The default reduction would call __init__ with the formatted message only.
        return (type(self), (self.path, self.line, self.column, self.reason))


def read_series(path: Path, *, timezone: tzinfo = UTC, allow_unordered: bool = False) -> Iterator[Reading]:
    """Yield the readings of a CSV file in file order.

    The file is UTF-8 (an initial byte order mark is allowed) with a header row that
    contains `timestamp` and `value` columns in any position. Other columns are ignored,
    and so are blank lines, but every row must have as many fields as the header.
    Timestamps are ISO 8601 as accepted by `datetime.fromisoformat`. A naive timestamp is
    taken to be local time in `timezone` and converted to UTC. Equal consecutive
    timestamps are accepted.

    Raises SeriesFormatError on the first invalid line, which may be:
    - a missing header row or a missing `timestamp` or `value` column,
    - a row with the wrong number of fields, or malformed CSV quoting,
    - an invalid timestamp, or one earlier than the timestamp of the row before
      (unless `allow_unordered`, which yields such rows in file order),
    - a non-numeric or non-finite value,
    - bytes that are not UTF-8.
    Readings before that line have already been yielded by then. OSError from opening the
    file propagates unchanged. The file is opened on the first call to next(), not when
    read_series is called.
    """
    with path.open("rb") as file:
        lines = _decode_lines(path, file)
        # strict=True raises csv.Error on malformed quoting instead of guessing.
        reader = csv.reader(lines, strict=True)
        try:
            yield from _parse_rows(path, reader, timezone, allow_unordered)
        except csv.Error as error:
            raise SeriesFormatError(path, reader.line_num, None, f"invalid CSV: {error}") from None


def _decode_lines(path: Path, raw_lines: Iterable[bytes]) -> Iterator[str]:
    # Decoding line by line, instead of through a text stream that decodes in blocks,
    # lets a decoding error name the exact line.
    for line_number, raw_line in enumerate(raw_lines, start=1):
        if line_number == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
            raw_line = raw_line[3:]
        try:
            yield raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SeriesFormatError(
                path, line_number, None, f"invalid UTF-8 at byte {error.start} of the line"
            ) from None


def _parse_rows(path: Path, reader: CsvReader, timezone: tzinfo, allow_unordered: bool) -> Iterator[Reading]:
    header = next(reader, None)
    if header is None:
        raise SeriesFormatError(path, 1, None, "missing header row: the file is empty")
    columns = [name.strip() for name in header]
    timestamp_index = _column_index(path, columns, _TIMESTAMP_COLUMN)
    value_index = _column_index(path, columns, _VALUE_COLUMN)

    previous_timestamp: datetime | None = None
    for row in reader:
        # line_num counts the items read from _decode_lines, which yields one physical
        # line per item, so it is the row's last physical line.
        line_number = reader.line_num
        if len(row) <= 1 and not "".join(row).strip():
            continue  # Blank line.
        if len(row) != len(columns):
            # An extra field is as suspect as a missing one: an unquoted decimal comma
            # such as 1,5 would otherwise be read as the value 1.
            raise SeriesFormatError(
                path,
                line_number,
                None,
                f"wrong number of fields: the row has {len(row)}, but the header has "
                f"{len(columns)}. Quote fields that contain commas.",
            )

        timestamp = _parse_timestamp(path, line_number, row[timestamp_index], timezone)
        value = _parse_value(path, line_number, row[value_index])
        if previous_timestamp is not None and timestamp < previous_timestamp and not allow_unordered:
            raise SeriesFormatError(
                path,
                line_number,
                _TIMESTAMP_COLUMN,
                f"timestamp {timestamp.isoformat()} is earlier than the previous row's "
                f"{previous_timestamp.isoformat()}: rows must be sorted by time; mitigate detect --allow-unordered reads such rows in file order",
            )
        previous_timestamp = timestamp
        yield Reading(timestamp, value)


def _column_index(path: Path, columns: Sequence[str], name: str) -> int:
    try:
        return columns.index(name)
    except ValueError:
        found = ", ".join(f"'{column}'" for column in columns) or "no columns"
        raise SeriesFormatError(
            path, 1, name, f"missing column '{name}' in the header (found {found})"
        ) from None


def _parse_timestamp(path: Path, line_number: int, text: str, timezone: tzinfo) -> datetime:
    try:
        timestamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SeriesFormatError(
            path, line_number, _TIMESTAMP_COLUMN, f"invalid ISO 8601 timestamp {text!r}"
        ) from None
    if timestamp.utcoffset() is None:
        # NOTE: replace() uses fold=0, so a local time that a DST change makes ambiguous
        # or skips is read with the UTC offset in force before the change.
        timestamp = timestamp.replace(tzinfo=timezone)
    return timestamp.astimezone(UTC)


def _parse_value(path: Path, line_number: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SeriesFormatError(
            path, line_number, _VALUE_COLUMN, f"invalid number {text!r}"
        ) from None
    if not math.isfinite(value):
        raise SeriesFormatError(
            path, line_number, _VALUE_COLUMN, f"invalid value {text!r}: it must be finite"
        )
    return value


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of the detector's state, emitted once per change.

    `reading` is the point where the state changed. `score` is the signed robust z-score
    of that point. `peak_score` is the largest |score| of the episode up to and including
    this point, so for "resolved" it covers the whole episode. It is never negative.
    `started_at` is the timestamp of the episode's first point, the one that fired.
    """

    status: Literal["firing", "resolved"]
    reading: Reading
    score: float
    peak_score: float
    started_at: datetime


class RobustZScoreDetector:
    """Streaming robust z-score detector with firing and resolved transitions.

    Each point is scored against the previous `window` values, before the point itself
    joins the window: z = (x - median) / (MAD_TO_SIGMA * MAD), with the MAD raised to the
    floor described at MAD_FLOOR_RELATIVE. The first `warmup` points (default: `window`)
    only fill the window and are not scored.

    The detector fires when |z| >= threshold and emits one "firing" transition. It stays
    firing until `clear_after` consecutive points score |z| < clear_threshold, then emits
    one "resolved" transition. A point with clear_threshold <= |z| < threshold while
    firing restarts that count.

    Each update costs O(window): the window is kept sorted, and inserting into and
    deleting from a Python list moves O(window) items, while the median and MAD
    themselves take O(log window).
    """

    def __init__(
        self,
        *,
        window: int = 288,
        warmup: int | None = None,
        threshold: float = 4.0,
        clear_threshold: float = 2.5,
        clear_after: int = 3,
    ) -> None:
        if window < 3:
            raise ValueError(f"invalid window {window}: it must be an integer >= 3")
        if warmup is None:
            warmup = window
        if warmup < 1:
            raise ValueError(f"invalid warmup {warmup}: it must be an integer >= 1")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"invalid threshold {threshold}: it must be a finite number > 0")
        if not 0 < clear_threshold < threshold:
            raise ValueError(
                f"invalid clear_threshold {clear_threshold}: it must be > 0 and "
                f"< threshold ({threshold})"
            )
        if clear_after < 1:
            raise ValueError(f"invalid clear_after {clear_after}: it must be an integer >= 1")

        self._window_size = window
        self._warmup = warmup
        self._threshold = threshold
        self._clear_threshold = clear_threshold
        self._clear_after = clear_after

        self._arrival_order: deque[float] = deque()
        self._sorted_values: list[float] = []
        self._points_seen = 0
        self._last_score: float | None = None

        self._firing = False
        self._episode_start: datetime | None = None
        self._peak_score = 0.0
        self._calm_points = 0

    @property
    def window(self) -> int:
        """Maximum number of earlier values that a point is scored against."""
        return self._window_size

    @property
    def warmup(self) -> int:
        """Number of points that only fill the window before scoring starts."""
        return self._warmup

    @property
    def threshold(self) -> float:
        """Minimum |score| that fires."""
        return self._threshold

    @property
    def clear_threshold(self) -> float:
        """|score| below which a point counts towards resolving an episode."""
        return self._clear_threshold

    @property
    def clear_after(self) -> int:
        """Number of consecutive points below clear_threshold that resolve an episode."""
        return self._clear_after

    @property
    def firing(self) -> bool:
        """Whether an episode is open: it fired and has not resolved yet."""
        return self._firing

    @property
    def last_score(self) -> float | None:
        """Signed robust z-score of the latest point, or None while warming up."""
        return self._last_score

    def update(self, reading: Reading) -> Transition | None:
        """Score one reading, add it to the window and return its transition, or None.

        Readings are expected in time order, but the detector does not check it.
        """
        score: float | None = None
        if self._points_seen >= self._warmup:
            score = robust_z_score(reading.value, self._sorted_values)
        self._last_score = score

        # While firing, anomalous points still join the window, so after a level shift the
        # new level gradually becomes the median and the episode resolves.
        self._add_to_window(reading.value)
        self._points_seen += 1

        if score is None:
            return None
        if self._firing:
            return self._update_firing(reading, score)
        return self._update_quiet(reading, score)

    def _update_quiet(self, reading: Reading, score: float) -> Transition | None:
        if abs(score) < self._threshold:
            return None
        self._firing = True
        self._episode_start = reading.timestamp
        self._peak_score = abs(score)
        self._calm_points = 0
        return Transition("firing", reading, score, self._peak_score, reading.timestamp)

    def _update_firing(self, reading: Reading, score: float) -> Transition | None:
        assert self._episode_start is not None
        self._peak_score = max(self._peak_score, abs(score))
        if abs(score) >= self._clear_threshold:
            self._calm_points = 0
            return None

        self._calm_points += 1
        if self._calm_points < self._clear_after:
            return None
        transition = Transition("resolved", reading, score, self._peak_score, self._episode_start)
        self._firing = False
        self._episode_start = None
        self._peak_score = 0.0
        self._calm_points = 0
        return transition

    def _add_to_window(self, value: float) -> None:
        insort(self._sorted_values, value)
        self._arrival_order.append(value)
        if len(self._arrival_order) > self._window_size:
            oldest = self._arrival_order.popleft()
            del self._sorted_values[bisect_left(self._sorted_values, oldest)]


def robust_z_score(value: float, sorted_values: Sequence[float]) -> float:
    """Return the robust z-score of `value` against a non-empty, ascending sequence.

    The scale is MAD_TO_SIGMA times the MAD, raised to the floor described at
    MAD_FLOOR_RELATIVE. Runs in O(log n) because the sequence is already sorted.
    """
    if not sorted_values:
        raise ValueError("invalid window: robust_z_score needs at least one value")
    median = _median_of_sorted(sorted_values)
    mad = _median_absolute_deviation(sorted_values, median)
    floor = max(MAD_FLOOR_RELATIVE * abs(median), MAD_FLOOR_ABSOLUTE)
    return (value - median) / (MAD_TO_SIGMA * max(mad, floor))


def _median_of_sorted(sorted_values: Sequence[float]) -> float:
    count = len(sorted_values)
    middle = count // 2
    if count % 2 == 1:
        return sorted_values[middle]
    return (sorted_values[middle - 1] + sorted_values[middle]) / 2


def _median_absolute_deviation(sorted_values: Sequence[float], median: float) -> float:
    # The deviations median - x of the values below the median, read from the median
    # outwards, form one ascending run, and the deviations x - median of the values at or
    # above it form another. The MAD is the median of both runs together, found by
    # selection in two sorted runs without computing every deviation.
    split = bisect_left(sorted_values, median)

    def deviation_below(index: int) -> float:
        return median - sorted_values[split - 1 - index]

    def deviation_above(index: int) -> float:
        return sorted_values[split + index] - median

    below = _SortedRun(deviation_below, split)
    above = _SortedRun(deviation_above, len(sorted_values) - split)
    middle = len(sorted_values) // 2
    if len(sorted_values) % 2 == 1:
        return _select_from_two_runs(below, above, middle)[0]
    lower, upper = _select_from_two_runs(below, above, middle - 1)
    return (lower + upper) / 2


@dataclass(frozen=True, slots=True)
class _SortedRun:
    """Ascending sequence given by an item function, so no list has to be built."""

    item: Callable[[int], float]
    length: int


def _select_from_two_runs(first: _SortedRun, second: _SortedRun, rank: int) -> tuple[float, float]:
    """Return the items of 0-based rank `rank` and `rank + 1` among both runs together.

    The second item is math.inf when `rank` is the last rank. The function binary-searches
    how many of the rank + 1 smallest items come from `first`, so it runs in O(log n).
    """
    total_taken = rank + 1
    low = max(0, total_taken - second.length)
    high = min(total_taken, first.length)
    while True:
        from_first = (low + high) // 2
        from_second = total_taken - from_first
        if (
            from_first < first.length
            and from_second > 0
            and second.item(from_second - 1) > first.item(from_first)
        ):
            # An item left out of `first` is smaller than one taken from `second`, so take
            # more items from `first`.
            low = from_first + 1
        elif (
            from_first > 0
            and from_second < second.length
            and first.item(from_first - 1) > second.item(from_second)
        ):
            high = from_first - 1
        else:
            break

    largest_taken = max(
        first.item(from_first - 1) if from_first > 0 else -math.inf,
        second.item(from_second - 1) if from_second > 0 else -math.inf,
    )
    smallest_left = min(
        first.item(from_first) if from_first < first.length else math.inf,
        second.item(from_second) if from_second < second.length else math.inf,
    )
    return largest_taken, smallest_left


def severity_for(score: float) -> Severity:
    """Map |score| to a severity: >= 12 critical, >= 8 high, >= 5 medium, otherwise low.

    The levels are fixed z-score values and do not depend on the detector's threshold.
    Raises ValueError for NaN.
    """
    if math.isnan(score):
        raise ValueError("invalid score nan: severity_for needs a number")
    magnitude = abs(score)
    for minimum, severity in _SEVERITY_LEVELS:
        if magnitude >= minimum:
            return severity
    return "low"


def confidence_for(score: float, threshold: float) -> float:
    """Map |score| relative to the firing threshold to a confidence in [0, 1].

    confidence = 1 - 0.5 * threshold / |score|, clamped to [0, 1]. It is 0 for
    |score| <= threshold / 2, 0.5 at |score| == threshold, 0.75 at twice the threshold,
    approaches 1 as |score| grows and is 1 for an infinite score. It never decreases as
    |score| grows. Raises ValueError for a NaN score or a threshold that is not a finite
    number > 0.
    """
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"invalid threshold {threshold}: it must be a finite number > 0")
    if math.isnan(score):
        raise ValueError("invalid score nan: confidence_for needs a number")
    magnitude = abs(score)
    if magnitude == 0:
        return 0.0
    confidence = 1 - 0.5 * threshold / magnitude
    return min(1.0, max(0.0, confidence))
