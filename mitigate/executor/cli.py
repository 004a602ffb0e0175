"""The `mitigate executor` command: runs a reference executor against its command topic."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mitigate.executor.reference import REFERENCE_EXECUTORS

DEFAULT_CONFIG = Path("config/executors.yaml")
DEFAULT_STATE_ROOT = Path(".run/executors")


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `executor run NAME [--config FILE] [--state-dir DIR]` to the subcommands of `mitigate`."""
    executor = commands.add_parser("executor", help="run a reference executor that performs the commands of its topic")
    configure(executor)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `run` action to `parser`: the `executor` subcommand, or `python -m mitigate.executor`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="consume actions.NAME, perform each command once, publish results to action-results; "
             "stop with Ctrl-C or SIGTERM",
    )
    run.add_argument("name", choices=REFERENCE_EXECUTORS, metavar="NAME",
                     help=f"the executor to run: {', '.join(REFERENCE_EXECUTORS)}")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                     help="executor settings (default: %(default)s)")
    run.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                     help=f"folder of the command store and the executor's own state, one per executor process "
                          f"(default: {DEFAULT_STATE_ROOT}/NAME)")
    run.set_defaults(handler=run_executor)


def run_executor(args: argparse.Namespace) -> int:
    """Run the executor until SIGTERM or SIGINT; return 0 after a clean stop.

    Raises MitigateError (ConfigurationError, ExecutorError, KafkaAdminError)
    when the executor cannot start or cannot go on; the CLI turns it into exit
    status 1.
    """
    from mitigate.executor.config import ExecutorSettings, load_config
    from mitigate.executor.reference import create_handler
    from mitigate.executor.service import ExecutorService
    from mitigate.kafka import check_reachable

    overrides = {"bootstrap_servers": args.bootstrap_servers} if getattr(args, "bootstrap_servers", None) else {}
    settings = ExecutorSettings(**overrides)
    config = load_config(args.config)
    state_dir = args.state_dir if args.state_dir is not None else DEFAULT_STATE_ROOT / args.name
    handler = create_handler(args.name, config, state_dir)
    _configure_logging(settings.log_level)
    check_reachable(settings.bootstrap_servers)
    service = ExecutorService(
        handler,
        bootstrap_servers=settings.bootstrap_servers,
        topology=settings.topology(),
        state_dir=state_dir,
        consumer_settings=config.consumer,
        result_retention_s=config.result_retention,
    )
    service.run()
    return 0


def _configure_logging(level: str) -> None:
    # A long-running service: timestamps on every line, and the package's own level.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("mitigate").setLevel(level.upper())
