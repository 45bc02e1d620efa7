"""SQL of automatic fee control: account positions, arrears flags, episode commands, refusals, relay
reconciliation."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from headend.store.results import row, rows

MANUAL_APPROVAL_KEY = "safety.manual_approval_above"  # the database's two-person threshold (0033)
ALARM_POLICY_KEY = "safety.alarm_before_cut"  # the policy the database's alarm-before-cut guard reads (0058)
HALT_KEY = "fee_control_halted"  # headend_settings row present while automation is halted by a cap


async def account_positions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every active account with its balance, flags and unpaid bills."""
    return await rows(
        conn,
        """SELECT a.id, a.number, a.kind, a.credit_limit, a.grace_days, a.arrears, a.arrears_since,
                  a.notice_sent_at, a.protected, coalesce(b.balance, 0) AS balance,
                  u.oldest_unpaid_due, u.unpaid
           FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
           LEFT JOIN LATERAL (SELECT min(due_at) AS oldest_unpaid_due, sum(amount) AS unpaid FROM bills
                              WHERE account_id = a.id AND paid_at IS NULL) u ON true
           WHERE a.active ORDER BY a.id""",
    )


async def set_notice(conn: asyncpg.Connection, account_id: int, at: datetime) -> None:
    """Record that the arrears warning went out."""
    await conn.execute("UPDATE accounts SET notice_sent_at = $2 WHERE id = $1", account_id, at)


async def flag_arrears(conn: asyncpg.Connection, account_id: int, at: datetime) -> None:
    """Open an arrears episode."""
    await conn.execute("UPDATE accounts SET arrears = true, arrears_since = $2 WHERE id = $1", account_id, at)


async def clear_arrears(conn: asyncpg.Connection, account_id: int) -> None:
    """Close the arrears flag, its start and the notice (the episode's reconnect is found from its
    disconnect command's key, see :func:`episode_meters`)."""
    await conn.execute(
        "UPDATE accounts SET arrears = false, arrears_since = NULL, notice_sent_at = NULL WHERE id = $1",
        account_id,
    )


