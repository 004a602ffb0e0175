"""The `mitigate` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mitigate import __version__
from mitigate.codec import AvroCodec, create_registry_client
from mitigate.errors import MitigateError
from mitigate.schemas import SchemaRepository
from mitigate.settings import KafkaSettings

logger = logging.getLogger("mitigate")

EXIT_ERROR = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except MitigateError as exc:
        print(f"mitigate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mitigate",
        description="Governed remediation of anomaly-detector output on Apache Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"mitigate {__version__}")
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka bootstrap servers, host:port[,host:port]; default MITIGATE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the pipeline worker (a Faust worker)")
    worker.set_defaults(handler=run_worker)

    _add_topics(commands)
    _add_policy(commands)
    _add_asset(commands)
    _add_detect(commands)
    _add_sample(commands)

    report = commands.add_parser(
        "report", help="print decisions and dead letters as they arrive, then a summary of the output topics"
    )
    report.add_argument("--timeout", type=_positive_float, default=180.0, metavar="SECONDS",
                        help="give up when not every anomaly has an outcome after this many seconds (default 180)")
    report.set_defaults(handler=run_report)
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _time_zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a zone folder such as America
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}; use an IANA name such as UTC or Europe/Berlin") from None


def _kafka_settings(args: argparse.Namespace) -> KafkaSettings:

    overrides = {"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}
    return KafkaSettings(**overrides)


def _codec(settings: KafkaSettings) -> AvroCodec:
    registry = create_registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
    return AvroCodec(SchemaRepository(), registry)


# worker


def run_worker(args: argparse.Namespace) -> int:
    import faust

    from mitigate.app import create_worker
    from mitigate.settings import WorkerSettings

    overrides = {"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}
    settings = WorkerSettings(**overrides)
    worker = create_worker(settings)
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level.upper(), quiet=True)
    faust_worker.execute_from_commandline()  # exits the process when the worker stops
    return 0


# topics


def _add_topics(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = commands.add_parser("topics", help="create or list the pipeline's topics")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("create", help="create missing topics; existing ones are checked, not changed").set_defaults(
        handler=run_topics_create
    )
    actions.add_parser("list", help="list the declared topics").set_defaults(handler=run_topics_list)


def run_topics_create(args: argparse.Namespace) -> int:
    from mitigate.kafka import ensure_topics

    settings = _kafka_settings(args)
    reports = ensure_topics(settings.bootstrap_servers, settings.topology())
    for report in reports:
        print(f"{report.action:<9} {report.name}{'  ' + report.detail if report.detail else ''}")
    return EXIT_ERROR if any(report.action == "mismatch" for report in reports) else 0


def run_topics_list(args: argparse.Namespace) -> int:
    settings = _kafka_settings(args)
    print(f"{'topic':<34} {'partitions':>10} {'cleanup':<8} {'key':<13} schema")
    for spec in settings.topology().specs():
        name = settings.topology().name(spec.base_name)
        print(f"{name:<34} {spec.partitions:>10} {spec.cleanup_policy:<8} {spec.key:<13} {spec.schema}")
    return 0


# policy


def _add_policy(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    policy = commands.add_parser("policy", help="validate, publish and list remediation policies")
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")

    validate = actions.add_parser("validate", help="check policy files without publishing them")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="policy file or folder of *.yaml files")
    validate.set_defaults(handler=run_policy_validate)

    publish = actions.add_parser("publish", help="validate policy files and publish changed ones as new versions")
    publish.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="policy file or folder of *.yaml files")
    publish.add_argument("--author", default=_default_author(), help="who publishes (default: the login name)")
    publish.add_argument("--note", default="published with mitigate policy publish", help="change note")
    publish.set_defaults(handler=run_policy_publish)

    actions.add_parser("list", help="list the policy versions in force").set_defaults(handler=run_policy_list)


def _default_author() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_policy_validate(args: argparse.Namespace) -> int:
    from mitigate.policy import load_policy_files

    for document in load_policy_files(args.paths):
        print(f"valid     {document.id}  mode={document.mode} steps={len(document.plan)}")
    return 0


def run_policy_publish(args: argparse.Namespace) -> int:
    from mitigate.catalog import publish_policies
    from mitigate.policy import load_policy_files

    documents = load_policy_files(args.paths)
    settings = _kafka_settings(args)
    results = publish_policies(
        settings.bootstrap_servers, settings.topology().policies, _codec(settings), documents,
        author=args.author, change_note=args.note,
    )
    for result in results:
        print(f"{result.action:<10} {result.policy_id} v{result.version}")
    return 0


def run_policy_list(args: argparse.Namespace) -> int:
    from mitigate.catalog import latest_policy_versions

    settings = _kafka_settings(args)
    versions = latest_policy_versions(settings.bootstrap_servers, settings.topology().policies, _codec(settings))
    if not versions:
        print("no policies published")
        return 0
    print(f"{'policy':<32} {'version':>7}  {'published':<20} author")
    for policy_id, version in sorted(versions.items()):
        state = " (withdrawn)" if version.deleted else ""
        print(f"{policy_id:<32} {version.version:>7}  {version.published_at:%Y-%m-%d %H:%M:%S}  {version.author}{state}")
    return 0


# asset


def _add_asset(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    asset = commands.add_parser("asset", help="publish asset context")
    actions = asset.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = actions.add_parser("publish", help="publish every asset of a YAML file to the assets topic")
    publish.add_argument("path", type=Path, metavar="FILE")
    publish.set_defaults(handler=run_asset_publish)


def run_asset_publish(args: argparse.Namespace) -> int:
    from mitigate.catalog import load_assets, publish_assets

    entries = load_assets(args.path)
    settings = _kafka_settings(args)
    count = publish_assets(settings.bootstrap_servers, settings.topology().assets, _codec(settings), entries)
    print(f"published {count} assets to {settings.topology().assets}")
    return 0


# detect


def _add_detect(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    detect = commands.add_parser(
        "detect", help="run the reference detector (robust z-score) over a CSV series and publish anomaly events"
    )
    detect.add_argument("path", type=Path, metavar="CSV", help="CSV file with timestamp and value columns")
    detect.add_argument("--entity", default="machine-temperature-01", help="entity the series measures")
    detect.add_argument("--subsystem", default="industrial/cooling", help="subsystem of the entity")
    detect.add_argument("--metric", default="machine_temperature", help="metric name, set as the label `metric`")
    detect.add_argument("--window", type=_positive_int, default=None, help="sliding window, in points")
    detect.add_argument("--threshold", type=_positive_float, default=None, help="robust z-score that starts an episode")
    detect.add_argument("--timezone", type=_time_zone, default=ZoneInfo("UTC"),
                        help="time zone of naive timestamps in the CSV (default UTC)")
    detect.add_argument("--event-time", choices=("replay", "original"), default="replay",
                        help="replay: stamp events with the time they are published (default); "
                             "original: use the series' own timestamps")
    detect.add_argument("--wire-format", choices=("single-object", "confluent"), default="single-object",
                        help="Avro framing; confluent needs MITIGATE_SCHEMA_REGISTRY_URL")
    detect.add_argument("--allow-unordered", action="store_true",
                        help="accept rows whose timestamp is earlier than the row before; they are read in file order")
    detect.add_argument("--dry-run", action="store_true", help="print the events instead of publishing them")
    detect.set_defaults(handler=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    from mitigate.detection import SeriesSource, detect, publish_events
    from mitigate.detector import RobustZScoreDetector, read_series

    options = {name: getattr(args, name) for name in ("window", "threshold") if getattr(args, name) is not None}
    try:
        detector = RobustZScoreDetector(**options)
    except ValueError as exc:
        raise MitigateError(f"invalid detector settings: {exc}") from exc
    source = SeriesSource(entity=args.entity, subsystem=args.subsystem, metric=args.metric)
    try:
        readings = list(read_series(args.path, timezone=args.timezone, allow_unordered=args.allow_unordered))
    except OSError as exc:
        raise MitigateError(f"{args.path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise MitigateError(str(exc)) from exc
    events = list(detect(readings, detector, source, event_time=args.event_time))

    if args.dry_run:
        for event in events:
            print(f"{event.annotations['source_time']} {event.status:<8} {event.anomaly_type:<5} "
                  f"{event.severity:<8} score={event.score:7.2f} confidence={event.confidence:.2f}")
        print(f"{len(events)} events from {len(readings)} readings (not published)")
        return 0

    settings = _kafka_settings(args)
    topic = settings.topology().anomalies
    count = publish_events(settings.bootstrap_servers, topic, _codec(settings), events, wire_format=args.wire_format)
    print(f"published {count} anomaly events from {len(readings)} readings of {args.path} to {topic}")
    return 0


# sample


def _add_sample(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sample = commands.add_parser("sample", help="publish hand-made sample input")
    actions = sample.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "edge-cases",
        help="publish inputs that must not be acted on: plain JSON, truncated Avro, an event from the future, "
             "and a valid event that no policy covers",
    ).set_defaults(handler=run_sample_edge_cases)


def run_sample_edge_cases(args: argparse.Namespace) -> int:
    from mitigate.detection import DETECTOR_ID, DETECTOR_VERSION
    from mitigate.kafka import create_producer, flush_or_raise
    from mitigate.models import AnomalyEvent

    settings = _kafka_settings(args)
    codec = _codec(settings)
    now = datetime.now(UTC)

    def event(**changes: object) -> bytes:
        fields: dict[str, object] = {
            "event_id": str(uuid.uuid4()), "detector_id": DETECTOR_ID, "detector_version": DETECTOR_VERSION,
            "event_time": now, "entity": "edge-router-07", "subsystem": "network/edge", "anomaly_type": "error_rate",
            "severity": "high", "confidence": 0.97, "score": 9.4, "status": "firing",
            "fingerprint": "edge-router-07-error-rate", "labels": {"metric": "http_5xx_ratio"},
        }
        fields.update(changes)
        encoded: bytes = codec.encode("AnomalyEvent", AnomalyEvent.model_validate(fields).to_avro())
        return encoded

    samples = [
        ("plain JSON on the Avro topic", b'{"entity": "edge-router-07", "severity": "high"}'),
        ("truncated Avro", event()[:30]),
        ("event stamped one day ahead", event(event_time=now + timedelta(days=1))),
        ("valid event that no policy covers", event()),
    ]
    producer = create_producer(settings.bootstrap_servers)
    topic = settings.topology().anomalies
    for description, value in samples:
        producer.produce(topic, key=b"edge-router-07", value=value)
        print(f"sent {description}")
    flush_or_raise(producer)
    return 0


# report


def run_report(args: argparse.Namespace) -> int:
    from mitigate.report import follow

    settings = _kafka_settings(args)
    ok = follow(settings.bootstrap_servers, settings.topology(), _codec(settings), sys.stdout, timeout_s=args.timeout)
    return 0 if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
