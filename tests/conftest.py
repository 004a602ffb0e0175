"""Shared fixtures: paths of the repository and the Kafka broker for integration tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKER_ENV = "MITIGATE_TEST_BOOTSTRAP_SERVERS"
TEST_KAFKA_PORT = int(os.environ.get("MITIGATE_TEST_KAFKA_PORT", "19092"))
KAFKA_IMAGE = "apache/kafka:4.1.1"


def _docker_engine_responds() -> bool:
    try:
        import docker  # installed with testcontainers
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"; the local broker is used instead
        return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def pytest_report_header() -> str:
    """Name the Kafka broker the integration tests will use, in the header of the run."""
    if os.environ.get(BROKER_ENV):
        return f"kafka: {os.environ[BROKER_ENV]} (from {BROKER_ENV})"
    if _docker_engine_responds():
        return f"kafka: testcontainers {KAFKA_IMAGE} (a Docker engine responds)"
    return f"kafka: scripts/kafka.sh on 127.0.0.1:{TEST_KAFKA_PORT} (no {BROKER_ENV}, no Docker engine)"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker.

    In order of preference: the broker named by MITIGATE_TEST_BOOTSTRAP_SERVERS,
    then a testcontainers broker where a Docker engine responds, then the
    project's own local broker (scripts/kafka.sh). That one is started here on a
    fresh data folder and stopped at the end of the session.
    """
    given = os.environ.get(BROKER_ENV)
    if given:
        yield given
        return

    if _docker_engine_responds():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return

    yield from _local_broker()


def _local_broker() -> Iterator[str]:
    data_dir = ROOT / ".run" / f"test-kafka-{TEST_KAFKA_PORT}"
    env = {**os.environ, "KAFKA_PORT": str(TEST_KAFKA_PORT), "KAFKA_DATA_DIR": str(data_dir)}
    script = str(ROOT / "scripts" / "kafka.sh")
    if _port_open(TEST_KAFKA_PORT):
        pytest.exit(
            f"port {TEST_KAFKA_PORT} is taken; stop what runs there, or set MITIGATE_TEST_KAFKA_PORT "
            f"or {BROKER_ENV}",
            returncode=2,
        )
    subprocess.run([script, "reset"], env=env, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(data_dir, ignore_errors=True)
    subprocess.run([script, "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{TEST_KAFKA_PORT}"
    finally:
        subprocess.run([script, "stop"], env=env, check=False)


@pytest.fixture
def unique_prefix() -> str:
    """A topic prefix no other test uses, so tests never see each other's messages."""
    return f"test-{uuid.uuid4().hex[:10]}."
