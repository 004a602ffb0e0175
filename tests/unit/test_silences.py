"""Unit tests for mitigate.silences: matcher parsing, matching signals, the active window and expiry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from mitigate.errors import MitigateError
from mitigate.models import Silence
from mitigate.silences import SilenceError, active_silence, expire, new_silence, parse_matchers, silence_matches
from tests.unit.builders import NOW, anomaly_event, silence_record

NAME_HINT = "use one of entity, subsystem, anomaly_type, severity, fingerprint or labels.NAME"




# Parsing NAME=PATTERN matchers


@pytest.mark.parametrize(
    ("items", "matchers"),
    [
        (["subsystem=industrial/*"], {"subsystem": "industrial/*"}),
        (["entity=machine-*", "severity=high"], {"entity": "machine-*", "severity": "high"}),
        (["labels.site=plant-north"], {"labels.site": "plant-north"}),
        (["anomaly_type=spike", "fingerprint=machine-temperature-01:spike"],
         {"anomaly_type": "spike", "fingerprint": "machine-temperature-01:spike"}),
        (["labels.query=a=b"], {"labels.query": "a=b"}),
        (["  entity=machine-01"], {"entity": "machine-01"}),
    ],
    ids=["field", "two-fields", "label", "type-and-fingerprint", "equals-in-pattern", "space-before-name"],
)
def test_parse_matchers_valid(items: list[str], matchers: dict[str, str]) -> None:
    assert parse_matchers(items) == matchers


def test_parse_matchers_last_wins() -> None:
    assert parse_matchers(["severity=high", "severity=critical"]) == {"severity": "critical"}


# (case, items, message)
MATCHER_ERRORS = [
    ("no-separator", ["subsystem"],
     "invalid matcher 'subsystem'; write NAME=PATTERN, for example subsystem=industrial/*"),
    ("empty-name", ["=industrial/*"],
     "invalid matcher '=industrial/*'; write NAME=PATTERN, for example subsystem=industrial/*"),
    ("blank-name", ["  =industrial/*"],
     "invalid matcher '  =industrial/*'; write NAME=PATTERN, for example subsystem=industrial/*"),
    ("empty-pattern", ["subsystem="],
     "invalid matcher 'subsystem='; write NAME=PATTERN, for example subsystem=industrial/*"),
    ("unknown-field", ["host=machine-01"], f"invalid matcher name 'host'; {NAME_HINT}"),
    ("status-field", ["status=firing"], f"invalid matcher name 'status'; {NAME_HINT}"),
    ("bare-label-prefix", ["labels.=plant"], f"invalid matcher name 'labels.'; {NAME_HINT}"),
    ("label-without-dot", ["labels=plant"], f"invalid matcher name 'labels'; {NAME_HINT}"),
    ("case-sensitive", ["Subsystem=industrial/*"], f"invalid matcher name 'Subsystem'; {NAME_HINT}"),
    ("no-matchers", [], "a silence needs at least one matcher"),
    ("second-invalid", ["subsystem=industrial/*", "site=north"], f"invalid matcher name 'site'; {NAME_HINT}"),
]


@pytest.mark.parametrize(
    ("items", "message"), [case[1:] for case in MATCHER_ERRORS], ids=[case[0] for case in MATCHER_ERRORS]
)
def test_parse_matchers_message(items: list[str], message: str) -> None:
    with pytest.raises(SilenceError) as caught:
        parse_matchers(items)

    assert str(caught.value) == message


def test_silence_error_is_mitigate_error() -> None:
    assert issubclass(SilenceError, MitigateError)


def test_parse_matchers_strips_pattern() -> None:
    assert parse_matchers(["subsystem = industrial/*"]) == {"subsystem": "industrial/*"}


# Matching an event


# (case, matchers, whether the default event of the builders matches)
MATCH_CASES = [
    ("subsystem-glob", {"subsystem": "industrial/*"}, True),
    ("subsystem-other", {"subsystem": "network/*"}, False),
    ("entity-exact", {"entity": "machine-temperature-01"}, True),
    ("severity", {"severity": "high"}, True),
    ("severity-other", {"severity": "critical"}, False),
    ("anomaly-type", {"anomaly_type": "sp?ke"}, True),
    ("fingerprint", {"fingerprint": "machine-temperature-01:*"}, True),
    ("label", {"labels.metric": "machine_*"}, True),
    ("label-other-value", {"labels.metric": "disk_*"}, False),
    ("label-missing", {"labels.site": "*"}, False),
    ("all-must-match", {"subsystem": "industrial/*", "severity": "low"}, False),
    ("all-match", {"subsystem": "industrial/*", "labels.metric": "machine_temperature"}, True),
    ("case-sensitive", {"subsystem": "Industrial/*"}, False),
]


@pytest.mark.parametrize(
    ("matchers", "matches"), [case[1:] for case in MATCH_CASES], ids=[case[0] for case in MATCH_CASES]
)
def test_silence_matches_event(matchers: dict[str, str], matches: bool) -> None:
    assert silence_matches(silence_record(matchers=matchers), anomaly_event()) is matches


# Window in force: starts_at <= moment < ends_at

# (case, moment, in force)
WINDOW_CASES = [
    ("before-start", NOW - timedelta(hours=1, seconds=1), False),
    ("at-start", NOW - timedelta(hours=1), True),
    ("inside", NOW, True),
    ("at-end", NOW + timedelta(hours=1), False),
    ("after-end", NOW + timedelta(hours=2), False),
]


@pytest.mark.parametrize(
    ("moment", "active"), [case[1:] for case in WINDOW_CASES], ids=[case[0] for case in WINDOW_CASES]
)
def test_silence_active_at(moment: datetime, active: bool) -> None:
    assert silence_record().active_at(moment) is active


@pytest.mark.parametrize(
    ("moment", "active"), [case[1:] for case in WINDOW_CASES], ids=[case[0] for case in WINDOW_CASES]
)
def test_active_silence_window(moment: datetime, active: bool) -> None:
    found = active_silence([silence_record()], anomaly_event(), moment)

    assert (found is not None) is active


def test_active_silence_needs_match() -> None:
    assert active_silence([silence_record(matchers={"subsystem": "network/*"})], anomaly_event(), NOW) is None


def test_active_silence_none_given() -> None:
    assert active_silence([], anomaly_event(), NOW) is None


def test_active_silence_ends_last() -> None:
    silences = [
        silence_record(silence_id="short", ends_at=NOW + timedelta(minutes=10)),
        silence_record(silence_id="long", ends_at=NOW + timedelta(hours=5)),
        silence_record(silence_id="not-matching", matchers={"severity": "low"}, ends_at=NOW + timedelta(days=1)),
        silence_record(silence_id="ended", starts_at=NOW - timedelta(days=2), ends_at=NOW - timedelta(days=1)),
    ]

    found = active_silence(silences, anomaly_event(), NOW)

    assert found is not None
    assert found.silence_id == "long"


# Creating a silence


def test_new_silence_fields() -> None:
    created = new_silence({"subsystem": "industrial/*"}, starts_at=NOW, ends_at=NOW + timedelta(hours=2),
                          author="operator", reason="pump maintenance", now=NOW)

    assert created.matchers == {"subsystem": "industrial/*"}
    assert created.starts_at == NOW
    assert created.ends_at == NOW + timedelta(hours=2)
    assert created.created_at == NOW
    assert created.author == "operator"
    assert created.reason == "pump maintenance"
    assert created.expired_by is None


def test_new_silence_ids_differ() -> None:
    first = new_silence({"entity": "a"}, starts_at=NOW, ends_at=NOW + timedelta(hours=1), author="operator",
                        reason="test", now=NOW)
    second = new_silence({"entity": "a"}, starts_at=NOW, ends_at=NOW + timedelta(hours=1), author="operator",
                         reason="test", now=NOW)

    assert first.silence_id != second.silence_id


@pytest.mark.parametrize(
    ("starts_at", "ends_at", "reason", "message"),
    [
        (NOW, NOW, "maintenance",
         f"the silence ends ({NOW.isoformat()}) before it starts ({NOW.isoformat()})"),
        (NOW, NOW - timedelta(minutes=1), "maintenance",
         f"the silence ends ({(NOW - timedelta(minutes=1)).isoformat()}) before it starts ({NOW.isoformat()})"),
        (NOW - timedelta(hours=2), NOW - timedelta(hours=1), "maintenance",
         f"the silence would end in the past ({(NOW - timedelta(hours=1)).isoformat()})"),
        (NOW - timedelta(hours=2), NOW, "maintenance", f"the silence would end in the past ({NOW.isoformat()})"),
        (NOW, NOW + timedelta(hours=1), "  ", "a silence needs a reason, so that others know why signals are muted"),
    ],
    ids=["zero-length", "ends-before-start", "ended", "ends-now", "blank-reason"],
)
def test_new_silence_message(starts_at: datetime, ends_at: datetime, reason: str, message: str) -> None:
    with pytest.raises(SilenceError) as caught:
        new_silence({"entity": "a"}, starts_at=starts_at, ends_at=ends_at, author="operator", reason=reason, now=NOW)

    assert str(caught.value) == message


def test_new_silence_started_before() -> None:
    created = new_silence({"entity": "a"}, starts_at=NOW - timedelta(hours=1), ends_at=NOW + timedelta(hours=1),
                          author="operator", reason="already under way", now=NOW)

    assert created.active_at(NOW)


# Expiring a silence


def test_expire_ends_now() -> None:
    ended = expire(silence_record(), by="operator-2", now=NOW)

    assert ended.ends_at == NOW
    assert ended.expired_by == "operator-2"


def test_expire_no_longer_active() -> None:
    ended = expire(silence_record(), by="operator-2", now=NOW)

    assert not ended.active_at(NOW)
    assert active_silence([ended], anomaly_event(), NOW) is None


def test_expire_keeps_other_fields() -> None:
    original = silence_record()
    ended = expire(original, by="operator-2", now=NOW)

    assert ended.model_copy(update={"ends_at": original.ends_at, "expired_by": None}) == original


def test_expire_scheduled_never_active() -> None:
    scheduled = silence_record(starts_at=NOW + timedelta(hours=1), ends_at=NOW + timedelta(hours=2))
    ended = expire(scheduled, by="operator-2", now=NOW)

    assert ended.ends_at == scheduled.starts_at
    assert not ended.active_at(scheduled.starts_at)


@pytest.mark.parametrize("ends_at", [NOW, NOW - timedelta(minutes=5)], ids=["ends-now", "ended"])
def test_expire_ended_message(ends_at: datetime) -> None:
    ended = silence_record(ends_at=ends_at)

    with pytest.raises(SilenceError) as caught:
        expire(ended, by="operator-2", now=NOW)

    assert str(caught.value) == f"silence silence-1 already ended at {ends_at.isoformat()}"
