"""`make bench`: the pipeline against a pass-through Faust agent and a raw Kafka client, one after another.

Each arm gets its own topics on the same broker and the same Avro anomaly
events. For each arm the harness measures:

- drain rate: a backlog of --events events waits on the input topic before
  the arm starts. The rate counts the outputs from the first one to the last;
- CPU microseconds per event: the arm process's user and system CPU time over
  the same span, divided by the events it covered;
- latency at a fixed open-loop rate: --rate events a second for --seconds,
  each stamped when it is produced. The latency of an event runs from that
  stamp to the Kafka timestamp of its output, which the arm's producer sets.
  For the pipeline this phase starts once the worker has also processed the
  plans and review requests that the drain left behind;
- peak memory: the process's VmHWM from /proc.

The output of the raw and pass-through arms is the forwarded event. The
output of the pipeline is the event's DecisionRecord on the decisions topic.
For the pipeline the harness also times a worker that starts on an empty data
folder and rebuilds its policy and asset tables from their topics, with
--policies policies and --assets assets.

It prints a table with the ratios and writes everything as JSON (--output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from mitigate import __version__
from mitigate.codec import AvroCodec
from mitigate.kafka import client_config, create_producer, ensure_topics
from mitigate.models import AnomalyEvent, AssetContext, DecisionRecord, PolicyVersion
from mitigate.policy import PolicyDocument
from mitigate.report import about_event
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4


# Payloads


def make_events(count: int, seed: int) -> list[AnomalyEvent]:
    """Events of the reference detector on 2,000 machines in 100 subsystems, as the shipped policies cover them."""
    chooser = random.Random(seed)
    now = datetime.now(UTC)
    events = []
    for _ in range(count):
        machine = chooser.randrange(2000)
        line = machine % 100
        anomaly_type = chooser.choice(("spike", "dip"))
        severity = chooser.choices(("low", "medium", "high", "critical"), (30, 40, 25, 5))[0]
        events.append(AnomalyEvent(
            event_id=str(uuid.UUID(int=chooser.getrandbits(128))),
            detector_id="robust-zscore",
            detector_version="1.0.0",
            event_time=now,
            entity=f"machine-{machine:04d}",
            subsystem=f"industrial/line-{line:03d}",
            anomaly_type=anomaly_type,
            severity=severity,
            confidence=round(chooser.uniform(0.55, 0.99), 3),
            score=round(chooser.uniform(3.0, 12.0), 3),
            status="resolved" if chooser.random() < 0.2 else "firing",
            fingerprint=f"machine-{machine:04d}:{anomaly_type}",
            labels={"metric": "machine_temperature", "site": f"plant-{line % 7}", "team": "plant-operations",
                    "region": "eu-west-1"},
            annotations={"summary": f"temperature {anomaly_type} on machine-{machine:04d}",
                         "runbook": "https://runbooks.example/industrial/overheating"},
        ))
    return events


def encode_events(codec: AvroCodec, events: list[AnomalyEvent]) -> list[tuple[bytes, bytes, str]]:
    return [(event.entity.encode(), codec.encode("AnomalyEvent", event.to_avro()), event.event_id) for event in events]


def produce_all(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = create_producer(bootstrap, **{"linger.ms": 50, "batch.size": 1048576,
                                             "queue.buffering.max.messages": 500000})
    for key, value in items:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(300)
    if remaining:
        raise RuntimeError(f"{remaining} messages to {topic} were not delivered")


# Processes


@dataclass
class Usage:
    cpu_s: float
    peak_rss_mb: float


def usage(pid: int) -> Usage:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime and stime
    peak_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    return Usage(cpu_s, peak_kb / 1024)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Topics


def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient(client_config(bootstrap))
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=-1)
                                   for name in names])
    for future in futures.values():
        future.result()


def message_count(consumer: Consumer, topic: str) -> int:
    total = 0
    for partition in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        total += high - low
    return total


def end_offsets(consumer: Consumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, partition, consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                            timeout=10)[1])
            for partition in range(PARTITIONS)]


# Measurements


@dataclass
class ArmResult:
    arm: str
    events: int
    drain_events_per_s: float
    cpu_us_per_event: float
    peak_memory_mb: float
    latency_rate_per_s: float
    latency_events: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.5) - 1))]


class Arm:
    """One arm: its process, input topic and output topic, and how to find an event's id in an output."""

    def __init__(self, name: str, bootstrap: str, codec: AvroCodec) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.codec = codec
        self.prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}."
        self.input = self.prefix + "anomalies"
        self.output = self.prefix + ("decisions" if name == "pipeline" else "forwarded")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".run" / "bench" / f"{name}.log"
        self.by_value: dict[bytes, str] = {}
        folder = ROOT / ".run" / "bench" / self.prefix.rstrip(".")
        self.env_values = {
            "MITIGATE_BOOTSTRAP_SERVERS": bootstrap, "MITIGATE_TOPIC_PREFIX": self.prefix,
            "MITIGATE_APP_ID": self.prefix.rstrip("."), "MITIGATE_PARTITIONS": str(PARTITIONS),
            "MITIGATE_DATA_DIR": str(folder / "data"), "MITIGATE_READY_FILE": str(folder / "ready"),
            "MITIGATE_WEB_PORT": str(free_port()), "MITIGATE_LOG_LEVEL": "warning",
        }

    def prepare(self) -> None:
        if self.name == "pipeline":
            ensure_topics(self.bootstrap, Topology(prefix=self.prefix, partitions=PARTITIONS))
            env = self.env()
            for args in (["policy", "publish", "config/policies", "--author", "bench", "--note", "benchmark"],
                         ["asset", "publish", "config/assets.yaml"]):
                subprocess.run([PYTHON, "-m", "mitigate.cli", *args], env=env, cwd=ROOT, check=True,
                               capture_output=True)
        else:
            create_topics(self.bootstrap, [self.input, self.output])

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.env_values}

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.name in ("pipeline", "rebuild"):
            command = [PYTHON, "-m", "mitigate.cli", "worker"]
        else:
            command = [PYTHON, "-m", "benchmarks.arms", self.name, self.input, self.output]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def progress(self, probe: Consumer) -> int:
        """Count the events the arm has finished: outputs, or for the pipeline its decided signals."""
        if self.name != "pipeline":
            return message_count(probe, self.output)
        # The decisions topic also contains the orchestrator's records, so the worker's own count is used.
        ready = Path(self.env_values["MITIGATE_READY_FILE"])
        try:
            return int(json.loads(ready.read_text() or "{}").get("decided", 0))
        except (OSError, ValueError):
            return 0

    def event_id(self, value: bytes) -> str | None:
        if self.name != "pipeline":
            return self.by_value.get(value)
        record = DecisionRecord.model_validate(self.codec.decode(value, "DecisionRecord").record)
        # The orchestrator's records of plans and reviews name the same event; only the decision counts.
        if not about_event(record.reason_code):
            return None
        return record.event_id


