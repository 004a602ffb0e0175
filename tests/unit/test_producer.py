"""WorkerProducer without a broker: the hook into Faust's flush, and flushing with nothing queued."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from mitigate.producer import WorkerProducer

# Nothing listens there, and the producer connects only once a message is queued.
UNUSED_BOOTSTRAP = "127.0.0.1:1"


def fake_app(calls: list[str]) -> Any:
    async def faust_flush() -> None:
        calls.append("faust")

    return SimpleNamespace(producer=SimpleNamespace(flush=faust_flush))


def test_attach_wraps_flush_once() -> None:
    calls: list[str] = []
    app = fake_app(calls)
    producer = WorkerProducer(UNUSED_BOOTSTRAP, "unit", 1024 * 1024)

    producer.attach(app)
    producer.attach(app)
    asyncio.run(app.producer.flush())

    assert calls == ["faust"]


def test_flush_without_messages_returns() -> None:
    producer = WorkerProducer(UNUSED_BOOTSTRAP, "unit", 1024 * 1024)

    asyncio.run(asyncio.wait_for(producer.flush(), timeout=5))


def test_first_message_attaches_bound_app() -> None:
    calls: list[str] = []
    app = fake_app(calls)
    producer = WorkerProducer(UNUSED_BOOTSTRAP, "unit", 1024 * 1024)
    producer.bind(app)
    original = app.producer.flush

    producer.produce("unit.topic", b"key", b"value")

    assert app.producer.flush is not original
