"""``headend concentrator archive push`` of a dial-in concentrator through the running daemon
(``headend run`` as a process, the simulated concentrator dialling in to its listener, the CLI as a
process): a dry run read while the concentrator is still offline is answered once it dials in and
sends nothing; a viewer is refused; the push rewrites the simulator's archive, read back; a push of
rows the archive no longer matches writes nothing; a request for a concentrator gone offline
expires; with no daemon the request expires in one line; a starting daemon fails what its
predecessor left running and expires what nobody took.
The database refuses a request from a viewer and from a session nobody signed in to."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from headend.concentrators.requests import EXPIRED, INTERRUPTED
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.operators import authenticate
from headend.store.archive_requests import get_request, insert_request
from headend.transport import DialinHub
from protocols.gdw1376 import ArchiveRecord
from simulators.bus import DEFAULT_PASSWORD
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS, engine_config, inventory_toml
from tests.support.cli import CliResult, cli_env, headend_async
from tests.support.daemons import Daemon
from tests.support.engine import engine_for
from tests.support.operators import PASSWORD, add_operators, import_inventory_cli, operator_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

PW = bytes(range(16))
STRAY = ArchiveRecord(serial=9, pn=9, port=1, address="000000009999")  # in no inventory
PUSH = ("concentrator", "archive", "push", "conc-1", "--json")


async def headend(dsn: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    environment = cli_env(HEADEND_METER_PASSWORD=DEFAULT_PASSWORD) | (env or operator_env())
    return await headend_async(*args, "--dsn", dsn, env=environment, timeout=150)


def daemon_config(tmp_path: Path, dsn: str, listen_port: int, metrics_port: int) -> Path:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[concentrators."{ADDRESS}"]\npw = "{PW.hex()}"\n')
    config = tmp_path / "headend.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "1h"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        f'[secrets]\nfile = "{secrets}"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
        f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nkind = "gdw1376"\n'
    )
    return config


async def requests_of(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT id, kind, state, result FROM archive_requests ORDER BY id")
    finally:
        await conn.close()


@pytest.mark.long(seconds=28)
async def test_push_through_the_daemon_that_holds_the_dial_in_connection(pg_dsn: str, tmp_path: Path) -> None:
    listen_port, metrics_port = free_port(), free_port()
    spec = ConcentratorSpec(
        port=listen_port, address=ADDRESS, meters=4, latency_ms=20, redial_s=0.5, login_timeout_s=2, pw=PW
    )
    sim = SimConcentrator(spec)  # not dialling in yet
    # the inventory leaves out the simulator's meter #3 (pn 4): with the stray pn 9, two records to delete
    imported = import_inventory_cli(
        pg_dsn, inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim, skip=(3,))
    )
    assert imported.returncode == 0, imported.stderr
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o31="operator", o32="viewer")
    sim.pool.archive[9] = STRAY
    before = dict(sim.pool.archive)
    daemon = await Daemon.start(
        daemon_config(tmp_path, pg_dsn, listen_port, metrics_port), tmp_path, metrics_port
    )
    try:
        await daemon.wait_logged("engine started")

        # a dry run while the concentrator is offline: the request waits for it to dial in
        dry = asyncio.create_task(headend(pg_dsn, *PUSH, "--operator", "31", "--dry-run", "--wait", "90"))

        async def requested() -> bool:
            return [(r["kind"], r["state"]) for r in await requests_of(pg_dsn)] == [("read", "requested")]

        await wait_until(requested, 60, "the dry run's read request, waiting")
        assert await daemon.metric("headend_archive_requests_total") == 0
        async with sim:  # dials in now
            code, out, err = await dry
            assert code == 1, err  # the archive disagrees with the inventory
            shown = json.loads(out)
            stray = sim.pool.meters[3].address
            assert shown["plan"] == (
                f"the push writes 0 record(s) and deletes 2: pn 4 ({stray}), pn 9 (000000009999)"
            )
            assert [r["pn"] for r in shown["extra"]] == [4, 9] and shown["matching"] == 3
            assert sim.counts["afn_04"] == 0 and sim.pool.archive == before  # a dry run sends nothing

            # a viewer is refused before anything is asked of the daemon
            code, out, err = await headend(pg_dsn, *PUSH, "--operator", "32", "--yes")
            assert code == 1 and err.strip() == (
                "error: operator 32 does not hold the operator role (holds viewer)"
            ), err

            # a push of rows the archive does not match (nothing to delete) is failed, nothing written
            channel_id = await conn.fetchval("SELECT id FROM channels WHERE name = 'conc-1'")
            wanted = [
                {"pn": i + 1, "port": sim.pool.port_of[m.address], "address": m.address, "edition": 2007}
                for i, m in enumerate(sim.pool.meters[:3])
            ]
            stale = await insert_request(conn, channel_id, "31", wanted, 30, ([], []))

            async def finished() -> bool:
                request = await get_request(conn, stale)
                return request is not None and request.final

            await wait_until(finished, 60, "the stale push to be finished")
            request = await get_request(conn, stale)
            assert request is not None and (request.state, request.result) == (
                "failed",
                "the archive is not what was shown when the push was asked for: nothing written;"
                " run the push again",
            )
            assert sim.counts["afn_04"] == 0 and sim.pool.archive == before

            code, out, err = await headend(pg_dsn, *PUSH, "--operator", "31", "--yes")
            assert code == 0, err
            pushed = json.loads(out)
            assert pushed["pushed"] == 2 and pushed["agrees"] is True and pushed["after"]["matching"] == 3
            assert "the push writes 0 record(s) and deletes 2" in err  # shown before it was sent
            assert sim.counts["afn_04"] == 1
            archive = {r.pn: r.address for r in sim.pool.archive.values()}
            assert archive == {i + 1: m.address for i, m in enumerate(sim.pool.meters[:3])}

        # the concentrator gone: a request waits for it, then expires (the daemon or the command
        # marks it, whichever looks first), nothing sent
        async def offline() -> bool:
            return await daemon.metric('headend_channel_offline{channel="conc-1"}') == 1

        await wait_until(offline, 60, "the concentrator's connection to be gone")
        code, out, err = await headend(pg_dsn, *PUSH, "--operator", "31", "--yes", "--wait", "3")
        last = (await requests_of(pg_dsn))[-1]
        assert code == 2 and out == "" and (last["kind"], last["state"]) == ("read", "expired")
        assert err.strip() in (
            f"error: archive request {last['id']} expired: the concentrator was not connected (or not"
            " verified) before the request expired: nothing sent",
            f"error: no daemon took archive request {last['id']} for 'conc-1' within 3 s (is headend run"
            " running, with a listener this concentrator dials in to, and has it dialled in?): the request"
            " expired, nothing was sent",
        ), err
        assert sim.counts["afn_04"] == 1
        assert await daemon.metric('headend_archive_requests_total{state="done"}') == 3
        assert await daemon.metric('headend_archive_requests_total{state="failed"}') == 1
        trail = await conn.fetch(
            "SELECT actor, action FROM audit_log WHERE entity = 'archive_request' AND entity_id = $1"
            " ORDER BY id",
            str(pushed["request"]),
        )
        assert [(r["actor"], r["action"]) for r in trail] == [
            ("31", "archive_request.requested"),
            ("system", "archive_request.running"),
            ("system", "archive_request.done"),
        ]
    finally:
        await daemon.close()
        await conn.close()


async def test_with_no_daemon_the_request_expires_in_one_line_and_nothing_is_sent(
    pg_dsn: str, tmp_path: Path
) -> None:
    sim = SimConcentrator(ConcentratorSpec(port=free_port(), address=ADDRESS, meters=2))  # never started
    imported = import_inventory_cli(
        pg_dsn, inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim)
    )
    assert imported.returncode == 0, imported.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o31="operator")
    finally:
        await conn.close()
    code, out, err = await headend(pg_dsn, *PUSH, "--operator", "31", "--yes", "--wait", "0")
    assert code == 2 and err.strip() == (
        "error: --wait: more than 0 and at most 86400 s for a request to the daemon"
    )
    assert await requests_of(pg_dsn) == []
    code, out, err = await headend(pg_dsn, *PUSH, "--operator", "31", "--yes", "--wait", "2")
    requests = await requests_of(pg_dsn)
    assert code == 2 and out == ""
    assert [(r["kind"], r["state"]) for r in requests] == [("read", "expired")]
    assert err.strip() == (
        f"error: no daemon took archive request {requests[0]['id']} for 'conc-1' within 2 s (is headend run"
        " running, with a listener this concentrator dials in to, and has it dialled in?): the request"
        " expired, nothing was sent"
    )


async def test_the_database_refuses_a_request_from_a_viewer_and_from_nobody(
    pg_dsn: str, logins: dict[str, str]
) -> None:
    owner = await asyncpg.connect(pg_dsn)
    desk = await asyncpg.connect(logins["billing"])
    try:
        await add_operators(owner, o31="operator", o32="viewer")
        channel = await owner.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'gdw1376', '0314-25394') RETURNING id"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="needs an authenticated operator"):
            await insert_request(desk, channel, "31", [], 30)  # nobody signed in
        await authenticate(desk, "32", PASSWORD, "viewer")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="with the operator role"):
            await insert_request(desk, channel, "32", [], 30)
        await authenticate(desk, "31", PASSWORD, "operator")
        request_id = await insert_request(desk, channel, "31", [], 30)
        assert await owner.fetchval("SELECT state FROM archive_requests") == "requested"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only the daemon"):
            await desk.execute("UPDATE archive_requests SET state = 'running' WHERE id = $1", request_id)
    finally:
        await desk.close()
        await owner.close()


async def test_a_starting_daemon_fails_what_its_predecessor_left_running_and_expires_the_overdue(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The engine's built-in service (as the daemon composes it): a request found running was cut off
    with its daemon (failed, saying so); one nobody took before its expiry is marked expired."""
    sim = SimConcentrator(ConcentratorSpec(port=free_port(), address=ADDRESS, meters=2))  # never started
    conn = await asyncpg.connect(pg_dsn)
    engine = None
    try:
        await import_inventory(
            conn, read_inventory(inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim))
        )
        await add_operators(conn, o31="operator")
        channel = await conn.fetchval("SELECT id FROM channels WHERE name = 'conc-1'")
        cut_off = await insert_request(conn, channel, "31", [], 60)
        await conn.execute("UPDATE archive_requests SET state = 'running' WHERE id = $1", cut_off)
        overdue = await insert_request(conn, channel, "31", [], 1)
        config = engine_config(["energy_import_kwh"])
        engine = engine_for(config, pg_dsn, tmp_path, DriverPort(hub=DialinHub()))
        await engine.start()

        async def both_final() -> bool:
            found = [await get_request(conn, i) for i in (cut_off, overdue)]
            return all(r is not None and r.final for r in found)

        await wait_until(both_final, 30, "both requests finished by the starting daemon")
        states = [await get_request(conn, i) for i in (cut_off, overdue)]
        assert [(r.state, r.result) for r in states if r is not None] == [
            ("failed", INTERRUPTED),
            ("expired", EXPIRED),
        ]
    finally:
        if engine is not None:
            await engine.stop()
        await conn.close()
