"""Pages the worker serves with Faust's web server: Prometheus metrics, a dashboard and its data.

- /metrics: the pipeline's counters and histograms with Faust's own consumer
  and producer metrics (names starting with faust_), in the Prometheus text format;
- /dashboard/: a page that shows throughput, pending reviews, recent decisions
  and the headline figures, refreshed every two seconds from /api/summary/;
- /api/summary/: those figures as JSON.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from mitigate.telemetry import Telemetry


def add_pages(app: faust.App, telemetry: Telemetry) -> None:
    setup_prometheus_sensors(app, pattern="/metrics", registry=telemetry.registry, name_prefix="faust")
    page = files("mitigate").joinpath("dashboard.html").read_text(encoding="utf-8")

    @app.page("/dashboard/")
    async def dashboard(self: faust.web.View, request: faust.web.Request) -> Any:
        return self.html(page)

    @app.page("/api/summary/")
    async def summary(self: faust.web.View, request: faust.web.Request) -> Any:
        return self.json(telemetry.summary())
