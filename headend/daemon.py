"""The composition root: builds the whole daemon from a validated configuration.

Both ``headend run`` and ``headend demo`` get their engine here, so the two wire the same parts:
the reading writer and its spool (``[database]``), the metrics (``[metrics]``), the driver port
with the meter secrets and the relay confirmation window (``[secrets]``, ``[relay]``), and the
engine with its jobs and services (``[engine] services``).
"""

from __future__ import annotations

from pathlib import Path

from headend.config import HeadendConfig
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.metrics import EngineMetrics
from headend.store.writer import ReadingWriter


def serve_metrics(config: HeadendConfig) -> EngineMetrics:
    """The daemon's metrics, served on ``/metrics`` at once when ``[metrics] port`` is set."""
    metrics = EngineMetrics()
    if config.metrics.port:
        metrics.serve(config.metrics.host, config.metrics.port)
    return metrics


def build_daemon(config: HeadendConfig, dsn: str, metrics: EngineMetrics | None = None) -> Engine:
    """The daemon's engine for ``config`` on database ``dsn`` (not started), reporting to ``metrics``
    (by default new ones, served per ``[metrics]``)."""
    database = config.database
    writer = ReadingWriter(
        dsn,
        spool_dir=Path(database.spool_dir) if database.spool_dir else None,
        spool_max_bytes=database.spool_max_mb << 20,
    )
    port = DriverPort(config.secrets.file or None, config.relay)
    return Engine(config, dsn, writer, port, metrics or serve_metrics(config))
