"""The console in a real browser (Debian's chromium and chromium-driver through selenium, headless):
readings stored by the real engine from a simulated meter drawn as the day's load curve, a disconnect
created by one operator and approved by another, executed by the daemon's fee-control pass and
confirmed by read-back, and a viewer who sees no write buttons and whose forged post is refused.
Screenshots are saved in the test's directory."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from simulators import BusSpec, SimBus, start_bus
from tests.params.test_param_sets import WINTER
from tests.support.cli import headend_in_process
from tests.support.engine import engine_for
from tests.support.operators import PASSWORD, add_operators, operator_env
from tests.support.waiting import wait_until, wait_until_sync
from tests.support.web import running_console, signed_in

STATION = ZoneInfo("Asia/Shanghai")
STEP = timedelta(minutes=15)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,1700",
)


def chromium(profile: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile; fails (never skips) when it is not installed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, (
        "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
    )
    options = Options()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Page:
    """One browser on the console: the few things a user does, each waiting for its page."""

    def __init__(self, driver: webdriver.Chrome, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def sign_in(self, operator: str) -> None:
        self.open("/signin")
        self.driver.find_element(By.ID, "operator").send_keys(operator)
        self.driver.find_element(By.ID, "password").send_keys(PASSWORD)
        self.driver.find_element(By.ID, "sign-in").click()
        wait_until_sync(
            lambda: bool(self.driver.find_elements(By.ID, "who")), 10, f"operator {operator} signed in"
        )
        assert f" {operator} (" in self.driver.find_element(By.ID, "who").text

    def sign_out(self) -> None:
        self.driver.find_element(By.ID, "sign-out").click()
        wait_until_sync(lambda: bool(self.driver.find_elements(By.ID, "sign-in")), 10, "the sign-in form")

    def ids(self, *ids: str) -> set[str]:
        """Which of the element ids the page shows."""
        return {i for i in ids if self.driver.find_elements(By.ID, i)}

    def text(self, element_id: str) -> str:
        """The element's text ("" while the page is being replaced)."""
        try:
            return str(self.driver.find_element(By.ID, element_id).text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def state(self) -> str:
        return str(self.driver.find_element(By.ID, "command-state").get_attribute("data-state"))

    def data_state(self, element_id: str) -> str:
        """The element's ``data-state`` ("" while the page is being replaced, e.g. by its refresh)."""
        try:
            return str(self.driver.find_element(By.ID, element_id).get_attribute("data-state"))
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        return path


async def _stored_today(conn: asyncpg.Connection, address: str, start: datetime) -> list[datetime]:
    rows = await conn.fetch(
        "SELECT r.ts FROM readings r JOIN meters m ON m.id = r.meter_id "
        "JOIN quantities q ON q.id = r.quantity_id AND q.name = 'energy_import_kwh' "
        "WHERE m.address = $1 AND r.ts >= $2 AND r.value IS NOT NULL ORDER BY r.ts",
        address,
        start,
    )
    return [r["ts"] for r in rows]


async def _engine_and_meter(pg_dsn: str, tmp_path: Path, bus: SimBus, midnight: datetime):  # type: ignore[no-untyped-def]
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    installed = (midnight - timedelta(days=3)).astimezone(UTC).isoformat()
    inventory.write_text(
        f'[[channels]]\nname = "bus-a"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "bus-a"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
        f'model = "dlt645-generic"\nname = "flat-12"\nhas_relay = true\ninstalled_at = "{installed}"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o6="admin", o7="operator", o8="approver", o9="viewer")
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "15m", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {
                "enabled": True,
                "lookback": "4d",
                "retry_every": "1h",
                "max_intervals_per_meter": 400,
            },
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    port = DriverPort(MeterSecrets(Credentials(2, "000000")))
    engine = engine_for(config, pg_dsn, tmp_path, port, answers_requests=True)
    return conn, engine, meter


async def test_the_console_in_a_browser(pg_dsn: str, tmp_path: Path) -> None:
    now = datetime.now(STATION)
    midnight = datetime.combine(now.date(), time(0), STATION)
    intervals = int((now - midnight) / STEP) + 1  # 00:00 .. the last quarter hour, local
    bus = await start_bus(BusSpec(meters=1, seed=91, history_days=5))
    conn, engine, meter = await _engine_and_meter(pg_dsn, tmp_path, bus, midnight)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    await engine.start()
    driver = await asyncio.to_thread(chromium, tmp_path / "chromium-profile")
    try:

        async def day_stored() -> bool:
            await engine.writer.flush()
            return len(await _stored_today(conn, meter.address, midnight)) >= intervals

        await wait_until(day_stored, 60, "today's readings backfilled from the load profile and read")
        with running_console(pg_dsn, tmp_path) as url:
            page = Page(driver, url, shots)
            await asyncio.to_thread(page.sign_in, "7")
            assert page.ids("collection", "fee-control", "not-read") == {
                "collection",
                "fee-control",
                "not-read",
            }
            page.shot("overview")

            def meter_page() -> list[str]:
                if page.ids("load-curve"):  # looking again: reload
                    page.open("/meters/flat-12")
                else:  # from the overview, as a user finds a meter
                    driver.find_element(By.ID, "meter-search").send_keys("flat-12\n")
                    wait_until_sync(lambda: bool(page.ids("load-curve")), 10, "the meter page")
                circles = driver.find_elements(By.CSS_SELECTOR, "#load-curve svg.load-curve circle.point")
                return [str(c.get_attribute("data-ts")) for c in circles]

            async def curve_matches_the_store() -> bool:
                drawn = await asyncio.to_thread(meter_page)
                stored = await _stored_today(conn, meter.address, midnight)
                return [datetime.fromisoformat(ts) for ts in drawn] == stored

            await wait_until(curve_matches_the_store, 30, "one circle per stored reading of today")
            drawn = driver.find_elements(By.CSS_SELECTOR, "#load-curve svg.load-curve circle.point")
            assert len(drawn) >= intervals
            assert page.text("meter-name") == "flat-12" and page.ids("relay-actions", "on-demand") == {
                "relay-actions",
                "on-demand",
            }
            bars = driver.find_elements(By.CSS_SELECTOR, "#daily svg.daily-bars rect.bar")
            assert bars and bars[-1].get_attribute("data-day") == now.date().isoformat()
            page.shot("meter-zh")

            # operator 7 reads the meter now (点抄): the daemon's request duty answers, the request's
            # page refreshes itself until the value arrives, and the value is stored as a reading
            def read_now() -> None:
                driver.find_element(By.ID, "read-now").click()
                wait_until_sync(lambda: bool(page.ids("request-state")), 10, "the request page")
                wait_until_sync(lambda: page.data_state("request-state") == "done", 30, "the daemon's answer")

            await asyncio.to_thread(read_now)
            value_cell = '#request-values td[data-quantity="energy_import_kwh"]'
            shown = driver.find_element(By.CSS_SELECTOR, value_cell)
            stored = await conn.fetchval(
                "SELECT r.value FROM readings r JOIN meters m ON m.id = r.meter_id"
                " JOIN reading_sources s ON s.id = r.source_id AND s.name = 'on_demand'"
                " JOIN quantities q ON q.id = r.quantity_id AND q.name = 'energy_import_kwh'"
                " WHERE m.address = $1",
                meter.address,
            )
            assert stored is not None and float(shown.text) == stored
            page.shot("read-now")
            await asyncio.to_thread(page.open, "/meters/flat-12")

            # operator 7 asks for a disconnect: a persisted command waiting for a second operator
            def create_disconnect() -> str:
                Select(driver.find_element(By.ID, "command-action")).select_by_value("disconnect")
                driver.find_element(By.ID, "command-reason").send_keys("tamper found on site")
                driver.find_element(By.ID, "create-command").click()
                wait_until_sync(lambda: bool(page.ids("command-state")), 10, "the command page")
                return str(driver.current_url)

            command_url = await asyncio.to_thread(create_disconnect)
            command_id = int(command_url.rsplit("/", 1)[1])
            assert page.state() == "pending" and page.ids("approve", "cancel") == {"cancel"}
            assert bus.requests[0x1C] == 0 and not meter.model.relay.open  # nothing sent by the request
            page.shot("command-created")
            await asyncio.to_thread(page.sign_out)

            # approver 8 approves it
            await asyncio.to_thread(page.sign_in, "8")
            await asyncio.to_thread(page.open, f"/commands/{command_id}")
            assert page.ids("approve", "cancel") == {"approve"}
            driver.find_element(By.ID, "approve").click()
            await asyncio.to_thread(
                wait_until_sync, lambda: page.text("approved-by") == "8", 10, "approved by 8"
            )
            assert page.state() == "pending"

            # the daemon's fee-control pass executes it and confirms it by reading the relay back
            assert await run_pass(engine, datetime.now(UTC)) == [(command_id, "confirmed")]
            assert meter.model.relay.open and bus.requests[0x1C] == 1
            await asyncio.to_thread(page.open, f"/commands/{command_id}")
            assert page.state() == "confirmed" and not page.ids("approve", "cancel")
            assert "confirmed" in page.text("audit") and page.text("evidence") != "null"
            page.shot("command-confirmed")
            await asyncio.to_thread(page.open, "/meters/flat-12")
            assert page.text("relay-state") == "断开"  # open, in the default language
            driver.find_element(By.CSS_SELECTOR, "a.lang").click()
            await asyncio.to_thread(
                wait_until_sync, lambda: page.text("relay-state") == "open", 10, "English"
            )
            page.shot("meter-en")
            await asyncio.to_thread(page.sign_out)

            # a pending reconnect by operator 7, then a viewer: no write buttons, a forged post refused
            await asyncio.to_thread(page.sign_in, "7")
            await asyncio.to_thread(page.open, "/meters/flat-12")
            Select(driver.find_element(By.ID, "command-action")).select_by_value("reconnect")
            driver.find_element(By.ID, "command-reason").send_keys("paid at the desk")
            driver.find_element(By.ID, "create-command").click()
            await asyncio.to_thread(wait_until_sync, lambda: bool(page.ids("command-state")), 10, "command")
            reconnect = int(str(driver.current_url).rsplit("/", 1)[1])
            await asyncio.to_thread(page.sign_out)
            await asyncio.to_thread(page.sign_in, "9")
            await asyncio.to_thread(page.open, "/meters/flat-12")
            assert not page.ids("relay-actions", "read-now", "recollect") and page.ids("load-curve")
            await asyncio.to_thread(page.open, f"/commands/{reconnect}")
            assert page.state() == "pending" and not page.ids("approve", "cancel")
            await asyncio.to_thread(page.open, "/commands")
            assert not page.ids("new-command")
            page.shot("viewer-commands")

            # a time-of-use campaign made with the CLI (approved, not started): the viewer follows it
            set_file = tmp_path / "set.json"
            set_file.write_text(json.dumps(WINTER))
            for step in (
                ("params", "set", "add", "w", "--file", str(set_file), "--operator", "6"),
                ("params", "campaign", "create", "winter", "--set", "w", "--switch-at",
                 "2030-01-01T00:00:00+08:00", "--meter", "flat-12", "--operator", "7"),
                ("params", "campaign", "approve", "winter", "--operator", "8"),
            ):  # fmt: skip
                done = await asyncio.to_thread(headend_in_process, *step, "--dsn", pg_dsn, env=operator_env())
                assert done.returncode == 0, (step, done.stderr)
            await asyncio.to_thread(page.open, "/campaigns")
            driver.find_element(By.CSS_SELECTOR, '#campaigns a[href="/campaigns/winter"]').click()
            await asyncio.to_thread(wait_until_sync, lambda: bool(page.ids("campaign-meters")), 10, "it")
            assert "flat-12" in page.text("campaign-meters") and "0/1" in page.text("progress")
            page.shot("viewer-campaign")
            await asyncio.to_thread(page.open, "/campaigns")
            page.shot("viewer-campaigns")
            viewer_cookie = str(driver.get_cookie("headend_session")["value"])  # type: ignore[index]

            def forge(client: httpx.Client, with_csrf: bool) -> int:
                csrf = client.get("/api/me").json()["csrf"] if with_csrf else "forged"
                data = {"reason": "forged", "csrf": csrf}
                return client.post(f"/commands/{reconnect}/cancel", data=data).status_code

            viewer = httpx.Client(base_url=url, cookies={"headend_session": viewer_cookie})
            assert await asyncio.to_thread(forge, viewer, True) == 403  # a viewer, even with its CSRF token
            operator = await asyncio.to_thread(signed_in, url, "7")
            assert await asyncio.to_thread(forge, operator, False) == 403  # an operator, a forged token
            states = await conn.fetch("SELECT id, state::text FROM commands ORDER BY id")
            assert [tuple(r) for r in states] == [(command_id, "confirmed"), (reconnect, "pending")]
    finally:
        await asyncio.to_thread(driver.quit)
        await engine.stop()
        await conn.close()
        await bus.stop()
