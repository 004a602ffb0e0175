"""Policy and asset tables: compacted topics feeding changelog-backed global tables.

Each feed agent consumes its compacted topic and writes every record into a
GlobalTable, whose Faust changelog lets a restarted worker recover the table
and lets every worker of the group see every record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.tables.globaltable import GlobalTable
from pydantic import ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError
from mitigate.models import AssetContext, PolicyVersion
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


class PolicyTable:
    """The policies in force, as a table of PolicyVersion bytes and a decoded index.

    NOTE: on the first start of a new application id, the anomaly agent may
    process events before the feed agent has read the policies topic; such events
    get the no-policy default (review). A restarted worker recovers the table
    before any agent runs, so only a fresh deployment with a backlog is affected.
    """

    def __init__(self, app: faust.App, topic: faust.TopicT, partitions: int, codec: AvroCodec) -> None:
        self.codec = codec
        self.table = _global_table(app, "policy-table", partitions, self.invalidate)
        self._index: PolicyIndex | None = None
        app.agent(topic, name="policy-feed")(self._feed)

    def invalidate(self) -> None:
        self._index = None

    def index(self) -> PolicyIndex:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> PolicyIndex:
        active: list[ActivePolicy] = []
        for key, value in self.table.items():
            version = self._decode(value, key)
            if version is None or version.deleted:
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

    async def _feed(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            key = event.message.key
            if key is None:
                logger.error("policy message without key ignored source=%s[%d]@%d",
                             event.message.topic, event.message.partition, event.message.offset)
                continue
            if event.value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = event.value
            self.invalidate()


class AssetTable:
    """Asset context by entity, as a table of AssetContext bytes."""

    def __init__(self, app: faust.App, topic: faust.TopicT, partitions: int, codec: AvroCodec) -> None:
        self.codec = codec
        self.table = _global_table(app, "asset-table", partitions, lambda: None)
        app.agent(topic, name="asset-feed")(self._feed)

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

    async def _feed(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            key = event.message.key
            if key is None:
                logger.error("asset message without key ignored source=%s[%d]@%d",
                             event.message.topic, event.message.partition, event.message.offset)
                continue
            if event.value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = event.value
