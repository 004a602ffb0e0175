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

from pydantic import ValidationError

from mitigate import __version__
from mitigate.arguments import duration_argument, positive_int
from mitigate.codec import AvroCodec, create_registry_client
from mitigate.errors import MitigateError, PolicyError
from mitigate.logs import configure_tool_logging
from mitigate.executor.cli import add_parser as add_executor_parser
from mitigate.models import AnomalyEvent, PolicyVersion
from mitigate.audit import add_parser as add_audit_parser
from mitigate.review_tool import add_parser as add_review_parser
from mitigate.schemas import SchemaRepository
from mitigate.settings import KafkaSettings

logger = logging.getLogger("mitigate")

EXIT_ERROR = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_tool_logging()
    try:
        return int(args.handler(args))
    except PolicyError as exc:
        print(f"mitigate: error: {exc}", file=sys.stderr)
        for other in exc.others:
            print(f"mitigate: error: {exc.source}: {other}", file=sys.stderr)
        return EXIT_ERROR
    except MitigateError as exc:
        print(f"mitigate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValidationError as exc:
        # Only the settings models are validated outside the handlers' own error handling.
        for error in exc.errors():
            variable = "MITIGATE_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"mitigate: error: invalid setting {variable}={error.get('input')!r}: {error['msg']}",
                  file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of the output went away (for example `| head`); nothing more to print.
        sys.stderr.close()
        return 0


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
    _add_silence(commands)
    _add_simulate(commands)
    _add_evaluate(commands)
    add_executor_parser(commands)
    add_review_parser(commands)
    add_audit_parser(commands)

    report = commands.add_parser(
        "report", help="print decisions and dead letters as they arrive, then a summary of the output topics"
    )
    report.add_argument("--timeout", type=_positive_float, default=180.0, metavar="SECONDS",
                        help="give up when not every anomaly has an outcome after this many seconds (default 180)")
    report.add_argument("--quiet", action="store_true", help="print only the summary")
    report.add_argument("--wait-for-plans", action="store_true",
                        help="also wait until every plan started has completed, failed or been cancelled "
                             "(needs running executors)")
    report.add_argument("--check-metrics", action="store_true",
                        help="also wait until the windows on the metrics topic add up to the counts of the other "
                             "topics, and check them (windows are published when they end)")
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


def _time_zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a zone folder such as America
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}; use an IANA name such as UTC or Europe/Berlin") from None