def drain(arm: Arm, items: list[tuple[bytes, bytes, str]], probe: Consumer, timeout_s: float) -> tuple[float, float]:
    """Start the arm on a full backlog; return its drain rate and CPU microseconds per event."""
    produce_all(arm.bootstrap, arm.input, [(key, value) for key, value, _ in items])
    arm.start()
    assert arm.process is not None
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int, float] | None = None
    while time.monotonic() < deadline:
        if arm.process.poll() is not None:
            raise RuntimeError(f"{arm.name} exited with {arm.process.returncode}; see {arm.log}")
        count = arm.progress(probe)
        now = time.monotonic()
        if first is None and count > 0:
            first = (now, count, usage(arm.process.pid).cpu_s)
        if count >= len(items) and first is not None:
            if first[1] >= len(items):
                raise RuntimeError(f"{arm.name} drained {len(items)} events before the first sample; "
                                   "use a larger --events")
            done = len(items) - first[1]
            cpu = usage(arm.process.pid).cpu_s - first[2]
            return done / (now - first[0]), cpu / done * 1e6
        time.sleep(0.1)
    raise RuntimeError(f"{arm.name} did not drain {len(items)} events in {timeout_s:.0f} s; see {arm.log}")


SETTLED_LAG = 50  # messages still unprocessed across the worker's inputs that count as settled


