"""`python -m mitigate.executor run NAME ...`: the `mitigate executor` command without the main CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from mitigate.errors import MitigateError
from mitigate.executor.cli import configure

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mitigate.executor",
        description="Run a reference executor of mitigate (the same as `mitigate executor`).",
    )
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka bootstrap servers, host:port[,host:port]; default MITIGATE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except MitigateError as exc:
        print(f"mitigate executor: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValidationError as exc:
        for error in exc.errors():
            variable = "MITIGATE_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"mitigate executor: error: invalid setting {variable}={error.get('input')!r}: {error['msg']}",
                  file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
