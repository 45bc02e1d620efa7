"""The exception rules pass: each configured rule run in SQL over what is stored (one set-based
statement per rule: open, count, mark clear, auto-close), after one summary of the readings' window
is built and the areas' recent line losses are brought up to date; the counts per rule and state for
the metric."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.analytics.lineloss import refresh
from headend.config import ExceptionsConfig
from headend.store.exception_rules import RULES
from headend.store.exceptions import (
    RuleOutcome,
    apply_rule,
    counts_by_rule_and_state,
    drop_window_summary,
    summarise_window,
)
from headend.vocabulary import EXCEPTION_RULES, EXCEPTION_STATES, ExceptionRule, ExceptionState


def rule_params(rule: ExceptionRule, cfg: ExceptionsConfig, today: date) -> tuple[object, ...]:
    """The thresholds of ``rule`` from the ``[exceptions]`` section, in its query's order ($3 on)."""
    first_day = today - timedelta(days=cfg.area_days)
    by_rule: dict[ExceptionRule, tuple[object, ...]] = {
        "register_backwards": (cfg.window, cfg.register_tolerance_kwh),
        "meter_stopped": (cfg.window, cfg.min_current_a, cfg.flat_kwh),
        "reverse_energy": (cfg.window, cfg.reverse_min_kwh, cfg.flat_kwh),
        "voltage_loss": (cfg.voltage_loss_v,),
        "current_imbalance": (cfg.imbalance_pct, cfg.imbalance_min_a),
        "consumption_spike": (cfg.spike_factor, cfg.spike_min_kwh),
        "clock_offset": (cfg.clock_window, cfg.clock_offset),
        "tamper": (cfg.tamper_window, cfg.tamper_kinds),
        "no_read": (cfg.no_read_after,),
        "loss_above_limit": (first_day,),
        "negative_loss": (first_day, cfg.negative_loss_kwh),
        "loss_jump": (first_day, cfg.loss_jump_points, cfg.loss_jump_min_days),
    }
    return by_rule[rule]


async def run_rules(
    conn: asyncpg.Connection, cfg: ExceptionsConfig, zone: ZoneInfo, now: datetime
) -> dict[ExceptionRule, RuleOutcome | str]:
    """One pass of the configured rules at ``now``: what each did, or why it failed (the others still
    ran). The reading rules read one summary of the window per meter and quantity, built first; the
    area rules read the line losses of the last ``area_days`` days (analytics zone), refreshed first."""
    today = now.astimezone(zone).date()
    if any(RULES[rule].subject == "area" for rule in cfg.rules):
        await refresh(conn, [today - timedelta(days=n) for n in range(cfg.area_days, 0, -1)], zone)
    outcomes: dict[ExceptionRule, RuleOutcome | str] = {}
    summary_failed: str | None = None
    if any(RULES[rule].reads_window for rule in cfg.rules):
        try:
            await summarise_window(
                conn, now, cfg.window, cfg.spike_window, cfg.spike_history, cfg.register_tolerance_kwh
            )
        except asyncpg.PostgresError as exc:  # the reading rules fail with it, the others still run
            summary_failed = f"{type(exc).__name__}: {exc}"
    try:
        for rule in cfg.rules:
            if summary_failed is not None and RULES[rule].reads_window:
                outcomes[rule] = summary_failed
                continue
            try:
                async with conn.transaction():
                    outcomes[rule] = await apply_rule(
                        conn, RULES[rule], now, cfg.auto_close_after, rule_params(rule, cfg, today)
                    )
            except asyncpg.PostgresError as exc:  # one rule failing must not stop the others
                outcomes[rule] = f"{type(exc).__name__}: {exc}"
    finally:
        await drop_window_summary(conn)
    return outcomes


async def counts(conn: asyncpg.Connection) -> dict[tuple[ExceptionRule, ExceptionState], int]:
    """Every rule × state, with 0 where there is none (so that a gauge falls back to 0)."""
    found = await counts_by_rule_and_state(conn)
    return {
        (rule, state): found.get((rule, state), 0) for rule in EXCEPTION_RULES for state in EXCEPTION_STATES
    }
