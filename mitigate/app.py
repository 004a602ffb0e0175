"""Build the Faust application of the pipeline from WorkerSettings."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import orjson

from mitigate.agents.anomalies import AnomalyAgent, ResultAgent, Sender, SignalAgent
from mitigate.agents.orchestrate import PlanAgent
from mitigate.agents.reference import AssetTable, PolicyTable, SilenceTable, shared_table, state_table
from mitigate.reference_reader import ReferenceReader, ReferenceSource
from mitigate.automation import AutomationSettings
from mitigate.codec import AvroCodec, create_registry_client
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider
from mitigate.faust_seek import guard_seek
from mitigate.intake import DetectorCatalog, Intake
from mitigate.models import MetricsWindow
from mitigate.operators import load_operators
from mitigate.orchestration import Orchestrator
from mitigate.pipeline import DecisionStage, Pipeline
from mitigate.producer import WorkerProducer
from mitigate.redelivery import Journal, PrefixedStore, SentLog, engine_stores
from mitigate.review import ReviewDesk
from mitigate.telemetry import Telemetry, default_worker_name
from mitigate.web import add_pages
from mitigate.schemas import SchemaRepository
from mitigate.settings import WorkerSettings
from mitigate.topology import DEAD_LETTER_MAX_BYTES

logger = logging.getLogger(__name__)

READY_INTERVAL_S = 1.0

# Python's cyclic garbage collector starts a young collection every 700 allocations
# by default, and a full one over every tracked object after a hundred of those.
# The decide stage alone, without Kafka, took 212 µs per signal at the default
# thresholds and 144 µs at these (20,000 signals of `python -m benchmarks.stages`).
# Objects that live as long as the worker (Faust's own, the reference data) are
# frozen out of full collections once the reference topics are read.
GC_THRESHOLDS = (20_000, 10, 10)


@dataclass(frozen=True, slots=True)
class Worker:
    """The Faust app and the parts tests and tools look into."""

    app: faust.App
    pipeline: Pipeline
    stage: DecisionStage
    reference: ReferenceReader
    policies: PolicyTable
    assets: AssetTable
    silences: SilenceTable
    anomalies: AnomalyAgent
    signals: SignalAgent


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_worker(settings: WorkerSettings) -> Worker:
    guard_seek()
    topology = settings.topology()
    registry = create_registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
    codec = AvroCodec(SchemaRepository(), registry)
    automation = AutomationSettings.load(settings.automation_file)
    partitions = settings.partitions

    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.bootstrap_servers),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=DEAD_LETTER_MAX_BYTES + 64 * 1024,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # Faust's own pages (tables, router, graph, statistics) stay off; the worker serves its own.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        autodiscover=False,
        # A worker killed without leaving its group keeps its partitions until the
        # session times out. 15 s (Faust's default is 60 s) lets a restarted worker
        # take them over sooner. Heartbeats come from the consumer thread, so a
        # busy event loop does not delay them.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        # Outputs and table changelogs go through the WorkerProducer (mitigate/producer.py),
        # which lingers 5 ms too. Faust's own producer keeps the same batching for anything
        # Faust sends itself.
        producer_linger_ms=5,
        producer_max_batch_size=262144,
        # Faust's repaired Cython stream iterator takes an event already in the channel's
        # queue directly, instead of awaiting the channel for each event.
        cython_optimizations=True,
    )
    producer = WorkerProducer(settings.bootstrap_servers, settings.app_id, DEAD_LETTER_MAX_BYTES + 64 * 1024)
    _run_producer(app, producer)
    _drop_builtin_monitor(app)
    sender = Sender(producer)
    telemetry = Telemetry(automation.metrics, f"{settings.app_id}@{default_worker_name()}")
    add_pages(app, telemetry)
    _publish_windows(app, sender, producer, codec, telemetry, topology.metrics)

    policy_source = ReferenceSource(topology.policies, "policy")
    asset_source = ReferenceSource(topology.assets, "asset")
    silence_source = ReferenceSource(topology.silences, "silence")
    reference = ReferenceReader(settings.bootstrap_servers, [policy_source, asset_source, silence_source],
                                settings.app_id)
    _run_reference_reader(app, reference)
    _tune_garbage_collector(app, reference)
    policies = PolicyTable(reference, policy_source, codec)
    assets = AssetTable(asset_source, codec)
    silences = SilenceTable(reference, silence_source, codec)

    intake = Intake(
        codec,
        DetectorCatalog.load(settings.detectors_file),
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        max_event_age=timedelta(seconds=settings.max_event_age_s),
        max_event_bytes=settings.max_event_bytes,
    )
    pipeline = Pipeline(topology=topology, codec=codec, intake=intake, assets=assets.lookup)
    anomalies = AnomalyAgent(app, _source(app, topology.anomalies, partitions), pipeline, sender, telemetry,
                             reference)

    # Everything the signals agent keeps lives in one table. Its changelog partition then
    # contains one signal's log entry and state writes in the order they were written.
    decide_state = state_table(app, "decide-table", partitions, producer)
    journal = Journal()
    engine = IncidentEngine(
        settings=automation,
        decider=Decider(default_review_timeout=timedelta(seconds=settings.review_timeout_s),
                        clock=lambda: datetime.now(UTC)),
        policies=policies.index,
        silences=silences.silences,
        **engine_stores(journal, decide_state),
    )
    stage = DecisionStage(topology=topology, codec=codec, engine=engine,
                          sent=SentLog(PrefixedStore(decide_state, "sent:")), journal=journal)
    breaker_store = shared_table(app, "breaker-table", partitions, producer)
    signals = SignalAgent(app, _source(app, topology.signals, partitions), stage, sender,
                          automation.circuit_breaker, breaker_store, telemetry, reference)
    ResultAgent(app, _source(app, topology.action_results, partitions), codec,
                automation.circuit_breaker, breaker_store, telemetry)
    orchestrator = Orchestrator(automation.orchestration, codec)
    operators = load_operators(settings.operators_file)
    if not operators.operators:
        logger.warning("the operators file %s lists no operators, so every review verdict will be rejected",
                       settings.operators_file)
    desk = ReviewDesk(automation.reviews, operators, orchestrator, codec)
    PlanAgent(app, topology, orchestrator, desk, codec, sender,
              state_table(app, "plan-table", partitions, producer), partitions, telemetry)

    worker = Worker(app, pipeline, stage, reference, policies, assets, silences, anomalies, signals)
    if settings.ready_file is not None:
        _report_readiness(worker, settings.ready_file)
    return worker


def _publish_windows(app: faust.App, sender: Sender, producer: WorkerProducer, codec: AvroCodec,
                     telemetry: Telemetry, topic: str) -> None:
    """Publish each ended window to the metrics topic, and the unfinished one when the worker stops."""

    async def send(windows: list[MetricsWindow]) -> None:
        for window in windows:
            sender.produce(topic, window.worker.encode(), codec.encode("MetricsWindow", window.to_avro()))

    @app.timer(1.0, name="metrics-windows")  # type: ignore[untyped-decorator]
    async def publish_ended() -> None:
        await send(telemetry.ended_windows(datetime.now(UTC)))

    async def publish_all(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await send(telemetry.flush(datetime.now(UTC)))
        # Messages without an input offset (these windows, the orchestrator's ticks) wait for
        # no commit, so they are flushed here. Messages queued later are flushed by the final commit.
        producer.close()

    app.on_before_shutdown.connect(publish_all)


def _run_producer(app: faust.App, producer: WorkerProducer) -> None:
    """Hook the producer into Faust's flush, which runs before every offset commit."""
    producer.bind(app)

    @app.task  # type: ignore[untyped-decorator]
    async def attach_producer() -> None:
        producer.attach(app)


