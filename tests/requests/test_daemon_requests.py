"""Meter requests answered by a real ``headend run`` on a simulated DL/T 645 bus, asked through the CLI
(or the store's functions, as the web console asks) under the documented logins.

- an on-demand read is answered with the meter's values, stored as readings (source on_demand), counted;
- a viewer is refused by the database, in one line;
- with no daemon answering, ``--wait`` ends in one line and the request stays; the per-operator and
  per-channel bounds refuse in one line each; a daemon that starts answers what waited;
- a re-collection fills a range's gap from the meter's load profile, with the values the profile holds;
- a flood of requests does not stop the scheduled cycles (every interval's poll readings are stored);
- a meter that does not answer fails with the reason (a re-collection with what it filled and what is
  still missing), then as quarantined;
- a request in flight when the daemon stops is failed by the next daemon at start, and one nobody
  took in time is expired;
- a standby daemon works no request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.operators import authenticate
from headend.requests.duty import EXPIRED, INTERRUPTED
from headend.store.meter_requests import create_read_request, get_request, publish_limits
from simulators.bus import BusSpec, SimBus, start_bus
from tests.support.cli import CliResult, headend_async
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.logins import daemon_dsn, desk_dsn
from tests.support.operators import PASSWORD, add_operators, import_inventory_cli, operator_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

SILENT = "000000000777"  # in the inventory, on a bus of its own without it: it never answers


def name(address: str) -> str:
    """The name the inventory import gives a meter without one."""
    return f"{'quiet' if address == SILENT else 'bus'}/{address}"


def label(address: str) -> str:
    """How the daemon names a meter in a request's reason: its name and address."""
    return f"{name(address)} ({address})"


async def counted(daemon: Daemon, labels: str, count: int) -> None:
    """Wait for the daemon's ``headend_meter_requests_total{labels}`` to reach ``count`` (it counts a
    request just after the database says it ended)."""

    async def reached() -> bool:
        return await daemon.metric("headend_meter_requests_total", labels) == count

    await wait_until(reached, 10, f"{count} request(s) counted with {labels}")


