"""Durations in configuration files: "90s", "5m", "1h", "2d", or a number of seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> float:
    """Return the duration in seconds; raise ValueError naming the value and the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; use a number followed by ms, s, m, h or d, for example 90s or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}; use a number followed by ms, s, m, h or d, for example 90s or 1h")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration {value!r}; it must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in files as "90s", "5m", "1h", "2d" or a plain number of seconds."""
