"""Executors on a real broker, each run as a subprocess: results, dedupe, restarts, deadlines, preconditions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from mitigate.codec import AvroCodec
from mitigate.kafka import client_config, create_producer, ensure_topics, flush_or_raise
from mitigate.models import ActionCommand
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology
from tests.conftest import ROOT

pytestmark = pytest.mark.kafka

# Records each run (its command id and --name=value arguments) to $RECORD as a
# JSON line when it starts, then sleeps for --sleep seconds.
RUNBOOK = """\
import json, os, sys, time
arguments = dict(argument[2:].split("=", 1) for argument in sys.argv[1:])
with open(os.environ["RECORD"], "a") as stream:
    stream.write(json.dumps({"command_id": os.environ["MITIGATE_COMMAND_ID"], **arguments}) + "\\n")
time.sleep(float(arguments.get("sleep", "0")))
print("done", arguments.get("n", ""))
"""

# Short group timeouts, so that an executor that stopped polling during a slow
# action would lose its partitions within the test.
CONFIG = """\
consumer:
  session_timeout: 6s
  max_poll_interval: 6s
shell:
  actions:
    record:
      argv: [{python}, {runbook}]
      env: {{RECORD: {record}}}
"""


@dataclass
class ExecutorProcess:
    """One `python -m mitigate.executor run` subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Rig:
    """Topics under a fresh prefix, an executors file, and the executor processes of one test."""

    bootstrap: str
    topology: Topology
    folder: Path
    env: dict[str, str]
    codec: AvroCodec = field(default_factory=lambda: AvroCodec(SchemaRepository()))
    processes: list[ExecutorProcess] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.folder / "executors.yaml"

    @property
    def record(self) -> Path:
        return self.folder / "runbook-record.jsonl"

    def start(self, name: str, state_dir: Path | None = None) -> ExecutorProcess:
        state = state_dir or self.folder / f"state-{name}"
        log_path = self.folder / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mitigate.executor", "run", name, "--config", str(self.config),
                 "--state-dir", str(state)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        executor = ExecutorProcess(name, process, log_path)
        self.processes.append(executor)
        return executor

    def send(self, command: ActionCommand, copies: int = 1) -> None:
        value = self.codec.encode("ActionCommand", command.to_avro())
        producer = create_producer(self.bootstrap)
        for _ in range(copies):
            producer.produce(self.topology.actions(command.executor), key=command.target.encode(), value=value,
                             headers=[("trace-id", command.trace_id.encode())])
        flush_or_raise(producer)

    def results(self, until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60.0) -> list[Message]:
        """Read action-results from the beginning until `until(decoded records)` holds; fail after the timeout."""
        consumer = Consumer(client_config(self.bootstrap, **{
            "group.id": f"test-reader-{uuid.uuid4()}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        }))
        topic = self.topology.action_results
        # Explicit start offsets, so that the reader never asks a group coordinator for committed ones.
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)
                         for partition in range(self.topology.partitions)])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(100, timeout=0.5):
                    assert message.error() is None, message.error()
                    messages.append(message)
                if until([self.decode(message) for message in messages]):
                    return messages
        finally:
            consumer.close()
        logs = "\n".join(f"--- {executor.log_path.name}\n{executor.log()[-3000:]}" for executor in self.processes)
        pytest.fail(f"timed out after {timeout_s} s reading {topic} ({len(messages)} results)\n{logs}")

    def results_for(self, command_ids: set[str], count: int = 1, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Return the results of these commands once each has at least `count`."""
        def enough(records: list[dict[str, Any]]) -> bool:
            seen = Counter(record["command_id"] for record in records)
            return all(seen[command_id] >= count for command_id in command_ids)

        messages = self.results(enough, timeout_s)
        return [record for record in map(self.decode, messages) if record["command_id"] in command_ids]

    def decode(self, message: Message) -> dict[str, Any]:
        return self.codec.decode(message.value(), "ActionResult").record

    def runs(self) -> list[dict[str, str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def stop_all(self) -> None:
        for executor in self.processes:
            if executor.process.poll() is None:
                executor.process.terminate()
                try:
                    executor.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    executor.process.kill()
                    executor.process.wait()


@pytest.fixture
def rig(kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> Iterator[Rig]:
    topology = Topology(prefix=unique_prefix)
    ensure_topics(kafka_bootstrap, topology)
    runbook = tmp_path / "runbook.py"
    runbook.write_text(RUNBOOK)
    env = {
        **os.environ,
        "MITIGATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MITIGATE_TOPIC_PREFIX": unique_prefix,
        "MITIGATE_LOG_LEVEL": "info",
    }
    setup = Rig(kafka_bootstrap, topology, tmp_path, env)
    setup.config.write_text(CONFIG.format(python=json.dumps(sys.executable), runbook=json.dumps(str(runbook)),
                                          record=json.dumps(str(setup.record))))
    try:
        yield setup
    finally:
        setup.stop_all()


def command(executor: str, action: str, **changes: Any) -> ActionCommand:
    """Return a new command with its own ids and a deadline a minute ahead."""
    now = datetime.now(UTC).replace(microsecond=0)
    step = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "command_id": f"command-{uuid.uuid4()}",
        "idempotency_key": f"step-{step}",
        "decision_id": f"decision-{step}",
        "event_id": f"event-{step}",
        "incident_id": f"incident-{step}",
        "trace_id": uuid.uuid4().hex,
        "issued_at": now,
        "deadline": now + timedelta(seconds=60),
        "attempt": 1,
        "executor": executor,
        "action": action,
        "target": "machine-temperature-01",
        "parameters": {},
        "step_id": action,
        "policy_id": "integration-test",
        "policy_version": 1,
    }
    fields.update(changes)
    return ActionCommand.model_validate(fields)


def header(message: Message, name: str) -> str | bytes | None:
    return dict(message.headers() or []).get(name)


def test_command_runs_and_result_arrives(rig: Rig) -> None:
    rig.start("demo-target")
    sent = command("demo-target", "rollback-config", parameters={"to_version": "last-known-good"}, attempt=2)

    rig.send(sent)

    messages = rig.results(lambda records: any(record["command_id"] == sent.command_id for record in records))
    [message] = [message for message in messages if rig.decode(message)["command_id"] == sent.command_id]
    result = rig.decode(message)
    assert result["status"] == "succeeded", result["reason"]
    assert result["executor"] == "demo-target"
    assert result["attempt"] == 2
    assert result["trace_id"] == sent.trace_id
    assert result["idempotency_key"] == sent.idempotency_key
    assert result["step_id"] == "rollback-config"
    assert result["output"]["before.config_version"] == "v2"
    assert result["output"]["after.config_version"] == "v1"
    assert result["output"]["after.healthy"] == "true"
    assert message.key() == f"{sent.incident_id}".encode()
    assert header(message, "trace-id") == sent.trace_id.encode()
    state = json.loads((rig.folder / "state-demo-target" / "demo-target.json").read_text())
    assert state["targets"]["machine-temperature-01"]["config_version"] == "v1"


def test_result_keyed_by_decision_without_incident(rig: Rig) -> None:
    rig.start("demo-target")
    sent = command("demo-target", "restart", incident_id=None)

    rig.send(sent)

    messages = rig.results(lambda records: any(record["command_id"] == sent.command_id for record in records))
    [message] = [message for message in messages if rig.decode(message)["command_id"] == sent.command_id]
    assert message.key() == sent.decision_id.encode()


def test_duplicate_delivery_runs_once(rig: Rig) -> None:
    rig.start("shell")
    sent = command("shell", "record", parameters={"n": "1"})

    rig.send(sent, copies=2)

    results = rig.results_for({sent.command_id}, count=2)
    assert len(results) == 2
    assert [result["status"] for result in results] == ["succeeded", "succeeded"]
    assert results[0] == results[1]  # the second is the stored result, published again
    assert [run["command_id"] for run in rig.runs()] == [sent.command_id]


def test_restart_mid_stream_runs_each_once(rig: Rig) -> None:
    commands = [command("shell", "record", parameters={"n": str(index), "sleep": "0.4"},
                        target=f"node-{index % 3}") for index in range(12)]
    for sent in commands:
        rig.send(sent)
    first = rig.start("shell")
    deadline = time.monotonic() + 60
    while len(rig.runs()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    runs_before_restart = len(rig.runs())
    assert 4 <= runs_before_restart < len(commands), first.log()

    second = rig.start("shell")

    ids = {sent.command_id for sent in commands}
    results = rig.results_for(ids)
    runs = Counter(run["command_id"] for run in rig.runs())
    assert set(runs) <= ids
    assert max(runs.values()) == 1, f"a command ran twice: {runs}\n{second.log()}"
    statuses: dict[str, set[str]] = {}
    for result in results:
        statuses.setdefault(result["command_id"], set()).add(result["status"])
    for command_id, seen in statuses.items():
        assert len(seen) == 1, f"{command_id} got different results: {seen}"
    for sent in commands:
        [status] = statuses[sent.command_id]
        if status == "succeeded":
            assert runs[sent.command_id] == 1
        else:
            # Killed while it ran: reported, not run again.
            assert status == "failed"
            interrupted = [result for result in results if result["command_id"] == sent.command_id]
            assert interrupted[0]["reason"].startswith("interrupted:")
    assert sum(runs.values()) == len(runs)


def test_sigterm_finishes_current_command(rig: Rig) -> None:
    executor = rig.start("shell")
    sent = command("shell", "record", parameters={"n": "1", "sleep": "2"})
    rig.send(sent)
    deadline = time.monotonic() + 60
    while not rig.runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.runs(), executor.log()

    executor.process.terminate()

    assert executor.process.wait(timeout=30) == 0, executor.log()
    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "succeeded"
    log = executor.log()
    assert "received SIGTERM; stopping after the current command" in log
    assert "executor shell stopped after handling 1 commands" in log


def test_past_deadline_rejected(rig: Rig) -> None:
    rig.start("demo-target")
    now = datetime.now(UTC)
    sent = command("demo-target", "set-traffic-limit", parameters={"limit_percent": "50"},
                   issued_at=now - timedelta(minutes=2), deadline=now - timedelta(seconds=30))

    rig.send(sent)

    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "rejected"
    assert "deadline" in result["reason"]
    assert "not run" in result["reason"]
    assert not (rig.folder / "state-demo-target" / "demo-target.json").exists()


def test_failing_precondition_skipped(rig: Rig) -> None:
    rig.start("demo-target")
    sent = command("demo-target", "rollback-config", parameters={"to_version": "v1"},
                   preconditions={"healthy": "true"})

    rig.send(sent)

    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "skipped"
    assert result["reason"] == "precondition does not hold: healthy is false, expected true; nothing changed"
    assert not (rig.folder / "state-demo-target" / "demo-target.json").exists()


def test_unknown_action_rejected(rig: Rig) -> None:
    rig.start("demo-target")
    sent = command("demo-target", "reboot")

    rig.send(sent)

    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "rejected"
    assert result["reason"].startswith("unknown action 'reboot' for the demo-target executor")


def test_overrunning_runbook_timed_out(rig: Rig) -> None:
    rig.start("shell")
    now = datetime.now(UTC)
    sent = command("shell", "record", parameters={"n": "1", "sleep": "20"}, deadline=now + timedelta(seconds=2))

    rig.send(sent)

    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "timed_out"
    assert result["reason"].startswith("runbook stopped at the deadline")


def test_slow_action_keeps_partitions(rig: Rig) -> None:
    executor = rig.start("shell")
    slow = command("shell", "record", parameters={"n": "1", "sleep": "10"})
    fast = command("shell", "record", parameters={"n": "2"})
    rig.send(slow)
    rig.results_for({slow.command_id}, timeout_s=90)

    rig.send(fast)

    results = rig.results_for({slow.command_id, fast.command_id})
    log = executor.log()
    # 10 s in one action is longer than max.poll.interval (6 s). Without polling on paused partitions the
    # consumer would leave the group, fail to commit, and publish a second result for the redelivered command.
    assert [result["command_id"] for result in results].count(slow.command_id) == 1, log
    assert all(result["status"] == "succeeded" for result in results), results
    assert "partitions revoked" not in log
    assert "partitions lost" not in log
    assert "committing the offset" not in log
    assert [run["command_id"] for run in rig.runs()] == [slow.command_id, fast.command_id]


def test_second_process_on_state_dir_refused(rig: Rig) -> None:
    first = rig.start("ticket")
    sent = command("ticket", "open-ticket")
    rig.send(sent)
    [result] = rig.results_for({sent.command_id})
    assert result["status"] == "succeeded"
    assert result["output"]["ticket_id"] == "MIT-1"

    second = rig.start("ticket", state_dir=rig.folder / "state-ticket")

    assert second.process.wait(timeout=30) == 1
    assert "is in use by another executor process" in second.log()
    assert first.process.poll() is None