async def episode_meters(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Meters with a relay on accounts in an arrears episode, or paid since one whose disconnect
    (``arrears:<account>:<meter>:<start>``) has no reconnect yet, with the episode's start, protection,
    hold, the reconnect mode and alarm override of the account, and the meter's last confirmed
    alarm-kind command for the account (``warned_action``, ``warned_at``)."""
    return await rows(
        conn,
        """WITH unreconnected AS (  -- the latest disconnect of each meter whose episode has no reconnect
               SELECT DISTINCT ON (c.meter_id) c.meter_id,
                      split_part(c.idempotency_key, ':', 2)::bigint AS acc,
                      substring(c.idempotency_key FROM '^arrears:[0-9]+:[0-9]+:(.*)$')::timestamptz AS since
               FROM commands c
               WHERE c.action = 'disconnect' AND c.idempotency_key ~ '^arrears:[0-9]+:[0-9]+:'
                 AND NOT EXISTS (SELECT 1 FROM commands r
                                 WHERE r.idempotency_key = 'paid:' || substring(c.idempotency_key FROM 9))
               ORDER BY c.meter_id, c.id DESC)
           SELECT m.id AS meter_id, m.protected OR a.protected AS protected, a.arrears,
                  coalesce(a.arrears_since, d.since) AS arrears_since,
                  a.id AS acc, a.reconnect_mode, m.protocol, a.alarm_before_cut,
                  w.action AS warned_action, w.confirmed_at AS warned_at,
                  (SELECT h.reason FROM vee_holds h WHERE h.meter_id = m.id AND h.resolved_at IS NULL
                   ORDER BY h.id LIMIT 1) AS hold
           FROM meters m JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL
           JOIN accounts a ON a.id = x.account_id
           LEFT JOIN LATERAL (SELECT c.action, c.confirmed_at FROM commands c  -- the alarm in force
                              WHERE c.meter_id = m.id AND c.account_id = a.id AND c.state = 'confirmed'
                                AND c.action IN ('alarm', 'alarm_release')
                              ORDER BY c.confirmed_at DESC NULLS LAST, c.id DESC LIMIT 1) w ON true
           LEFT JOIN unreconnected d ON d.meter_id = m.id AND d.acc = a.id AND a.arrears_since IS NULL
           WHERE m.has_relay AND m.enabled AND coalesce(a.arrears_since, d.since) IS NOT NULL
           ORDER BY m.id""",
    )


async def existing_keys(conn: asyncpg.Connection, keys: list[str]) -> dict[str, int]:
    """Which of these idempotency keys have a command, with its attempts (0: no frame went out)."""
    rows = await conn.fetch(
        "SELECT idempotency_key, attempts FROM commands WHERE idempotency_key = ANY($1::text[])", keys
    )
    return {r["idempotency_key"]: r["attempts"] for r in rows}


async def cancel_unsent(conn: asyncpg.Connection, idempotency_key: str) -> bool:
    """Cancel the command of ``idempotency_key`` if it is pending and never went out (True if it was)."""
    cancelled = await conn.fetchval(
        "UPDATE commands SET state = 'cancelled', last_error = 'arrears cleared' "
        "WHERE idempotency_key = $1 AND state = 'pending' AND attempts = 0 RETURNING id",
        idempotency_key,
    )
    return cancelled is not None


async def disconnects_since(conn: asyncpg.Connection, operator: str, since: datetime) -> int:
    """Automatic disconnects created since ``since`` (dry runs excluded)."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM commands WHERE operator = $1 AND action = 'disconnect'
               AND created_at > $2 AND NOT dry_run""",
            operator,
            since,
        )
    )


async def halted_by(conn: asyncpg.Connection) -> str | None:
    """The latched cap rule, or None."""
    found: str | None = await conn.fetchval("SELECT value FROM headend_settings WHERE key = $1", HALT_KEY)
    return found


async def publish_manual_approval_above(conn: asyncpg.Connection, above: int) -> None:
    """Make ``[safety] manual_approval_above`` the database's two-person threshold for manual disconnects."""
    await conn.execute(
        """INSERT INTO headend_settings (key, value) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
           WHERE headend_settings.value IS DISTINCT FROM EXCLUDED.value""",
        MANUAL_APPROVAL_KEY,
        str(above),
    )


async def publish_alarm_before_cut(conn: asyncpg.Connection, on: bool) -> None:
    """Make ``[safety] alarm_before_cut`` the policy the database's guard reads (accounts override it)."""
    await conn.execute(
        """INSERT INTO headend_settings (key, value) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
           WHERE headend_settings.value IS DISTINCT FROM EXCLUDED.value""",
        ALARM_POLICY_KEY,
        "true" if on else "false",
    )


async def alarm_meters(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """DL/T 645-2007 relay meters on an account in its notice period or with a pre-trip alarm that went
    out: the account's notice time and alarm override, protection, hold, the meter's last alarm-kind
    command (``last_*``: id, action, state, key, attempts, cause, account, confirmation time) and whether a
    reconnect was confirmed after that alarm (the meter was cut and restored)."""
    return await rows(
        conn,
        """SELECT m.id AS meter_id, a.id AS acc, a.notice_sent_at, a.alarm_before_cut,
                  m.protected OR coalesce(a.protected, false) AS protected,
                  (SELECT h.reason FROM vee_holds h WHERE h.meter_id = m.id AND h.resolved_at IS NULL
                   ORDER BY h.id LIMIT 1) AS hold,
                  l.id AS last_id, l.action AS last_action, l.state::text AS last_state,
                  l.idempotency_key AS last_key, l.attempts AS last_attempts, l.cause AS last_cause,
                  l.account_id AS last_account, l.confirmed_at AS last_confirmed_at,
                  EXISTS (SELECT 1 FROM commands r WHERE r.meter_id = m.id AND r.action = 'reconnect'
                          AND r.state = 'confirmed' AND r.id > l.id) AS restored_since
           FROM meters m
           LEFT JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL
           LEFT JOIN accounts a ON a.id = x.account_id
           LEFT JOIN LATERAL (SELECT c.* FROM commands c WHERE c.meter_id = m.id
                              AND c.action IN ('alarm', 'alarm_release') AND NOT c.dry_run
                              ORDER BY c.id DESC LIMIT 1) l ON true
           WHERE m.has_relay AND m.enabled AND m.protocol = 'dlt645-2007'
             AND (a.notice_sent_at IS NOT NULL OR l.action = 'alarm')
           ORDER BY m.id""",
    )


async def latch_halt(conn: asyncpg.Connection, rule: str) -> None:
    """Latch a cap halt."""
    await conn.execute(
        "INSERT INTO headend_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        HALT_KEY,
        rule,
    )


async def lift_halt(conn: asyncpg.Connection) -> str | None:
    """Lift a halt; returns the rule lifted."""
    found: str | None = await conn.fetchval(
        "DELETE FROM headend_settings WHERE key = $1 RETURNING value", HALT_KEY
    )
    return found


async def cancel_pending_disconnects(conn: asyncpg.Connection, meter_id: int) -> None:
    """A paid account's disconnect that was not sent yet is cancelled."""
    await conn.execute(
        "UPDATE commands SET state = 'cancelled', last_error = 'arrears cleared' "
        "WHERE meter_id = $1 AND action = 'disconnect' AND state = 'pending'",
        meter_id,
    )


async def open_command(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """The meter's open (pending or sent) command, if any."""
    return await row(
        conn,
        "SELECT id, action, cause FROM commands WHERE meter_id = $1 AND state IN ('pending', 'sent')",
        meter_id,
    )


async def refusals(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    """The refusal in force per meter: (action, rule)."""
    return {
        r["meter_id"]: (r["action"], r["rule"])
        for r in await conn.fetch("SELECT * FROM fee_control_refusals")
    }


async def set_refusal(conn: asyncpg.Connection, meter_id: int, action: str, rule: str, at: datetime) -> None:
    """Record the refusal now in force for a meter."""
    await conn.execute(
        """INSERT INTO fee_control_refusals (meter_id, action, rule, since) VALUES ($1, $2, $3, $4)
           ON CONFLICT (meter_id) DO UPDATE SET action = $2, rule = $3, since = $4""",
        meter_id,
        action,
        rule,
        at,
    )


async def drop_refusals(conn: asyncpg.Connection, meter_ids: list[int]) -> None:
    """Refusals no longer in force."""
    await conn.execute("DELETE FROM fee_control_refusals WHERE meter_id = ANY($1::int[])", meter_ids)


async def due_commands(conn: asyncpg.Connection, now: datetime) -> list[int]:
    """Commands due for execution (approved where approval is needed)."""
    rows = await conn.fetch(
        """SELECT id FROM commands WHERE state IN ('pending', 'sent') AND next_attempt_at <= $1
           AND (NOT requires_approval OR approved_by IS NOT NULL) ORDER BY id""",
        now,
    )
    return [r["id"] for r in rows]


async def commands_open_since(conn: asyncpg.Connection, before: datetime) -> int:
    """Open commands created before ``before`` (pending too long)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM commands WHERE state IN ('pending', 'sent') AND created_at < $1", before
        )
    )


async def relay_observations(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per relay meter: the latest stored relay reading (1 closed, 0 open) and the latest confirmed
    command (what the relay should be), with the account's arrears flag and any hold."""
    return await rows(
        conn,
        """SELECT m.id AS meter_id, m.protocol, a.id AS account_id, coalesce(a.arrears, false) AS arrears,
                  a.reconnect_mode,
                  r.ts AS observed_at, r.value AS relay_closed,
                  c.action, c.reconnect_mode AS command_mode, c.finished_at,
                  EXISTS (SELECT 1 FROM vee_holds h WHERE h.meter_id = m.id
                          AND h.resolved_at IS NULL) AS held,
                  x.expected_open AS known_expected, x.observed_open AS known_observed
           FROM meters m
           LEFT JOIN meter_assignments ma ON ma.meter_id = m.id AND ma.effective_to IS NULL
           LEFT JOIN accounts a ON a.id = ma.account_id
           JOIN LATERAL (SELECT rd.ts, rd.value FROM readings rd JOIN quantities q ON q.id = rd.quantity_id
                         WHERE rd.meter_id = m.id AND q.name = 'relay' AND rd.value IS NOT NULL
                         ORDER BY rd.ts DESC LIMIT 1) r ON true
           LEFT JOIN LATERAL (SELECT action, reconnect_mode, finished_at FROM commands
                              WHERE meter_id = m.id AND state = 'confirmed'
                                AND action IN ('disconnect', 'reconnect')
                              ORDER BY finished_at DESC LIMIT 1) c ON true
           LEFT JOIN relay_mismatches x ON x.meter_id = m.id
           WHERE m.has_relay AND m.enabled
             AND NOT EXISTS (SELECT 1 FROM commands o WHERE o.meter_id = m.id
                             AND o.state IN ('pending', 'sent'))
           ORDER BY m.id""",
    )


async def record_mismatch(
    conn: asyncpg.Connection, meter_id: int, expected_open: bool, observed_open: bool, at: datetime
) -> None:
    """Remember a relay mismatch (so it is alarmed once)."""
    await conn.execute(
        """INSERT INTO relay_mismatches (meter_id, expected_open, observed_open, observed_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT (meter_id) DO UPDATE
           SET expected_open = $2, observed_open = $3, observed_at = $4""",
        meter_id,
        expected_open,
        observed_open,
        at,
    )


async def clear_mismatch(conn: asyncpg.Connection, meter_id: int) -> None:
    """The relay is where it should be again."""
    await conn.execute("DELETE FROM relay_mismatches WHERE meter_id = $1", meter_id)


async def count_mismatches(conn: asyncpg.Connection) -> int:
    """Relays in a state the command log does not explain."""
    return int(await conn.fetchval("SELECT count(*) FROM relay_mismatches"))


async def last_confirmed_action(conn: asyncpg.Connection, meter_id: int) -> str | None:
    """The action of the meter's last confirmed (not dry-run) disconnect or reconnect: where its relay is."""
    found: str | None = await conn.fetchval(
        """SELECT action FROM commands WHERE meter_id = $1 AND state = 'confirmed' AND NOT dry_run
           AND action IN ('disconnect', 'reconnect')
           ORDER BY finished_at DESC, id DESC LIMIT 1""",
        meter_id,
    )
    return found