def settle(arm: Arm, timeout_s: float) -> float:
    """Wait until the pipeline worker has processed what the drain left on its other inputs; return the seconds.

    The drain ends when every event is decided, but the orchestrate agent may
    still have plans and review requests of the backlog to process. They share
    the worker's event loop and consumer with the signals, so the latency
    phase starts only once the worker's committed offsets are within
    SETTLED_LAG messages of the end of its inputs.
    """
    if arm.name != "pipeline":
        return 0.0
    topology = Topology(prefix=arm.prefix, partitions=PARTITIONS)
    topics = [topology.anomalies, topology.signals, topology.plans, topology.action_results,
              topology.review_requests, topology.review_verdicts]
    partitions = [TopicPartition(topic, partition) for topic in topics for partition in range(PARTITIONS)]
    group = Consumer(client_config(arm.bootstrap, **{"group.id": arm.env_values["MITIGATE_APP_ID"],
                                                     "enable.auto.commit": False}))
    began = time.monotonic()
    try:
        while time.monotonic() - began < timeout_s:
            committed = group.committed(partitions, timeout=10)
            lag = 0
            for position in committed:
                high = group.get_watermark_offsets(TopicPartition(position.topic, position.partition), timeout=10)[1]
                lag += high - max(position.offset, 0)
            if lag <= SETTLED_LAG:
                return time.monotonic() - began
            time.sleep(1.0)
    finally:
        group.close()
    raise RuntimeError(f"{arm.name} did not process its remaining inputs in {timeout_s:.0f} s; see {arm.log}")


