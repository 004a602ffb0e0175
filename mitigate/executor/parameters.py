"""Typed values of command parameters and preconditions, which the schema carries as strings.

Each function raises CommandRejected with a message that names the field and
the value, so that a handler can let it reach the service unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mitigate.executor.handler import CommandRejected

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def required(values: Mapping[str, str], kind: str, name: str) -> str:
    """Return `values[name]`; raise CommandRejected when it is missing or empty.

    `kind` is "parameter" or "precondition", for the message.
    """
    value = values.get(name)
    if value is None or not value.strip():
        raise CommandRejected(f"missing {kind} {name!r}")
    return value


def as_int(kind: str, name: str, text: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise CommandRejected(f"invalid {kind} {name}={text!r}: expected an integer") from None
    if minimum is not None and value < minimum:
        raise CommandRejected(f"invalid {kind} {name}={text!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise CommandRejected(f"invalid {kind} {name}={text!r}: must be at most {maximum}")
    return value


def as_bool(kind: str, name: str, text: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise CommandRejected(f"invalid {kind} {name}={text!r}: expected true or false")


def reject_unknown(kind: str, names: Iterable[str], known: Iterable[str], context: str) -> None:
    """Raise CommandRejected naming the first of `names` that is not in `known`."""
    allowed = sorted(set(known))
    for name in sorted(names):
        if name not in allowed:
            listing = ", ".join(allowed) if allowed else "none"
            raise CommandRejected(f"unknown {kind} {name!r} for {context}; known: {listing}")
