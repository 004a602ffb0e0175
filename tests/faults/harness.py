"""The fault suite's rig: workers, a real executor, tagged input and a ledger of where each input ended.

Every input the suite sends carries a header with its own id, and dead
letters keep that header. A good event is also found by its event id in the
decisions topic. The executor is the real shell executor. Its runbook appends
one line per run to a file, so the file counts the actions actually performed,
whatever the command store records.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from mitigate.codec import AvroCodec
from mitigate.kafka import client_config, create_producer, ensure_topics, flush_or_raise
from mitigate.report import PLAN_FINAL, about_event
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology
from tests.conftest import ROOT
from tests.integration.conftest import free_port, run_mitigate

INPUT_HEADER = "mitigate-fault-input"
WORKER_START_TIMEOUT_S = 120

POLICIES = """\
id: fault-auto
match:
  subsystems: [auto/*]
  severities: [high]
gates:
  min_confidence: 0.8
  require_approval_for: []
  require_known_asset: false
plan:
  - {id: first, executor: shell, action: record}
  - {id: second, executor: shell, action: record, depends_on: [first]}
"""

ASSETS = """\
assets:
  - entity: host-00
    owner: fault-suite
    tier: tier-2
    criticality: medium
    environment: production
"""

AUTOMATION = """\
correlation:
  group_window: 1h
  repeat_interval: 1h
  flapping: {transitions: 1000, window: 1h}
budgets:
  window: 10m
  max_commands: 100
circuit_breaker:
  window: 5m
  max_commands: 100000
  cool_down: 15m
orchestration:
  retry_base: 1s
  retry_max: 2s
  result_grace: 5s
"""


# Inputs


@dataclass(frozen=True, slots=True)
class Input:
    """One message the suite sends, and where it must end."""

    input_id: str
    kind: str  # auto, review, repeat, resolved or one of the malformed kinds
    key: bytes | None
    value: bytes | None
    expected_reason: str | None = None  # the dead letter's reason code, for malformed input

    @property
    def malformed(self) -> bool:
        return self.expected_reason is not None


def event_record(**changes: Any) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:10]
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "detector_id": "robust-zscore",
        "detector_version": "1.0.0",
        "event_time": datetime.now(UTC),
        "entity": f"host-{random.randrange(100):02d}",
        "subsystem": f"auto/{unique}",
        "anomaly_type": "saturation",
        "severity": "high",
        "confidence": 0.95,
        "score": 8.5,
        "status": "firing",
        "fingerprint": f"fp-{unique}",
        "labels": {"metric": "cpu_usage", "site": "plant-north", "team": "operations", "job": "node"},
        "annotations": {"summary": "CPU saturated", "runbook": "https://runbooks.example/cpu"},
    }
    record.update(changes)
    return record


class Traffic:
    """A stream of tagged anomaly events: plans, reviews, repeats, resolutions and bad bytes."""

    MIX = (("auto", 55), ("review", 10), ("repeat", 15), ("resolved", 10), ("malformed", 10))

    def __init__(self, codec: AvroCodec, seed: int) -> None:
        self.codec = codec
        self.random = random.Random(seed)
        self.opened: list[dict[str, Any]] = []

    def next(self) -> Input:
        kind = self.random.choices([name for name, _ in self.MIX], [weight for _, weight in self.MIX])[0]
        if kind in ("repeat", "resolved") and not self.opened:
            kind = "auto"
        if kind == "malformed":
            return Input(str(uuid.uuid4()), kind, b"host-00", self.random.randbytes(self.random.randrange(1, 200)),
                         expected_reason="unknown-wire-format")
        if kind == "auto":
            record = event_record()
            self.opened.append(record)
        elif kind == "review":
            record = event_record(confidence=0.6, subsystem=f"auto/review-{uuid.uuid4().hex[:10]}")
        else:
            earlier = self.random.choice(self.opened)
            record = event_record(subsystem=earlier["subsystem"], fingerprint=earlier["fingerprint"],
                                  entity=earlier["entity"],
                                  status="resolved" if kind == "resolved" else "firing")
        value = self.codec.encode("AnomalyEvent", record)
        return Input(record["event_id"], kind, record["entity"].encode(), value)


# Processes


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after a minute."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class WorkerProcess:
    """One `mitigate worker` subprocess with its own data folder, ready file and web port."""

    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def ready_file(self) -> Path:
        return Path(self.env["MITIGATE_READY_FILE"])

    def start(self, wait: bool = True) -> None:
        self.ready_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1} at {datetime.now(UTC).isoformat()} ====\n".encode())
            log.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "mitigate.cli", "worker"], env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode}; log: {self.log_path}")
            if not self.ready_file.exists():
                return False
            try:
                state = orjson.loads(self.ready_file.read_bytes())
            except orjson.JSONDecodeError:
                return False
            return bool(state["policies"] >= 1 and state["assets"] >= 1)

        wait_until(ready, WORKER_START_TIMEOUT_S, f"worker {self.name} to be ready (log: {self.log_path})")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no offsets committed, no changelog flushed, no group left."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class ExecutorProcess:
    """The real shell executor, as a subprocess with its own state folder."""

    env: dict[str, str]
    config: Path
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mitigate.cli", "executor", "run", "shell", "--config", str(self.config),
                 "--state-dir", str(self.state_dir)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process)


# The rig


class Rig:
    """A deployment of its own on one broker: topics, config, workers, the shell executor and the inputs sent."""

    def __init__(self, bootstrap: str, folder: Path, *, runbook_then: str = "true",
                 executor_consumer: dict[str, str] | None = None, policies: str = POLICIES,
                 automation: str = AUTOMATION, partitions: int = 4) -> None:
        self.bootstrap = bootstrap
        self.folder = folder
        self.prefix = f"fault-{uuid.uuid4().hex[:8]}."
        self.topology = Topology(prefix=self.prefix, partitions=partitions)
        self.codec = AvroCodec(SchemaRepository())
        self.runs_file = folder / "runs.log"
        self.inputs: dict[str, Input] = {}
        self.workers: list[WorkerProcess] = []
        self.executors: list[ExecutorProcess] = []
        self._producer = create_producer(bootstrap, **{"message.timeout.ms": 300_000})

        policy_dir = folder / "policies"
        policy_dir.mkdir(parents=True)
        (policy_dir / "policies.yaml").write_text(policies)
        (folder / "assets.yaml").write_text(ASSETS)
        (folder / "automation.yaml").write_text(automation)
        self.env = {
            **os.environ,
            "MITIGATE_BOOTSTRAP_SERVERS": bootstrap,
            "MITIGATE_TOPIC_PREFIX": self.prefix,
            "MITIGATE_PARTITIONS": str(partitions),
            "MITIGATE_APP_ID": f"mitigate-{self.prefix.rstrip('.')}",
            "MITIGATE_DETECTORS_FILE": str(ROOT / "config" / "detectors.yaml"),
            "MITIGATE_AUTOMATION_FILE": str(folder / "automation.yaml"),
            "MITIGATE_OPERATORS_FILE": str(ROOT / "config" / "operators.yaml"),
        }
        self.executor_config = folder / "executors.yaml"
        self.executor_config.write_text(orjson.dumps({
            "consumer": executor_consumer or {"session_timeout": "10s", "max_poll_interval": "10s"},
            "shell": {"actions": {"record": {
                # One line per run, then the scenario's own command: a pause or a failure.
                "argv": ["sh", "-c",
                         f'echo "$MITIGATE_IDEMPOTENCY_KEY $MITIGATE_COMMAND_ID $MITIGATE_ATTEMPT" >> "$RUNS_FILE"; '
                         f'{runbook_then}', "record"],
                "append_target": False,
                "env": {"RUNS_FILE": str(self.runs_file)},
            }}},
        }).decode())

        ensure_topics(bootstrap, self.topology)
        run_mitigate("policy", "publish", str(policy_dir), "--author", "fault-suite", env=self.env)
        run_mitigate("asset", "publish", str(folder / "assets.yaml"), env=self.env)

    def worker(self, name: str) -> WorkerProcess:
        """Declare a worker with a data folder of its own (it joins the same consumer group)."""
        env = {
            **self.env,
            "MITIGATE_DATA_DIR": str(self.folder / f"worker-{name}"),
            "MITIGATE_READY_FILE": str(self.folder / f"worker-{name}.ready"),
            "MITIGATE_WEB_PORT": str(free_port()),
        }
        worker = WorkerProcess(name, env, self.folder / f"worker-{name}.log")
        self.workers.append(worker)
        return worker

    def executor(self) -> ExecutorProcess:
        executor = ExecutorProcess(self.env, self.executor_config, self.folder / "executor-shell",
                                   self.folder / "executor-shell.log")
        self.executors.append(executor)
        executor.start()
        return executor

    def send(self, items: Iterable[Input], *, flush: bool = True) -> None:
        for item in items:
            self.inputs[item.input_id] = item
            while True:
                try:
                    self._producer.produce(self.topology.anomalies, key=item.key, value=item.value,
                                           headers=[(INPUT_HEADER, item.input_id.encode())])
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self._producer.poll(0)
        if flush:
            flush_or_raise(self._producer, 300.0)

    def flush(self) -> None:
        flush_or_raise(self._producer, 300.0)

    def review(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mitigate.cli", "review", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for executor in self.executors:
            executor.stop()

    def ledger(self) -> Ledger:
        return Ledger.read(self)


class Feeder:
    """Sends traffic at a steady rate from a thread until stopped or `count` inputs are sent."""

    def __init__(self, rig: Rig, traffic: Traffic, rate: float, count: int) -> None:
        self.rig = rig
        self.traffic = traffic
        self.rate = rate
        self.count = count
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while self.sent < self.count and not self._stop.is_set():
                due = started + self.sent / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.rig.send([self.traffic.next()], flush=False)
                self.sent += 1
            self.rig.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout_s: float = 600.0) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise self.error


# Reading what came out


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every message of `topic`, from the beginning to the end as of the call.

    The end of each partition is where the consumer reports it, not the high
    watermark: transaction markers take offsets that no message has.
    """
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": f"fault-ledger-{uuid.uuid4()}", "enable.auto.commit": False, "enable.partition.eof": True,
    }))
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        pending: set[int] = set()
        assignment = []
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > low:
                pending.add(partition)
                assignment.append(TopicPartition(topic, partition, low))
        messages: list[Any] = []
        if not assignment:
            return messages
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out reading {topic} to its end; partitions {sorted(pending)} not finished")
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
        return messages
    finally:
        consumer.close()


def distinct_records(rig: Rig, topic: str, schema: str, id_field: str) -> tuple[list[dict[str, Any]], int]:
    """Return the records of `topic` without repeats of an id, and how many repeats were dropped."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeats = 0
    for message in read_topic(rig.bootstrap, topic):
        record = rig.codec.decode(message.value(), schema).record
        if record[id_field] in seen:
            repeats += 1
            continue
        seen.add(record[id_field])
        records.append(record)
    return records, repeats


@dataclass
class Ledger:
    """Where every input ended, and what the executor did, as read from the topics and the runbook's file."""

    inputs: dict[str, Input]
    decisions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # event id -> decision ids
    outcomes: dict[str, str] = field(default_factory=dict)  # decision id -> outcome
    decision_copies: int = 0  # decision records delivered again with the same decision id
    dead_letters: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # input id -> reasons
    dead_letter_copies: int = 0
    incident_counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    plans_started: set[str] = field(default_factory=set)
    plans_final: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # plan id -> final codes
    review_requests: set[str] = field(default_factory=set)
    review_approved: set[str] = field(default_factory=set)  # review ids approved, from the worker's records
    commands: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # idempotency key -> ids
    command_messages: int = 0
    results: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # command id -> statuses
    runs: Counter[str] = field(default_factory=Counter)  # idempotency key -> runbook runs

    @classmethod
    def read(cls, rig: Rig) -> Ledger:
        ledger = cls(dict(rig.inputs))
        topology = rig.topology
        records, ledger.decision_copies = distinct_records(rig, topology.decisions, "DecisionRecord",
                                                           "decision_id")
        for record in records:
            code = record["reason_code"]
            if about_event(code):
                ledger.decisions[record["event_id"]].add(record["decision_id"])
                ledger.outcomes[record["decision_id"]] = record["outcome"]
                if record["incident_id"]:
                    ledger.incident_counts[record["incident_id"]].append(record["incident_signals"])
                if record["outcome"] == "auto" and record["plan_id"]:
                    ledger.plans_started.add(record["plan_id"])
            elif code in ("review-approved", "review-modified") and record["plan_id"]:
                ledger.plans_started.add(record["plan_id"])
                if record["review_id"]:
                    ledger.review_approved.add(record["review_id"])
            elif code in PLAN_FINAL:
                ledger.plans_final[record["plan_id"]].add(code)

        letters, ledger.dead_letter_copies = distinct_records(rig, topology.dead_letters, "DeadLetter",
                                                              "dead_letter_id")
        for letter in letters:
            # The dead letter keeps the headers of the input it stands for.
            tag = next((item["value"] for item in letter["headers"] if item["key"] == INPUT_HEADER), None)
            ledger.dead_letters[tag.decode() if tag else "untagged"].append(letter["reason_code"])

        for message in read_topic(rig.bootstrap, topology.review_requests):
            request = rig.codec.decode(message.value(), "ReviewRequest").record
            ledger.review_requests.add(request["review_id"])

        for message in read_topic(rig.bootstrap, topology.actions("shell")):
            command = rig.codec.decode(message.value(), "ActionCommand").record
            ledger.commands[command["idempotency_key"]].add(command["command_id"])
            ledger.command_messages += 1

        for message in read_topic(rig.bootstrap, topology.action_results):
            result = rig.codec.decode(message.value(), "ActionResult").record
            ledger.results[result["command_id"]].add(result["status"])

        if rig.runs_file.exists():
            for line in rig.runs_file.read_text().splitlines():
                if line.strip():
                    ledger.runs[line.split()[0]] += 1
        return ledger

    # Checks

    def lost(self) -> list[str]:
        """Inputs found nowhere."""
        return [input_id for input_id in self.inputs if not self.places(input_id)]

    def places(self, input_id: str) -> list[str]:
        return [f"decision {decision}" for decision in self.decisions.get(input_id, ())] + [
            f"dead letter {reason}" for reason in self.dead_letters.get(input_id, ())]

    def in_two_places(self) -> dict[str, list[str]]:
        """Inputs with two decisions, two dead letters, or a decision and a dead letter."""
        return {input_id: places for input_id in self.inputs if len(places := self.places(input_id)) > 1}

    def wrong_reasons(self) -> dict[str, tuple[str | None, list[str]]]:
        """Inputs dead-lettered for another reason than expected, or good inputs dead-lettered at all."""
        wrong = {}
        for input_id, item in self.inputs.items():
            reasons = self.dead_letters.get(input_id, [])
            if item.malformed and reasons and reasons != [item.expected_reason]:
                wrong[input_id] = (item.expected_reason, reasons)
            if not item.malformed and reasons:
                wrong[input_id] = (None, reasons)
        return wrong

    def unfinished_plans(self) -> set[str]:
        return self.plans_started - set(self.plans_final)

    def repeated_runs(self) -> dict[str, int]:
        """Idempotency keys whose runbook ran more than once."""
        return {key: count for key, count in self.runs.items() if count > 1}

    def commands_with_two_ids(self) -> dict[str, set[str]]:
        """Steps sent under more than one command id; none of the suite's steps is retried, so each is a repeat."""
        return {key: ids for key, ids in self.commands.items() if len(ids) > 1}

    def commands_without_result(self) -> set[str]:
        return {command_id for ids in self.commands.values() for command_id in ids} - set(self.results)

    def inconsistent_incidents(self) -> dict[str, list[int]]:
        """Incidents whose decisions do not count their signals 1, 2, 3, ... once each."""
        return {incident: sorted(counts) for incident, counts in self.incident_counts.items()
                if sorted(counts) != list(range(1, len(counts) + 1))}

    def complete(self) -> bool:
        """Every input is placed, every plan is final, and every command has its result."""
        return not self.lost() and not self.unfinished_plans() and not self.commands_without_result()

    def figures(self) -> dict[str, Any]:
        malformed = sum(1 for item in self.inputs.values() if item.malformed)
        return {
            "inputs": len(self.inputs),
            "good_inputs": len(self.inputs) - malformed,
            "malformed_inputs": malformed,
            "decided": sum(1 for input_id in self.inputs if self.decisions.get(input_id)),
            "outcomes": dict(Counter(self.outcomes.values())),
            "dead_lettered": sum(1 for input_id in self.inputs if self.dead_letters.get(input_id)),
            "lost": len(self.lost()),
            "in_two_places": len(self.in_two_places()),
            "wrong_reason": len(self.wrong_reasons()),
            "decision_copies_redelivered": self.decision_copies,
            "dead_letter_copies_redelivered": self.dead_letter_copies,
            "plans_started": len(self.plans_started),
            "plans_final": len(self.plans_final),
            "plans_unfinished": len(self.unfinished_plans()),
            "plans_by_end": dict(Counter(code for codes in self.plans_final.values() for code in codes)),
            "review_requests": len(self.review_requests),
            "reviews_approved": len(self.review_approved),
            "commands": sum(len(ids) for ids in self.commands.values()),
            "command_messages": self.command_messages,
            "commands_without_result": len(self.commands_without_result()),
            "runbook_runs": sum(self.runs.values()),
            "actions_run_twice": len(self.repeated_runs()),
            "incidents": len(self.incident_counts),
            "inconsistent_incidents": len(self.inconsistent_incidents()),
        }

    def assert_sound(self) -> None:
        """Nothing lost, nothing in two places, no action run twice, every plan finished."""
        problems = {
            "lost": self.lost()[:10],
            "in two places": dict(list(self.in_two_places().items())[:10]),
            "wrong dead-letter reason": dict(list(self.wrong_reasons().items())[:10]),
            "plans not finished": sorted(self.unfinished_plans())[:10],
            "commands without a result": sorted(self.commands_without_result())[:10],
            "actions run twice": dict(list(self.repeated_runs().items())[:10]),
            "one step under two command ids": {key: sorted(ids) for key, ids in
                                               list(self.commands_with_two_ids().items())[:10]},
            "incidents miscounted": dict(list(self.inconsistent_incidents().items())[:10]),
            "untagged dead letters": self.dead_letters.get("untagged", [])[:10],
        }
        found = {name: value for name, value in problems.items() if value}
        assert not found, f"{found}\nfigures: {self.figures()}"


def settle(rig: Rig, timeout_s: float = 180.0) -> Ledger:
    """Read the ledger until every input is placed, every plan is final and every command has its result."""
    deadline = time.monotonic() + timeout_s
    while True:
        ledger = rig.ledger()
        if ledger.complete():
            return ledger
        if time.monotonic() > deadline:
            return ledger  # assert_sound names what is missing
        time.sleep(3)

