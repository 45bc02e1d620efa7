"""One declaration of who may write what on the tables that decide money or a relay (login × table ×
operation × signed-in operator role), tried cell by cell against the real database as the documented
logins: every allowed cell succeeds, every other one is refused by the database (issue 21)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from headend.control.manual import request_command
from headend.operators import authenticate
from headend.store.approvals import approve
from headend.store.feecontrol import publish_manual_approval_above
from tests.billing.helpers import assign_from_start
from tests.support.operators import PASSWORD, add_operators

ME = "coalesce(headend_current_operator(), '1009')"  # the signed-in operator, or someone else
AS_ME = "SELECT set_config('headend.actor', coalesce(headend_current_operator(), 'system'), true)"
LEDGER = "INSERT INTO ledger (account_id, kind, amount, idempotency_key) VALUES "


@dataclass(frozen=True)
class Write:
    """One operation on one table, as statements run in one transaction."""

    table: str
    operation: str
    statements: tuple[str, ...]


# Who is connected: (login, role of the signed-in operator or None).
Principal = tuple[str, str | None]
DAEMON: Principal = ("daemon", None)
DESK: Principal = ("billing", None)
ROLES = ("viewer", "operator", "approver", "cashier", "admin")
PRINCIPALS: tuple[Principal, ...] = (DAEMON, DESK, *(("billing", r) for r in ROLES), ("reporting", None))


def desk(*roles: str) -> frozenset[Principal]:
    return frozenset(("billing", r) for r in roles)


NOBODY: frozenset[Principal] = frozenset()

# The declaration: each write and exactly who may do it (docs/safety.md, "Who may write what").
MATRIX: tuple[tuple[Write, frozenset[Principal]], ...] = (
    (
        Write(
            "bills",
            "issue with its ledger charge",
            (
                "WITH b AS (INSERT INTO bills"
                " (account_id, period_start, period_end, consumption, amount, due_at)"
                " VALUES (:paying, '2026-06-01', '2026-07-01', 10, 5, '2026-07-02') RETURNING id, amount)"
                " INSERT INTO ledger (account_id, kind, amount, idempotency_key)"
                " SELECT :paying, 'charge', -amount, 'bill:' || id FROM b",
            ),
        ),
        {DAEMON} | desk("cashier"),
    ),
    (
        Write(
            "bills",
            "issue an overdue bill without a charge",
            (
                "INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at)"
                " VALUES (:paying, '2025-01-01', '2025-02-01', 10, 500, '2025-02-02')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "bills",
            "settle a bill the money covers",
            ("UPDATE bills SET paid_at = now() WHERE id = :covered",),
        ),
        {DAEMON} | desk("cashier"),
    ),
    (
        Write("bills", "settle a bill without money", ("UPDATE bills SET paid_at = now() WHERE id = :owed",)),
        NOBODY,
    ),
    (
        Write("bills", "un-pay a settled bill", ("UPDATE bills SET paid_at = NULL WHERE id = :settled",)),
        NOBODY,
    ),
    (Write("bills", "change an amount", ("UPDATE bills SET amount = 1 WHERE id = :owed",)), NOBODY),
    (
        Write(
            "ledger",
            "charge (a debit)",
            (LEDGER + "(:paying, 'charge', -1, 'c')",),
        ),
        {DAEMON} | desk("cashier"),
    ),
    (
        Write(
            "ledger",
            "positive charge (a credit)",
            (LEDGER + "(:paying, 'charge', 5, 'c')",),
        ),
        NOBODY,
    ),
    (
        Write(
            "ledger",
            "adjustment",
            (LEDGER + "(:paying, 'adjustment', 5, 'a')",),
        ),
        desk("cashier"),
    ),
    (Write("ledger", "rewrite", ("UPDATE ledger SET amount = 1000",)), NOBODY),
    (
        Write(
            "payments",
            "record under the signed-in operator",
            (
                "INSERT INTO payments (account_id, amount, reference, operator)"
                f" VALUES (:owing, 5, 'P9', {ME})",
            ),
        ),
        desk("cashier"),
    ),
    (
        Write(
            "balances",
            "move billed_until",
            ("UPDATE balances SET billed_until = '2030-01-01' WHERE account_id = :paying",),
        ),
        {DAEMON} | desk("cashier"),
    ),
    (
        Write("balances", "set a balance", ("UPDATE balances SET balance = 1000 WHERE account_id = :owing",)),
        NOBODY,
    ),
    (
        Write(
            "accounts", "raise a credit limit", ("UPDATE accounts SET credit_limit = 1000 WHERE id = :owing",)
        ),
        desk("admin"),
    ),
    (
        Write("accounts", "clear arrears", ("UPDATE accounts SET arrears = false WHERE id = :owing",)),
        {DAEMON} | desk("admin"),
    ),
    (
        Write(
            "meter_assignments",
            "move an open assignment to another account",
            ("UPDATE meter_assignments SET account_id = :owing WHERE meter_id = :assigned",),
        ),
        NOBODY,
    ),
    (
        Write(
            "meter_assignments",
            "assign a meter",
            (
                "INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)"
                f" VALUES (:spare, :owing, now(), {ME})",
            ),
        ),
        desk("admin"),
    ),
    (
        Write(
            "meter_replacements",
            "record a replacement",
            (
                "INSERT INTO meter_replacements"
                " (old_meter_id, new_meter_id, replaced_at, final_kwh, initial_kwh, operator)"
                f" VALUES (:assigned, :spare, now(), '{{}}', '{{}}', {ME})",
            ),
        ),
        desk("admin"),
    ),
    (
        Write("meter_replacements", "read", ("SELECT count(*) FROM meter_replacements",)),
        frozenset(PRINCIPALS),
    ),
    (
        Write(
            "tariff_prices",
            "add a price",
            (
                "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
                " VALUES (:tariff, 'total', 0, '2020-01-01')",
            ),
        ),
        desk("admin"),
    ),
    (
        Write(
            "commands",
            "create a manual disconnect",
            (
                AS_ME,
                "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
                f" VALUES (:spare, 'disconnect', 'manual', {ME}, now() + interval '1 day')",
            ),
        ),
        desk("operator"),
    ),
    (
        Write(
            "commands",
            "create an automatic disconnect",
            (
                "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
                " VALUES (:spare, 'disconnect', 'arrears', 'system', now() + interval '1 day')",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "postpone a reconnect",
            ("UPDATE commands SET next_attempt_at = now() + interval '1 year' WHERE id = :reconnect",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "cancel a reconnect",
            (AS_ME, "UPDATE commands SET state = 'cancelled' WHERE id = :reconnect"),
        ),
        {DAEMON} | desk("operator", "admin"),
    ),
    (
        Write(
            "commands",
            "cancel a command awaiting approval",
            (AS_ME, "UPDATE commands SET state = 'cancelled' WHERE id = :waiting"),
        ),
        {DAEMON} | desk("operator", "admin"),
    ),
    (
        Write(
            "commands",
            "cancel, recording who and why in its evidence",
            (
                AS_ME,
                "UPDATE commands SET state = 'cancelled', evidence = evidence ||"
                f" jsonb_build_object('cancelled', jsonb_build_object('by', {ME}, 'reason', 'x'))"
                " WHERE id = :reconnect",
            ),
        ),
        {DAEMON} | desk("operator", "admin"),
    ),
    (
        Write(
            "commands",
            "cancel, naming another operator in its evidence",
            (
                AS_ME,
                "UPDATE commands SET state = 'cancelled', evidence = evidence ||"
                ' \'{"cancelled": {"by": "1009", "reason": "x"}}\' WHERE id = :reconnect',
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "cancel with a read-back in its evidence",
            (
                AS_ME,
                "UPDATE commands SET state = 'cancelled', evidence = evidence ||"
                ' \'{"state": {"open": true}}\' WHERE id = :reconnect',
            ),
        ),
        {DAEMON},
    ),
    (
        Write("commands", "approve", (AS_ME, f"UPDATE commands SET approved_by = {ME} WHERE id = :waiting")),
        desk("approver"),
    ),
    (
        Write(
            "commands",
            "send before approval",
            ("UPDATE commands SET state = 'sent', attempts = 1 WHERE id = :waiting",),
        ),
        NOBODY,
    ),
    (
        Write(
            "commands",
            "send",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET state = 'sent', attempts = 1 WHERE id = :reconnect",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "confirm with invented evidence",
            (AS_ME, "UPDATE commands SET state = 'confirmed', evidence = '{\"ok\": true}' WHERE id = :field"),
        ),
        NOBODY,
    ),
    (
        Write(
            "commands",
            "confirm with a read-back showing the relay open",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET state = 'confirmed', evidence = '{\"state\": {\"open\": true}}'"
                " WHERE id = :field",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "create an automatic pre-trip alarm",
            (
                "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
                " VALUES (:spare, 'alarm', 'notice', 'system', now() + interval '1 day')",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "create a manual alarm release",
            (
                AS_ME,
                "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
                f" VALUES (:spare, 'alarm_release', 'manual', {ME}, now() + interval '1 day')",
            ),
        ),
        desk("operator"),
    ),
    (
        Write(
            "commands",
            "confirm an alarm with a read-back showing the alarm on",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET state = 'confirmed', confirmed_at = now(),"
                ' evidence = \'{"state": {"open": false, "pre_trip_alarm": true}}\' WHERE id = :alarm_sent',
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "commands",
            "confirm an alarm with a read-back showing the alarm off",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET state = 'confirmed',"
                ' evidence = \'{"state": {"open": true, "pre_trip_alarm": false}}\' WHERE id = :alarm_sent',
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "commands",
            "date an alarm's confirmation without confirming it",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET confirmed_at = now() - interval '30 days' WHERE id = :alarm_sent",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "commands",
            "send an automatic disconnect of a customer never warned by the meter's alarm",
            (
                "SELECT set_config('headend.actor', 'executor', true)",
                "UPDATE commands SET state = 'sent', attempts = 1 WHERE id = :unwarned",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "vee_holds",
            "open a hold",
            (
                "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts)"
                " VALUES (:spare, :energy, 'jump', 'x', now())",
            ),
        ),
        {DAEMON} | desk("cashier", "admin"),
    ),
    (
        Write(
            "vee_holds",
            "name a resolver on an open hold",
            (f"UPDATE vee_holds SET resolved_by = {ME}, resolution_reason = 'ok' WHERE id = :hold",),
        ),
        NOBODY,
    ),
    (
        Write(
            "vee_holds",
            "resolve a hold",
            (
                "UPDATE vee_holds SET resolved_at = now(), resolution = 'accepted',"
                f" resolved_by = {ME}, resolution_reason = 'checked' WHERE id = :hold",
            ),
        ),
        desk("admin"),
    ),
    (
        Write(
            "vee_hold_notes",
            "keep an open hold with a note",
            (f"INSERT INTO vee_hold_notes (hold_id, operator, note) VALUES (:hold, {ME}, 'call them')",),
        ),
        desk("admin"),
    ),
    (
        Write(
            "vee_hold_notes",
            "a note in another operator's name",
            ("INSERT INTO vee_hold_notes (hold_id, operator, note) VALUES (:hold, '1009', 'x')",),
        ),
        NOBODY,
    ),
    (
        Write(
            "vee_hold_notes",
            "rewrite a note",
            ("UPDATE vee_hold_notes SET note = 'nothing to see' WHERE id = :note",),
        ),
        NOBODY,
    ),
    (Write("vee_hold_notes", "remove a note", ("DELETE FROM vee_hold_notes WHERE id = :note",)), NOBODY),
    (
        Write(
            "vee_state",
            "move the validated mark",
            ("UPDATE vee_state SET validated_until = '2030-01-01' WHERE meter_id = :assigned",),
        ),
        {DAEMON} | desk("cashier", "admin"),
    ),
    (
        Write(
            "fee_control_refusals",
            "record a refusal",
            (
                "INSERT INTO fee_control_refusals (meter_id, action, rule, since)"
                " VALUES (:spare, 'disconnect', 'protected', now())",
            ),
        ),
        {DAEMON},
    ),
    (
        Write("fee_control_refusals", "clear refusals", ("DELETE FROM fee_control_refusals",)),
        {DAEMON},
    ),
    (
        Write(
            "relay_mismatches",
            "record a mismatch",
            (
                "INSERT INTO relay_mismatches (meter_id, expected_open, observed_open, observed_at)"
                " VALUES (:spare, false, true, now())",
            ),
        ),
        {DAEMON},
    ),
    (
        Write("relay_mismatches", "clear a mismatch", ("DELETE FROM relay_mismatches",)),
        {DAEMON},
    ),
    (
        Write(
            "meter_identities",
            "record a meter number",
            (
                "INSERT INTO meter_identities (meter_id, identity, checked_at)"
                " VALUES (:spare, '000000000002', now())",
            ),
        ),
        {DAEMON} | desk("admin"),
    ),
    (
        Write(
            "meter_identities",
            "replace a recorded meter number",
            ("UPDATE meter_identities SET identity = '999999999999' WHERE meter_id = :assigned",),
        ),
        {DAEMON} | desk("admin"),
    ),
    (
        Write(
            "exceptions",
            "open a rule's finding",
            (
                "INSERT INTO exceptions (rule, meter_id, first_seen, last_seen)"
                " VALUES ('no_read', :spare, now(), now())",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "exceptions",
            "count a finding seen again",
            ("UPDATE exceptions SET count = count + 1, last_seen = now() WHERE id = :opened",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "exceptions",
            "acknowledge as the signed-in operator",
            (
                "UPDATE exceptions SET state = 'acknowledged', acknowledged_at = now(),"
                f" acknowledged_by = {ME} WHERE id = :opened",
            ),
        ),
        desk("operator", "admin"),
    ),
    (
        Write(
            "exceptions",
            "acknowledge in someone else's name",
            (
                "UPDATE exceptions SET state = 'acknowledged', acknowledged_at = now(),"
                " acknowledged_by = '1009' WHERE id = :opened",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "exceptions",
            "dispatch to a crew",
            (
                "UPDATE exceptions SET state = 'dispatched', dispatched_to = 'crew 3', dispatched_at = now(),"
                f" dispatched_by = {ME} WHERE id = :acked",
            ),
        ),
        desk("operator", "admin"),
    ),
    (
        Write(
            "exceptions",
            "resolve with a note",
            (
                "UPDATE exceptions SET state = 'resolved', note = 'meter replaced', closed_at = now(),"
                f" resolved_by = {ME} WHERE id = :acked",
            ),
        ),
        desk("operator", "admin"),
    ),
    (
        Write(
            "exceptions",
            "resolve without a note",
            (
                "UPDATE exceptions SET state = 'resolved', closed_at = now(),"
                f" resolved_by = {ME} WHERE id = :acked",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "exceptions",
            "resolve one nobody acknowledged",
            (
                "UPDATE exceptions SET state = 'resolved', note = 'x', closed_at = now(),"
                f" resolved_by = {ME} WHERE id = :opened",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "exceptions",
            "close by itself once clear",
            ("UPDATE exceptions SET state = 'auto_closed', closed_at = now() WHERE id = :cleared",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "exceptions",
            "close one still seen",
            ("UPDATE exceptions SET state = 'auto_closed', closed_at = now() WHERE id = :opened",),
        ),
        NOBODY,
    ),
    (Write("exceptions", "delete", ("DELETE FROM exceptions WHERE id = :opened",)), NOBODY),
    (Write("exceptions", "read", ("SELECT count(*) FROM exceptions",)), frozenset(PRINCIPALS)),
    (
        Write(
            "audit_log",
            "write under 'admin'",
            ("INSERT INTO audit_log (actor, action) VALUES ('admin', 'x')",),
        ),
        NOBODY,
    ),
    (
        Write(
            "audit_log",
            "write under 'system'",
            ("INSERT INTO audit_log (actor, action) VALUES ('system', 'x')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "audit_log",
            "write under the signed-in operator",
            (f"INSERT INTO audit_log (actor, action) VALUES ({ME}, 'x')",),
        ),
        desk(*ROLES),
    ),
    (Write("audit_log", "rewrite", ("UPDATE audit_log SET actor = 'x'",)), NOBODY),
    (
        Write(
            "archive_requests",
            "ask the daemon to read or push a concentrator's archive",
            (
                "INSERT INTO archive_requests (channel_id, kind, requested_by, wanted, expires_at)"
                f" VALUES (:channel, 'read', {ME}, '[]', now() + interval '1 minute')",
            ),
        ),
        desk("operator"),
    ),
    (
        Write(
            "archive_requests",
            "ask in another operator's name",
            (
                "INSERT INTO archive_requests (channel_id, kind, requested_by, wanted, expires_at)"
                " VALUES (:channel, 'read', '1009', '[]', now() + interval '1 minute')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "archive_requests",
            "claim a request",
            ("UPDATE archive_requests SET state = 'running' WHERE id = :archive_request",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "archive_requests",
            "expire a request nobody took",
            ("UPDATE archive_requests SET state = 'expired', result = 'x' WHERE id = :archive_request",),
        ),
        {DAEMON} | desk("operator"),  # its requester, 1002
    ),
    (
        Write(
            "archive_requests",
            "record a request's outcome",
            ("UPDATE archive_requests SET state = 'done', result = 'x' WHERE id = :archive_running",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "archive_requests",
            "change the records a request writes",
            ("UPDATE archive_requests SET wanted = '[{}]', state = 'running' WHERE id = :archive_request",),
        ),
        NOBODY,
    ),
    (
        Write("archive_requests", "delete a request", ("DELETE FROM archive_requests",)),
        NOBODY,
    ),
    (
        Write(
            "tou_parameter_sets",
            "add a version under the signed-in operator",
            (
                "INSERT INTO tou_parameter_sets (name, version, definition, created_by)"
                f" VALUES ('tou', 2, '{{}}', {ME})",
            ),
        ),
        desk("admin"),
    ),
    (
        Write(
            "tou_parameter_sets",
            "add a version in another operator's name",
            (
                "INSERT INTO tou_parameter_sets (name, version, definition, created_by)"
                " VALUES ('tou', 2, '{}', '1009')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_parameter_sets",
            "change a version campaigns name",
            ("UPDATE tou_parameter_sets SET definition = '{\"x\": 1}' WHERE id = :param_set",),
        ),
        NOBODY,
    ),
    (Write("tou_parameter_sets", "delete a version", ("DELETE FROM tou_parameter_sets",)), NOBODY),
    (
        Write(
            "tou_campaigns",
            "create a draft under the signed-in operator",
            (
                "INSERT INTO tou_campaigns (name, set_id, switch_at, created_by)"
                f" VALUES ('c9', :param_set, now(), {ME})",
            ),
        ),
        desk("operator"),
    ),
    (
        Write(
            "tou_campaigns",
            "create a campaign approved at creation",
            (
                "INSERT INTO tou_campaigns"
                " (name, set_id, switch_at, created_by, state, approved_by, approved_at)"
                f" VALUES ('c9', :param_set, now(), {ME}, 'approved', '1009', now())",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaigns",
            "approve someone else's draft under the signed-in approver",
            (
                f"UPDATE tou_campaigns SET state = 'approved', approved_by = {ME}, approved_at = now()"
                " WHERE id = :draft_campaign",
            ),
        ),
        desk("approver"),
    ),
    (
        Write(
            "tou_campaigns",
            "approve in another operator's name",
            (
                "UPDATE tou_campaigns SET state = 'approved', approved_by = '1009', approved_at = now()"
                " WHERE id = :draft_campaign",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaigns",
            "start an approved campaign",
            ("UPDATE tou_campaigns SET state = 'running' WHERE id = :approved_campaign",),
        ),
        desk("operator"),
    ),
    (
        Write(
            "tou_campaigns",
            "start a draft",
            ("UPDATE tou_campaigns SET state = 'running' WHERE id = :draft_campaign",),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaigns",
            "change what an approved campaign writes",
            ("UPDATE tou_campaigns SET switch_at = now() WHERE id = :approved_campaign",),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaigns",
            "finish a running campaign",
            ("UPDATE tou_campaigns SET state = 'done' WHERE id = :running_campaign",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "tou_campaigns",
            "change the targets an approved campaign was created with",
            ('UPDATE tou_campaigns SET targets = \'{"model": ["x"]}\' WHERE id = :approved_campaign',),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaign_meters",
            "change why a meter is in a running campaign",
            ("UPDATE tou_campaign_meters SET selected_by = 'model x' WHERE campaign_id = :running_campaign",),
        ),
        NOBODY,
    ),
    (Write("tou_campaigns", "delete a campaign", ("DELETE FROM tou_campaigns",)), NOBODY),
    (
        Write(
            "tou_campaigns",
            "ask for a dry run of a draft",
            ("UPDATE tou_campaigns SET dry_run_requested_at = now() WHERE id = :draft_campaign",),
        ),
        desk("operator"),
    ),
    (
        Write(
            "tou_campaign_meters",
            "record what a dry run found (reads only), campaign not running",
            (
                "UPDATE tou_campaign_meters SET dry_run = '{}', dry_run_at = now()"
                " WHERE campaign_id = :draft_campaign",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "tou_campaign_meters",
            "add a meter to a draft",
            ("INSERT INTO tou_campaign_meters (campaign_id, meter_id) VALUES (:draft_campaign, :spare)",),
        ),
        desk("operator"),
    ),
    (
        Write(
            "tou_campaign_meters",
            "add a meter to an approved campaign",
            ("INSERT INTO tou_campaign_meters (campaign_id, meter_id) VALUES (:approved_campaign, :spare)",),
        ),
        NOBODY,
    ),
    (
        Write(
            "tou_campaign_meters",
            "record an attempt at a meter of a running campaign",
            (
                "UPDATE tou_campaign_meters SET attempts = attempts + 1, state = 'verified'"
                " WHERE campaign_id = :running_campaign",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "tou_campaign_meters",
            "record an attempt at a meter of a campaign not running",
            (
                "UPDATE tou_campaign_meters SET attempts = attempts + 1"
                " WHERE campaign_id = :approved_campaign",
            ),
        ),
        NOBODY,
    ),
    (
        Write("tou_campaign_meters", "delete a campaign's meters", ("DELETE FROM tou_campaign_meters",)),
        NOBODY,
    ),
    (
        Write(
            "channel_trusts",
            "trust a dial-in device's next login for its archive request",
            (
                "INSERT INTO channel_trusts (channel_id, granted_by, reason, expires_at)"
                f" VALUES (:channel, {ME}, 'replacement', now() + interval '10 minutes')",
            ),
        ),
        desk("admin"),
    ),
    (
        Write(
            "channel_trusts",
            "trust in another operator's name",
            (
                "INSERT INTO channel_trusts (channel_id, granted_by, reason, expires_at)"
                " VALUES (:channel, '1009', 'replacement', now() + interval '10 minutes')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "channel_trusts",
            "record the login that used a grant",
            ("UPDATE channel_trusts SET used_at = now(), used_peer = '127.0.0.1:9' WHERE id = :trust",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "channel_trusts",
            "revoke an unused grant",
            (f"UPDATE channel_trusts SET revoked_at = now(), revoked_by = {ME} WHERE id = :trust",),
        ),
        desk("admin"),
    ),
    (
        Write(
            "channel_trusts",
            "lengthen or re-word a grant",
            ("UPDATE channel_trusts SET expires_at = expires_at + interval '1 day' WHERE id = :trust",),
        ),
        NOBODY,
    ),
    (Write("channel_trusts", "delete a grant", ("DELETE FROM channel_trusts",)), NOBODY),
    (
        Write(
            "channel_leases",
            "take or renew a channel's lease (through the function, as a cluster member)",
            ("SELECT headend_lease_take(:channel, 'host:1:aa', interval '5 seconds')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "channel_leases",
            "write a lease directly (another owner or epoch)",
            (
                "INSERT INTO channel_leases (channel_id, owner, epoch, taken_at, expires_at)"
                " VALUES (:channel, 'host:1:aa', 9, now(), now() + interval '1 hour')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "cluster_members",
            "announce or renew a cluster member (through the function)",
            ("SELECT headend_cluster_renew('host:1:aa', 'host', 1, interval '5 seconds')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "cluster_members",
            "write a member directly",
            (
                "INSERT INTO cluster_members (member, host, pid, expires_at)"
                " VALUES ('host:1:aa', 'host', 1, now() + interval '1 hour')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "channel_leases",
            "take or renew many leases in one statement (through the function, as a cluster member)",
            (
                "SELECT * FROM headend_lease_take_many(ARRAY[:channel], ARRAY[:channel], 'host:1:aa',"
                " interval '5 seconds')",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "channel_leases",
            "take a dial-in device's channel lease on its connection (through the function)",
            ("SELECT * FROM headend_lease_seize(:channel, 'host:1:bb', interval '5 seconds')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "channel_leases",
            "say a dial-in device's connection closed (through the function)",
            ("SELECT headend_lease_disconnected(:channel, 'host:1:bb')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "channel_leases",
            "mark a lease's device connected directly",
            ("UPDATE channel_leases SET connected = true",),
        ),
        NOBODY,
    ),
    (
        Write(
            "service_leases",
            "take or renew the elected services' lease (through the function)",
            ("SELECT headend_service_take('services', 'host:1:aa', interval '5 seconds')",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "service_leases",
            "write the services' lease directly",
            (
                "INSERT INTO service_leases (name, owner, epoch, taken_at, expires_at)"
                " VALUES ('services', 'host:1:aa', 9, now(), now() + interval '1 hour')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "lease_moves",
            "write a lease move directly",
            (
                "INSERT INTO lease_moves (channel_id, to_owner, epoch, reason)"
                " VALUES (:channel, 'host:1:aa', 9, 'taken')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "meters",
            "state a meter's number (the identity dial-in verification compares)",
            ("UPDATE meters SET meter_number = '123456789012' WHERE id = :assigned",),
        ),
        desk("admin"),
    ),
    (
        Write(
            "meter_requests",
            "ask the daemon to read a meter now",
            (
                "INSERT INTO meter_requests (meter_id, kind, requested_by, expires_at)"
                f" VALUES (:spare, 'read', {ME}, now() + interval '1 minute')",
            ),
        ),
        desk("operator"),
    ),
    (
        Write(
            "meter_requests",
            "ask in another operator's name",
            (
                "INSERT INTO meter_requests (meter_id, kind, requested_by, expires_at)"
                " VALUES (:spare, 'read', '1009', now() + interval '1 minute')",
            ),
        ),
        NOBODY,
    ),
    (
        Write(
            "meter_requests",
            "cancel a request nobody took",
            ("UPDATE meter_requests SET state = 'cancelled', reason = 'x' WHERE id = :meter_request",),
        ),
        desk("operator", "admin"),  # its requester, 1002, or an admin
    ),
    (
        Write(
            "meter_requests",
            "claim a request",
            ("UPDATE meter_requests SET state = 'running' WHERE id = :meter_request",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "meter_requests",
            "expire a request nobody took",
            ("UPDATE meter_requests SET state = 'expired', reason = 'x' WHERE id = :meter_request",),
        ),
        {DAEMON},
    ),
    (
        Write(
            "meter_requests",
            "record a request's answer",
            (
                "UPDATE meter_requests SET state = 'done', reason = 'x', result = '{}'"
                " WHERE id = :meter_running",
            ),
        ),
        {DAEMON},
    ),
    (
        Write(
            "meter_requests",
            "change what a request asks",
            (
                "UPDATE meter_requests SET quantities = '{relay}', state = 'running'"
                " WHERE id = :meter_request",
            ),
        ),
        NOBODY,
    ),
    (Write("meter_requests", "delete a request", ("DELETE FROM meter_requests",)), NOBODY),
)

OPERATORS = {role: str(1001 + i) for i, role in enumerate(ROLES)}  # 1001 viewer ... 1005 admin


async def _seed(owner: asyncpg.Connection) -> dict[str, int]:
    """Accounts, meters, bills and commands the matrix writes to; their ids by name."""
    await add_operators(
        owner, **{f"o{op}": role for role, op in OPERATORS.items()}, o1009="operator,approver"
    )
    ids: dict[str, int] = {}
    ids["tariff"] = await owner.fetchval("INSERT INTO tariffs (name, kind) VALUES ('t', 'flat') RETURNING id")
    channel = await owner.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    for name, kind in (("paying", "postpaid"), ("owing", "postpaid")):
        ids[name] = await owner.fetchval(
            "INSERT INTO accounts (number, kind) VALUES ($1, $2) RETURNING id", name, kind
        )
    # paying: a bill of 30, charged and paid for (balance 0); owing: a bill of 50, charged, no money
    for key, account, amount, paid, month in (
        ("covered", "paying", 30, 30, 1),
        ("owed", "owing", 50, 0, 2),
        ("settled", "owing", 20, 20, 3),
    ):
        ids[key] = await owner.fetchval(
            "INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at, paid_at)"
            " VALUES ($1, make_timestamptz(2026, $3, 1, 0, 0, 0, 'UTC'),"
            " make_timestamptz(2026, $3, 28, 0, 0, 0, 'UTC'), 1, $2,"
            " make_timestamptz(2026, $3, 28, 0, 0, 0, 'UTC'),"
            " CASE WHEN $4 THEN now() END) RETURNING id",
            ids[account],
            amount,
            month,
            key == "settled",
        )
        await owner.execute(
            "INSERT INTO ledger (account_id, kind, amount, idempotency_key) VALUES ($1, 'charge', $2, $3)",
            ids[account],
            -amount,
            f"bill:{ids[key]}",
        )
        if paid:
            await owner.execute(
                LEDGER + "($1, 'payment', $2, $3)",
                ids[account],
                paid,
                f"pay:{ids[key]}",
            )
    for name in ("paying", "owing"):
        await owner.execute(
            "INSERT INTO balances (account_id, balance)"
            " SELECT $1, sum(amount) FROM ledger WHERE account_id = $1",
            ids[name],
        )
    await owner.execute(
        "UPDATE accounts SET arrears = true, arrears_since = now() WHERE id = $1", ids["owing"]
    )
    for name, address, account in (("assigned", "000000000001", "paying"), ("spare", "000000000002", None)):
        ids[name] = await owner.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
            " VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id",
            address,
            channel,
        )
        await assign_from_start(owner, ids[name], ids[account] if account else None)
    extra = await owner.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
        " VALUES ('dlt645-2007', '000000000003', 'dlt645-generic', $1, true) RETURNING id",
        channel,
    )
    ids["energy"] = await owner.fetchval(
        "INSERT INTO quantities (name) VALUES ('energy_import_kwh')"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
    )
    ids["hold"] = await owner.fetchval(
        "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts)"
        " VALUES ($1, $2, 'jump', 'seeded', now()) RETURNING id",
        ids["assigned"],
        ids["energy"],
    )
    ids["note"] = await owner.fetchval(
        "INSERT INTO vee_hold_notes (hold_id, operator, note) VALUES ($1, '1005', 'seen') RETURNING id",
        ids["hold"],
    )
    await owner.execute(
        "INSERT INTO vee_state (meter_id, quantity_id, validated_until, last_ts, last_value)"
        " VALUES ($1, $2, now(), now(), 1)",
        ids["assigned"],
        ids["energy"],
    )
    await owner.execute(
        "INSERT INTO meter_identities (meter_id, identity, checked_at) VALUES ($1, '000000000001', now())",
        ids["assigned"],
    )
    await owner.execute(
        "INSERT INTO fee_control_refusals (meter_id, action, rule, since)"
        " VALUES ($1, 'disconnect', 'protected', now())",
        ids["assigned"],
    )
    await owner.execute(
        "INSERT INTO relay_mismatches (meter_id, expected_open, observed_open, observed_at)"
        " VALUES ($1, true, false, now())",
        ids["assigned"],
    )
    for key, rule in (("opened", "tamper"), ("acked", "no_read"), ("cleared", "meter_stopped")):
        ids[key] = await owner.fetchval(
            "INSERT INTO exceptions (rule, meter_id, first_seen, last_seen) VALUES ($1, $2, now(), now())"
            " RETURNING id",
            rule,
            ids["assigned"],
        )
    await owner.execute(
        "UPDATE exceptions SET state = 'acknowledged', acknowledged_by = '1002', acknowledged_at = now()"
        " WHERE id = $1",
        ids["acked"],
    )
    await owner.execute(
        "UPDATE exceptions SET clear_since = now() - interval '2 hours' WHERE id = $1", ids["cleared"]
    )
    ids["reconnect"] = await owner.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
        " VALUES ($1, 'reconnect', 'payment', 'system', now() + interval '1 day') RETURNING id",
        ids["assigned"],
    )
    ids["waiting"] = await owner.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at)"
        " VALUES ($1, 'disconnect', 'arrears', 'system', true, now() + interval '1 day') RETURNING id",
        extra,
    )
    field_meter = await owner.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
        " VALUES ('dlt645-2007', '000000000004', 'dlt645-generic', $1, true) RETURNING id",
        channel,
    )
    ids["field"] = await owner.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, state, attempts, expires_at)"
        " VALUES ($1, 'disconnect', 'field', '1002', 'sent', 1, now() + interval '1 day') RETURNING id",
        field_meter,
    )
    alarm_meter, unwarned_meter = [
        await owner.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
            " VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id",
            address,
            channel,
        )
        for address in ("000000000005", "000000000006")
    ]
    ids["alarm_sent"] = await owner.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, state, attempts, expires_at)"
        " VALUES ($1, 'alarm', 'notice', 'system', 'sent', 1, now() + interval '1 day') RETURNING id",
        alarm_meter,
    )
    warned = await owner.fetchval(
        "INSERT INTO accounts (number, kind, arrears, arrears_since, alarm_before_cut)"
        " VALUES ('warned', 'prepaid', true, now(), true) RETURNING id"
    )
    await assign_from_start(owner, unwarned_meter, warned)
    ids["unwarned"] = await owner.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
        " VALUES ($1, 'disconnect', 'arrears', 'system', now() + interval '1 day') RETURNING id",
        unwarned_meter,
    )
    ids["channel"] = channel
    ids["param_set"] = await owner.fetchval(
        "INSERT INTO tou_parameter_sets (name, version, definition, created_by)"
        " VALUES ('tou', 1, '{}', '1005') RETURNING id"
    )
    for name, state, approver in (
        ("draft_campaign", "draft", None),
        ("approved_campaign", "approved", "1003"),
        ("running_campaign", "running", "1003"),
    ):
        ids[name] = await owner.fetchval(
            "INSERT INTO tou_campaigns (name, set_id, switch_at, created_by, state, approved_by, approved_at)"
            " VALUES ($1, $2, now(), '1002', $3, $4::text, CASE WHEN $4::text IS NOT NULL THEN now() END)"
            " RETURNING id",
            name,
            ids["param_set"],
            state,
            approver,
        )
        await owner.execute(
            "INSERT INTO tou_campaign_meters (campaign_id, meter_id) VALUES ($1, $2)",
            ids[name],
            ids["assigned"],
        )
    for name in ("archive_request", "archive_running"):
        ids[name] = await owner.fetchval(
            "INSERT INTO archive_requests (channel_id, kind, requested_by, wanted, expires_at)"
            " VALUES ($1, 'read', '1002', '[]', now() + interval '1 day') RETURNING id",
            channel,
        )
    await owner.execute("UPDATE archive_requests SET state = 'running' WHERE id = $1", ids["archive_running"])
    for name in ("meter_request", "meter_running"):
        ids[name] = await owner.fetchval(
            "INSERT INTO meter_requests (meter_id, kind, requested_by, expires_at)"
            " VALUES ($1, 'read', '1002', now() + interval '1 day') RETURNING id",
            ids["spare"],
        )
    await owner.execute("UPDATE meter_requests SET state = 'running' WHERE id = $1", ids["meter_running"])
    ids["trust"] = await owner.fetchval(
        "INSERT INTO channel_trusts (channel_id, granted_by, reason, expires_at)"
        " VALUES ($1, '1005', 'replacement', now() + interval '10 minutes') RETURNING id",
        channel,
    )
    return ids


@pytest.fixture
async def principals(
    pg_dsn: str, logins: dict[str, str]
) -> AsyncIterator[tuple[dict[Principal, asyncpg.Connection], dict[str, int]]]:
    owner = await asyncpg.connect(pg_dsn)
    conns: dict[Principal, asyncpg.Connection] = {}
    try:
        ids = await _seed(owner)
        for login, role in PRINCIPALS:
            conn = await asyncpg.connect(logins[login])
            conns[(login, role)] = conn
            if role is not None:
                await authenticate(conn, OPERATORS[role], PASSWORD, role)
        yield conns, ids
    finally:
        for conn in conns.values():
            await conn.close()
        await owner.close()


class _Undo(Exception):
    """Rolls an allowed write back so that every cell starts from the same rows."""


async def _try(conn: asyncpg.Connection, write: Write, ids: dict[str, int]) -> str | None:
    """None if the write went through (then undone), else the refusal."""
    try:
        async with conn.transaction():
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferred money checks fire per statement
            for statement in write.statements:
                for name, value in sorted(ids.items(), key=lambda kv: -len(kv[0])):
                    statement = statement.replace(f":{name}", str(value))
                await conn.execute(statement)
            raise _Undo
    except _Undo:
        return None
    except asyncpg.InsufficientPrivilegeError as exc:
        return str(exc)


def test_the_declaration_names_every_principal_it_allows() -> None:
    for write, allowed in MATRIX:
        assert allowed <= set(PRINCIPALS), write


async def test_every_cell_of_the_declaration_against_the_database(
    principals: tuple[dict[Principal, asyncpg.Connection], dict[str, int]],
) -> None:
    conns, ids = principals
    wrong = []
    for write, allowed in MATRIX:
        for principal in PRINCIPALS:
            refusal = await _try(conns[principal], write, ids)
            if (refusal is None) != (principal in allowed):
                verdict = "allowed" if refusal is None else f"refused ({refusal})"
                wrong.append(f"{write.table}: {write.operation} by {principal}: {verdict}")
    assert wrong == []


async def test_one_operator_cannot_create_and_execute_disconnects_in_a_row_without_an_approver(
    pg_dsn: str, logins: dict[str, str]
) -> None:
    """The two-person rule of automation holds for manual disconnects: by default each one waits for an
    approver, and the daemon login cannot send it before the approval; where the daemon published
    [safety] manual_approval_above = 10, beyond ten by one operator in an hour each waits."""
    owner = await asyncpg.connect(pg_dsn)
    desk = await asyncpg.connect(logins["billing"])
    daemon = await asyncpg.connect(logins["daemon"])
    try:
        await add_operators(owner, o1002="operator", o1003="approver")
        channel = await owner.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        await owner.executemany(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
            " VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true)",
            [(f"{n:012d}", channel) for n in range(1, 17)],
        )
        await authenticate(desk, "1002", PASSWORD, "operator")
        now = datetime.now(UTC)
        first = await request_command(
            desk, "000000000016", "disconnect", operator="1002", reason="v", now=now
        )
        assert await owner.fetchval("SELECT requires_approval FROM commands WHERE id = $1", first)
        await publish_manual_approval_above(daemon, 10)  # the first counts towards the ten
        created = [
            await request_command(desk, f"{n:012d}", "disconnect", operator="1002", reason="visit", now=now)
            for n in range(1, 16)
        ]
        waiting = await owner.fetch(
            "SELECT id FROM commands WHERE requires_approval AND approved_by IS NULL ORDER BY id"
        )
        assert [r["id"] for r in waiting] == [first, *created[9:]]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="waits for an approver"):
            await daemon.execute("UPDATE commands SET state = 'sent', attempts = 1 WHERE id = $1", created[9])
        await authenticate(desk, "1003", PASSWORD, "approver")
        assert await approve(desk, created[9:10], "1003", "checked") == created[9:10]
        await daemon.execute("SELECT set_config('headend.actor', 'executor', false)")
        await daemon.execute("UPDATE commands SET state = 'sent', attempts = 1 WHERE id = $1", created[9])
    finally:
        for conn in (daemon, desk, owner):
            await conn.close()
