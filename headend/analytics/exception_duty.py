"""The daemon's exception duty: after each read cycle has been recorded and its readings are stored,
one pass of the ``[exceptions]`` rules, then the ``headend_exceptions{rule,state}`` gauge. Given to the
engine by the composition root, so it runs only in the active daemon (the engine runs only there)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from headend.analytics.exceptions import counts, run_rules
from headend.engine.engine import Engine
from headend.store.exceptions import RuleOutcome

log = logging.getLogger(__name__)


async def run(engine: Engine) -> None:
    """Until cancelled: wait for a recorded cycle, let the writer store what was read, run the rules."""
    cfg = engine.config.exceptions
    if not cfg.enabled:
        return
    zone = engine.config.analytics.zone
    metrics = engine.metrics
    while True:
        await engine.cycles.recorded.wait()
        engine.cycles.recorded.clear()
        await engine.wait_cycles()
        await engine.writer.flush()
        try:
            async with engine.pool.acquire() as conn:
                outcomes = await run_rules(conn, cfg, zone, datetime.now(UTC))
                by_state = await counts(conn)
        except Exception as exc:  # the database down or a rule failing: counted, tried after the next cycle
            metrics.exception_passes.labels("failed").inc()
            log.error("exception rules pass failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            continue
        for (rule, state), n in by_state.items():
            metrics.exceptions.labels(rule, state).set(n)
        done = {r: o for r, o in outcomes.items() if isinstance(o, RuleOutcome)}
        for rule, error in outcomes.items():
            if isinstance(error, str):
                log.error("exception rule failed", extra={"rule": rule, "error": error})
        metrics.exception_passes.labels("ok" if len(done) == len(outcomes) else "rule_failed").inc()
        log.info(
            "exception rules pass",
            extra={
                "opened": {r: o.opened for r, o in done.items() if o.opened},
                "seen": {r: o.seen for r, o in done.items() if o.seen},
                "auto_closed": {r: o.closed for r, o in done.items() if o.closed},
            },
        )
