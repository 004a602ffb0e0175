"""Publishing to and reading from the compacted reference topics (policies and assets)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ConfigDict, ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import ConfigurationError, DecodeError, MitigateError
from mitigate.kafka import client_config, create_producer, flush_or_raise
from mitigate.models import AssetContext, Criticality, PolicyVersion
from mitigate.policy import PolicyDocument

logger = logging.getLogger(__name__)


def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Yield (key, value) of every message of `topic`, from the beginning to the end as of the call."""
    consumer = Consumer(client_config(
        bootstrap_servers,
        **{"group.id": f"mitigate-reader-{uuid.uuid4()}", "enable.auto.commit": False, "enable.partition.eof": True},
    ))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None:
            raise MitigateError(f"topic {topic} not found; run `mitigate topics create` first")
        pending: set[int] = set()
        assignment = []
        for partition in topic_metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                pending.add(partition)
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        if not assignment:
            return
        consumer.assign(assignment)
        yield from _drain(consumer, pending, timeout_s)
    except KafkaException as exc:
        raise MitigateError(f"reading topic {topic} failed: {exc}") from exc
    finally:
        consumer.close()


def _drain(consumer: Consumer, pending: set[int], timeout_s: float) -> Iterator[tuple[bytes | None, bytes | None]]:
    idle_polls = 0
    while pending:
        message = consumer.poll(1.0)
        if message is None:
            idle_polls += 1
            if idle_polls > timeout_s:
                raise MitigateError(f"timed out reading partitions {sorted(pending)} to their end")
            continue
        idle_polls = 0
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
                continue
            raise MitigateError(f"consuming failed: {error.str()}")
        yield message.key(), message.value()


# Policies


@dataclass(frozen=True, slots=True)
class PublishResult:
    policy_id: str
    version: int
    action: str  # published or unchanged


def latest_policy_versions(bootstrap_servers: str, topic: str, codec: AvroCodec) -> dict[str, PolicyVersion]:
    latest: dict[str, PolicyVersion] = {}
    for key, value in read_topic(bootstrap_servers, topic):
        if key is None:
            continue
        policy_id = key.decode("utf-8", errors="replace")
        if value is None:
            latest.pop(policy_id, None)
            continue
        try:
            latest[policy_id] = PolicyVersion.model_validate(codec.decode(value, "PolicyVersion").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("policy key=%s in %s cannot be decoded and is skipped: %s", policy_id, topic, exc)
    return latest


def publish_policies(
    bootstrap_servers: str,
    topic: str,
    codec: AvroCodec,
    documents: list[PolicyDocument],
    *,
    author: str,
    change_note: str,
) -> list[PublishResult]:
    """Publish a new version of every policy whose content changed; unchanged ones are skipped."""
    latest = latest_policy_versions(bootstrap_servers, topic, codec)
    producer = create_producer(bootstrap_servers)
    results = []
    now = datetime.now(UTC)
    for document in documents:
        content_hash = document.content_hash()
        current = latest.get(document.id)
        if current is not None and current.content_hash == content_hash and not current.deleted:
            results.append(PublishResult(document.id, current.version, "unchanged"))
            continue
        version = PolicyVersion(
            policy_id=document.id,
            version=(current.version + 1) if current is not None else 1,
            author=author,
            published_at=now,
            change_note=change_note,
            content_hash=content_hash,
            document=document.canonical_json(),
        )
        producer.produce(topic, key=document.id.encode(), value=codec.encode("PolicyVersion", version.to_avro()))
        results.append(PublishResult(document.id, version.version, "published"))
    flush_or_raise(producer)
    return results


# Assets


class AssetEntry(BaseModel):
    """One asset as written in an assets file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: str
    owner: str
    tier: str
    criticality: Criticality
    environment: str
    change_freeze: bool = False
    labels: dict[str, str] = {}


class AssetFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    assets: list[AssetEntry]


def load_assets(path: Path) -> list[AssetEntry]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return AssetFile.model_validate(data).assets
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"{path}: {field}: {first['msg']}") from exc


def publish_assets(bootstrap_servers: str, topic: str, codec: AvroCodec, entries: list[AssetEntry]) -> int:
    producer = create_producer(bootstrap_servers)
    now = datetime.now(UTC)
    for entry in entries:
        context = AssetContext(updated_at=now, **entry.model_dump())
        producer.produce(topic, key=entry.entity.encode(), value=codec.encode("AssetContext", context.to_avro()))
    flush_or_raise(producer)
    return len(entries)
