"""Fee control inside the daemon (``[engine] services = ["headend.control.service:run"]``): every pass
runs the arrears automation, executes due commands on the meters' channel workers at top priority, then
reconciles metered relay states with the command log. A failing account, meter or command is isolated:
counted, logged, and the pass goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from headend.control.automation import run_once
from headend.control.executor import execute
from headend.control.reconcile import reconcile
from headend.control.safety import SafetySettings, settings_from_config
from headend.services import ServiceHost
from headend.store.cluster import set_service_fence
from headend.store.feecontrol import (
    commands_open_since,
    count_mismatches,
    due_commands,
    publish_alarm_before_cut,
    publish_manual_approval_above,
)
from headend.store.writer import UNAVAILABLE
from headend.vocabulary import SwitchOperation

log = logging.getLogger(__name__)


class EngineRelay:
    """A meter's relay reached through ``engine.control`` (the meter's bus worker, control priority)."""

    def __init__(self, engine: ServiceHost, meter_id: int) -> None:
        self.engine = engine
        self.meter_id = meter_id

    async def switch(self, action: SwitchOperation, *, operator: str) -> Any:
        return await self.engine.control(self.meter_id, lambda d: d.switch(action, operator=operator))

    async def relay_state(self) -> Any:
        return await self.engine.control(self.meter_id, lambda d: d.relay_state())


def _pass_clock(start: datetime) -> Callable[[], datetime]:
    """The pass's clock: ``start`` advanced by the time elapsed since (so the executor judges due and
    expired commands by the same clock as the automation that scheduled them)."""
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)


async def _execute_due(
    engine: ServiceHost, conn: asyncpg.Connection, now: datetime, settings: SafetySettings
) -> list[tuple[int, str]]:
    outcomes = []
    clock = _pass_clock(now)
    for command_id in await due_commands(conn, now):
        try:
            state = await execute(
                conn,
                command_id,
                lambda meter_id: EngineRelay(engine, meter_id),
                now=clock,
                due_only=True,
                settings=settings,
                lease_of=engine.lease_of,
            )
        except Exception as exc:  # one meter's failure must not stop the others' commands
            engine.metrics.fee_control_failures.labels("execute").inc()
            log.error("command %s failed to execute: %s: %s", command_id, type(exc).__name__, exc)
            if conn.is_closed():  # the server ended the session: the next pass takes the rest
                break
            continue
        outcomes.append((command_id, state))
    return outcomes


async def run_pass(engine: ServiceHost, now: datetime) -> list[tuple[int, str]]:
    """One automation run plus one execution of every due command; returns (command id, end state).

    ``now`` carries the safety time zone: the quiet windows are judged on its local time."""
    minimum = Decimal(engine.config.billing.min_arrears)
    notice = timedelta(seconds=engine.config.billing.notice_period)
    settings = settings_from_config(engine.config.safety, minimum, notice)
    async with engine.pool.acquire() as conn:
        await publish_manual_approval_above(conn, engine.config.safety.manual_approval_above)
        await publish_alarm_before_cut(conn, engine.config.safety.alarm_before_cut)
        lease = engine.elected()  # the automation runs once (the elected daemon); execution per channel
        if lease is not None:
            if lease != ("", 0):
                await set_service_fence(conn, *lease)  # its commands refused once the election moved
            report = await run_once(conn, settings, now, notice=notice, minimum=minimum)
            for stage, _, _ in report.failures:
                engine.metrics.fee_control_failures.labels(stage).inc()
            engine.metrics.fee_control_halted.set(1 if report.halted else 0)
            if report.halted:
                log.error(
                    "automatic disconnection halted by %s until `headend commands resume`",
                    report.halted,
                )
        outcomes = await _execute_due(engine, conn, now, settings)
        if conn.is_closed():  # a fenced transaction held idle for a lease (migration 0085): rolled back
            return outcomes
        try:
            if lease is not None:
                async with conn.transaction():
                    await reconcile(conn, now, reconnect_paying=settings.reconnect_on_mismatch)
        except asyncpg.PostgresError as exc:
            engine.metrics.fee_control_failures.labels("reconcile").inc()
            log.error("relay reconciliation failed: %s", exc)
        engine.metrics.relay_mismatches.set(await count_mismatches(conn))
        stale = now - timedelta(seconds=engine.config.safety.pending_alarm)
        engine.metrics.commands_stuck.set(await commands_open_since(conn, stale))
    return outcomes


async def run(engine: ServiceHost) -> None:
    """Run a pass every ``[safety] run_every`` until the daemon stops; a failing pass is counted and
    retried next time. A database outage is said once (when it starts), not once per pass."""
    waiting = False
    while True:
        try:
            await run_pass(engine, datetime.now(ZoneInfo(engine.config.safety.timezone)))
            waiting = False
        except UNAVAILABLE as exc:
            if not waiting:
                log.warning(
                    "fee control waits for the database", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
            waiting = True
        except Exception:
            engine.metrics.failed_passes.labels("fee_control").inc()
            log.exception("fee control pass failed")
        await asyncio.sleep(engine.config.safety.run_every)
