"""Fee control inside the daemon (``[engine] services = ["headend.control.service:run"]``): every pass
runs the arrears automation, then executes due commands on the meters' channel workers at top priority."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from headend.control.automation import run_once
from headend.control.executor import execute
from headend.control.safety import settings_from_config
from headend.services import ServiceHost
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


async def run_pass(engine: ServiceHost, now: datetime) -> list[tuple[int, str]]:
    """One automation run plus one execution of every due command; returns (command id, end state).

    ``now`` carries the safety time zone: the quiet windows are judged on its local time."""
    settings = settings_from_config(engine.config.safety)
    notice = timedelta(seconds=engine.config.billing.notice_period)
    async with engine.pool.acquire() as conn:
        report = await run_once(conn, settings, now, notice=notice)
        engine.metrics.fee_control_halted.set(1 if report.halted else 0)
        if report.halted:
            log.error("automatic disconnection halted by %s until `headend commands resume`", report.halted)
        due = await conn.fetch(
            """SELECT id FROM commands WHERE state IN ('pending', 'sent') AND next_attempt_at <= $1
               AND (NOT requires_approval OR approved_by IS NOT NULL) ORDER BY id""",
            now,
        )
        outcomes = []
        for row in due:
            state = await execute(
                conn, row["id"], lambda meter_id: EngineRelay(engine, meter_id), due_only=True
            )
            outcomes.append((row["id"], state))
    return outcomes


async def run(engine: ServiceHost) -> None:
    """Run a pass every ``[safety] run_every`` until the daemon stops; a failing pass is retried next
    time. A database outage is said once (when it starts), not once per pass."""
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
            log.exception("fee control pass failed")
        await asyncio.sleep(engine.config.safety.run_every)
