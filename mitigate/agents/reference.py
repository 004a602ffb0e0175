"""Policy, asset and silence tables read from their compacted topics, and the Faust tables of agent state.

The compacted `policies`, `assets` and `silences` topics hold the latest record
of every key, so a ReferenceReader reads them directly into memory (see
mitigate/reference_reader.py): every worker reads every record, a restarted
worker reads them again from the beginning, and updates and tombstones apply
while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import faust
from faust.stores.base import SerializedStore
from faust.tables.globaltable import GlobalTable
from faust.tables.table import Table
from pydantic import ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError
from mitigate.models import AssetContext, PolicyVersion, Silence
from mitigate.policy import ActivePolicy, PolicyIndex, policy_from_json
from mitigate.producer import OffsetSink, WorkerProducer
from mitigate.reference_reader import ReferenceReader, ReferenceSource

logger = logging.getLogger(__name__)


class _Queued:
    """A stand-in for Faust's FutureMessage, with the one field Table.on_key_set reads: the message's partition."""

    __slots__ = ("message", "partition")

    def __init__(self, partition: int | None) -> None:
        self.message = self
        self.partition = partition


class ChangelogViaProducer:
    """Send a table's changelog messages through the WorkerProducer instead of Faust's buffer.

    Faust writes the local store before it calls send_changelog, and records the
    changelog offset as persisted once the message is delivered. The
    WorkerProducer records it through an OffsetSink at each flush.
    """

    producer: WorkerProducer
    sink: OffsetSink
    changelog_topic_name: str

    def send_changelog(self, partition: int | None, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> Any:
        self.producer.produce(self.changelog_topic_name, key, value, partition=partition, sink=self.sink)
        return _Queued(partition)


# RocksDB options of each partition's store. Faust's defaults (64 MiB memtables, up to
# three per store, and a 2 GiB block cache) apply to every store, and a worker opens
# one store per partition of each table: twelve with four partitions. The tables hold
# kilobytes per incident and per recent signal. With the defaults, the worker's peak
# memory after a 40,000-event benchmark run was 361 MB; with these, 240 MB.
MIB = 1024 * 1024
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * MIB,
    "block_cache_size": 16 * MIB,
}


def _store_options() -> dict[str, Any]:
    # A fresh dict per table, because Faust's RocksDB store pops keys out of the dict it is given.
    return dict(ROCKSDB_OPTIONS)


def _bind_producer(table: Any, producer: WorkerProducer) -> None:
    table.producer = producer
    table.sink = OffsetSink(table)
    producer.sinks.append(table.sink)


class RawGlobalTable(ChangelogViaProducer, GlobalTable):
    """A GlobalTable that stores keys and values as the bytes it is given.

    Faust derives a table's serializers from its key and value types and falls
    back to JSON; the circuit breaker's shards are stored as given bytes.
    """

    def __init__(self, *args: Any, producer: WorkerProducer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = "raw"
        _bind_producer(self, producer)


def _global_table(app: faust.App, name: str, partitions: int, on_change: Callable[[], None],
                  producer: WorkerProducer) -> RawGlobalTable:
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
        help=f"{name}, read in full by every worker",
        options=_store_options(),
        producer=producer,
    )
    app.tables.add(table)
    return table


class PolicyTable:
    """The policies in force: every PolicyVersion of the policies topic, and an index of the latest ones.

    The agents wait until the reader has read the policies topic up to its end
    offset as of the worker's start, so every event is decided with at least
    the policies published before the worker started.
    """

    def __init__(self, reader: ReferenceReader, source: ReferenceSource, codec: AvroCodec) -> None:
        self.codec = codec
        self.reader = reader
        self.source = source
        self._index: tuple[int, PolicyIndex] | None = None

    def index(self) -> PolicyIndex:
        if self._index is None or self._index[0] != self.source.version:
            self._index = self._build_index()
        return self._index[1]

    def _build_index(self) -> tuple[int, PolicyIndex]:
        version, items = self.reader.snapshot(self.source)
        latest: dict[str, PolicyVersion] = {}
        for key, value in items:
            policy_version = self._decode(value, key)
            if policy_version is None:
                continue
            current = latest.get(policy_version.policy_id)
            if current is None or policy_version.version > current.version:
                latest[policy_version.policy_id] = policy_version

        active: list[ActivePolicy] = []
        for policy_version in latest.values():
            if policy_version.deleted:
                continue
            try:
                active.append(policy_from_json(policy_version.document, policy_version.version))
            except ValidationError as exc:
                # Publishing validates every document, so this means a writer bypassed `mitigate policy publish`.
                logger.error("policy=%s version=%d has an invalid document and is ignored: %s",
                             policy_version.policy_id, policy_version.version, exc)
        logger.info("policy index rebuilt policies=%d", len(active))
        return version, PolicyIndex(active)

    def _decode(self, value: bytes, key: bytes) -> PolicyVersion | None:
        try:
            return PolicyVersion.model_validate(self.codec.decode(value, "PolicyVersion").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("policy key=%r cannot be decoded and is ignored: %s", key, exc)
            return None


class AssetTable:
    """Asset context by entity, as a mapping of AssetContext bytes."""

    def __init__(self, source: ReferenceSource, codec: AvroCodec) -> None:
        self.codec = codec
        self.source = source

    def lookup(self, entity: str) -> AssetContext | None:
        value = self.source.records.get(entity.encode())
        if value is None:
            return None
        try:
            return AssetContext.model_validate(self.codec.decode(value, "AssetContext").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("asset entity=%s cannot be decoded; treating it as unknown: %s", entity, exc)
            return None

    def count(self) -> int:
        return len(self.source.records)


class SilenceTable:
    """Silences by id, as a mapping of Silence bytes and a decoded list."""

    def __init__(self, reader: ReferenceReader, source: ReferenceSource, codec: AvroCodec) -> None:
        self.codec = codec
        self.reader = reader
        self.source = source
        self._silences: tuple[int, list[Silence]] | None = None

    def silences(self) -> list[Silence]:
        if self._silences is None or self._silences[0] != self.source.version:
            version, items = self.reader.snapshot(self.source)
            decoded = []
            for key, value in items:
                try:
                    decoded.append(Silence.model_validate(self.codec.decode(value, "Silence").record))
                except (DecodeError, ValidationError) as exc:
                    logger.error("silence key=%r cannot be decoded and is ignored: %s", key, exc)
            self._silences = (version, decoded)
        return self._silences[1]


class TextKeyStore(MutableMapping[str, bytes]):
    """A Faust table seen as a mapping from text keys to bytes, as the correlation engine expects."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def _read(self, key: bytes) -> bytes | None:
        # Reads go to the store itself, because Faust's Table.__getitem__ reads a RocksDB
        # store twice per hit (contains, then get) and raises KeyError on a miss. The
        # engine reads several keys per signal. Writes still go through the table, which
        # sends them to its changelog. The table's serializers are raw, so the stored
        # bytes are the value.
        # NOTE: uses faust-streaming 0.15's store internals (SerializedStore._get and
        # the memory store's dict).
        store = self.table.data
        if isinstance(store, SerializedStore):
            value: bytes | None = store._get(key)
            return value
        found: bytes | None = store.data.get(key)
        return found

    def __getitem__(self, key: str) -> bytes:
        value = self._read(key.encode())
        if value is None:
            raise KeyError(key)
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
        value = self._read(key.encode())
        return default if value is None else value


class RawTable(ChangelogViaProducer, Table):  # type: ignore[type-arg]
    """A partitioned Table that stores keys and values as the bytes it is given."""

    def __init__(self, *args: Any, producer: WorkerProducer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = "raw"
        _bind_producer(self, producer)


def state_table(app: faust.App, name: str, partitions: int, producer: WorkerProducer) -> TextKeyStore:
    """Create a changelog-backed table for state written by one agent only, keyed within its partitions.

    Its changelog partition is the partition of the message being processed, so
    the table is co-partitioned with the topic of the agent that writes it and
    moves with that topic's partitions on a rebalance.
    """
    table = RawTable(app, name=name, partitions=partitions, beacon=app.tables.beacon,
                     help=f"{name}: state of one agent, partitioned like the topic it consumes",
                     options=_store_options(), producer=producer)
    app.tables.add(table)
    return TextKeyStore(table)


def shared_table(app: faust.App, name: str, partitions: int, producer: WorkerProducer) -> TextKeyStore:
    """Create a global table, which every worker reads in full, for state that spans partitions (the circuit breaker)."""
    return TextKeyStore(_global_table(app, name, partitions, lambda: None, producer))
