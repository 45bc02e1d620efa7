"""The daemon's life on a shared database: run the engine only while this daemon is the active one.

``supervise`` claims the daemon lock (:mod:`headend.leadership`) and runs the engine while it holds
it; while another daemon holds it, this one is a hot standby (no bus polled, no service run, no
command executed) and tries again every ``[ha] poll``. When the held lock's connection is lost, a
daemon with ``[ha] fencing`` stops its engine at once; without fencing (a lone daemon) it keeps
reading into the spool and stops only if another daemon has taken the lock meanwhile. A daemon
without fencing that starts while the database is unreachable starts reading at once (from the
inventory it cached last time) and claims the lock when the database answers.

With ``[cluster] enabled`` there is no daemon lock: every daemon runs its engine, which reads only
the channels whose leases it holds (:mod:`headend.engine.leases`, docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from headend.config import HeadendConfig
from headend.daemon import Daemon, build_daemon, serve_metrics
from headend.leadership import Leadership
from headend.metrics import EngineMetrics
from headend.store.migrate import migrate
from headend.store.spool import SpoolError
from headend.store.writer import UNAVAILABLE

log = logging.getLogger("headend.run")

BACKOFF_MAX = 30.0  # the longest wait between attempts to reach an unreachable database
FENCED_PAUSE = 2  # standby polls a fenced daemon lets pass before it claims the lock again


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _lost_or_stopped(leadership: Leadership, stop: asyncio.Event) -> bool:
    """Wait until the lock is lost (True) or the daemon is told to stop (False)."""
    lost = asyncio.create_task(leadership.wait_lost())
    stopped = asyncio.create_task(stop.wait())
    done, pending = await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return lost in done


async def _start_engine(config: HeadendConfig, dsn: str, metrics: EngineMetrics) -> Daemon | SpoolError:
    """A started daemon (engine and listeners), or why it cannot start (its spool is held elsewhere)."""
    engine = build_daemon(config, dsn, metrics)
    try:
        await engine.start()
    except SpoolError as exc:
        await engine.stop()
        return exc
    return engine


async def _run_member(config: HeadendConfig, dsn: str, stop: asyncio.Event, metrics: EngineMetrics) -> None:
    """A cluster member: migrate (once the database answers), run the engine until ``stop``."""
    delay = config.cluster.renew
    while not stop.is_set():
        try:
            await migrate(dsn)
            break
        except UNAVAILABLE as exc:
            log.warning("database unreachable; retrying: %s: %s", type(exc).__name__, exc)
            await _wait(stop, delay)
            delay = min(2 * delay, BACKOFF_MAX)
    if stop.is_set():
        return
    started = await _start_engine(config, dsn, metrics)
    if isinstance(started, SpoolError):
        log.error("cannot start polling: %s", started)
        return
    metrics.daemon_active.set(1)
    try:
        await stop.wait()
    finally:
        await started.stop()
        metrics.daemon_active.set(0)


async def supervise(config: HeadendConfig, dsn: str, stop: asyncio.Event) -> None:
    """Claim, run, fence and stand by until ``stop`` is set; then stop the engine and let the lock go."""
    metrics = serve_metrics(config)
    if config.cluster.enabled:
        await _run_member(config, dsn, stop, metrics)
        return
    metrics.daemon_active.set(0)
    leadership = Leadership(dsn, config.ha)
    engine: Daemon | None = None
    migrated = False
    delay = config.ha.poll
    refused: str | None = None  # why the engine could not start, said once

    async def start_engine() -> Daemon | None:
        nonlocal refused
        started = await _start_engine(config, dsn, metrics)
        if isinstance(started, SpoolError):
            if str(started) != refused:
                log.error("cannot start polling: %s", started)
            else:
                log.debug("engine start refused again: %s", started)
            refused = str(started)
            return None
        refused = None
        return started

    try:
        while not stop.is_set():
            state = await leadership.claim()
            metrics.daemon_active.set(0 if engine is None else 1)
            if state == "active":
                delay = config.ha.poll
                if not migrated:
                    try:
                        await migrate(dsn)
                    except UNAVAILABLE as exc:  # gone again between the claim and the migration
                        log.warning("schema check interrupted: %s: %s", type(exc).__name__, exc)
                        await leadership.check()  # the lock's connection likely went with it: say so
                        await _wait(stop, delay)
                        continue
                    migrated = True
                if engine is None:
                    engine = await start_engine()
                if engine is None:
                    await leadership.close()  # let a daemon that can run take over
                    await _wait(stop, FENCED_PAUSE * config.ha.poll)
                    continue
                metrics.daemon_active.set(1)
                if not await _lost_or_stopped(leadership, stop):
                    break
                if config.ha.fencing:
                    log.warning("fenced: polling and command execution stopped until the lock is held again")
                    await engine.stop()
                    engine = None
                    metrics.daemon_active.set(0)
                    # a healthy standby claims first: two of its polls, each allowed a slow reply
                    await _wait(stop, FENCED_PAUSE * (config.ha.poll + config.ha.check_timeout))
                continue
            if state == "standby":
                delay = config.ha.poll
                if engine is not None:
                    log.warning("another daemon took the database lock; stopping this one's polling")
                    await engine.stop()
                    engine = None
                    metrics.daemon_active.set(0)
            else:
                if engine is None and not config.ha.fencing:  # store and forward until it answers
                    engine = await start_engine()
                    metrics.daemon_active.set(0 if engine is None else 1)
                delay = min(2 * delay, BACKOFF_MAX)
            await _wait(stop, delay)
    finally:
        if engine is not None:
            await engine.stop()
        metrics.daemon_active.set(0)
        await leadership.close()
