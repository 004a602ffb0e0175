"""The pipeline's two stages as plain function calls, without Kafka or Faust: what the stage code itself costs.

    python -m benchmarks.stages [--events N] [--profile N]

It runs the events of `make bench` through intake and enrich (Pipeline) and
then correlate and decide (DecisionStage), with the shipped policies, assets,
detectors and automation settings. The decide stage keeps its state in a
dict through the same journal and redelivery log as the worker, and the
process uses the worker's garbage collector thresholds. It prints the wall
time per event of each stage. With --profile it also prints the N functions
with the most own time in the decide stage, measured with cProfile. cProfile
slows every call, so the decide stage's time is higher in that run.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mitigate.app import GC_THRESHOLDS
from mitigate.automation import AutomationSettings
from mitigate.catalog import load_assets
from mitigate.codec import AvroCodec
from mitigate.correlation import IncidentEngine
from mitigate.decision import Decider
from mitigate.intake import DetectorCatalog, Intake, SourceMessage
from mitigate.limits import ShardedBreaker
from mitigate.models import AssetContext
from mitigate.pipeline import DecisionStage, Pipeline, Processed
from mitigate.policy import ActivePolicy, PolicyIndex, load_policy_files
from mitigate.redelivery import Journal, PrefixedStore, SentLog, engine_stores
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology

from benchmarks.run import encode_events, make_events

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


def build_stages(codec: AvroCodec, table: dict[str, bytes]) -> tuple[Pipeline, DecisionStage, ShardedBreaker]:
    """Build both stages as the worker does, with dicts in place of its Faust tables."""
    topology = Topology()
    automation = AutomationSettings.load(CONFIG / "automation.yaml")
    index = PolicyIndex([ActivePolicy(document, 1) for document in load_policy_files([CONFIG / "policies"])])
    now = datetime.now(UTC)
    assets = {entry.entity: AssetContext(updated_at=now, **entry.model_dump())
              for entry in load_assets(CONFIG / "assets.yaml")}
    intake = Intake(codec, DetectorCatalog.load(CONFIG / "detectors.yaml"),
                    max_future_skew=timedelta(minutes=5), max_event_age=timedelta(days=1))
    pipeline = Pipeline(topology=topology, codec=codec, intake=intake, assets=assets.get)
    journal = Journal()
    engine = IncidentEngine(
        settings=automation,
        decider=Decider(default_review_timeout=timedelta(minutes=30), clock=lambda: datetime.now(UTC)),
        policies=lambda: index,
        silences=list,
        **engine_stores(journal, table),
    )
    stage = DecisionStage(topology=topology, codec=codec, engine=engine,
                          sent=SentLog(PrefixedStore(table, "sent:")), journal=journal)
    breaker = ShardedBreaker(automation.circuit_breaker, {}, "signals:0")
    return pipeline, stage, breaker


def signal_messages(processed: list[Processed]) -> list[SourceMessage]:
    """Return the signals that intake passed on, as the decide stage reads them from the signals topic."""
    messages: list[SourceMessage] = []
    for item in processed:
        if item.signal is None:
            continue
        (outgoing,) = item.messages
        messages.append(SourceMessage(topic=outgoing.topic, partition=0, offset=len(messages), timestamp=None,
                                      key=outgoing.key, value=outgoing.value, headers=outgoing.headers))
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to run through both stages (default 20000)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile the decide stage and print its N costliest functions (default 0: off)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")

    codec = AvroCodec(SchemaRepository())
    table: dict[str, bytes] = {}
    pipeline, stage, breaker = build_stages(codec, table)
    anomalies = [
        SourceMessage(topic="anomalies", partition=0, offset=offset, timestamp=None, key=key, value=value, headers=())
        for offset, (key, value, _) in enumerate(encode_events(codec, make_events(args.events, seed=7)))
    ]
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()

    started = time.perf_counter()
    processed = [pipeline.process(message) for message in anomalies]
    intake_s = time.perf_counter() - started
    signals = signal_messages(processed)

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    decided = [stage.process(message, breaker) for message in signals]
    decide_s = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)

    outcomes = Counter(item.decision.record.outcome for item in decided if item.decision is not None)
    print(f"intake and enrich: {len(anomalies)} events, {1e6 * intake_s / len(anomalies):.0f} us per event")
    print(f"correlate and decide: {len(signals)} signals, {1e6 * decide_s / max(len(signals), 1):.0f} us per signal"
          + (" (under cProfile)" if profiler is not None else ""))
    print("outcomes: " + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
