"""Governed remediation for anomaly-detector output, as a Faust pipeline on Apache Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mitigate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