def _tune_garbage_collector(app: faust.App, reference: ReferenceReader) -> None:
    gc.set_threshold(*GC_THRESHOLDS)

    @app.task  # type: ignore[untyped-decorator]
    async def freeze_long_lived() -> None:
        await reference.wait_loaded()
        gc.collect()
        gc.freeze()


def _drop_builtin_monitor(app: faust.App) -> None:
    """Stop passing every event and table access to Faust's built-in Monitor sensor.

    Only Faust's statistics pages read it, and the worker turns them off. The
    Prometheus sensor behind /metrics stays. Faust adds the Monitor as it
    starts, so it is removed from the sensors once the worker runs.
    """

    @app.task  # type: ignore[untyped-decorator]
    async def drop_monitor() -> None:
        app.sensors.remove(app.monitor)


def _run_reference_reader(app: faust.App, reader: ReferenceReader) -> None:
    """Start the reader's thread when the worker starts, and stop it when the worker stops."""

    @app.task  # type: ignore[untyped-decorator]
    async def start_reference_reader() -> None:
        reader.start()

    async def stop_reader(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        reader.stop()

    app.on_before_shutdown.connect(stop_reader)


def _source(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)


def _report_readiness(worker: Worker, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)

    @worker.app.timer(READY_INTERVAL_S, name="ready-file")  # type: ignore[untyped-decorator]
    async def write_ready_file() -> None:
        # Until the reference topics are read, the policy and silence counts stay 0: building
        # the policy index after every batch of a long read would only hold up the event loop.
        loaded = worker.reference.loaded.is_set()
        state = {
            "pid": os.getpid(),
            "reference_loaded": loaded,
            "policies": len(worker.policies.index()) if loaded else 0,
            "assets": worker.assets.count(),
            "silences": len(worker.silences.silences()) if loaded else 0,
            "processed": worker.anomalies.processed,
            "decided": worker.signals.decided,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(state))
        temporary.replace(path)
