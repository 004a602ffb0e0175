"""The webhook executor: an HTTP POST of the command, as JSON, to the endpoint configured for its action.

The body is the ActionCommand with times in ISO 8601. Each request carries
the headers Idempotency-Key (the command's idempotency key),
X-Mitigate-Command-Id and X-Mitigate-Trace-Id. The receiver checks the
command's preconditions itself, and a response of 412 Precondition Failed is
reported as skipped. Other responses:

- 2xx: succeeded;
- 408, 425, 429, 5xx, a connection error or a timeout: retried after a
  backoff that doubles, while attempts and time before the deadline remain;
- 3xx: failed, because redirects are not followed (a redirect would turn the
  POST into a GET);
- any other 4xx: failed at once.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from mitigate.errors import ConfigurationError
from mitigate.executor.config import WebhookEndpoint, WebhookSettings
from mitigate.executor.handler import CommandRejected, Deadline, Outcome
from mitigate.models import ActionCommand

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 64 * 1024
RESPONSE_OUTPUT_CHARS = 1000
# Below this many seconds left, another attempt could not finish before the deadline.
MIN_ATTEMPT_S = 0.05


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: its status (None without a response), the response text or error, and a retry hint."""

    status: int | None
    text: str
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES or self.status >= 500


class Webhooks:
    """Handler of the webhook executor."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, state_dir: Path) -> None:
        if not settings.endpoints:
            raise ConfigurationError("webhook: no endpoints are configured, so every command would be rejected; "
                                     "add one per action under webhook.endpoints")
        self.settings = settings
        self._headers: dict[str, dict[str, str]] = {}
        for action, endpoint in settings.endpoints.items():
            headers = dict(endpoint.headers)
            for header, variable in endpoint.header_env.items():
                value = os.environ.get(variable)
                if value is None:
                    raise ConfigurationError(f"webhook.endpoints.{action}.header_env.{header}: environment variable "
                                             f"{variable} is not set")
                headers[header] = value
            self._headers[action] = headers
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if not settings.use_environment_proxy:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    # Handler protocol

    def check(self, command: ActionCommand) -> str | None:
        self._endpoint(command)
        return None  # the receiver checks preconditions and responds with 412 when one does not hold

    def run(self, command: ActionCommand, deadline: Deadline) -> Outcome:
        endpoint = self._endpoint(command)
        request = self._request(command, endpoint)
        where = _display(endpoint.url)
        per_attempt_s = endpoint.timeout or self.settings.timeout
        attempts = 0
        last: Attempt | None = None

        while attempts <= self.settings.retries:
            if attempts:
                assert last is not None
                pause = self.settings.backoff * 2 ** (attempts - 1)
                if last.retry_after_s is not None:
                    pause = max(pause, last.retry_after_s)
                if pause >= deadline.remaining() - MIN_ATTEMPT_S:
                    break
                logger.info("command %s: retrying POST %s in %.1f s after %s", command.command_id, where, pause,
                            _describe(last))
                time.sleep(pause)
            left = deadline.remaining()
            if left < MIN_ATTEMPT_S:
                break
            attempts += 1
            last = self._send(request, min(per_attempt_s, left))
            if not last.retryable:
                break

        output = {"url": where, "attempts": str(attempts)}
        if last is None:
            return Outcome("timed_out", f"no time left before the deadline to POST to {where}", output)
        if last.status is not None:
            output["http_status"] = str(last.status)
        output["response"] = last.text[:RESPONSE_OUTPUT_CHARS]

        if last.status is not None and 200 <= last.status < 300:
            return Outcome("succeeded", "", output)
        if last.status == 412:
            return Outcome("skipped", f"{where} responded 412 Precondition Failed: {_short(last.text)}", output)
        if last.retryable and attempts <= self.settings.retries:
            return Outcome("timed_out", f"the deadline came after {attempts} attempt(s); last: {_describe(last)}",
                           output)
        return Outcome("failed", f"POST {where} failed after {attempts} attempt(s): {_describe(last)}", output)

    # HTTP

    def _endpoint(self, command: ActionCommand) -> WebhookEndpoint:
        endpoint = self.settings.endpoints.get(command.action)
        if endpoint is None:
            known = ", ".join(sorted(self.settings.endpoints))
            raise CommandRejected(f"unknown action {command.action!r} for the webhook executor; known: {known}")
        return endpoint

    def _request(self, command: ActionCommand, endpoint: WebhookEndpoint) -> urllib.request.Request:
        body = json.dumps(command.model_dump(mode="json"), sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain;q=0.9, */*;q=0.1",
            "User-Agent": "mitigate-webhook-executor",
            "Idempotency-Key": command.idempotency_key,
            "X-Mitigate-Command-Id": command.command_id,
            "X-Mitigate-Trace-Id": command.trace_id,
            **self._headers[command.action],
        }
        return urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")

    def _send(self, request: urllib.request.Request, timeout_s: float) -> Attempt:
        try:
            with self._opener.open(request, timeout=timeout_s) as response:
                return Attempt(response.status, _read(response))
        except urllib.error.HTTPError as exc:
            with exc:
                return Attempt(exc.code, _read(exc), _retry_after(exc.headers.get("Retry-After")))
        except urllib.error.URLError as exc:
            return Attempt(None, f"connection failed: {exc.reason}")
        except (TimeoutError, ConnectionError, HTTPException, OSError) as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _read(response: HTTPResponse | IO[bytes]) -> str:
    try:
        data = response.read(MAX_RESPONSE_BYTES)
    except (OSError, HTTPException):
        return ""
    return data.decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """Return the seconds a Retry-After header requests, given as seconds or as an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _display(url: str) -> str:
    """Return the URL without its query and credentials, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _describe(attempt: Attempt) -> str:
    if attempt.status is None:
        return attempt.text
    return f"HTTP {attempt.status}: {_short(attempt.text)}"


def _short(text: str) -> str:
    stripped = " ".join(text.split())
    if not stripped:
        return "(empty body)"
    return stripped if len(stripped) <= 300 else stripped[:300] + "..."
