"""Unit tests for the webhook executor against an HTTP server on 127.0.0.1 that the tests script."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mitigate.errors import ConfigurationError
from mitigate.executor.config import WebhookEndpoint, WebhookSettings
from mitigate.executor.handler import CommandRejected, Deadline
from mitigate.executor.webhook import Webhooks, _retry_after
from mitigate.models import ActionCommand
from tests.unit.test_executor_processing import make_command


@dataclass
class Reply:
    status: int
    body: str = ""
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """A loopback HTTP server that responds to POSTs with the scripted replies, then with 200."""

    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            length = int(self.headers["Content-Length"])
            state.requests.append({"path": self.path, "headers": dict(self.headers),
                                   "body": json.loads(self.rfile.read(length))})
            reply = state.replies.pop(0) if state.replies else Reply(200, '{"accepted": true}')
            time.sleep(reply.delay_s)
            data = reply.body.encode()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up at its timeout

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/mitigate"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def webhooks(url: str, tmp_path: Path, **changes: Any) -> Webhooks:
    fields: dict[str, Any] = {"timeout": 2.0, "retries": 2, "backoff": 0.05,
                              "endpoints": {"notify": WebhookEndpoint(url=url)}}
    fields.update(changes)
    return Webhooks(WebhookSettings(**fields), tmp_path)


def notify_command(action: str = "notify", **changes: Any) -> ActionCommand:
    return make_command(executor="webhook", action=action, parameters={"channel": "#ops"}, **changes)


def seconds(count: float) -> Deadline:
    now = datetime.now(UTC)
    return Deadline.of(now + timedelta(seconds=count), now)


def test_post_succeeds(receiver: Receiver, tmp_path: Path) -> None:
    command = notify_command(preconditions={"healthy": "false"})
    handler = webhooks(receiver.url, tmp_path)

    assert handler.check(command) is None
    outcome = handler.run(command, seconds(30))

    assert outcome.status == "succeeded"
    assert outcome.output == {"url": receiver.url, "attempts": "1", "http_status": "200",
                              "response": '{"accepted": true}'}
    [request] = receiver.requests
    assert request["path"] == "/hooks/mitigate"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Idempotency-Key"] == command.idempotency_key
    assert request["headers"]["X-Mitigate-Command-Id"] == command.command_id
    assert request["headers"]["X-Mitigate-Trace-Id"] == command.trace_id
    body = request["body"]
    assert body["command_id"] == command.command_id
    assert body["parameters"] == {"channel": "#ops"}
    assert body["preconditions"] == {"healthy": "false"}
    assert datetime.fromisoformat(body["deadline"]) == command.deadline


def test_retry_after_server_error(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(503, "busy"), Reply(502, "bad gateway")]

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "succeeded"
    assert outcome.output["attempts"] == "3"
    assert len(receiver.requests) == 3


def test_server_errors_exhaust_retries(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(500, "boom")] * 3

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "failed"
    assert outcome.reason == f"POST {receiver.url} failed after 3 attempt(s): HTTP 500: boom"
    assert outcome.output["http_status"] == "500"
    assert len(receiver.requests) == 3


def test_client_error_not_retried(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(400, '{"error": "unknown channel"}')]

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "failed"
    assert "HTTP 400" in outcome.reason
    assert "unknown channel" in outcome.reason
    assert outcome.output["attempts"] == "1"
    assert len(receiver.requests) == 1


def test_precondition_failed_skipped(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(412, "healthy is true")]

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "skipped"
    assert outcome.reason == f"{receiver.url} responded 412 Precondition Failed: healthy is true"


def test_redirect_not_followed(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(302, "", headers={"Location": receiver.url + "/elsewhere"})]

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "failed"
    assert "HTTP 302" in outcome.reason
    assert len(receiver.requests) == 1


def test_slow_receiver_timed_out(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(200, "late", delay_s=3.0)]
    started = time.monotonic()

    outcome = webhooks(receiver.url, tmp_path, timeout=10.0).run(notify_command(), seconds(1.0))

    assert outcome.status == "timed_out"
    assert "timed out" in outcome.reason
    assert time.monotonic() - started < 2.0


def test_attempt_timeout_then_retry(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(200, "late", delay_s=1.5)]

    outcome = webhooks(receiver.url, tmp_path, timeout=0.5).run(notify_command(), seconds(30))

    assert outcome.status == "succeeded"
    assert outcome.output["attempts"] == "2"


def test_retry_after_beyond_deadline_stops(receiver: Receiver, tmp_path: Path) -> None:
    receiver.replies = [Reply(429, "slow down", headers={"Retry-After": "60"})]
    started = time.monotonic()

    outcome = webhooks(receiver.url, tmp_path).run(notify_command(), seconds(3))

    assert outcome.status == "timed_out"
    assert "HTTP 429" in outcome.reason
    assert len(receiver.requests) == 1
    assert time.monotonic() - started < 1.0


def test_connection_refused_retried(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below, so nothing listens there
    url = f"http://127.0.0.1:{port}/hook"

    outcome = webhooks(url, tmp_path).run(notify_command(), seconds(30))

    assert outcome.status == "failed"
    assert outcome.output["attempts"] == "3"
    assert "connection failed" in outcome.reason
    assert "http_status" not in outcome.output


def test_unknown_action_rejected(receiver: Receiver, tmp_path: Path) -> None:
    with pytest.raises(CommandRejected, match="unknown action 'page' for the webhook executor; known: notify"):
        webhooks(receiver.url, tmp_path).check(notify_command(action="page"))


def test_header_from_environment(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_TOKEN", "Bearer s3cret")
    endpoint = WebhookEndpoint(url=receiver.url, headers={"X-Team": "ops"},
                               header_env={"Authorization": "TEST_WEBHOOK_TOKEN"})

    webhooks(receiver.url, tmp_path, endpoints={"notify": endpoint}).run(notify_command(), seconds(30))

    headers = receiver.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Team"] == "ops"


def test_missing_header_variable_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_WEBHOOK_TOKEN", raising=False)
    endpoint = WebhookEndpoint(url="http://127.0.0.1:9/hook", header_env={"Authorization": "TEST_WEBHOOK_TOKEN"})

    with pytest.raises(ConfigurationError, match="TEST_WEBHOOK_TOKEN is not set"):
        webhooks("http://127.0.0.1:9/hook", tmp_path, endpoints={"notify": endpoint})


def test_no_endpoints_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no endpoints are configured"):
        Webhooks(WebhookSettings(), tmp_path)


def test_query_hidden_in_output(receiver: Receiver, tmp_path: Path) -> None:
    outcome = webhooks(receiver.url + "?token=abc", tmp_path).run(notify_command(), seconds(30))

    assert outcome.output["url"] == receiver.url
    assert receiver.requests[0]["path"] == "/hooks/mitigate?token=abc"


def test_retry_after_forms() -> None:
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)

    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    seconds_left = _retry_after(in_ten)
    assert seconds_left is not None
    assert 8 <= seconds_left <= 10
