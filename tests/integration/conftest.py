"""A running pipeline worker on the real broker, with its own topics, for integration tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from mitigate.codec import AvroCodec
from mitigate.kafka import client_config, create_producer, ensure_topics, flush_or_raise
from mitigate.schemas import SchemaRepository
from mitigate.topology import Topology
from tests.conftest import ROOT

WORKER_START_TIMEOUT_S = 90


@dataclass
class Deployment:
    """A worker with its own topic prefix and consumer group on the test broker."""

    bootstrap: str
    topology: Topology
    codec: AvroCodec
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    expected_tables: tuple[int, int]  # policies and assets the worker must hold before it is ready

    def wait_until_ready(self) -> None:
        _wait_until_ready(self.process, Path(self.env["MITIGATE_READY_FILE"]), self.log_path, self.expected_tables)

    def produce(self, topic: str, value: bytes | None, key: bytes | None = b"entity",
                headers: list[tuple[str, bytes]] | None = None) -> None:
        producer = create_producer(self.bootstrap)
        producer.produce(topic, key=key, value=value, headers=headers or [])
        flush_or_raise(producer)

    def read(self, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        """Read `topic` from the beginning until `until(messages)` holds; fail after the timeout."""
        consumer = Consumer(client_config(self.bootstrap, **{
            "group.id": f"test-reader-{uuid.uuid4()}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        }))
        consumer.assign([TopicPartition(topic, partition) for partition in range(self.topology.partitions)])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(100, timeout=0.5):
                    assert message.error() is None, message.error()
                    messages.append(message)
                if until(messages):
                    return messages
        finally:
            consumer.close()
        pytest.fail(f"timed out after {timeout_s} s reading {topic}: {len(messages)} messages; "
                    f"worker log: {self.log_path}")

    def read_all(self, topic: str, timeout_s: float = 30.0) -> list[Any]:
        """Read every message `topic` contains now."""
        from mitigate.report import count_messages

        probe = Consumer(client_config(self.bootstrap, **{"group.id": f"test-probe-{uuid.uuid4()}"}))
        try:
            total = count_messages(probe, topic)
        finally:
            probe.close()
        return self.read(topic, lambda messages: len(messages) >= total, timeout_s)

    def decode(self, message: Any, name: str) -> dict[str, Any]:
        return self.codec.decode(message.value(), name).record

    def wait_for(self, topic: str, name: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout_s: float = 30.0) -> dict[str, Any]:
        """Return the first record of `topic` that satisfies `predicate`."""
        found: list[dict[str, Any]] = []

        def has_match(messages: list[Any]) -> bool:
            found.clear()
            found.extend(record for record in (self.decode(message, name) for message in messages) if predicate(record))
            return bool(found)

        self.read(topic, has_match, timeout_s)
        return found[0]

    def alive(self) -> bool:
        return self.process.poll() is None

    def restart(self) -> None:
        """Stop the worker with SIGTERM and start it again on the same data folder; wait until it is ready."""
        self.process.terminate()
        assert self.process.wait(timeout=60) == 0
        self.start()

    def start(self) -> None:
        """Start a worker on the deployment's data folder (after the previous one exited); wait until ready."""
        Path(self.env["MITIGATE_READY_FILE"]).unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "mitigate.cli", "worker"], env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.wait_until_ready()


TEST_POLICIES = """\
id: test-cpu-saturation
mode: enforce
match:
  anomaly_types: [saturation]
  subsystems: [compute/*]
  severities: [high, critical]
gates:
  min_confidence: 0.8
  require_approval_for: [critical]
plan:
  - id: scale-out
    executor: demo-target
    action: scale-out
    parameters: {replicas: 2}
  - id: open-ticket
    executor: ticket
    action: open-ticket
---
id: test-cpu-shadow
mode: shadow
match:
  anomaly_types: [saturation]
  subsystems: [compute/*]
  severities: [low, medium]
gates:
  min_confidence: 0.5
  require_approval_for: []
plan:
  - id: open-ticket
    executor: ticket
    action: open-ticket
"""

TEST_ASSETS = """\
assets:
  - entity: web-01
    owner: web-team
    tier: tier-1
    criticality: high
    environment: production
  - entity: web-frozen
    owner: web-team
    tier: tier-1
    criticality: high
    environment: production
    change_freeze: true
"""


TEST_AUTOMATION = """\
correlation:
  group_window: 5m
  repeat_interval: 1h
  flapping: {transitions: 3, window: 1h}
budgets:
  window: 10m
  max_commands: 10
circuit_breaker:
  window: 5m
  max_commands: 100000
  cool_down: 15m
"""


def _write_config(folder: Path, module: Any) -> tuple[Path, Path, Path]:
    """Write the module's POLICIES, ASSETS and AUTOMATION, or the defaults above (operators: OPERATORS or the shipped file)."""
    policies = folder / "policies"
    policies.mkdir()
    for index, document in enumerate(getattr(module, "POLICIES", TEST_POLICIES).split("---\n")):
        (policies / f"policy-{index}.yaml").write_text(document)
    assets = folder / "assets.yaml"
    assets.write_text(getattr(module, "ASSETS", TEST_ASSETS))
    automation = folder / "automation.yaml"
    automation.write_text(getattr(module, "AUTOMATION", TEST_AUTOMATION))
    operators = folder / "operators.yaml"
    operators.write_text(getattr(module, "OPERATORS", (ROOT / "config" / "operators.yaml").read_text()))
    return policies, assets, automation


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_mitigate(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "mitigate.cli", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"mitigate {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wait_until_ready(
    process: subprocess.Popen[bytes], ready_file: Path, log_path: Path, expected: tuple[int, int]
) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode} during startup:\n{log_path.read_text()[-4000:]}")
        if ready_file.exists():
            state = json.loads(ready_file.read_text())
            if state["policies"] >= expected[0] and state["assets"] >= expected[1]:
                return
        time.sleep(0.5)
    pytest.fail(f"worker not ready after {WORKER_START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """Topics, policies and assets under a fresh prefix, and a worker subprocess reading them."""
    folder = tmp_path_factory.mktemp("deployment")
    policies, assets, automation = _write_config(folder, request.module)
    prefix = f"it-{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "MITIGATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MITIGATE_TOPIC_PREFIX": prefix,
        "MITIGATE_APP_ID": f"mitigate-{prefix.rstrip('.')}",
        "MITIGATE_DATA_DIR": str(folder / "worker"),
        "MITIGATE_READY_FILE": str(folder / "worker.ready"),
        "MITIGATE_DETECTORS_FILE": str(ROOT / "config" / "detectors.yaml"),
        "MITIGATE_AUTOMATION_FILE": str(automation),
        "MITIGATE_OPERATORS_FILE": str(folder / "operators.yaml"),
        "MITIGATE_WEB_PORT": str(free_port()),
    }
    topology = Topology(prefix=prefix)
    ensure_topics(kafka_bootstrap, topology)
    run_mitigate("policy", "publish", str(policies), "--author", "integration-test", env=env)
    run_mitigate("asset", "publish", str(assets), env=env)

    log_path = folder / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "mitigate.cli", "worker"], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    expected = (len(list(policies.glob("*.yaml"))), len(yaml.safe_load(assets.read_text())["assets"]))
    deployment = Deployment(kafka_bootstrap, topology, AvroCodec(SchemaRepository()), process, log_path, env,
                            expected)
    try:
        deployment.wait_until_ready()
        yield deployment
    finally:
        # deployment.process, not process: a test may have restarted the worker.
        deployment.process.terminate()
        try:
            deployment.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            deployment.process.kill()
            deployment.process.wait()
