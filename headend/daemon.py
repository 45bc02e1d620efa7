"""The composition root: builds the whole daemon from a validated configuration.

Both ``headend run`` and ``headend demo`` get their daemon here, so the two wire the same parts:
the reading writer and its spool (``[database]``), the metrics (``[metrics]``), the dial-in front
end (``[listen]``: listeners and their hub, none when no listener is configured), the driver port
with the meter secrets, the relay confirmation window and the hub (``[secrets]``, ``[relay]``), and
the engine with its jobs, built-in duties (concentrators, archive and meter requests, exceptions) and
services (``[engine] services``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headend.analytics.exception_duty import run as exception_duty
from headend.concentrators.requests import run as archive_requests
from headend.concentrators.service import run as concentrator_duties
from headend.config import HeadendConfig
from headend.engine.engine import Engine
from headend.engine.frontend import FrontEnd
from headend.engine.ports import DriverPort
from headend.metrics import EngineMetrics
from headend.requests.duty import run as meter_requests
from headend.store.writer import ReadingWriter


def serve_metrics(config: HeadendConfig) -> EngineMetrics:
    """The daemon's metrics, served on ``/metrics`` at once when ``[metrics] port`` is set."""
    metrics = EngineMetrics()
    if config.metrics.port:
        metrics.serve(config.metrics.host, config.metrics.port)
    return metrics


@dataclass(slots=True)
class Daemon:
    """The engine and the dial-in front end it reads ``dtu://`` channels through (if listening)."""

    engine: Engine
    front: FrontEnd | None

    async def start(self) -> None:
        """Listen first (dial-in channels find the hub from their first job), then run the engine."""
        if self.front is not None:
            await self.front.start()
        try:
            await self.engine.start()
        except BaseException:
            if self.front is not None:
                await self.front.stop()
            raise

    async def stop(self) -> None:
        """Stop the engine (finishing exchanges in flight), then close the listeners."""
        try:
            await self.engine.stop()
        finally:
            if self.front is not None:
                await self.front.stop()


def build_daemon(config: HeadendConfig, dsn: str, metrics: EngineMetrics | None = None) -> Daemon:
    """The daemon for ``config`` on database ``dsn`` (not started), reporting to ``metrics`` (by
    default new ones, served per ``[metrics]``)."""
    database = config.database
    writer = ReadingWriter(
        dsn,
        spool_dir=Path(database.spool_dir) if database.spool_dir else None,
        spool_max_bytes=database.spool_max_mb << 20,
    )
    front = FrontEnd(config.listen, dsn) if config.listen.listeners else None
    port = DriverPort(config.secrets.file or None, config.relay, front.hub if front is not None else None)
    engine = Engine(
        config,
        dsn,
        writer,
        port,
        metrics or serve_metrics(config),
        duties=[concentrator_duties, archive_requests, meter_requests, exception_duty],
    )
    return Daemon(engine, front)
