"""The two comparison arms, each run as its own process: a raw confluent-kafka loop and a pass-through Faust agent.

    python -m benchmarks.arms raw INPUT OUTPUT
    python -m benchmarks.arms passthrough INPUT OUTPUT

Both read MITIGATE_BOOTSTRAP_SERVERS and forward every message of INPUT to
OUTPUT unchanged, with its key. The pipeline arm is `mitigate worker` itself.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import uuid
from typing import Any

from confluent_kafka import Consumer

from mitigate.kafka import client_config, create_producer


def run_raw(bootstrap: str, source: str, target: str) -> None:
    """Consume in batches and produce each message unchanged; commit after each batch is handed to the producer."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
        "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
    }))
    producer = create_producer(bootstrap, **{"linger.ms": 5, "batch.size": 262144})
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([source])
    try:
        while not stopping:
            batch = consumer.consume(500, timeout=0.2)
            for message in batch:
                if message.error() is not None:
                    continue
                while True:
                    try:
                        producer.produce(target, key=message.key(), value=message.value(),
                                         headers=message.headers())
                        break
                    except BufferError:
                        producer.poll(0.05)  # the local queue is full; let deliveries drain it
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()


def run_passthrough(bootstrap: str, source: str, target: str) -> None:
    """Run a Faust agent with the pipeline worker's settings that forwards each event unchanged."""
    import faust

    from mitigate.app import GC_THRESHOLDS, broker_urls

    app = faust.App(
        f"bench-passthrough-{uuid.uuid4().hex[:8]}",
        broker=broker_urls(bootstrap),
        store="memory://",
        datadir=f"/tmp/bench-passthrough-{os.getpid()}",
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        producer_linger_ms=5,
        producer_max_batch_size=262144,
        cython_optimizations=True,
    )
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    target_topic = app.topic(target, key_serializer="raw", value_serializer="raw")

    # The pipeline worker's garbage collector settings, so that the arms differ only in their work.
    gc.set_threshold(*GC_THRESHOLDS)

    @app.agent(source_topic, name="forward")
    async def forward(stream: Any) -> None:
        gc.collect()
        gc.freeze()
        async for event in stream.events():
            message = event.message
            await target_topic.send(key=message.key, value=message.value, headers=message.headers)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.spinner = None  # as the pipeline worker does: the spinner would switch the root logger to DEBUG
    worker.execute_from_commandline()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("raw", "passthrough"):
        print("usage: python -m benchmarks.arms raw|passthrough INPUT OUTPUT", file=sys.stderr)
        return 2
    bootstrap = os.environ.get("MITIGATE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if argv[0] == "raw":
        run_raw(bootstrap, argv[1], argv[2])
    else:
        run_passthrough(bootstrap, argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
