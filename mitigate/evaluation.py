"""Signal quality against labels: a detector's anomalies compared with labelled anomaly windows.

Labels use the Numenta Anomaly Benchmark's windows format: a JSON object that
maps a series name to a list of [start, end] timestamps (naive timestamps are
read in UTC, or in the time zone given).

Each firing event is placed at the time of the reading that raised it: the
`source_time` annotation the reference detector writes, else its event time.
An event inside a window is a true detection, one outside every window a false
alarm. Precision is counted per episode (the firing events of one episode of
one fingerprint count once, placed at the episode's first event) and per
firing event. A window is detected when an episode starts inside it, and its
detection delay runs from the window's start to that first episode. Recall is
the share of windows detected.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from mitigate.errors import MitigateError
from mitigate.models import AnomalyEvent


class EvaluationError(MitigateError):
    """A labels file or the events to evaluate are invalid."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


@dataclass(frozen=True, slots=True)
class Episode:
    """The firing events of one episode of one fingerprint."""

    fingerprint: str
    start: datetime  # when its first firing event's reading was taken
    events: int


@dataclass(frozen=True, slots=True)
class WindowResult:
    window: Window
    detected_at: datetime | None  # the first episode that started inside the window

    @property
    def delay_s(self) -> float | None:
        return (self.detected_at - self.window.start).total_seconds() if self.detected_at else None


@dataclass
class Evaluation:
    windows: list[WindowResult] = field(default_factory=list)
    episodes_inside: int = 0
    episodes_outside: int = 0
    events_inside: int = 0
    events_outside: int = 0
    false_alarms: list[Episode] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        if not self.windows:
            return None
        return sum(1 for result in self.windows if result.detected_at) / len(self.windows)

    @property
    def episode_precision(self) -> float | None:
        total = self.episodes_inside + self.episodes_outside
        return self.episodes_inside / total if total else None

    @property
    def event_precision(self) -> float | None:
        total = self.events_inside + self.events_outside
        return self.events_inside / total if total else None

    def delays_s(self) -> list[float]:
        return [result.delay_s for result in self.windows if result.delay_s is not None]

    def as_json(self) -> dict[str, Any]:
        delays = self.delays_s()
        return {
            "windows": len(self.windows),
            "windows_detected": sum(1 for result in self.windows if result.detected_at),
            "recall": self.recall,
            "episodes": self.episodes_inside + self.episodes_outside,
            "episodes_inside_windows": self.episodes_inside,
            "false_alarm_episodes": self.episodes_outside,
            "episode_precision": self.episode_precision,
            "firing_events": self.events_inside + self.events_outside,
            "firing_events_inside_windows": self.events_inside,
            "event_precision": self.event_precision,
            "detection_delay_s": {
                "mean": statistics.fmean(delays) if delays else None,
                "median": statistics.median(delays) if delays else None,
                "max": max(delays) if delays else None,
            },
            "per_window": [
                {"start": result.window.start.isoformat(), "end": result.window.end.isoformat(),
                 "detected_at": result.detected_at.isoformat() if result.detected_at else None,
                 "delay_s": result.delay_s}
                for result in self.windows
            ],
        }


