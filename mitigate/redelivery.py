"""Outputs kept per signal, so that a signal delivered again after a crash gets the same messages.

Processing is at least once: after a worker crash, the signals read since the
last offset commit are delivered again, while the incident state they changed
has already been recovered from its changelog. Deciding them again against
that state would give one event a second, different decision record. Instead,
the messages a signal produced are kept, and a signal seen before gets exactly
those messages again (consumers deduplicate by their ids).

Entries are kept for the last `capacity` signals of each partition: slot
`n % capacity` of a partition's ring names the event whose entry is dropped
when signal `n` arrives. The ring must cover every signal processed between two
offset commits; Faust commits every few seconds, so the default covers storms
of thousands of signals a second on a partition.
"""

from __future__ import annotations

import base64
from collections.abc import MutableMapping

import orjson

from mitigate.pipeline import Outgoing

DEFAULT_CAPACITY = 20_000


class SentLog:
    """The messages sent for recent signals, by event id, in a string-keyed store."""

    def __init__(self, store: MutableMapping[str, bytes], capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.capacity = capacity

    def get(self, event_id: str) -> tuple[Outgoing, ...] | None:
        raw = self.store.get(f"event|{event_id}")
        if raw is None:
            return None
        return tuple(
            Outgoing(
                topic=item["topic"],
                key=base64.b64decode(item["key"]) if item["key"] is not None else None,
                value=base64.b64decode(item["value"]),
                headers=tuple((name, base64.b64decode(value)) for name, value in item["headers"]),
            )
            for item in orjson.loads(raw)
        )

    def put(self, partition: int, event_id: str, messages: tuple[Outgoing, ...]) -> None:
        entries = [
            {
                "topic": message.topic,
                "key": base64.b64encode(message.key).decode() if message.key is not None else None,
                "value": base64.b64encode(message.value).decode(),
                "headers": [[name, base64.b64encode(value).decode()] for name, value in message.headers],
            }
            for message in messages
        ]
        self.store[f"event|{event_id}"] = orjson.dumps(entries)

        cursor_key = f"cursor|{partition}"
        raw_cursor = self.store.get(cursor_key)
        cursor = int(raw_cursor) if raw_cursor else 0
        slot_key = f"slot|{partition}|{cursor % self.capacity}"
        evicted = self.store.get(slot_key)
        if evicted is not None and evicted.decode() != event_id:
            self.store.pop(f"event|{evicted.decode()}", None)
        self.store[slot_key] = event_id.encode()
        self.store[cursor_key] = str(cursor + 1).encode()