def latency(arm: Arm, items: list[tuple[bytes, bytes, str]], rate: float, probe: Consumer,
            timeout_s: float) -> dict[str, float]:
    """Send at a fixed rate to the running arm; return latency percentiles in milliseconds."""
    start = end_offsets(probe, arm.output)
    producer = create_producer(arm.bootstrap, **{"linger.ms": 0})
    sent_ms: dict[str, int] = {}
    begin = time.monotonic()
    for index, (key, value, event_id) in enumerate(items):
        delay = begin + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = int(time.time() * 1000)
        sent_ms[event_id] = stamp
        producer.produce(arm.input, key=key, value=value, timestamp=stamp)
        producer.poll(0)
    producer.flush(30)

    consumer = Consumer(client_config(arm.bootstrap, **{"group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                                         "enable.auto.commit": False}))
    consumer.assign(start)
    latencies: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(latencies) < len(items) and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            output = message.value()
            if message.error() is not None or output is None:
                continue
            answered = arm.event_id(output)
            if answered is not None and answered in sent_ms and answered not in latencies:
                latencies[answered] = message.timestamp()[1] - sent_ms[answered]
    consumer.close()
    if len(latencies) < len(items):
        raise RuntimeError(f"{arm.name}: only {len(latencies)} of {len(items)} outputs within {timeout_s:.0f} s")
    values = list(latencies.values())
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "p99.9": percentile(values, 0.999),
            "max": max(values)}


def rebuild(bootstrap: str, codec: AvroCodec, policies: int, assets: int, timeout_s: float) -> dict[str, Any]:
    """Time a pipeline worker that starts on an empty data folder until its tables hold every policy and asset."""
    arm = Arm("rebuild", bootstrap, codec)
    ensure_topics(bootstrap, Topology(prefix=arm.prefix, partitions=PARTITIONS))
    now = datetime.now(UTC)
    policy_items = []
    for index in range(policies):
        document = PolicyDocument.model_validate({
            "id": f"bench-{index:05d}", "mode": "shadow", "match": {"subsystems": [f"bench/line-{index:05d}"]},
            "plan": [{"id": "open-ticket", "executor": "ticket", "action": "open-ticket"}]})
        version = PolicyVersion(policy_id=document.id, version=1, author="bench", published_at=now,
                                change_note="benchmark", content_hash=document.content_hash(),
                                document=document.canonical_json())
        policy_items.append((f"{document.id}@1".encode(), codec.encode("PolicyVersion", version.to_avro())))
    produce_all(bootstrap, arm.prefix + "policies", policy_items)
    asset_items = []
    for index in range(assets):
        context = AssetContext(entity=f"asset-{index:07d}", owner="plant-operations", tier="tier-2",
                               criticality="medium", environment="production", updated_at=now,
                               labels={"site": f"plant-{index % 7}"})
        asset_items.append((context.entity.encode(), codec.encode("AssetContext", context.to_avro())))
        if len(asset_items) == 100_000:
            produce_all(bootstrap, arm.prefix + "assets", asset_items)
            asset_items = []
    produce_all(bootstrap, arm.prefix + "assets", asset_items)

    ready = Path(arm.env()["MITIGATE_READY_FILE"])
    began = time.monotonic()
    arm.start()
    assert arm.process is not None
    state: dict[str, Any] = {}
    try:
        while time.monotonic() - began < timeout_s:
            if arm.process.poll() is not None:
                raise RuntimeError(f"the rebuild worker exited with {arm.process.returncode}; see {arm.log}")
            if ready.exists():
                state = json.loads(ready.read_text() or "{}")
                if state.get("policies", 0) >= policies and state.get("assets", 0) >= assets:
                    seconds = time.monotonic() - began
                    return {"policies": policies, "assets": assets, "seconds_to_ready": round(seconds, 1),
                            "peak_memory_mb": round(usage(arm.process.pid).peak_rss_mb, 1)}
            time.sleep(0.5)
        raise RuntimeError(f"tables not rebuilt within {timeout_s:.0f} s (last state {state}); see {arm.log}")
    finally:
        stop(arm.process)


def run_arm(name: str, bootstrap: str, codec: AvroCodec, backlog: list[tuple[bytes, bytes, str]],
            live: list[tuple[bytes, bytes, str]], rate: float, timeout_s: float) -> ArmResult:
    arm = Arm(name, bootstrap, codec)
    arm.by_value = {value: event_id for _, value, event_id in [*backlog, *live]}
    arm.prepare()
    probe = Consumer(client_config(bootstrap, **{"group.id": f"bench-probe-{uuid.uuid4().hex[:8]}"}))
    try:
        if name == "pipeline":
            # The worker must hold its policies and assets before the backlog counts.
            arm.start()
            assert arm.process is not None
            ready = Path(arm.env()["MITIGATE_READY_FILE"])
            while not (ready.exists() and json.loads(ready.read_text() or "{}").get("policies", 0) >= 2):
                if arm.process.poll() is not None:
                    raise RuntimeError(f"the worker exited during startup; see {arm.log}")
                time.sleep(0.5)
            stop(arm.process)
            ready.unlink()
        drain_rate, cpu_us = drain(arm, backlog, probe, timeout_s)
        settled_s = settle(arm, timeout_s)
        latencies = latency(arm, live, rate, probe, timeout_s)
        assert arm.process is not None
        peak = usage(arm.process.pid).peak_rss_mb
        return ArmResult(name, len(backlog), round(drain_rate, 1), round(cpu_us, 1), round(peak, 1), rate,
                         len(live), {key: round(value, 1) for key, value in latencies.items()},
                         {"settle_s": round(settled_s, 1)})
    finally:
        probe.close()
        if arm.process is not None and arm.process.poll() is None:
            stop(arm.process)


def table(results: list[ArmResult]) -> str:
    rows = [("arm", "drain events/s", "CPU us/event", "p50 ms", "p99 ms", "p99.9 ms", "peak MB")]
    for result in results:
        rows.append((result.arm, f"{result.drain_events_per_s:,.0f}", f"{result.cpu_us_per_event:,.0f}",
                     f"{result.latency_ms['p50']:.1f}", f"{result.latency_ms['p99']:.1f}",
                     f"{result.latency_ms['p99.9']:.1f}", f"{result.peak_memory_mb:.0f}"))
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) if index else cell.ljust(width)
                               for index, (cell, width) in enumerate(zip(row, widths, strict=True)))
                     for row in rows)


