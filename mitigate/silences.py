"""Silences: matchers with a start, an end, an author and a reason that mute matching signals."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from fnmatch import fnmatchcase

from mitigate.errors import MitigateError
from mitigate.models import SEVERITIES, AnomalyEvent, Silence

FIELDS = ("entity", "subsystem", "anomaly_type", "severity", "fingerprint")
LABEL_PREFIX = "labels."


class SilenceError(MitigateError):
    """A silence is invalid or cannot be changed."""


def parse_matchers(items: Iterable[str]) -> dict[str, str]:
    """Parse NAME=PATTERN items; names are event fields or labels.NAME."""
    matchers: dict[str, str] = {}
    for item in items:
        name, separator, pattern = item.partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not separator or not name or not pattern:
            raise SilenceError(f"invalid matcher {item!r}; write NAME=PATTERN, for example subsystem=industrial/*")
        if name not in FIELDS and not (name.startswith(LABEL_PREFIX) and len(name) > len(LABEL_PREFIX)):
            raise SilenceError(
                f"invalid matcher name {name!r}; use one of {', '.join(FIELDS)} or labels.NAME"
            )
        if name == "severity" and not any(fnmatchcase(severity, pattern) for severity in SEVERITIES):
            raise SilenceError(
                f"matcher severity={pattern} matches no severity; severities are {', '.join(SEVERITIES)}"
            )
        matchers[name] = pattern
    if not matchers:
        raise SilenceError("a silence needs at least one matcher")
    return matchers


def silence_matches(silence: Silence, event: AnomalyEvent) -> bool:
    for name, pattern in silence.matchers.items():
        if name.startswith(LABEL_PREFIX):
            value = event.labels.get(name[len(LABEL_PREFIX):])
        else:
            value = str(getattr(event, name, ""))
        if value is None or not fnmatchcase(value, pattern):
            return False
    return True


def active_silence(silences: Iterable[Silence], event: AnomalyEvent, moment: datetime) -> Silence | None:
    """Return the matching silence in force at `moment` that ends last, or None."""
    matching = [silence for silence in silences if silence.active_at(moment) and silence_matches(silence, event)]
    return max(matching, key=lambda silence: silence.ends_at, default=None)


def new_silence(
    matchers: dict[str, str], *, starts_at: datetime, ends_at: datetime, author: str, reason: str, now: datetime
) -> Silence:
    if ends_at <= starts_at:
        raise SilenceError(f"the silence ends ({ends_at.isoformat()}) before it starts ({starts_at.isoformat()})")
    if ends_at <= now:
        raise SilenceError(f"the silence would end in the past ({ends_at.isoformat()})")
    if not reason.strip():
        raise SilenceError("a silence needs a reason, so that others know why signals are muted")
    return Silence(
        silence_id=str(uuid.uuid4()),
        matchers=matchers,
        starts_at=starts_at,
        ends_at=ends_at,
        author=author,
        reason=reason,
        created_at=now,
    )


def expire(silence: Silence, *, by: str, now: datetime) -> Silence:
    if silence.ends_at <= now:
        raise SilenceError(f"silence {silence.silence_id} already ended at {silence.ends_at.isoformat()}")
    return silence.model_copy(update={"ends_at": max(now, silence.starts_at), "expired_by": by})
