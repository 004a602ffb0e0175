"""Outputs and state writes kept per signal, so that a signal delivered again after a crash changes nothing twice.

Processing is at least once: after a worker crash, the signals read since the
last offset commit are delivered again. Deciding one again against state it
already changed would give it a second, different decision (a repeat of
itself). Instead, each decision is made against a journal: the engine's
writes are held back, the signal's messages and those writes are logged
under its event id, and only then are the writes applied. All of it goes to
one table, so both the local store and the table's changelog partition keep
the writes in that order, and a crash leaves a prefix of them:

- no log entry: no state changed, and the signal is decided again;
- a log entry: its messages are sent again. If the signal comes back from
  the same offset, its writes are applied again, which completes state a
  crash cut short. Signals delivered again come in their original order, so
  one that overwrote the same keys later applies its own writes after it.
- A copy of the signal at another offset (the intake stage is at least once
  too) only gets the messages. Its first processing finished before it, and
  other signals may have changed the same keys since.

Entries are kept for the last `capacity` offsets of each partition: slot
`offset % capacity` of a partition's ring names the event whose entry is
dropped when the signal at that offset arrives. The ring must cover every
signal processed between two offset commits. Faust commits every few seconds,
so the default covers storms of thousands of signals a second on a partition.
The slot comes from the offset, so the ring needs no counter of its own, and a
signal delivered again at the same offset finds its own event in its slot.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

import orjson

from mitigate.pipeline import Outgoing

DEFAULT_CAPACITY = 20_000

# One write of the journal: store name, key, and the new value or None for a deletion.
Write = tuple[str, str, bytes | None]


@dataclass(frozen=True, slots=True)
class Sent:
    """The log entry of one signal: the messages sent and the state writes made."""

    messages: tuple[Outgoing, ...]
    writes: tuple[Write, ...] = ()
    source: str | None = None  # partition@offset of the signal message that was decided


class Journal:
    """Holds back the writes of one decision to a set of named stores, in order, until they are applied."""

    def __init__(self) -> None:
        self.stores: dict[str, MutableMapping[str, bytes]] = {}
        self._pending: dict[tuple[str, str], bytes | None] = {}
        self._writes: list[Write] = []
        self._recording = False

    def store(self, name: str, backing: MutableMapping[str, bytes]) -> JournaledStore:
        """Return a view of `backing` whose writes go through this journal."""
        self.stores[name] = backing
        return JournaledStore(self, name, backing)

    def begin(self) -> None:
        self._pending.clear()
        self._writes.clear()
        self._recording = True

    def end(self) -> tuple[Write, ...]:
        """Stop holding writes back; return those held, for logging and then apply()."""
        writes = tuple(self._writes)
        self._pending.clear()
        self._writes.clear()
        self._recording = False
        return writes

    def apply(self, writes: tuple[Write, ...]) -> None:
        for name, key, value in writes:
            store = self.stores[name]
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value


class JournaledStore(MutableMapping[str, bytes]):
    """A store whose writes the journal holds back while it records; reads see the held writes."""

    def __init__(self, journal: Journal, name: str, backing: MutableMapping[str, bytes]) -> None:
        self.journal = journal
        self.name = name
        self.backing = backing

    def __getitem__(self, key: str) -> bytes:
        journal = self.journal
        if journal._recording and (self.name, key) in journal._pending:
            value = journal._pending[(self.name, key)]
            if value is None:
                raise KeyError(key)
            return value
        return self.backing[key]

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        # Mapping.get would raise and catch a KeyError, and most lookups of a new signal miss.
        journal = self.journal
        if journal._recording and (self.name, key) in journal._pending:
            value = journal._pending[(self.name, key)]
            return default if value is None else value
        return self.backing.get(key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self._write(key, value)

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError when absent, as a mapping must
        self._write(key, None)

    def _write(self, key: str, value: bytes | None) -> None:
        journal = self.journal
        if not journal._recording:
            if value is None:
                del self.backing[key]
            else:
                self.backing[key] = value
            return
        journal._pending[(self.name, key)] = value
        journal._writes.append((self.name, key, value))

    def __iter__(self) -> Iterator[str]:
        # NOTE: iterates the backing store only; the engine never iterates while recording.
        return iter(self.backing)

    def __len__(self) -> int:
        return len(self.backing)


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def _unb64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value is not None else None


class SentLog:
    """The messages and state writes of recent signals, by event id, in a string-keyed store."""

    def __init__(self, store: MutableMapping[str, bytes], capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.capacity = capacity

    def get(self, event_id: str) -> Sent | None:
        raw = self.store.get(f"event|{event_id}")
        if raw is None:
            return None
        entry = orjson.loads(raw)
        if isinstance(entry, list):  # written before state writes were logged
            entry = {"messages": entry, "writes": [], "source": None}
        messages = tuple(
            Outgoing(
                topic=item["topic"],
                key=_unb64(item["key"]),
                value=base64.b64decode(item["value"]),
                headers=tuple((name, base64.b64decode(value)) for name, value in item["headers"]),
            )
            for item in entry["messages"]
        )
        writes = tuple((name, key, _unb64(value)) for name, key, value in entry["writes"])
        return Sent(messages, writes, entry.get("source"))

    def put(self, partition: int, offset: int, event_id: str, messages: tuple[Outgoing, ...],
            writes: tuple[Write, ...] = ()) -> None:
        """Log the messages and writes of the signal at `offset` of `partition`."""
        entry = {
            "messages": [
                {
                    "topic": message.topic,
                    "key": _b64(message.key),
                    "value": _b64(message.value),
                    "headers": [[name, _b64(value)] for name, value in message.headers],
                }
                for message in messages
            ],
            "writes": [[name, key, _b64(value)] for name, key, value in writes],
            "source": f"{partition}@{offset}",  # compared by DecisionStage.process
        }
        # The slot first: a crash before the entry leaves a slot naming an event without one,
        # never an entry that no slot names.
        slot_key = f"slot|{partition}|{offset % self.capacity}"
        event_name = event_id.encode()
        evicted = self.store.get(slot_key)
        if evicted != event_name:
            if evicted is not None:
                # Deleted without the read that pop() makes first, because the entry is
                # kilobytes and is seldom still in memory when its slot comes round again.
                try:
                    del self.store[f"event|{evicted.decode()}"]
                except KeyError:
                    pass
            self.store[slot_key] = event_name
        self.store[f"event|{event_id}"] = orjson.dumps(entry)


def engine_stores(journal: Journal, table: MutableMapping[str, bytes]) -> dict[str, JournaledStore]:
    """Return the correlation engine's four stores, as prefixed parts of `table` that write through `journal`."""
    return {
        name: journal.store(name, PrefixedStore(table, f"{prefix}:"))
        for name, prefix in (("incidents", "incident"), ("fingerprints", "fingerprint"), ("budgets", "budget"),
                             ("runs", "run"))
    }


class PrefixedStore(MutableMapping[str, bytes]):
    """Keys of one store under a prefix of a shared one, so that several stores share one table."""

    def __init__(self, backing: MutableMapping[str, bytes], prefix: str) -> None:
        self.backing = backing
        self.prefix = prefix

    def __getitem__(self, key: str) -> bytes:
        return self.backing[self.prefix + key]

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self.backing.get(self.prefix + key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.backing[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.backing[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        size = len(self.prefix)
        return (key[size:] for key in self.backing if key.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)