def ratios(results: list[ArmResult]) -> dict[str, float]:
    by_arm = {result.arm: result for result in results}
    pipeline = by_arm.get("pipeline")
    found: dict[str, float] = {}
    if pipeline is None:
        return found
    for other in ("passthrough", "raw"):
        if other in by_arm:
            found[f"throughput pipeline/{other}"] = round(
                pipeline.drain_events_per_s / by_arm[other].drain_events_per_s, 3)
            # A short raw run can end within one clock tick of CPU time, which measures as 0.
            if by_arm[other].cpu_us_per_event > 0:
                found[f"cpu per event pipeline/{other}"] = round(
                    pipeline.cpu_us_per_event / by_arm[other].cpu_us_per_event, 2)
            found[f"p99 pipeline - {other} (ms)"] = round(
                pipeline.latency_ms["p99"] - by_arm[other].latency_ms["p99"], 1)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default=os.environ.get("MITIGATE_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=200_000, help="backlog per arm (default 200000)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="open-loop rate of the latency phase, events/s; every arm must sustain it (default 100)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency phase (default 30)")
    parser.add_argument("--arms", default="raw,passthrough,pipeline", help="comma-separated arms to run")
    parser.add_argument("--policies", type=int, default=10_000, help="policies for the rebuild (0 skips it)")
    parser.add_argument("--assets", type=int, default=1_000_000, help="assets for the rebuild")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a phase after this many seconds")
    parser.add_argument("--output", type=Path, default=ROOT / ".run" / "bench" / "results.json")
    args = parser.parse_args(argv)
    arms = [name.strip() for name in args.arms.split(",") if name.strip()]
    unknown = [name for name in arms if name not in ("raw", "passthrough", "pipeline")]
    if unknown:
        parser.error(f"unknown arm {', '.join(unknown)}; arms: raw, passthrough, pipeline")

    codec = AvroCodec(SchemaRepository())
    live_count = int(args.rate * args.seconds)
    print(f"generating {args.events} backlog and {live_count} live events", flush=True)
    events = make_events(args.events + live_count, seed=7)
    encoded = encode_events(codec, events)
    backlog, live = encoded[:args.events], encoded[args.events:]
    sizes = sorted(len(value) for _, value, _ in encoded)

    results = []
    for name in arms:
        print(f"arm {name}: draining {args.events} events, then {live_count} at {args.rate:g}/s", flush=True)
        results.append(run_arm(name, args.bootstrap_servers, codec, backlog, live, args.rate, args.timeout))
    rebuilt = None
    if "pipeline" in arms and args.policies:
        print(f"rebuild: {args.policies} policies and {args.assets} assets", flush=True)
        rebuilt = rebuild(args.bootstrap_servers, codec, args.policies, args.assets, args.timeout)

    ratio_figures = ratios(results)
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"mitigate": __version__, **_versions()},
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "payload_bytes": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]},
        "arms": [asdict(result) for result in results],
        "ratios": ratio_figures,
        "rebuild": rebuilt,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    for name, value in ratio_figures.items():
        print(f"{name}: {value}")
    if rebuilt:
        print(f"rebuild of {rebuilt['policies']} policies and {rebuilt['assets']} assets: "
              f"{rebuilt['seconds_to_ready']} s, peak {rebuilt['peak_memory_mb']} MB")
    print(f"written to {args.output}")
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("faust-streaming", "aiokafka", "confluent-kafka", "fastavro", "pydantic")
    found = {name: version(name) for name in names}
    found["kafka"] = "4.1.1"
    return found


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Raised so that the arms' finally blocks stop their processes; the default
    # action of SIGTERM would leave them running without a broker.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
