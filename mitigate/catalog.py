"""Publishing to and reading from the compacted reference topics (policies and assets)."""

from __future__ import annotations

import difflib
import hashlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ConfigDict, ValidationError

from mitigate.codec import AvroCodec
from mitigate.errors import ConfigurationError, DecodeError, MitigateError
from mitigate.kafka import client_config, create_producer, flush_or_raise
from mitigate.models import AssetContext, Criticality, MaintenanceWindow, PolicyVersion, Silence
from mitigate.policy import PolicyDocument, check_ties, policy_from_json

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
#
# Every version is its own message, keyed "<policy id>@<version>", so the
# compacted topic keeps the whole history: compaction removes only repeated
# keys, and a version is never written twice.


@dataclass(frozen=True, slots=True)
class PublishResult:
    policy_id: str
    version: int
    action: str  # published or unchanged


def version_key(policy_id: str, version: int) -> bytes:
    return f"{policy_id}@{version}".encode()


def policy_histories(bootstrap_servers: str, topic: str, codec: AvroCodec) -> dict[str, list[PolicyVersion]]:
    """Return every published version of every policy, oldest first."""
    histories: dict[str, list[PolicyVersion]] = {}
    for key, value in read_topic(bootstrap_servers, topic):
        if value is None:
            continue
        try:
            version = PolicyVersion.model_validate(codec.decode(value, "PolicyVersion").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("policy key=%r in %s cannot be decoded and is skipped: %s", key, topic, exc)
            continue
        histories.setdefault(version.policy_id, []).append(version)
    for versions in histories.values():
        versions.sort(key=lambda item: item.version)
    return histories


def latest_policy_versions(bootstrap_servers: str, topic: str, codec: AvroCodec) -> dict[str, PolicyVersion]:
    return {policy_id: versions[-1] for policy_id, versions in policy_histories(bootstrap_servers, topic, codec).items()}


def version_of(histories: Mapping[str, list[PolicyVersion]], policy_id: str, version: int | None) -> PolicyVersion:
    """Return one version (the latest when `version` is None); raise MitigateError when there is none."""
    versions = histories.get(policy_id)
    if not versions:
        known = ", ".join(sorted(histories)) or "none"
        raise MitigateError(f"policy {policy_id!r} not found; published policies: {known}")
    if version is None:
        return versions[-1]
    for candidate in versions:
        if candidate.version == version:
            return candidate
    raise MitigateError(
        f"policy {policy_id!r} has no version {version}; versions: {', '.join(str(v.version) for v in versions)}"
    )


def publish_policies(
    bootstrap_servers: str,
    topic: str,
    codec: AvroCodec,
    documents: list[PolicyDocument],
    *,
    author: str,
    change_note: str,
    sources: Mapping[str, str] | None = None,
) -> list[PublishResult]:
    """Publish a new version of every policy whose content changed; unchanged ones are skipped.

    Raises PolicyError, before anything is published, when a policy would tie
    with another one (published or in `documents`).
    """
    latest = latest_policy_versions(bootstrap_servers, topic, codec)
    in_force = {
        policy_id: policy_from_json(version.document, version.version).document
        for policy_id, version in latest.items()
        if not version.deleted
    }
    all_sources = {policy_id: f"published version {latest[policy_id].version}" for policy_id in in_force}
    all_sources.update(sources or {})
    in_force.update({document.id: document for document in documents})
    check_ties(in_force.values(), all_sources)

    producer = create_producer(bootstrap_servers)
    results = []
    for document in documents:
        current = latest.get(document.id)
        if current is not None and current.content_hash == document.content_hash() and not current.deleted:
            results.append(PublishResult(document.id, current.version, "unchanged"))
            continue
        version = _produce_version(producer, topic, codec, document.id, document.canonical_json(),
                                   current, author=author, change_note=change_note)
        results.append(PublishResult(document.id, version.version, "published"))
    flush_or_raise(producer)
    return results


def _produce_version(
    producer: Any,
    topic: str,
    codec: AvroCodec,
    policy_id: str,
    document: str,
    current: PolicyVersion | None,
    *,
    author: str,
    change_note: str,
    deleted: bool = False,
) -> PolicyVersion:
    version = PolicyVersion(
        policy_id=policy_id,
        version=(current.version + 1) if current is not None else 1,
        author=author,
        published_at=datetime.now(UTC),
        change_note=change_note,
        content_hash=hashlib.sha256(document.encode()).hexdigest(),
        document=document,
        deleted=deleted,
    )
    producer.produce(topic, key=version_key(policy_id, version.version),
                     value=codec.encode("PolicyVersion", version.to_avro()))
    return version


def rollback_policy(
    bootstrap_servers: str, topic: str, codec: AvroCodec, policy_id: str, to_version: int,
    *, author: str, change_note: str,
) -> PolicyVersion:
    """Republish the document of an earlier version as a new version; history is never rewritten."""
    histories = policy_histories(bootstrap_servers, topic, codec)
    target = version_of(histories, policy_id, to_version)
    current = histories[policy_id][-1]
    if target.content_hash == current.content_hash and not current.deleted:
        raise MitigateError(
            f"version {current.version} of {policy_id!r}, in force now, has the same content as version "
            f"{to_version}; nothing to roll back"
        )
    if target.deleted:
        raise MitigateError(f"version {to_version} of {policy_id!r} is a withdrawal; roll back to a version before it")
    others = {
        other_id: policy_from_json(versions[-1].document, versions[-1].version).document
        for other_id, versions in histories.items()
        if other_id != policy_id and not versions[-1].deleted
    }
    restored = policy_from_json(target.document, target.version).document
    sources = {other_id: f"published version {histories[other_id][-1].version}" for other_id in others}
    sources[policy_id] = f"version {to_version}"
    check_ties([*others.values(), restored], sources)
    producer = create_producer(bootstrap_servers)
    note = change_note or f"rollback to version {to_version}"
    version = _produce_version(producer, topic, codec, policy_id, target.document, current,
                               author=author, change_note=note)
    flush_or_raise(producer)
    return version


def withdraw_policy(
    bootstrap_servers: str, topic: str, codec: AvroCodec, policy_id: str, *, author: str, change_note: str,
) -> PolicyVersion:
    """Publish a version that takes the policy out of force; its history stays."""
    histories = policy_histories(bootstrap_servers, topic, codec)
    current = version_of(histories, policy_id, None)
    if current.deleted:
        raise MitigateError(f"policy {policy_id!r} is already withdrawn (version {current.version})")
    producer = create_producer(bootstrap_servers)
    version = _produce_version(producer, topic, codec, policy_id, current.document, current,
                               author=author, change_note=change_note, deleted=True)
    flush_or_raise(producer)
    return version


def document_yaml(version: PolicyVersion) -> str:
    """Return the policy document of a version as YAML, for show and diff."""
    return yaml.safe_dump(orjson.loads(version.document), sort_keys=True, default_flow_style=False)


def diff_versions(first: PolicyVersion, second: PolicyVersion) -> str:
    lines = difflib.unified_diff(
        document_yaml(first).splitlines(keepends=True),
        document_yaml(second).splitlines(keepends=True),
        fromfile=f"{first.policy_id} v{first.version}",
        tofile=f"{second.policy_id} v{second.version}",
    )
    return "".join(lines)


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
    maintenance_windows: list[MaintenanceWindow] = []
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


# Silences


def read_silences(bootstrap_servers: str, topic: str, codec: AvroCodec) -> dict[str, Silence]:
    """Return the latest state of every silence on the compacted silences topic."""
    silences: dict[str, Silence] = {}
    for key, value in read_topic(bootstrap_servers, topic):
        if key is None:
            continue
        silence_id = key.decode("utf-8", errors="replace")
        if value is None:
            silences.pop(silence_id, None)
            continue
        try:
            silences[silence_id] = Silence.model_validate(codec.decode(value, "Silence").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("silence key=%s in %s cannot be decoded and is skipped: %s", silence_id, topic, exc)
    return silences


def publish_silence(bootstrap_servers: str, topic: str, codec: AvroCodec, silence: Silence) -> None:
    producer = create_producer(bootstrap_servers)
    producer.produce(topic, key=silence.silence_id.encode(), value=codec.encode("Silence", silence.to_avro()))
    flush_or_raise(producer)