def load_windows(path: Path, series: str | None, timezone: tzinfo) -> list[Window]:
    """Read the windows of one series from a labels file; `series` may be omitted when the file has one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise EvaluationError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise EvaluationError(f"{path}: expected an object that maps a series name to a list of [start, end] windows")
    if series is None:
        if len(data) > 1:
            names = ", ".join(sorted(data)[:5])
            raise EvaluationError(f"{path}: contains {len(data)} series ({names}, ...); choose one with --series")
        series = next(iter(data))
    if series not in data:
        raise EvaluationError(f"{path}: no series {series!r}; it contains: {', '.join(sorted(data)[:10])}")
    windows = []
    for index, item in enumerate(data[series]):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)):
            raise EvaluationError(f"{path}: {series}[{index}]: expected [start, end] as two timestamps, got {item!r}")
        start, end = (_timestamp(path, series, index, text, timezone) for text in item)
        if end < start:
            raise EvaluationError(f"{path}: {series}[{index}]: the window ends before it starts")
        windows.append(Window(start, end))
    return sorted(windows, key=lambda window: window.start)


def _timestamp(path: Path, series: str, index: int, text: str, timezone: tzinfo) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EvaluationError(f"{path}: {series}[{index}]: invalid timestamp {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone)


def reading_time(event: AnomalyEvent, timezone: tzinfo) -> datetime:
    """Return when the reading behind an event was taken: its source_time annotation, else its event time."""
    text = event.annotations.get("source_time")
    if not text:
        return event.event_time
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EvaluationError(f"event {event.event_id}: invalid source_time annotation {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone)


def episodes(events: Iterable[AnomalyEvent], timezone: tzinfo) -> list[Episode]:
    """Group firing events into episodes: per fingerprint, from a first firing event to its resolution."""
    open_episodes: dict[str, tuple[datetime, int]] = {}
    found: list[Episode] = []
    for event in sorted(events, key=lambda item: reading_time(item, timezone)):
        if event.status == "resolved":
            current = open_episodes.pop(event.fingerprint, None)
            if current is not None:
                found.append(Episode(event.fingerprint, current[0], current[1]))
            continue
        start, count = open_episodes.get(event.fingerprint, (reading_time(event, timezone), 0))
        open_episodes[event.fingerprint] = (start, count + 1)
    found.extend(Episode(fingerprint, start, count) for fingerprint, (start, count) in open_episodes.items())
    return sorted(found, key=lambda episode: episode.start)


def evaluate(events: Iterable[AnomalyEvent], windows: list[Window], timezone: tzinfo) -> Evaluation:
    events = list(events)
    result = Evaluation()
    for event in events:
        if event.status != "firing":
            continue
        moment = reading_time(event, timezone)
        if any(window.contains(moment) for window in windows):
            result.events_inside += 1
        else:
            result.events_outside += 1
    found = episodes(events, timezone)
    for episode in found:
        if any(window.contains(episode.start) for window in windows):
            result.episodes_inside += 1
        else:
            result.episodes_outside += 1
            result.false_alarms.append(episode)
    for window in windows:
        first = next((episode.start for episode in found if window.contains(episode.start)), None)
        result.windows.append(WindowResult(window, first))
    return result


def format_report(result: Evaluation, source: str) -> str:
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    detected = sum(1 for item in result.windows if item.detected_at)
    episodes_total = result.episodes_inside + result.episodes_outside
    events_total = result.events_inside + result.events_outside
    lines = [
        f"Signal quality of {source}",
        f"  labelled windows     {len(result.windows):>5}  detected {detected}, recall {share(result.recall)}",
        f"  episodes             {episodes_total:>5}  inside windows {result.episodes_inside}, "
        f"false alarms {result.episodes_outside}, precision {share(result.episode_precision)}",
        f"  firing events        {events_total:>5}  inside windows {result.events_inside}, "
        f"precision {share(result.event_precision)}",
    ]
    delays = result.delays_s()
    if delays:
        lines.append(f"  detection delay      mean {_hours(statistics.fmean(delays))}, "
                     f"median {_hours(statistics.median(delays))}, max {_hours(max(delays))}")
    lines.append("")
    lines.append("  window                                      first episode inside        delay")
    for item in result.windows:
        span = f"{item.window.start:%Y-%m-%d %H:%M} to {item.window.end:%Y-%m-%d %H:%M}"
        if item.detected_at is None:
            lines.append(f"  {span:<42}  missed")
        else:
            delay = item.delay_s or 0.0
            lines.append(f"  {span:<42}  {item.detected_at:%Y-%m-%d %H:%M}            {_hours(delay)}")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"
