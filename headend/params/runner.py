"""The in-daemon campaign runner (``[engine] services = ["headend.params.runner:run"]``).

A dry run (asked from the CLI) reads the same items and records what a write would change, writing
nothing. Every ``POLL_S`` it starts a lane for each bus with meters of running campaigns due (and
none running): the lane takes them one after another, ``pace`` at a time, until none is due. For
each meter it counts an attempt in the database first (refused unless the campaign is approved and
running), then runs one job on the meter's bus worker: read status word 3 to find the standby set,
read every item the set and switch time need, write each that differs once (tables and counts first,
the switch times last), and read every written item back. A write frame goes out at most once: one
whose reply is lost ends the attempt, and the next attempt's reads show which items it changed.
Outcomes: ``verified``, ``skipped`` (already correct), ``failed`` with the reason (a refusal decoded
from the error word, a read-back that differs, no answer after the last attempt); no answer retries
after ``RETRY_BASE_S`` × 2^(attempt − 1). A campaign whose meters are all settled is ``done``.

Meters behind a dial-in DTU and behind a Q/GDW 1376.1 concentrator take the same DL/T 645 frames
through the channel the daemon owns for them: the DTU's connection (a frame carrying the meter
password goes only to a connection whose meters were verified; an unverified one fails the meter with
the reason, nothing sent) or AFN 10 F1 forwarding, each forward with its own timeout. A meter whose
DTU is not connected is not attempted (no attempt counted): it stays due until the DTU dials in.

The runner also reads back the active schedule of the meters ``headend params check --read`` asks
for (reads only, :mod:`headend.params.check`), recorded in ``tou_checks``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from headend.drivers.base import DriverError, MeterDriver, MeterRefused, MeterTimeout, NotSupported
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.gdw1376 import ConcentratorMeterDriver
from headend.params.check import CheckError, read_schedule
from headend.params.progress import STATES
from headend.params.tou import SEASON_SWITCH, TABLE_SWITCH, comparable, item_diff, parse_set
from headend.params.windows import is_open, next_open, parse_window
from headend.services import LeaseMoved, ServiceHost
from headend.store import campaigns as store
from headend.store import tou_checks
from headend.transport import ChannelError, ChannelUnverified
from protocols.dlt645 import lookup

log = logging.getLogger(__name__)
POLL_S = 1.0
RETRY_BASE_S = 2.0
BATCH = 200
OPERATOR_CODE = "00000025"  # the operator code written with campaign frames (issue 25)
STATUS_WORD_3 = "04000503"
NEVER = timedelta(days=365)  # a campaign whose windows never open waits this long between looks


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt at a meter came to (``retry``: try again later, the state kept)."""

    state: str
    reason: str | None = None
    retry: bool = False


def _ordered(dis: list[str]) -> list[str]:
    """Tables and counts first, the switch times last: a meter never switches to a half-written set."""
    return sorted(dis, key=lambda di: (di in (SEASON_SWITCH, TABLE_SWITCH), di))


async def _read(driver: Dlt645Driver, di: str) -> Any:
    try:
        return await driver.read_di(di)
    except MeterRefused as exc:
        if exc.flags == ["no_data"]:
            return None  # e.g. a holiday never written
        raise


class PlanError(Exception):
    """The meter cannot take the campaign (one line, the reason)."""


