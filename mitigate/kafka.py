"""Client configuration and topic administration with confluent-kafka."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from mitigate.errors import MitigateError
from mitigate.topology import TopicSpec, Topology

logger = logging.getLogger(__name__)

# murmur2 is the partitioner of the Java client and of aiokafka (which Faust
# uses). librdkafka's default (consistent_random, CRC32) would put the same key
# on a different partition than the worker's own producers do.
PARTITIONER = "murmur2_random"


class KafkaAdminError(MitigateError):
    """A topic could not be created or inspected."""


# librdkafka's own log lines go through Python logging, so that their level
# filtering and format match the rest of the output.
CLIENT_LOGGER = logging.getLogger("mitigate.kafka.client")


def client_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": CLIENT_LOGGER}
    config.update(overrides)
    return config


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": CLIENT_LOGGER,
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    config.update(overrides)
    return config


def create_producer(bootstrap_servers: str, **overrides: Any) -> Producer:
    return Producer(producer_config(bootstrap_servers, **overrides))


def flush_or_raise(producer: Producer, timeout_s: float = 30.0) -> None:
    """Wait for every queued message; raise when some were not delivered in time."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise KafkaAdminError(f"{remaining} messages were not delivered within {timeout_s:.0f} s; is the broker up?")


def check_reachable(bootstrap_servers: str, timeout_s: float = 10.0) -> None:
    """Raise KafkaAdminError with a hint when no broker responds within `timeout_s`."""
    admin = AdminClient(client_config(bootstrap_servers))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaAdminError(
            f"cannot reach Kafka at {bootstrap_servers} within {timeout_s:.0f} s ({exc.args[0].str()}); "
            "start a broker (scripts/kafka.sh start) or set MITIGATE_BOOTSTRAP_SERVERS"
        ) from exc


@dataclass(frozen=True, slots=True)
class TopicReport:
    """Result of ensure_topics for one topic."""

    name: str
    action: str  # created, exists, or mismatch
    detail: str = ""


def ensure_topics(bootstrap_servers: str, topology: Topology, timeout_s: float = 30.0) -> list[TopicReport]:
    """Create the missing topics of `topology` and compare existing ones with their declaration.

    Idempotent: existing topics are left alone; a partition count or cleanup
    policy that differs from the declaration is reported as a mismatch.
    """
    admin = AdminClient(client_config(bootstrap_servers))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaAdminError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc

    specs = {topology.name(spec.base_name): spec for spec in topology.specs()}
    missing = [name for name in specs if name not in metadata.topics]
    reports = [_create(admin, missing, specs, timeout_s)] if missing else []
    flat = [report for group in reports for report in group]

    for name, spec in specs.items():
        if name in metadata.topics:
            flat.append(_compare(admin, name, spec, len(metadata.topics[name].partitions), timeout_s))
    return sorted(flat, key=lambda report: report.name)


def _create(admin: AdminClient, names: list[str], specs: dict[str, TopicSpec], timeout_s: float) -> list[TopicReport]:
    new_topics = [
        NewTopic(name, num_partitions=specs[name].partitions, replication_factor=-1, config=specs[name].config())
        for name in names
    ]
    reports = []
    for name, future in admin.create_topics(new_topics, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == error.TOPIC_ALREADY_EXISTS:  # created concurrently by another process
                reports.append(TopicReport(name, "exists"))
                continue
            raise KafkaAdminError(f"creating topic {name} failed: {error.str()}") from exc
        reports.append(TopicReport(name, "created"))
    return reports


def _compare(admin: AdminClient, name: str, spec: TopicSpec, partitions: int, timeout_s: float) -> TopicReport:
    problems = []
    if partitions != spec.partitions:
        problems.append(f"{partitions} partitions, declared {spec.partitions}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result()
    except KafkaException as exc:
        raise KafkaAdminError(f"describing topic {name} failed: {exc}") from exc
    cleanup = configs["cleanup.policy"].value
    if cleanup != spec.cleanup_policy:
        problems.append(f"cleanup.policy={cleanup}, declared {spec.cleanup_policy}")
    if problems:
        return TopicReport(name, "mismatch", "; ".join(problems))
    return TopicReport(name, "exists")
