"""argparse types shared by the `mitigate` subcommands."""

from __future__ import annotations

import argparse

from mitigate.durations import parse_duration


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def duration_argument(text: str) -> float:
    """Parse a duration such as 90s, 5m or 2h into seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