def _declared_settings(args: argparse.Namespace) -> KafkaSettings:
    overrides = {"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}
    return KafkaSettings(**overrides)


def _kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Return the Kafka settings, after checking that a broker responds at their address."""
    from mitigate.kafka import check_reachable

    settings = _declared_settings(args)
    check_reachable(settings.bootstrap_servers)
    return settings


def _codec(settings: KafkaSettings) -> AvroCodec:
    registry = create_registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
    return AvroCodec(SchemaRepository(), registry)


# worker


def run_worker(args: argparse.Namespace) -> int:
    import faust

    from mitigate.app import create_worker
    from mitigate.logs import logging_config
    from mitigate.settings import WorkerSettings

    overrides = {"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}
    settings = WorkerSettings(**overrides)
    worker = create_worker(settings)
    faust_worker = faust.Worker(worker.app, loglevel=settings.log_level.upper(), quiet=True,
                                logging_config=logging_config(settings.log_format, settings.log_level))
    # Faust's terminal spinner sets the root logger to DEBUG at level warning and above, so every
    # debug call of Faust and aiokafka would build a log record only for the handler to drop it.
    faust_worker.spinner = None
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
    settings = _declared_settings(args)
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

    actions.add_parser("list", help="list the latest version of every policy").set_defaults(handler=run_policy_list)

    show = actions.add_parser("show", help="print a published policy version as YAML")
    show.add_argument("policy_id", metavar="POLICY")
    show.add_argument("--version", type=positive_int, help="version to print (default: the latest)")
    show.set_defaults(handler=run_policy_show)

    history = actions.add_parser("history", help="list every version of a policy with author, time and note")
    history.add_argument("policy_id", metavar="POLICY")
    history.set_defaults(handler=run_policy_history)

    diff = actions.add_parser("diff", help="show what changed between two versions of a policy")
    diff.add_argument("policy_id", metavar="POLICY")
    diff.add_argument("old", type=positive_int, nargs="?", metavar="OLD",
                      help="older version (default: the one before NEW)")
    diff.add_argument("new", type=positive_int, nargs="?", metavar="NEW", help="newer version (default: the latest)")
    diff.set_defaults(handler=run_policy_diff)

    rollback = actions.add_parser("rollback", help="publish an earlier version again, as a new version")
    rollback.add_argument("policy_id", metavar="POLICY")
    rollback.add_argument("--to", type=positive_int, required=True, dest="to_version", metavar="VERSION",
                          help="version whose content to restore")
    rollback.add_argument("--author", default=_default_author(), help="who rolls back (default: the login name)")
    rollback.add_argument("--note", default="", help="change note (default: 'rollback to version N')")
    rollback.set_defaults(handler=run_policy_rollback)

    withdraw = actions.add_parser("withdraw", help="take a policy out of force; its history stays")
    withdraw.add_argument("policy_id", metavar="POLICY")
    withdraw.add_argument("--author", default=_default_author(), help="who withdraws (default: the login name)")
    withdraw.add_argument("--note", required=True, help="why the policy is withdrawn")
    withdraw.set_defaults(handler=run_policy_withdraw)


def _default_author() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_policy_validate(args: argparse.Namespace) -> int:
    from mitigate.policy import load_policy_set

    documents, _ = load_policy_set(args.paths)
    for document in documents:
        print(f"valid     {document.id}  mode={document.mode} steps={len(document.plan)}")
    return 0


def run_policy_publish(args: argparse.Namespace) -> int:
    from mitigate.catalog import publish_policies
    from mitigate.policy import load_policy_set

    documents, sources = load_policy_set(args.paths)
    settings = _kafka_settings(args)
    results = publish_policies(
        settings.bootstrap_servers, settings.topology().policies, _codec(settings), documents,
        author=args.author, change_note=args.note, sources=sources,
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


def _histories(args: argparse.Namespace) -> dict[str, list[PolicyVersion]]:
    from mitigate.catalog import policy_histories

    settings = _kafka_settings(args)
    return policy_histories(settings.bootstrap_servers, settings.topology().policies, _codec(settings))


def run_policy_show(args: argparse.Namespace) -> int:
    from mitigate.catalog import document_yaml, version_of

    version = version_of(_histories(args), args.policy_id, args.version)
    state = "withdrawn" if version.deleted else "published"
    print(f"# {version.policy_id} version {version.version}, {state} {version.published_at:%Y-%m-%d %H:%M:%S} "
          f"by {version.author}: {version.change_note}")
    print(f"# content hash {version.content_hash}")
    print(document_yaml(version), end="")
    return 0


def run_policy_history(args: argparse.Namespace) -> int:
    from mitigate.catalog import version_of

    histories = _histories(args)
    version_of(histories, args.policy_id, None)  # raises with the known ids when there is none
    print(f"{'version':>7}  {'published':<19}  {'author':<16} {'hash':<12} note")
    for version in histories[args.policy_id]:
        note = ("[withdrawn] " if version.deleted else "") + version.change_note
        print(f"{version.version:>7}  {version.published_at:%Y-%m-%d %H:%M:%S}  {version.author:<16} "
              f"{version.content_hash[:12]} {note}")
    return 0


def run_policy_diff(args: argparse.Namespace) -> int:
    from mitigate.catalog import diff_versions, version_of

    histories = _histories(args)
    new = version_of(histories, args.policy_id, args.new)
    old_number = args.old if args.old is not None else new.version - 1
    if old_number < 1:
        raise MitigateError(f"policy {args.policy_id!r} has only version {new.version}; nothing to compare")
    old = version_of(histories, args.policy_id, old_number)
    print(diff_versions(old, new) or f"versions {old.version} and {new.version} have the same content", end="\n")
    return 0


def run_policy_rollback(args: argparse.Namespace) -> int:
    from mitigate.catalog import rollback_policy

    settings = _kafka_settings(args)
    version = rollback_policy(settings.bootstrap_servers, settings.topology().policies, _codec(settings),
                              args.policy_id, args.to_version, author=args.author, change_note=args.note)
    print(f"published  {version.policy_id} v{version.version} (content of v{args.to_version})")
    return 0


def run_policy_withdraw(args: argparse.Namespace) -> int:
    from mitigate.catalog import withdraw_policy

    settings = _kafka_settings(args)
    version = withdraw_policy(settings.bootstrap_servers, settings.topology().policies, _codec(settings),
                              args.policy_id, author=args.author, change_note=args.note)
    print(f"withdrawn  {version.policy_id} v{version.version}")
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
    print(f"published {count} asset{'' if count == 1 else 's'} to {settings.topology().assets}")
    return 0


# detect


def _add_detect(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    detect = commands.add_parser(
        "detect", help="run the reference detector (robust z-score) over a CSV series and publish anomaly events"
    )
    detect.add_argument("path", type=Path, metavar="CSV", help="CSV file with timestamp and value columns")
    detect.add_argument("--entity", default="machine-temperature-01",
                        help="entity the series measures (default: %(default)s)")
    detect.add_argument("--subsystem", default="industrial/cooling",
                        help="subsystem of the entity (default: %(default)s)")
    detect.add_argument("--metric", default="machine_temperature",
                        help="metric name, set as the label `metric` (default: %(default)s)")
    detect.add_argument("--window", type=positive_int, default=None,
                        help="sliding window, in points (default: 288, one day of 5-minute readings)")
    detect.add_argument("--threshold", type=_positive_float, default=None,
                        help="robust z-score that starts an episode (default: 4.0)")
    detect.add_argument("--timezone", type=_time_zone, default=ZoneInfo("UTC"),
                        help="time zone of naive timestamps in the CSV (default UTC)")
    detect.add_argument("--event-time", choices=("replay", "rebase", "original"), default="replay",
                        help="replay: stamp events with the time they are published (default); "
                             "rebase: shift the series' timestamps so its last reading is now; "
                             "original: use the series' own timestamps")
    detect.add_argument("--wire-format", choices=("single-object", "confluent"), default="single-object",
                        help="Avro framing; confluent needs MITIGATE_SCHEMA_REGISTRY_URL")
    detect.add_argument("--allow-unordered", action="store_true",
                        help="accept rows whose timestamp is earlier than the row before; they are read in file order")
    detect.add_argument("--dry-run", action="store_true", help="print the events instead of publishing them")
    detect.add_argument("--write", type=Path, metavar="FILE",
                        help="write the events to a JSON Lines file (for mitigate simulate) instead of publishing")
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
        print(f"entity={source.entity} subsystem={source.subsystem} labels.metric={source.metric}")
        for event in events:
            print(f"{event.annotations['source_time']} {event.status:<8} {event.anomaly_type:<5} "
                  f"{event.severity:<8} score={event.score:7.2f} confidence={event.confidence:.2f}")
        print(f"{len(events)} events from {len(readings)} readings (not published)")
        return 0

    if args.write:
        from mitigate.simulation import write_events

        count = write_events(args.write, events)
        print(f"wrote {count} anomaly events from {len(readings)} readings of {args.path} to {args.write}")
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
    actions.add_parser(
        "containment",
        help="publish a sustained overheating of machine-temperature-02 that the shipped policy contains "
             "with its full plan (rollback, ticket, throttle)",
    ).set_defaults(handler=run_sample_containment)
    actions.add_parser(
        "review",
        help="publish overheating of machine-temperature-03 and -04 reported with too little confidence to act "
             "on; each goes to review and stays pending",
    ).set_defaults(handler=run_sample_review)


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


# silence


def _add_silence(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    silence = commands.add_parser("silence", help="mute matching signals for a time")
    actions = silence.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add a silence; matching signals are recorded as suppressed")
    add.add_argument("matchers", nargs="+", metavar="NAME=PATTERN",
                     help="entity, subsystem, anomaly_type, severity, fingerprint or labels.NAME, "
                          "with a shell-style pattern; all must match")
    add.add_argument("--duration", type=duration_argument, required=True,
                     help="how long the silence lasts, for example 30m or 2h")
    add.add_argument("--starts-in", type=duration_argument, default=None, metavar="DURATION",
                     help="start later instead of now, for example 1h")
    add.add_argument("--reason", required=True, help="why the signals are muted")
    add.add_argument("--author", default=_default_author(), help="who adds the silence (default: the login name)")
    add.set_defaults(handler=run_silence_add)

    listing = actions.add_parser("list", help="list silences in force or scheduled")
    listing.add_argument("--all", action="store_true", help="also list silences that ended")
    listing.set_defaults(handler=run_silence_list)

    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("silence_id", metavar="SILENCE_ID")
    expire.add_argument("--author", default=_default_author(), help="who ends it (default: the login name)")
    expire.set_defaults(handler=run_silence_expire)


def run_silence_add(args: argparse.Namespace) -> int:
    from mitigate.catalog import publish_silence
    from mitigate.silences import new_silence, parse_matchers

    matchers = parse_matchers(args.matchers)
    now = datetime.now(UTC)
    starts_at = now + timedelta(seconds=args.starts_in) if args.starts_in else now
    silence = new_silence(matchers, starts_at=starts_at, ends_at=starts_at + timedelta(seconds=args.duration),
                          author=args.author, reason=args.reason, now=now)
    settings = _kafka_settings(args)
    publish_silence(settings.bootstrap_servers, settings.topology().silences, _codec(settings), silence)
    print(f"added {silence.silence_id} until {silence.ends_at:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def run_silence_list(args: argparse.Namespace) -> int:
    from mitigate.catalog import read_silences

    settings = _kafka_settings(args)
    now = datetime.now(UTC)
    silences = sorted(read_silences(settings.bootstrap_servers, settings.topology().silences,
                                    _codec(settings)).values(), key=lambda silence: silence.starts_at)
    shown = [silence for silence in silences if args.all or silence.ends_at > now]
    if not shown:
        print("no silences" if args.all else "no silences in force or scheduled")
        return 0
    for silence in shown:
        if silence.active_at(now):
            state = "active"
        elif silence.starts_at > now:
            state = "scheduled"
        else:
            state = "ended"
        matchers = " ".join(f"{name}={pattern}" for name, pattern in sorted(silence.matchers.items()))
        ended_by = f", ended by {silence.expired_by}" if silence.expired_by else ""
        print(f"{silence.silence_id}  {state:<9} {silence.starts_at:%Y-%m-%d %H:%M} to {silence.ends_at:%Y-%m-%d %H:%M}"
              f"  {matchers}  by {silence.author}{ended_by}: {silence.reason}")
    return 0


def run_silence_expire(args: argparse.Namespace) -> int:
    from mitigate.catalog import publish_silence, read_silences
    from mitigate.silences import SilenceError, expire

    settings = _kafka_settings(args)
    silences = read_silences(settings.bootstrap_servers, settings.topology().silences, _codec(settings))
    silence = silences.get(args.silence_id)
    if silence is None:
        raise SilenceError(f"silence {args.silence_id} not found; `mitigate silence list --all` lists them")
    ended = expire(silence, by=args.author, now=datetime.now(UTC))
    publish_silence(settings.bootstrap_servers, settings.topology().silences, _codec(settings), ended)
    print(f"expired {ended.silence_id} at {ended.ends_at:%Y-%m-%d %H:%M:%S} UTC")
    return 0


# simulate


def _add_simulate(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    simulate = commands.add_parser(
        "simulate",
        help="replay recorded anomalies through policy files offline and report what each incident would get",
    )
    source = simulate.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, metavar="FILE",
                        help="JSON Lines file of AnomalyEvent records (see mitigate detect --write); no broker needed")
    source.add_argument("--topic", action="store_true",
                        help="read the anomalies topic from the beginning to its current end instead")
    simulate.add_argument("--policies", nargs="+", type=Path, required=True, metavar="PATH",
                          help="policy files or folders to decide with")
    simulate.add_argument("--against", nargs="+", type=Path, metavar="PATH",
                          help="a second policy set; prints the decisions that differ")
    simulate.add_argument("--assets", type=Path, default=Path("config/assets.yaml"), metavar="FILE",
                          help="assets file (default: %(default)s)")
    simulate.add_argument("--automation", type=Path, default=Path("config/automation.yaml"), metavar="FILE",
                          help="correlation windows and limits (default: %(default)s)")
    simulate.add_argument("--quiet", action="store_true", help="print only the summary and the differences")
    simulate.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from mitigate.automation import AutomationSettings
    from mitigate.catalog import load_assets
    from mitigate.models import AssetContext
    from mitigate.policy import load_policy_set
    from mitigate.report import format_decision
    from mitigate.simulation import differences, read_events, replay, summarise

    for option, path in (("--automation", args.automation), ("--assets", args.assets)):
        if not path.is_file():
            raise MitigateError(f"{path} not found; run from the repository folder or pass {option} FILE")
    automation = AutomationSettings.load(args.automation)
    now = datetime.now(UTC)
    assets = {entry.entity: AssetContext(updated_at=now, **entry.model_dump()) for entry in load_assets(args.assets)}
    documents, _ = load_policy_set(args.policies)
    if args.events:
        events = list(read_events(args.events))
        source = str(args.events)
    else:
        events = _topic_events(args)
        source = "anomalies topic"

    first = replay(events, documents, automation=automation, assets=assets, silences=[], source=source)
    if not args.quiet:
        for item in first:
            print(format_decision(item.decision.record))
    print("\n".join(summarise(first)))
    if not args.against:
        return 0

    other, _ = load_policy_set(args.against)
    second = replay(events, other, automation=automation, assets=assets, silences=[], source=source)
    print("with " + " ".join(str(path) for path in args.against) + ": " + "; ".join(summarise(second)))
    changed = differences(first, second)
    print(f"{len(changed)} of {len(first)} decisions differ")
    for line in changed:
        print("  " + line)
    return 0


def _topic_events(args: argparse.Namespace) -> list[tuple[int, AnomalyEvent]]:
    from mitigate.catalog import read_topic
    from mitigate.errors import DecodeError
    from mitigate.models import AnomalyEvent

    settings = _kafka_settings(args)
    codec = _codec(settings)
    events = []
    for number, (_, value) in enumerate(read_topic(settings.bootstrap_servers, settings.topology().anomalies), 1):
        try:
            events.append((number, AnomalyEvent.model_validate(codec.decode(value, "AnomalyEvent").record)))
        except (DecodeError, ValidationError):
            continue  # the worker dead-letters these; a simulation only decides valid events
    events.sort(key=lambda item: item[1].event_time)
    return events


def run_sample_containment(args: argparse.Namespace) -> int:
    from mitigate.detection import DETECTOR_ID, DETECTOR_VERSION, SeriesSource, fingerprint, publish_events
    from mitigate.models import AnomalyEvent

    settings = _kafka_settings(args)
    source = SeriesSource(entity="machine-temperature-02", subsystem="industrial/cooling", metric="machine_temperature")
    # Firing and never resolved during the run, so no resolution cancels the plan half way.
    event = AnomalyEvent(
        event_id=str(uuid.uuid4()), detector_id=DETECTOR_ID, detector_version=DETECTOR_VERSION,
        event_time=datetime.now(UTC), entity=source.entity, subsystem=source.subsystem, anomaly_type="spike",
        severity="high", confidence=0.9, score=9.5, status="firing", fingerprint=fingerprint(source, "spike"),
        labels={"metric": source.metric}, annotations={"summary": "sustained overheating for the sample"},
    )
    publish_events(settings.bootstrap_servers, settings.topology().anomalies, _codec(settings), [event])
    print(f"sent a sustained high-severity spike on {source.entity}")
    return 0


def run_sample_review(args: argparse.Namespace) -> int:
    from mitigate.detection import DETECTOR_ID, DETECTOR_VERSION, SeriesSource, fingerprint, publish_events
    from mitigate.models import AnomalyEvent

    settings = _kafka_settings(args)
    events = []
    # One subsystem each, so that each is an incident of its own. Confidence 0.7 is
    # below the shipped policy's gate of 0.75; firing and never resolved, so the
    # requests stay pending until someone answers them.
    for entity, subsystem in (("machine-temperature-03", "industrial/line-3"),
                              ("machine-temperature-04", "industrial/line-4")):
        source = SeriesSource(entity=entity, subsystem=subsystem, metric="machine_temperature")
        events.append(AnomalyEvent(
            event_id=str(uuid.uuid4()), detector_id=DETECTOR_ID, detector_version=DETECTOR_VERSION,
            event_time=datetime.now(UTC), entity=entity, subsystem=subsystem, anomaly_type="spike",
            severity="high", confidence=0.7, score=4.2, status="firing", fingerprint=fingerprint(source, "spike"),
            labels={"metric": source.metric}, annotations={"summary": "overheating the detector is unsure of"},
        ))
    publish_events(settings.bootstrap_servers, settings.topology().anomalies, _codec(settings), events)
    print("sent two uncertain overheating signals (machine-temperature-03 on industrial/line-3, "
          "machine-temperature-04 on industrial/line-4)")
    return 0


# evaluate


def _add_evaluate(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    evaluate = commands.add_parser(
        "evaluate",
        help="compare a detector's anomalies with labelled anomaly windows: precision, recall, detection delay",
    )
    evaluate.add_argument("--labels", type=Path, required=True, metavar="FILE",
                          help="labelled windows in the Numenta Anomaly Benchmark's format, for example "
                               "data/nab/machine_temperature_system_failure.windows.json")
    evaluate.add_argument("--series", default=None, metavar="NAME",
                          help="series of the labels file to use (needed when it contains more than one)")
    evaluate.add_argument("--events", type=Path, default=None, metavar="FILE",
                          help="JSON Lines file of AnomalyEvent records (mitigate detect --write); "
                               "default: the anomalies topic")
    evaluate.add_argument("--entity", default=None, help="only events of this entity")
    evaluate.add_argument("--timezone", type=_time_zone, default=ZoneInfo("UTC"),
                          help="time zone of naive timestamps in the labels and events (default UTC)")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from mitigate.evaluation import evaluate, format_report, load_windows
    from mitigate.simulation import read_events

    windows = load_windows(args.labels, args.series, args.timezone)
    if args.events is not None:
        source = str(args.events)
        events = [event for _, event in read_events(args.events)]
    else:
        settings = _kafka_settings(args)
        source = f"topic {settings.topology().anomalies}"
        events = [event for _, event in _topic_events(args)]
    if args.entity is not None:
        events = [event for event in events if event.entity == args.entity]
        source += f", entity {args.entity}"
    if not events:
        raise MitigateError(f"no anomaly events in {source}; nothing to evaluate")
    entities = sorted({event.entity for event in events})
    if len(entities) > 1:
        print(f"mitigate: warning: events of {len(entities)} entities are evaluated together against one "
              f"series' labels ({', '.join(entities[:3])}{', ...' if len(entities) > 3 else ''}); "
              "choose one with --entity", file=sys.stderr)
    result = evaluate(events, windows, args.timezone)
    if args.json:
        print(json.dumps({"source": source, "entities": entities, **result.as_json()}, indent=2))
    else:
        print(format_report(result, source))
    return 0


# report


def run_report(args: argparse.Namespace) -> int:
    from mitigate.report import follow

    settings = _kafka_settings(args)
    ok = follow(settings.bootstrap_servers, settings.topology(), _codec(settings), sys.stdout, timeout_s=args.timeout,
                quiet=args.quiet, wait_for_plans=args.wait_for_plans, check_metrics=args.check_metrics)
    return 0 if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
