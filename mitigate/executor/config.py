"""Settings of the reference executors, read from config/executors.yaml.

Every section has defaults, so a file needs only what it changes; unknown keys
are rejected. Durations are written as 90s, 5m, 1h or 2d, or as seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mitigate.durations import Duration
from mitigate.errors import ConfigurationError
from mitigate.settings import KafkaSettings

# Action and parameter names: a letter or digit, then letters, digits, "_", "-"
# or ".". The shell executor turns parameter names into --name=value options,
# so a name must not start with "-" or contain "=".
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"invalid name {value!r}; use letters, digits, '_', '-' and '.', starting with a letter or digit")
    return value


Name = Annotated[str, AfterValidator(_name)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}; expected http://host/... or https://host/...")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutorSettings(KafkaSettings):
    """Kafka settings of an executor process, from MITIGATE_* environment variables."""

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="MITIGATE_LOG_LEVEL.")


class ConsumerSettings(Strict):
    """Consumer group timeouts of every executor.

    A slow action does not count against max_poll_interval: the service pauses
    its partitions and keeps polling while the action runs.
    """

    session_timeout: Duration = 45.0
    max_poll_interval: Duration = 300.0

    @model_validator(mode="after")
    def _poll_interval_covers_session(self) -> ConsumerSettings:
        # librdkafka rejects a max.poll.interval.ms below session.timeout.ms.
        if self.max_poll_interval < self.session_timeout:
            raise ValueError(
                f"max_poll_interval ({self.max_poll_interval:g} s) must not be shorter than session_timeout "
                f"({self.session_timeout:g} s)"
            )
        return self


class WebhookEndpoint(Strict):
    """Target URL of one action's HTTP POST, with its headers and timeout."""

    url: HttpUrl
    # Extra request headers. header_env names environment variables whose
    # values become headers, so that tokens stay out of this file.
    headers: dict[str, str] = Field(default_factory=dict)
    header_env: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None  # per attempt; the section's timeout when unset


class WebhookSettings(Strict):
    """The webhook executor: each action is an HTTP POST of the command as JSON."""

    timeout: Duration = 5.0  # per attempt, and never past the command's deadline
    retries: int = Field(2, ge=0, le=10)  # further attempts after a connection error, a timeout, 408, 429 or 5xx
    backoff: Duration = 0.5  # wait before the first retry; doubles for each further retry
    use_environment_proxy: bool = False  # honour http_proxy, https_proxy and no_proxy
    endpoints: dict[Name, WebhookEndpoint] = Field(default_factory=dict)


class ShellAction(Strict):
    """One allow-listed runbook: the argv it runs, and what it may receive."""

    argv: list[str] = Field(min_length=1)
    # Parameter names the runbook accepts; a command with another is rejected.
    # Unset accepts any valid name.
    parameters: list[Name] | None = None
    append_target: bool = True  # pass the command's target as --target=<target> before the parameters
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: Path | None = None
    # Precondition name -> argv of a check. The check gets --target=<target>
    # and --expected=<value>; exit status 0 means the precondition holds.
    preconditions: dict[Name, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _argv_not_blank(self) -> ShellAction:
        for argv in (self.argv, *self.preconditions.values()):
            if not argv or not argv[0].strip():
                raise ValueError("an argv list needs a program as its first item")
        return self


class ShellSettings(Strict):
    """The shell executor: runs one allow-listed argv per action, never through a shell."""

    actions: dict[Name, ShellAction] = Field(default_factory=dict)
    output_tail_chars: int = Field(2000, ge=100, le=100_000)  # of stdout and stderr kept in the result


class TicketSettings(Strict):
    """The ticket executor: a ticket tracker in a local SQLite file."""

    database: Path = Path("tickets.sqlite")  # relative to the state folder
    id_prefix: str = Field("MIT", pattern=r"^[A-Z][A-Z0-9]{0,9}$")
    default_queue: Name = "operations"


class DemoTargetState(Strict):
    """State of one simulated service."""

    config_version: Name
    last_known_good: Name  # the version rollback-config goes to for to_version=last-known-good
    previous_config_version: Name | None = None  # the version before the last config change
    traffic_limit_percent: int = Field(ge=0, le=100)
    replicas: int = Field(ge=1)
    healthy: bool
    restarts: int = Field(0, ge=0)


def _initial_state() -> DemoTargetState:
    # A service that runs a faulty configuration, for the sample to contain.
    return DemoTargetState(config_version="v2", last_known_good="v1", traffic_limit_percent=100, replicas=2,
                           healthy=False)


class DemoTargetSettings(Strict):
    """The demo-target executor: simulated services whose state lives in a JSON file."""

    state_file: Path = Path("demo-target.json")  # relative to the state folder
    initial: DemoTargetState = Field(default_factory=_initial_state)  # of a target seen for the first time
    targets: dict[str, DemoTargetState] = Field(default_factory=dict)  # initial state of named targets
    faulty_versions: list[Name] = Field(default_factory=lambda: ["v2"])  # a service on one of these is unhealthy
    max_replicas: int = Field(10, ge=1)
    action_delay: float = Field(0.0, ge=0.0, le=3600.0)  # seconds each change takes, to exercise deadlines


class ExecutorsConfig(Strict):
    """The whole of config/executors.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Finished commands are kept this long for dedupe; longer than the command
    # topics' retention (7 days), so a redelivered command is always found.
    result_retention: Duration = 14 * 86400.0
    consumer: ConsumerSettings = Field(default_factory=lambda: ConsumerSettings())
    webhook: WebhookSettings = Field(default_factory=lambda: WebhookSettings())
    shell: ShellSettings = Field(default_factory=lambda: ShellSettings())
    ticket: TicketSettings = Field(default_factory=lambda: TicketSettings())
    demo_target: DemoTargetSettings = Field(default_factory=lambda: DemoTargetSettings(), alias="demo-target")


def load_config(path: Path) -> ExecutorsConfig:
    """Read and validate an executors file; raise ConfigurationError naming the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return ExecutorsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(document)"
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise ConfigurationError(f"{path}: {field}: {message}") from exc
