"""Unit tests for mitigate.durations: durations in configuration files and their error messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mitigate.durations import Duration, parse_duration

FORMS = "use a number followed by ms, s, m, h or d, for example 90s or 1h"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("5 m", 300.0),
        (" 10m ", 600.0),
        ("007s", 7.0),
        (30, 30.0),
        (2.5, 2.5),
    ],
    ids=["seconds", "minutes", "hours", "days", "milliseconds", "fraction", "fraction-below-one", "space-before-unit",
         "surrounding-space", "leading-zeros", "int", "float"],
)
def test_parse_duration_valid(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


# (case, value, message)
INVALID = [
    ("no-unit", "90", f"invalid duration '90'; {FORMS}"),
    ("unknown-unit", "5w", f"invalid duration '5w'; {FORMS}"),
    ("upper-case-unit", "5M", f"invalid duration '5M'; {FORMS}"),
    ("unit-only", "m", f"invalid duration 'm'; {FORMS}"),
    ("empty", "", f"invalid duration ''; {FORMS}"),
    ("compound", "1h30m", f"invalid duration '1h30m'; {FORMS}"),
    ("negative-text", "-5s", f"invalid duration '-5s'; {FORMS}"),
    ("exponent", "1e3s", f"invalid duration '1e3s'; {FORMS}"),
    ("word", "soon", f"invalid duration 'soon'; {FORMS}"),
    ("none", None, f"invalid duration None; {FORMS}"),
    ("bool", True, f"invalid duration True; {FORMS}"),
    ("list", [5, "m"], f"invalid duration [5, 'm']; {FORMS}"),
    ("zero-text", "0s", "invalid duration '0s'; it must be greater than zero"),
    ("zero", 0, "invalid duration 0; it must be greater than zero"),
    ("negative", -30, "invalid duration -30; it must be greater than zero"),
    ("nan", float("nan"), "invalid duration nan; it must be greater than zero"),
]


@pytest.mark.parametrize(("value", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_parse_duration_message(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)

    assert str(caught.value) == message


class Window(BaseModel):
    window: Duration


def test_duration_field_parses() -> None:
    assert Window.model_validate({"window": "10m"}).window == 600.0


def test_duration_field_error_message() -> None:
    with pytest.raises(ValidationError) as caught:
        Window.model_validate({"window": "ten minutes"})

    (error,) = caught.value.errors()
    assert error["loc"] == ("window",)
    assert str(error["ctx"]["error"]) == f"invalid duration 'ten minutes'; {FORMS}"
