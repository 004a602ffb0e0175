"""Policy and asset tables: compacted topics feeding changelog-backed global tables.

Each feed agent consumes its compacted topic and writes every record into a
GlobalTable, whose Faust changelog lets a restarted worker recover the table
and lets every worker of the group see every record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from typing import Any

import faust
from faust.tables.globaltable import GlobalTable
from faust.tables.table import Table
from pydantic import ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError
from mitigate.models import AssetContext, PolicyVersion, Silence
from mitigate.policy import ActivePolicy, PolicyIndex, policy_from_json

logger = logging.getLogger(__name__)


class RawGlobalTable(GlobalTable):
    """A GlobalTable that stores keys and values as the bytes it is given.

    Faust derives a table's serializers from its key and value types and falls
    back to JSON; the reference tables hold Avro bytes, which must pass through
    unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = "raw"


def _global_table(app: faust.App, name: str, partitions: int, on_change: Callable[[], None]) -> RawGlobalTable:
    async def changed(*_: Any) -> None:
        on_change()

    table = RawGlobalTable(
        app,
        name=name,
        partitions=partitions,
        beacon=app.tables.beacon,
        standby_buffer_size=1,  # apply other workers' updates as they come
        is_global=True,
        on_changelog_event=changed,
        on_recover=changed,
        help=f"{name} fed from a compacted topic",
    )
    app.tables.add(table)
    return table


def feed_agent(
    table: RawGlobalTable, kind: str, changed: Callable[[], None]
) -> Callable[[faust.StreamT[bytes]], Coroutine[Any, Any, None]]:
    """Return the agent that copies a compacted topic into `table`: a value sets its key, a tombstone deletes it."""

    async def feed(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            key = event.message.key
            if key is None:
                logger.error("%s message without key ignored source=%s[%d]@%d", kind,
                             event.message.topic, event.message.partition, event.message.offset)
                continue
            if event.value is None:
                table.pop(key, None)
            else:
                table[key] = event.value
            changed()

    return feed


class PolicyTable:
    """The policies in force: a table of every PolicyVersion, and an index of the latest ones.

    NOTE: on the first start of a new application id, the anomaly agent may
    process events before the feed agent has read the policies topic. Such
    events get the no-policy default (review). A restarted worker recovers the table
    before any agent runs, so only a fresh deployment with a backlog is affected.
    """

    def __init__(self, app: faust.App, topic: faust.TopicT, partitions: int, codec: AvroCodec) -> None:
        self.codec = codec
        self.table = _global_table(app, "policy-table", partitions, self.invalidate)
        self._index: PolicyIndex | None = None
        app.agent(topic, name="policy-feed")(feed_agent(self.table, "policy", self.invalidate))

    def invalidate(self) -> None:
        self._index = None

    def index(self) -> PolicyIndex:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> PolicyIndex:
        latest: dict[str, PolicyVersion] = {}
        for key, value in self.table.items():
            version = self._decode(value, key)
            if version is None:
                continue
            current = latest.get(version.policy_id)
            if current is None or version.version > current.version:
                latest[version.policy_id] = version

        active: list[ActivePolicy] = []
        for version in latest.values():
            if version.deleted:
                continue
            try:
                active.append(policy_from_json(version.document, version.version))
            except ValidationError as exc:
                # Publishing validates every document, so this means a writer bypassed `mitigate policy publish`.
                logger.error("policy=%s version=%d has an invalid document and is ignored: %s",
                             version.policy_id, version.version, exc)
        logger.info("policy index rebuilt policies=%d", len(active))
        return PolicyIndex(active)

    def _decode(self, value: bytes, key: bytes) -> PolicyVersion | None:
        try:
            return PolicyVersion.model_validate(self.codec.decode(value, "PolicyVersion").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("policy key=%r cannot be decoded and is ignored: %s", key, exc)
            return None



class AssetTable:
    """Asset context by entity, as a table of AssetContext bytes."""

    def __init__(self, app: faust.App, topic: faust.TopicT, partitions: int, codec: AvroCodec) -> None:
        self.codec = codec
        self.table = _global_table(app, "asset-table", partitions, lambda: None)
        app.agent(topic, name="asset-feed")(feed_agent(self.table, "asset", lambda: None))

    def lookup(self, entity: str) -> AssetContext | None:
        value = self.table.get(entity.encode())
        if value is None:
            return None
        try:
            return AssetContext.model_validate(self.codec.decode(value, "AssetContext").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("asset entity=%s cannot be decoded; treating it as unknown: %s", entity, exc)
            return None

    def count(self) -> int:
        return sum(1 for _ in self.table.keys())



class SilenceTable:
    """Silences by id, as a table of Silence bytes and a decoded list."""

    def __init__(self, app: faust.App, topic: faust.TopicT, partitions: int, codec: AvroCodec) -> None:
        self.codec = codec
        self.table = _global_table(app, "silence-table", partitions, self.invalidate)
        self._silences: list[Silence] | None = None
        app.agent(topic, name="silence-feed")(feed_agent(self.table, "silence", self.invalidate))

    def invalidate(self) -> None:
        self._silences = None

    def silences(self) -> list[Silence]:
        if self._silences is None:
            decoded = []
            for key, value in self.table.items():
                try:
                    decoded.append(Silence.model_validate(self.codec.decode(value, "Silence").record))
                except (DecodeError, ValidationError) as exc:
                    logger.error("silence key=%r cannot be decoded and is ignored: %s", key, exc)
            self._silences = decoded
        return self._silences



class TextKeyStore(MutableMapping[str, bytes]):
    """A Faust table seen as a mapping from text keys to bytes, as the correlation engine expects."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        value: bytes = self.table[key.encode()]
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self.table.keys())

    def __len__(self) -> int:
        return len(self.table)

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key.encode(), default)


class RawTable(Table):  # type: ignore[type-arg]
    """A partitioned Table that stores keys and values as the bytes it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = "raw"


def state_table(app: faust.App, name: str, partitions: int) -> TextKeyStore:
    """Create a changelog-backed table for state written by one agent only, keyed within its partitions.

    Its changelog partition is the partition of the message being processed, so
    the table is co-partitioned with the topic of the agent that writes it and
    moves with that topic's partitions on a rebalance.
    """
    table = RawTable(app, name=name, partitions=partitions, beacon=app.tables.beacon,
                     help=f"{name}: state of one agent, partitioned like the topic it consumes")
    app.tables.add(table)
    return TextKeyStore(table)


def shared_table(app: faust.App, name: str, partitions: int) -> TextKeyStore:
    """Create a global table, which every worker reads in full, for state that spans partitions (the circuit breaker)."""
    return TextKeyStore(_global_table(app, name, partitions, lambda: None))
