"""Build the Faust application of the pipeline from WorkerSettings."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import faust
import orjson

from mitigate.agents.anomalies import AnomalyAgent
from mitigate.agents.reference import AssetTable, PolicyTable
from mitigate.codec import AvroCodec, create_registry_client
from mitigate.decision import Decider
from mitigate.intake import DetectorCatalog, Intake
from mitigate.pipeline import Pipeline
from mitigate.schemas import SchemaRepository
from mitigate.settings import WorkerSettings
from mitigate.topology import DEAD_LETTER_MAX_BYTES

logger = logging.getLogger(__name__)

READY_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Worker:
    """The Faust app and the parts tests and tools look into."""

    app: faust.App
    pipeline: Pipeline
    policies: PolicyTable
    assets: AssetTable
    anomalies: AnomalyAgent


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_worker(settings: WorkerSettings) -> Worker:
    topology = settings.topology()
    repository = SchemaRepository()
    registry = create_registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
    codec = AvroCodec(repository, registry)

    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.bootstrap_servers),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=DEAD_LETTER_MAX_BYTES + 64 * 1024,
        web_enabled=False,
        autodiscover=False,
    )

    policies = PolicyTable(app, _source(app, topology.policies, 1), 1, codec)
    assets = AssetTable(app, _source(app, topology.assets, settings.partitions), settings.partitions, codec)
    intake = Intake(
        codec,
        DetectorCatalog.load(settings.detectors_file),
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        max_event_age=timedelta(seconds=settings.max_event_age_s),
    )
    pipeline = Pipeline(
        topology=topology,
        codec=codec,
        intake=intake,
        decider=Decider(default_review_timeout=timedelta(seconds=settings.review_timeout_s)),
        policies=policies.index,
        assets=assets.lookup,
    )
    anomalies = AnomalyAgent(app, _source(app, topology.anomalies, settings.partitions), pipeline)
    worker = Worker(app, pipeline, policies, assets, anomalies)
    if settings.ready_file is not None:
        _report_readiness(worker, settings.ready_file)
    return worker


def _source(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)


def _report_readiness(worker: Worker, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)

    @worker.app.timer(READY_INTERVAL_S, name="ready-file")  # type: ignore[untyped-decorator]
    async def write_ready_file() -> None:
        state = {
            "pid": os.getpid(),
            "policies": len(worker.policies.index()),
            "assets": worker.assets.count(),
            "processed": worker.anomalies.processed,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(state))
        temporary.replace(path)
