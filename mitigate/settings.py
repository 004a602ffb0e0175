"""Worker and client settings, read from MITIGATE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mitigate.intake import DEFAULT_MAX_EVENT_BYTES
from mitigate.topology import DEAD_LETTER_MAX_BYTES, Topology


class KafkaSettings(BaseSettings):
    """Cluster address and topic naming of one deployment."""

    model_config = SettingsConfigDict(env_prefix="MITIGATE_", frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (MITIGATE_BOOTSTRAP_SERVERS)."
    )
    topic_prefix: str = Field(
        "", description="Prefix of every topic name, to run several deployments on one cluster (MITIGATE_TOPIC_PREFIX)."
    )
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of the keyed topics (MITIGATE_PARTITIONS).")
    schema_registry_url: str | None = Field(
        None,
        description="Schema Registry URL (MITIGATE_SCHEMA_REGISTRY_URL); without it only single-object encoding is read.",
    )

    def topology(self) -> Topology:
        return Topology(prefix=self.topic_prefix, partitions=self.partitions)


class WorkerSettings(KafkaSettings):
    """Settings of the pipeline worker."""

    app_id: str = Field("mitigate", min_length=1, description="Faust application id and consumer group (MITIGATE_APP_ID).")
    store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="Table storage; memory loses local state on restart (MITIGATE_STORE)."
    )
    data_dir: Path = Field(Path(".run/worker"), description="Folder for table storage (MITIGATE_DATA_DIR).")
    detectors_file: Path = Field(
        Path("config/detectors.yaml"), description="Known detectors and their required labels (MITIGATE_DETECTORS_FILE)."
    )
    automation_file: Path = Field(
        Path("config/automation.yaml"),
        description="Correlation windows, budgets and circuit breaker (MITIGATE_AUTOMATION_FILE).",
    )
    operators_file: Path = Field(
        Path("config/operators.yaml"),
        description="Operators and their rights to answer review requests (MITIGATE_OPERATORS_FILE).",
    )
    max_future_skew_s: float = Field(
        300.0, gt=0, description="Reject events stamped further than this in the future, seconds (MITIGATE_MAX_FUTURE_SKEW_S)."
    )
    max_event_age_s: float = Field(
        86400.0, gt=0, description="Reject events older than this, seconds (MITIGATE_MAX_EVENT_AGE_S)."
    )
    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES, ge=1024, le=DEAD_LETTER_MAX_BYTES - 64 * 1024,
        description="Dead-letter events with a larger value, bytes (MITIGATE_MAX_EVENT_BYTES).",
    )
    review_timeout_s: float = Field(
        1800.0, gt=0, description="Review deadline when no policy sets one, seconds (MITIGATE_REVIEW_TIMEOUT_S)."
    )
    ready_file: Path | None = Field(
        None, description="File the worker rewrites once a second with its table sizes, once started (MITIGATE_READY_FILE)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="MITIGATE_LOG_LEVEL.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text lines, or one JSON object per line with the ids as fields (MITIGATE_LOG_FORMAT)."
    )
    web_host: str = Field(
        "127.0.0.1", description="Address the worker's web server (metrics, dashboard) listens on (MITIGATE_WEB_HOST)."
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Port of the worker's web server (MITIGATE_WEB_PORT).")