@dataclass
class Station:
    """A simulated bus with its meters imported (plus the silent one), operators 51, 52, 53 (operator)
    and 59 (viewer), and the files a daemon needs."""

    dsn: str
    bus: SimBus
    tmp_path: Path

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.bus.meters]

    def config(self, extra: str = "", interval: str = "1d", timeout: str = "1s") -> Path:
        metrics = free_port()
        path = self.tmp_path / f"headend-{metrics}.toml"
        path.write_text(
            f'[database]\ndsn = "{self.dsn}"\nspool_dir = "{self.tmp_path / "spool"}"\n'
            f'[polling]\ninterval = "{interval}"\noffset = "0.5s"\ninventory_reload = "1h"\n'
            '[read_plans.default]\nquantities = ["energy_import_kwh", "voltage_a_v"]\n'
            "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
            f'[timeouts]\ninitial = "{timeout}"\nmaximum = "{timeout}"\n'
            f'[metrics]\nport = {metrics}\n[logging]\nformat = "json"\n{extra}'
        )
        return path

    async def daemon(self, config: Path) -> Daemon:
        text = config.read_text()
        port = int(text.split("[metrics]\nport = ", 1)[1].split("\n", 1)[0])
        daemon = await Daemon.start(config, self.tmp_path / "state", port)
        await daemon.wait_logged("engine started")
        await daemon.wait_logged("meter requests taken")  # its [requests] bounds are the database's
        return daemon

    async def headend(self, *args: str) -> CliResult:
        return await headend_async(*args, "--dsn", self.dsn, env=operator_env(), timeout=120)

    async def desk(self, operator: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(desk_dsn(self.dsn))
        await authenticate(conn, operator, PASSWORD, None)
        return conn

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


@pytest.fixture
async def station(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Station]:
    bus = await start_bus(BusSpec(meters=3, seed=2323, turnaround_s=0.01))
    quiet = await start_bus(BusSpec(meters=1, seed=2324))  # a bus without the silent meter
    inventory = inventory_file(tmp_path / "inv.toml", {"bus": bus})
    installed = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inventory.write_text(
        inventory.read_text().replace(
            'model = "dlt645-generic"\n', f'model = "dlt645-generic"\ninstalled_at = {installed}\n'
        )
        + f'\n[[channels]]\nname = "quiet"\nurl = "{quiet.url}"\n'
        + f'\n[[meters]]\nchannel = "quiet"\nprotocol = "dlt645-2007"\naddress = "{SILENT}"\n'
        f'model = "dlt645-generic"\ninstalled_at = {installed}\n'
    )
    imported = import_inventory_cli(pg_dsn, inventory)
    assert imported.returncode == 0, imported.stderr
    owner = await asyncpg.connect(pg_dsn)
    await add_operators(owner, o51="operator", o52="operator", o53="operator", o59="viewer")
    await owner.close()
    try:
        yield Station(pg_dsn, bus, tmp_path)
    finally:
        await bus.stop()
        await quiet.stop()


READINGS = (
    "SELECT q.name, r.ts, r.value, r.quality::text AS quality, s.name AS source FROM readings r"
    " JOIN quantities q ON q.id = r.quantity_id JOIN reading_sources s ON s.id = r.source_id"
    " JOIN meters m ON m.id = r.meter_id WHERE m.address = $1"
)


async def test_a_read_is_answered_with_the_meters_values_and_stored(station: Station) -> None:
    daemon = await station.daemon(station.config())
    address = station.addresses[0]
    try:
        code, out, err = await station.headend("meters", "read", address, "--operator", "51", "--json")
        assert code == 0, err
        answer = json.loads(out)
        assert (answer["kind"], answer["state"], answer["requested_by"]) == ("read", "done", "51")
        assert answer["reason"] == f"read 2 value(s) of meter {label(address)}"
        values = answer["result"]["values"]
        assert sorted(values) == ["energy_import_kwh", "voltage_a_v"]
        read_at = datetime.fromisoformat(answer["result"]["read_at"])
        stored = await station.fetch(READINGS + " AND s.name = 'on_demand'", address)
        assert {(r["name"], r["ts"], r["value"], r["quality"]) for r in stored} == {
            (q, read_at, v, "actual") for q, v in values.items()
        }
        # the simulated meter's register, read again now, is at or past the answered value
        code, out, err = await station.headend(
            "meters", "read", address, "--operator", "51", "-q", "energy_import_kwh", "--json"
        )
        assert code == 0, err
        again = json.loads(out)["result"]["values"]
        assert (
            list(again) == ["energy_import_kwh"] and again["energy_import_kwh"] >= values["energy_import_kwh"]
        )
        await counted(daemon, 'kind="read",state="done"', 2)

        # the table as an operator reads it
        code, out, err = await station.headend("meters", "read", address, "--operator", "52")
        assert code == 0, err
        assert out.startswith(f"request {answer['id'] + 2} done: read 2 value(s) of meter {label(address)}\n")

        # a viewer: refused by the database, one line, nothing asked
        code, out, err = await station.headend("meters", "read", address, "--operator", "59")
        assert (code, out) == (1, "")
        assert err == "error: a meter request needs an authenticated operator with the operator role\n"
        assert len(await station.fetch("SELECT id FROM meter_requests")) == 3
    finally:
        await daemon.close()


async def test_unanswered_requests_stay_bounds_refuse_and_a_starting_daemon_answers(station: Station) -> None:
    publisher = await asyncpg.connect(daemon_dsn(station.dsn))  # as a daemon publishing [requests] would
    await publish_limits(publisher, {"per_operator": 1, "per_channel": 2, "max_range_days": 2})
    await publisher.close()
    first, second = station.addresses[:2]
    code, out, err = await station.headend("meters", "read", first, "--operator", "51", "--wait", "0.5")
    assert code == 3, err
    assert err == (
        f"error: read request 1 for meter {name(first)} not answered within 0.5 s (still requested;"
        " see `headend requests show 1`)\n"
    )
    code, out, err = await station.headend("meters", "read", second, "--operator", "51", "--wait", "0.5")
    assert (code, err) == (
        1,
        "error: meter request: operator 51 already has 1 open request(s),"
        " at most 1 ([requests] per_operator)\n",
    )
    code, out, err = await station.headend(
        "meters", "recollect", second, "--operator", "52", "--from", "2026-11-01", "--to", "2026-11-04"
    )
    assert (code, err) == (
        1,
        "error: meter request: a re-collection covers at most 2 days ([requests] max_range_days),"
        " this one 3 days\n",
    )
    code, out, err = await station.headend("meters", "read", second, "--operator", "52", "--wait", "0")
    assert code == 3, err
    code, out, err = await station.headend("meters", "read", first, "--operator", "53", "--wait", "0")
    assert (code, err) == (
        1,
        "error: meter request: channel bus already has 2 open request(s),"
        " at most 2 ([requests] per_channel)\n",
    )
    code, out, err = await station.headend("requests", "show", "1", "--json")
    assert code == 0 and json.loads(out)["state"] == "requested"
    code, out, err = await station.headend("requests", "cancel", "1", "--operator", "52")
    assert (code, err) == (
        1,
        "error: cancelling meter request 1 of operator 51 needs an authenticated operator"
        " with the admin role\n",
    )

    daemon = await station.daemon(
        station.config("[requests]\nper_operator = 1\nper_channel = 2\nmax_range_days = 2\n")
    )
    try:

        async def answered() -> bool:
            found = await station.fetch("SELECT state FROM meter_requests ORDER BY id")
            return [r["state"] for r in found] == ["done", "done"]

        await wait_until(answered, 60, "the waiting requests answered by the daemon that started")
        code, out, err = await station.headend("requests", "list", "--json")
        assert code == 0, err
        assert [(r["meter"], r["requested_by"], r["state"]) for r in json.loads(out)] == [
            (name(second), "52", "done"),
            (name(first), "51", "done"),
        ]
    finally:
        await daemon.close()


def _boundary(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // step) * step


async def test_a_recollection_fills_a_gap_from_the_meters_profile(station: Station) -> None:
    daemon = await station.daemon(station.config(interval="15m"))
    address = station.addresses[1]
    step = timedelta(minutes=15)
    until = _boundary(datetime.now(UTC), step) - 4 * step
    since = until - 12 * step
    window = " AND q.name = 'energy_import_kwh' AND r.ts >= $2 AND r.ts < $3"
    recollect = ("meters", "recollect", address, "--operator", "51", "--json")
    span = ("--from", since.isoformat(), "--to", until.isoformat())
    try:
        code, out, err = await station.headend(*recollect, *span)
        assert code == 0, err
        first = json.loads(out)
        assert (first["state"], first["filled"], first["missing"]) == ("done", 12, 0), first
        assert first["reason"] == "re-collected 12 of 12 interval(s) without a reading; 0 still missing"
        before = {r["ts"]: r["value"] for r in await station.fetch(READINGS + window, address, since, until)}
        assert sorted(before) == [since + i * step for i in range(12)]

        # a gap of four intervals (as if the meter had been unreachable then), re-collected
        gap = [since + i * step for i in (3, 4, 5, 9)]
        owner = await asyncpg.connect(station.dsn)  # no login may delete readings: seeded as the owner
        await owner.execute(
            "DELETE FROM readings WHERE meter_id = (SELECT id FROM meters WHERE address = $1)"
            " AND ts = ANY ($2::timestamptz[])",
            address,
            gap,
        )
        await owner.close()
        code, out, err = await station.headend(*recollect, *span)
        assert code == 0, err
        second = json.loads(out)
        assert (second["state"], second["filled"], second["missing"]) == ("done", 4, 0), second
        assert second["result"]["intervals"] == 4
        after = await station.fetch(READINGS + window, address, since, until)
        assert {r["ts"]: r["value"] for r in after} == before
        assert {(r["quality"], r["source"]) for r in after} == {("backfilled", "profile")}
        await counted(daemon, 'kind="recollect",state="done"', 2)
    finally:
        await daemon.close()


@pytest.mark.long(seconds=30)
async def test_a_flood_of_requests_does_not_stop_the_scheduled_cycles(station: Station) -> None:
    daemon = await station.daemon(
        station.config("[requests]\nper_operator = 12\nper_channel = 12\n", interval="2s")
    )
    desk = await station.desk("51")
    meters = {
        r["address"]: r["id"]
        for r in await desk.fetch(
            "SELECT m.id, m.address FROM meters m JOIN channels c ON c.id = m.channel_id WHERE c.name = 'bus'"
        )
    }
    try:
        started = datetime.now(UTC)
        asked = 0

        async def flooded() -> bool:
            nonlocal asked
            open_now = await desk.fetchval(
                "SELECT count(*) FROM meter_requests WHERE state IN ('requested', 'running')"
            )
            for _ in range(12 - open_now):
                await create_read_request(desk, list(meters.values())[asked % 3], "51")
                asked += 1
            return asked >= 150

        await wait_until(flooded, 120, "150 read requests asked, twelve open at a time", interval=0.05)
        ended = datetime.now(UTC)
        done = await desk.fetchval("SELECT count(*) FROM meter_requests WHERE state = 'done'")
        assert done >= 150 - 12
        assert await desk.fetchval("SELECT count(*) FROM meter_requests WHERE state = 'failed'") == 0
        # every interval that began and ended inside the flood has its poll readings, for every meter
        step = timedelta(seconds=2)
        intervals = [_boundary(started, step) + i * step for i in range(2, int((ended - started) / step) - 1)]
        assert len(intervals) >= 2, (started, ended)
        polled = await station.fetch(
            "SELECT m.address, r.ts FROM readings r JOIN meters m ON m.id = r.meter_id"
            " JOIN reading_sources s ON s.id = r.source_id JOIN quantities q ON q.id = r.quantity_id"
            " WHERE s.name = 'poll' AND q.name = 'energy_import_kwh' AND r.ts = ANY ($1::timestamptz[])",
            intervals,
        )
        assert {(r["address"], r["ts"]) for r in polled} == {(a, t) for a in meters for t in intervals}
    finally:
        await desk.close()
        await daemon.close()


async def test_a_meter_that_does_not_answer_fails_with_the_reason_then_as_quarantined(
    station: Station,
) -> None:
    daemon = await station.daemon(station.config('[health]\nquarantine_after = 2\nbackoff = "1h"\n'))
    today = datetime.now(UTC).date()
    span = ("--from", str(today - timedelta(days=3)), "--to", str(today - timedelta(days=1)))
    try:
        # a re-collection of two days (two 1-day intervals): the first profile job times out
        code, out, err = await station.headend(
            "meters", "recollect", SILENT, "--operator", "51", *span, "--timezone", "UTC", "--json"
        )
        assert code == 1
        answer = json.loads(out)
        assert (answer["state"], answer["filled"], answer["missing"]) == ("failed", 0, 2), answer
        assert answer["reason"].startswith("the meter did not answer in time ("), answer
        assert err == f"error: recollect request 1 for meter {name(SILENT)} failed: {answer['reason']}\n"
        code, out, err = await station.headend("meters", "read", SILENT, "--operator", "51")
        assert code == 1 and out == ""
        assert err.startswith(
            f"error: read request 2 for meter {name(SILENT)} failed: the meter did not answer in time ("
        ), err
        code, out, err = await station.headend("meters", "read", SILENT, "--operator", "51", "--json")
        assert code == 1
        answer = json.loads(out)
        assert answer["state"] == "failed"
        assert answer["reason"].startswith(f"meter {label(SILENT)} is quarantined until "), answer
        assert "after 2 failed exchanges (last: " in answer["reason"]
        assert err == f"error: read request 3 for meter {name(SILENT)} failed: {answer['reason']}\n"
        await counted(daemon, 'kind="read",state="failed"', 2)
        await counted(daemon, 'kind="recollect",state="failed"', 1)
    finally:
        await daemon.close()


async def test_a_request_cut_off_is_failed_and_one_nobody_took_expires_at_the_next_start(
    station: Station,
) -> None:
    daemon = await station.daemon(station.config(timeout="20s"))
    desk = await station.desk("51")
    silent = await desk.fetchval("SELECT id FROM meters WHERE address = $1", SILENT)
    try:
        cut = await create_read_request(desk, silent, "51")

        async def running() -> bool:
            request = await get_request(desk, cut)
            return request is not None and request.state == "running"

        await wait_until(running, 30, "the read of the silent meter in flight")
        daemon.kill()
        await daemon.proc.wait()
        late = await create_read_request(desk, silent, "51", expires_in_s=0.5)

        async def overdue() -> bool:
            return bool(
                await desk.fetchval("SELECT expires_at < now() FROM meter_requests WHERE id = $1", late)
            )

        await wait_until(overdue, 10, "the second request past its expiry")
        assert [(await get_request(desk, i)).state for i in (cut, late)] == ["running", "requested"]  # type: ignore[union-attr]
        successor = await station.daemon(station.config())
        try:

            async def settled() -> bool:
                found = [await get_request(desk, i) for i in (cut, late)]
                return all(r is not None and r.final for r in found)

            await wait_until(settled, 30, "both requests settled by the next daemon")
            found = [await get_request(desk, i) for i in (cut, late)]
            assert [(r.state, r.reason) for r in found if r is not None] == [
                ("failed", INTERRUPTED),
                ("expired", EXPIRED),
            ]

            async def counted() -> bool:  # counted just after the database said so
                failed = await successor.metric("headend_meter_requests_total", 'kind="read",state="failed"')
                expired = await successor.metric(
                    "headend_meter_requests_total", 'kind="read",state="expired"'
                )
                return (failed, expired) == (1, 1)

            await wait_until(counted, 10, "one failed and one expired request counted by the successor")
        finally:
            await successor.close()
    finally:
        await desk.close()
        await daemon.close()


async def test_a_standby_daemon_does_not_work_requests(station: Station) -> None:
    active = await station.daemon(station.config('[ha]\npoll = "1s"\n'))
    config = station.config('[ha]\npoll = "1s"\n')
    port = int(config.read_text().split("[metrics]\nport = ", 1)[1].split("\n", 1)[0])
    standby = await Daemon.start(config, station.tmp_path / "standby-state", port)
    try:
        await standby.wait_logged("standby:")
        for operator in ("51", "52", "53"):
            code, out, err = await station.headend(
                "meters", "read", station.addresses[0], "--operator", operator, "--json"
            )
            assert code == 0 and json.loads(out)["state"] == "done", err
        assert len(active.logged("meter request done")) == 3
        assert standby.logged("meter request") == [] and standby.logged("engine started") == []
    finally:
        await standby.close()
        await active.close()