async def plan(
    driver: MeterDriver, definition: dict[str, Any], switch_at: datetime
) -> tuple[Dlt645Driver, dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Read what the meter holds for its standby set: the driver, the items wanted and those that
    differ (item -> (current, wanted)). Reads only. A meter behind a concentrator is reached by
    forwarding its own DL/T 645 frames."""
    if isinstance(driver, ConcentratorMeterDriver):
        driver = driver.forwarded
    if not isinstance(driver, Dlt645Driver) or driver.edition != 2007:
        raise PlanError("only DL/T 645-2007 meters take time-of-use parameters")
    status = await driver.read_di(STATUS_WORD_3)
    tables_second, seasons_second = bool(status["time_slot_table_2"]), bool(status["time_zone_table_2"])
    if tables_second != seasons_second:
        raise PlanError("the meter runs season and daily tables of different sets")
    standby = 1 if tables_second else 2
    local_switch = driver.meter_time(switch_at).replace(second=0, microsecond=0)  # the meter keeps minutes
    wanted = parse_set(definition).meter_items(standby) | {
        SEASON_SWITCH: local_switch,
        TABLE_SWITCH: local_switch,
    }
    current = {di: await _read(driver, di) for di in wanted}
    return driver, wanted, item_diff(current, wanted)


async def dry_run(driver: MeterDriver, definition: dict[str, Any], switch_at: datetime) -> dict[str, Any]:
    """What a write would change at one meter: item name -> [current, wanted] (JSON-ready)."""
    try:
        _, _, differs = await plan(driver, definition, switch_at)
    except PlanError as exc:
        return {"error": str(exc)}
    named = {}
    for di, (current, wanted) in differs.items():
        item = lookup(di)
        named[f"{di} {item.name if item else ''}".strip()] = [current, wanted]
    return named


async def attempt(
    driver: MeterDriver,
    definition: dict[str, Any],
    switch_at: datetime,
    written: Callable[[], Awaitable[None]] | None = None,
    was_written: bool = False,
    fence: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """One attempt at one meter (the body of its bus-worker job); ``written`` is awaited once every
    change is acknowledged, before the read-back (the meter's ``written`` state); ``fence`` right
    before the first write frame (in a cluster it raises ``LeaseMoved`` unless this daemon holds the
    channel's current lease). A meter already ``written`` (a daemon stopped before its read-back)
    that now holds every item is verified: the plan's reads are its read-back."""
    try:
        meter, wanted, differs = await plan(driver, definition, switch_at)
    except PlanError as exc:
        return Outcome("failed", str(exc))
    changes = _ordered(list(differs))
    if not changes:
        return Outcome("verified" if was_written else "skipped")
    if fence is not None:
        await fence()
    for di in changes:
        await meter.write_item(di, wanted[di], operator=OPERATOR_CODE)
    if written is not None:
        await written()
    unlike = [di for di in changes if comparable(di, await _read(meter, di)) != wanted[di]]
    if unlike:
        return Outcome("failed", f"read back differs: {', '.join(unlike)}")
    return Outcome("verified")


def _opening(host: ServiceHost, due: asyncpg.Record) -> datetime | None:
    """None when the meter's campaign may write now, else when it next may (UTC; far off when its
    windows never open outside the closed times)."""
    settings = host.config.campaigns
    local = datetime.now(ZoneInfo(settings.timezone))
    windows = [parse_window(w) for w in due["windows"]]
    closed = [parse_window(w) for w in settings.peak_reading]
    if is_open(local, windows, closed):
        return None
    opening = next_open(local, windows, closed)
    return (opening or local + NEVER).astimezone(UTC)


async def _one(host: ServiceHost, due: asyncpg.Record) -> None:
    campaign_id, meter_id = int(due["campaign_id"]), int(due["meter_id"])
    opening = _opening(host, due)
    if opening is not None:  # outside its windows: nothing counted, nothing sent
        async with host.pool.acquire() as conn:
            await store.defer(conn, campaign_id, meter_id, opening)
        log.info("campaign meter deferred", extra={"campaign": due["name"], "meter_id": meter_id})
        return
    if not host.reachable(meter_id):  # its DTU is not connected: nothing counted, tried when it is
        return
    async with host.pool.acquire() as conn:
        number = await store.begin_attempt(conn, campaign_id, meter_id)
    if number is None:
        return  # paused or cancelled meanwhile: nothing is sent
    if number > int(due["max_attempts"]):  # attempts cut short (a daemon stopped mid-attempt)
        async with host.pool.acquire() as conn:
            await store.record(conn, campaign_id, meter_id, "failed", f"gave up after {number - 1} attempts")
        return
    definition = json.loads(due["definition"])
    was_written = due["state"] == "written"

    async def written() -> None:  # a daemon stopped after this finds the items already right
        nonlocal was_written
        was_written = True
        async with host.pool.acquire() as conn:
            await store.record(conn, campaign_id, meter_id, "written")

    try:
        outcome = await host.control(
            meter_id,
            lambda driver: attempt(
                driver, definition, due["switch_at"], written, was_written, lambda: host.write_fence(meter_id)
            ),
            exchanges=80,
            background=True,
        )
    except (MeterRefused, NotSupported, LookupError) as exc:  # LookupError: not in the enabled inventory
        outcome = Outcome("failed", str(exc))
    except ChannelUnverified as exc:  # a dial-in device that has not proved who it is: no password sent
        outcome = Outcome("failed", str(exc))
    except LeaseMoved as exc:  # another daemon holds the channel now: no frame sent, the meter stays due
        log.info("campaign meter left to its channel's owner: %s", exc)
        outcome = Outcome("written" if was_written else "pending", retry=True)
    except (MeterTimeout, DriverError, ChannelError, OSError) as exc:  # ChannelError: e.g. DTU offline
        if number >= int(due["max_attempts"]):
            outcome = Outcome("failed", f"no answer after {number} attempts: {exc}")
        else:
            outcome = Outcome("written" if was_written else "pending", retry=True)
    retry_in = RETRY_BASE_S * 2 ** (number - 1) if outcome.retry else None
    async with host.pool.acquire() as conn:
        await store.record(conn, campaign_id, meter_id, outcome.state, outcome.reason, retry_in)
    log.info(
        "campaign meter %s",
        outcome.state,
        extra={"campaign": due["name"], "meter_id": meter_id, "attempt": number, "reason": outcome.reason},
    )


async def _dry(host: ServiceHost, due: asyncpg.Record) -> None:
    definition = json.loads(due["definition"])
    try:
        finding = await host.control(
            int(due["meter_id"]),
            lambda driver: dry_run(driver, definition, due["switch_at"]),
            exchanges=60,
            background=True,
        )
    except (DriverError, LookupError, ChannelError, OSError) as exc:
        finding = {"error": str(exc)}
    async with host.pool.acquire() as conn:
        await store.record_dry_run(
            conn, int(due["campaign_id"]), int(due["meter_id"]), json.dumps(finding, default=str)
        )


async def _check(host: ServiceHost, due: asyncpg.Record) -> None:
    """Read back one meter's active schedule for ``headend params check`` (reads only)."""
    meter_id = int(due["meter_id"])
    expected = parse_set(json.loads(due["definition"]))
    active: int | None = None
    items: str | None = None
    error: str | None = None
    try:
        active, found = await host.control(
            meter_id, lambda d: read_schedule(d, expected), exchanges=60, background=True
        )
        items = json.dumps(found)
    except (CheckError, DriverError, LookupError, ChannelError, OSError) as exc:
        error = str(exc) or type(exc).__name__
    async with host.pool.acquire() as conn:
        await tou_checks.record_check(conn, meter_id, active, items, error)


async def _lane(host: ServiceHost, due: list[asyncpg.Record]) -> None:
    """One bus's campaign meters, one after another, for as long as it has any due: ``pace`` taken at
    a time and the next ``pace`` as soon as those are done, with no wait for the other buses or the
    next pass. An attempt is counted only when its job is next on the bus, and the bus's scheduled
    reads go ahead of it. Ends when nothing is due, or the bus's DTU is not connected."""
    channel_id = int(due[0]["channel_id"])
    try:
        while due and host.reachable(int(due[0]["meter_id"])):
            for d in due:
                await _one(host, d)
            async with host.pool.acquire() as conn:
                due = _held(host, await store.due_meters(conn, host.config.campaigns.pace, channel_id))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("campaign lane stopped: %s", exc)  # the database is away: a later pass starts it again
    except Exception as exc:
        log.error("campaign job failed: %s", exc)  # the meter stays due and is tried again


def _held(host: ServiceHost, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """The rows whose meter's channel this daemon holds (every row outside a cluster)."""
    return [r for r in rows if host.lease_of(int(r["meter_id"])) is not None]


async def _pass(host: ServiceHost, lanes: dict[int, asyncio.Task[None]]) -> None:
    """One pass: a lane started for every bus with meters due and none running, the due dry runs and
    schedule checks, then the campaigns now settled."""
    async with host.pool.acquire() as conn:
        dry = await store.due_dry_runs(conn, BATCH)
        checks = await tou_checks.due_checks(conn, BATCH)
        due = await store.due_meters(conn, host.config.campaigns.pace)
    # in a cluster each daemon takes only the meters of the channels it holds (the others' owners
    # take theirs); outside one every meter is this daemon's
    dry, checks, due = (_held(host, rows) for rows in (dry, checks, due))
    by_bus: dict[int, list[asyncpg.Record]] = {}
    for d in due:
        by_bus.setdefault(int(d["channel_id"]), []).append(d)
    for channel_id, meters in by_bus.items():
        if channel_id in lanes:
            continue

        def ended(_: asyncio.Task[None], channel_id: int = channel_id) -> None:
            lanes.pop(channel_id, None)

        lanes[channel_id] = asyncio.create_task(_lane(host, meters), name=f"campaign-lane-{channel_id}")
        lanes[channel_id].add_done_callback(ended)
    results = await asyncio.gather(
        *(_dry(host, d) for d in dry), *(_check(host, c) for c in checks), return_exceptions=True
    )
    for failure in (r for r in results if isinstance(r, Exception)):
        log.error("campaign job failed: %s", failure)  # the meter stays due and is tried again
    async with host.pool.acquire() as conn:
        for name in await store.finish_settled(conn):
            log.info("campaign done", extra={"campaign": name})
        counts = await store.open_counts(conn)
    _publish(host, counts)


def _publish(host: ServiceHost, counts: list[asyncpg.Record]) -> None:
    """``headend_campaign_meters{campaign,state}`` of the open campaigns (every state, 0 included)."""
    gauge = host.metrics.campaign_meters
    gauge.clear()
    by_name: dict[str, dict[str, int]] = {}
    for r in counts:
        by_name.setdefault(str(r["name"]), {})[str(r["state"])] = int(r["n"])
    for name, found in by_name.items():
        for state in STATES:
            gauge.labels(campaign=name, state=state).set(found.get(state, 0))


async def run(host: ServiceHost) -> None:
    """Run due campaign meters (and dry runs) until cancelled (the daemon stops)."""
    lanes: dict[int, asyncio.Task[None]] = {}  # channel id -> its running lane
    try:
        while True:
            try:
                await _pass(host, lanes)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("campaign pass skipped: %s", exc)  # the database is away: try again next poll
            await asyncio.sleep(POLL_S)
    finally:
        running = list(lanes.values())
        for lane in running:
            lane.cancel()
        await asyncio.gather(*running, return_exceptions=True)
