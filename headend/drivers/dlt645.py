"""The DL/T 645 meter driver (2007 and 1997 editions) on a raw channel.

Every request goes through the channel's exchange (one at a time per bus, timeouts, retries, echo
suppression). Multi-frame replies are read to the end. Relay switching is confirmed only by
reading status word 3 back; the trip/close event record is kept as evidence.

The one-byte additive checksum misses corruptions that move value between bytes, so a read is
believed only when the redundancy the meter gives agrees: the reply's DI and length match the
request, every digit is BCD, an energy block's total equals the sum of its tariffs (within one
digit per tariff) and every energy register can follow its last accepted value (the VEE bound,
:mod:`headend.drivers.plausibility`). A reply that fails is read again; the second reply is taken
when it passes or says exactly the same, else the quantities are discarded (``discarded``, logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from headend.drivers.base import (
    Capabilities,
    DriverError,
    EventRecord,
    LineError,
    MeterRefused,
    MeterTimeout,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
    load_model,
)
from headend.drivers.plausibility import RegisterGuard
from headend.secrets import Credentials
from headend.transport import ChannelUnavailable, ExchangeTimeout, FrameBus
from headend.vocabulary import SwitchOperation, SwitchStatus
from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    Deframer,
    Frame,
    assemble_read,
    build_control,
    build_read,
    build_read_followup,
    build_read_profile,
    build_time_sync,
    build_write,
    decode,
)
from protocols.dlt645.errors import EncodeError, PayloadError
from protocols.dlt645.events import EVENT_SOURCES, STATUS_EVENTS, EventSource
from protocols.dlt645.link import address_to_wire, unicast_address
from protocols.dlt645.records import (
    RELAY_STATUS_DI,
    event_time,
    power_down_record,
    relay_status,
    stamp_record,
    switch_record,
)

R = TypeVar("R")
log = logging.getLogger(__name__)

ACTIONS = {
    "off": "trip",
    "on": "close",
    "close_allowed": "close_allowed",
    "alarm": "alarm",
    "alarm_release": "alarm_release",
}
READ_FUNCTIONS = (0x11, 0x12, 0x01, 0x02)  # replies carry the DI of the request
PROFILE_BATCH = 8
# 06 record field -> the meter's interval quantity (the same names as a concentrator's curves)
PROFILE_QUANTITIES = {
    "energy_import_kwh": "energy_import_kwh",
    "energy_export_kwh": "energy_export_kwh",
    **{f"voltage_{p}_v": f"voltage_{p}_v" for p in "abc"},
    **{f"current_{p}_a": f"current_{p}_a" for p in "abc"},
    "active_power_total_kw": "power_kw",
    **{f"active_power_{p}_kw": f"power_{p}_kw" for p in "abc"},
    "reactive_power_total_kvar": "reactive_power_kvar",
    **{f"reactive_power_{p}_kvar": f"reactive_power_{p}_kvar" for p in "abc"},
    "pf_total": "pf",
    **{f"pf_{p}": f"pf_{p}" for p in "abc"},
}
# 06 class 4 register -> the quantity of its increase over one interval, stored at the interval's end
# (a concentrator's AFN 0D F97..F100 energy-quantity curves)
PROFILE_INTERVAL_QUANTITIES = {
    "energy_import_kwh": "energy_import_interval_kwh",
    "combined_reactive_1_kvarh": "reactive_import_interval_kvarh",
    "energy_export_kwh": "energy_export_interval_kwh",
    "combined_reactive_2_kvarh": "reactive_export_interval_kvarh",
}
PROFILE_INTERVAL = timedelta(minutes=15)
CLOCK_OPERATOR = "00000000"
ALARM_THRESHOLD_DIS = ("04001001", "04001002")  # prepaid alarm amounts 1 and 2, XXXXXX.XX yuan
MAX_AMOUNT = Decimal("999999.99")
CENT = Decimal("0.01")


def interval_increase(before: dict[str, Any] | None, end: dict[str, Any]) -> dict[str, float]:
    """The interval quantities of the 06 record ``end``: each class 4 register's increase since
    ``before``, the record one :data:`PROFILE_INTERVAL` earlier (none without it, or for a register
    either record lacks)."""
    if before is None or end["time"] - before["time"] != PROFILE_INTERVAL:
        return {}
    return {
        quantity: round(float(end[field]) - float(before[field]), 4)
        for field, quantity in PROFILE_INTERVAL_QUANTITIES.items()
        if end.get(field) is not None and before.get(field) is not None
    }


class Dlt645Driver:
    """One DL/T 645 meter behind a channel (see the module docstring)."""

    def __init__(
        self,
        channel: FrameBus,
        address: str,
        *,
        edition: int = 2007,
        model: str | None = None,
        credentials: Credentials | None = None,
        utc_offset: timedelta = timedelta(hours=8),
        turnaround_s: float | None = None,
        confirm_timeout_s: float = 30.0,
        confirm_poll_s: float = 1.0,
    ) -> None:
        self.channel = channel
        self.address = address
        self.edition = edition
        self.capabilities = self.capabilities_of(edition)
        description = load_model(model or "dlt645-generic")
        editions = description.get("editions", {})
        if str(edition) not in editions:
            raise NotSupported(f"meter model {model!r} has no DL/T 645-{edition} read plan")
        self.plan: dict[str, str] = dict(editions[str(edition)])
        # the event kinds this model keeps (a model file's "events" list per edition; default: all)
        kept = description.get("events", {}).get(str(edition))
        self.event_kinds: frozenset[str] | None = None if kept is None else frozenset(kept)
        self._event_counts: dict[str, int] = {}  # kind -> the meter's occurrence count last read
        # block DI -> the quantity at each position of its value list (None: a position not read)
        self.blocks: dict[str, list[str | None]] = description.get("blocks", {}).get(str(edition), {})
        self.refused_blocks: set[str] = set()  # block reads this meter answered with an error
        self._steps: dict[tuple[str, ...], list[tuple[str | None, list[tuple[int, str]]]]] = {}
        self.credentials = credentials
        self.refusals = 0
        self.last_refusal = ""
        self.utc_offset = utc_offset
        self.turnaround_s = turnaround_s
        self.confirm_timeout_s = confirm_timeout_s  # relay read-back window after a switch
        self.confirm_poll_s = confirm_poll_s
        self.last_rtt_s: float | None = None
        self.unsupported: dict[str, str] = {}
        self.guard = RegisterGuard.for_protocol(f"dlt645-{edition}")  # last accepted energy registers
        self.discarded: dict[str, str] = {}  # quantities of the last read not believed, and why
        self.went_back: dict[str, tuple[float, float]] = {}  # of those: registers read lower (last, read)
        self.discards = 0
        self.unbalanced_blocks: set[str] = set()  # energy blocks whose total the meter keeps apart
        self._gap: float | None = None  # total minus the sum of tariffs of the last energy block read
        self._wire_address = address_to_wire(address)
        # DI -> (read request, its acceptor): a meter is asked the same few DIs every cycle
        self._reads: dict[str, tuple[bytes, Callable[[bytes], bool]]] = {}

    @staticmethod
    def capabilities_of(edition: int) -> Capabilities:
        """2007 meters keep a profile and event records and have a standard relay; 1997 only a clock."""
        if edition == 2007:
            return Capabilities(memory=True, events=True, relay=True, clock=True)
        return Capabilities(clock=True)

    # -- exchanges ----------------------------------------------------------------------------

    def _acceptor(self, request: bytes) -> Callable[[bytes], bool]:
        """Accept only this meter's reply to *this* request: same function and, for reads, same DI.

        A late reply to an earlier request (e.g. another quantity) is ignored, never mis-attributed.
        """
        frame = request.lstrip(b"\xfe")
        function = frame[8] & 0x1F
        di_size = (4 if self.edition == 2007 else 2) if function in READ_FUNCTIONS else 0
        di_wire = frame[10 : 10 + di_size]
        address = self._wire_address

        def accept(raw: bytes) -> bool:
            control = raw[8]
            if not control & 0x80 or raw[1:7] != address or control & 0x1F != function:
                return False
            return bool(control & 0x40) or raw[10 : 10 + di_size] == di_wire

        return accept

    async def _request(
        self,
        request: bytes,
        reply_size: int = 64,
        accept: Callable[[bytes], bool] | None = None,
        *,
        once: bool = False,
        secret: bool = False,
    ) -> Frame:
        """One exchange (``secret``: the request carries the meter password)."""
        try:
            raw, rtt = await self.channel.exchange(
                request,
                Deframer(),
                accept or self._acceptor(request),
                reply_size=reply_size,
                turnaround_s=self.turnaround_s,
                once=once,
                secret=secret,
            )
        except ExchangeTimeout as exc:
            if exc.noise:
                raise LineError(f"checksum error or garbage on the line: {exc}") from None
            raise MeterTimeout(str(exc)) from None
        self.last_rtt_s = rtt
        frame = decode(raw, edition=self.edition)
        if frame.is_abnormal:
            refusal = MeterRefused(frame.error_flags or [])
            self.refusals += 1  # abnormal replies, counted and logged by the engine's worker
            self.last_refusal = str(refusal)
            raise refusal
        return frame

    async def read_di(self, di: str, *, request: bytes | None = None) -> Any:
        """Read one data identifier, following multi-frame replies to the end."""
        if request is None:
            cached = self._reads.get(di)
            if cached is None:
                request = build_read(self.address, di, self.edition)
                cached = self._reads[di] = (request, self._acceptor(request))
            first = await self._request(cached[0], 220, cached[1])
        else:
            first = await self._request(request, 220)
        frames = [first]
        seq = 1
        while frames[-1].has_followup:
            frames.append(await self._request(build_read_followup(self.address, di, seq, self.edition), 220))
            seq += 1
        if len(frames) == 1:
            if "value_error" in first.fields:
                raise DriverError(f"{di}: {first.fields['value_error']}")
            return first.value
        return assemble_read(frames)[1]

    # -- the driver interface -----------------------------------------------------------------

    async def read(self, quantities: list[str]) -> dict[str, float]:
        """Read canonical quantities; unsupported ones land in ``self.unsupported``, not in the result.

        Two or more quantities of one block (e.g. total and tariff energy, 00 01 FF 00) are read with
        one block request; a meter that refuses the block, or returns fewer items than asked, gets the
        missing quantities read one by one.
        """
        values: dict[str, float] = {}
        self.unsupported = {}
        self.discarded = {}
        self.went_back = {}
        for block, positions in self._plan_steps(quantities):
            values |= await self._read_believed(block, positions)
        for quantity, value in values.items():
            self.guard.accept(quantity, value)
        return values

    async def _read_believed(self, block: str | None, positions: list[tuple[int, str]]) -> dict[str, float]:
        """One request's quantities, read again when they fail a check (module docstring)."""
        self._gap = None
        got, doubt = await self._read_step(block, positions)
        if doubt is None:
            return got
        first_gap, self._gap = self._gap, None
        try:
            again, second_doubt = await self._read_step(block, positions)
        except DriverError:
            again, second_doubt = {}, "no second reply"
        if block is not None and self._same_gap(first_gap, self._gap):
            self.unbalanced_blocks.add(block)  # the meter keeps its total apart: not checked again
            second_doubt = self._register_doubt(again)
        if again and (again == got or second_doubt is None):
            return again
        self.discards += 1
        for quantity in got:
            self.discarded[quantity] = doubt
        self._note_went_back(got, again)
        log.warning(
            "meter %s: reply not believed, read twice (%s; then %s); %s not stored",
            self.address,
            doubt,
            second_doubt,
            ", ".join(got),
        )
        return {}

    def _note_went_back(self, got: dict[str, float], again: dict[str, float]) -> None:
        """Registers of a discarded step that every reply (one when the second failed) read below
        their last accepted value: the engine keeps them as findings, never as readings."""
        for quantity, value in got.items():
            previous = self.guard.fell_from(quantity, value)
            second = again.get(quantity)
            if previous is None or (second is not None and self.guard.fell_from(quantity, second) is None):
                continue
            self.went_back[quantity] = (previous, value if second is None else second)

    @staticmethod
    def _same_gap(first: float | None, second: float | None) -> bool:
        """Two reads of an energy block miss their tariff sum by the same amount (within rounding):
        the meter's own accounting (e.g. a tariff it does not report), not a corrupted reply."""
        return first is not None and second is not None and abs(first - second) <= 0.05

    def _register_doubt(self, values: dict[str, float]) -> str | None:
        """The first energy register in ``values`` that cannot follow its last accepted value."""
        return next((d for d in (self.guard.doubt(q, v) for q, v in values.items()) if d), None)

    async def _read_step(
        self, block: str | None, positions: list[tuple[int, str]]
    ) -> tuple[dict[str, float], str | None]:
        """The values of one step of the plan and the first doubt about them (None: believable)."""
        values: dict[str, float] = {}
        doubt = None
        if block is None:
            await self._read_item(positions[0][1], values)
        else:
            doubt = await self._read_block(block, positions, values)
        return values, doubt or self._register_doubt(values)

    async def _read_item(self, quantity: str, values: dict[str, float]) -> None:
        """Read one quantity into ``values``, or note why it cannot be read."""
        di = self.plan.get(quantity)
        if di is None:
            self.unsupported[quantity] = "not in the meter model"
            return
        try:
            values[quantity] = self._canonical(quantity, await self.read_di(di))
        except MeterRefused as exc:
            self.unsupported[quantity] = str(exc)

    def _plan_steps(self, quantities: list[str]) -> list[tuple[str | None, list[tuple[int, str]]]]:
        """The requests for ``quantities``, cached: (block DI, [(position in its value list, quantity)])
        for a block read, (None, [(0, quantity)]) for a single item."""
        key = tuple(quantities)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        steps: list[tuple[str | None, list[tuple[int, str]]]] = []
        left = list(dict.fromkeys(quantities))
        for block, members in self.blocks.items():
            positions = [(i, q) for i, q in enumerate(members) if q in left]
            if len(positions) > 1 and block not in self.refused_blocks:
                steps.append((block, positions))
                left = [q for q in left if q not in members]
        steps.extend((None, [(0, q)]) for q in left)
        self._steps[key] = steps
        return steps

    async def _read_block(
        self, di: str, positions: list[tuple[int, str]], values: dict[str, float]
    ) -> str | None:
        """Read one block into ``values``; what it does not deliver is read item by item. Returns
        why an energy block is not believable (its total is not the sum of its tariffs), else None."""
        missing = positions
        doubt = None
        try:
            items = await self.read_di(di)
        except MeterRefused:
            self.refused_blocks.add(di)  # this meter has no such block: single items from now on
            self._steps.clear()
        except DriverError:
            pass  # an undecodable block this time: the items may still read
        else:
            if isinstance(items, list):
                doubt = self._total_doubt(di, items)
                missing = [(i, q) for i, q in positions if i >= len(items)]
                for index, quantity in positions:
                    if index < len(items):
                        values[quantity] = self._canonical(quantity, items[index])
        for _index, quantity in missing:
            await self._read_item(quantity, values)
        return doubt

    def _total_doubt(self, di: str, items: list[Any]) -> str | None:
        """An energy block (2007 ``00 xx FF yy``, 1997 ``9xxF``) lists the total, then each tariff:
        the total must be their sum, give or take one 0.01 digit per tariff."""
        energy = di[:2] == "00" and di[4:6] == "FF" if self.edition == 2007 else di[0] == "9" and di[3] == "F"
        if not energy or len(items) < 2 or di in self.unbalanced_blocks:
            return None
        total, tariffs = float(items[0]), [float(v) for v in items[1:]]
        self._gap = total - sum(tariffs)
        if abs(self._gap) <= 0.01 * len(tariffs) + 1e-6:
            return None
        return f"block {di}: total {total:.2f} is not the sum of its tariffs {sum(tariffs):.2f}"

    @staticmethod
    def _canonical(quantity: str, value: Any) -> float:
        if quantity == "relay":
            return 0.0 if value["relay_open"] else 1.0  # 1 = closed (supply on), as Modbus relay registers
        return float(value)

    def meter_time(self, utc: datetime) -> datetime:
        """A UTC time as the meter's local time (what its time items carry)."""
        return self._local(utc)

    def _local(self, utc: datetime) -> datetime:
        return (utc.astimezone(UTC) + self.utc_offset).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return (local - self.utc_offset).replace(tzinfo=UTC)

    async def read_profile(
        self, start: datetime, end: datetime, quantities: Sequence[str] | None = None
    ) -> list[ProfileRecord]:
        """Energy registers, voltage, current, power and power factor from the load profile (06
        records, :data:`PROFILE_QUANTITIES`) with each interval's energy quantities
        (:data:`PROFILE_INTERVAL_QUANTITIES`), else the daily freeze (05 06)."""
        if self.edition != 2007:
            raise NotSupported("1997 meters have no load profile")
        try:
            return await self._load_profile(start, end)
        except MeterRefused:
            return await self._daily_freeze(start, end)

    async def _load_profile(self, start: datetime, end: datetime) -> list[ProfileRecord]:
        """06 records in [start, end], read from one interval earlier so that the first record's
        interval quantities have the register values they grew from."""
        records: list[ProfileRecord] = []
        first = self._local(start)
        cursor = first - PROFILE_INTERVAL
        stop = self._local(end)
        previous: dict[str, Any] | None = None
        while cursor <= stop:
            request = build_read_profile(self.address, "06000001", PROFILE_BATCH, cursor)
            try:
                batch = await self.read_di("06000001", request=request)
            except MeterRefused:
                if records:
                    break
                raise
            fresh = [r for r in batch if cursor <= r["time"] <= stop and "energy_import_kwh" in r]
            for record in fresh:
                if record["time"] >= first:
                    values = {
                        quantity: float(record[field])
                        for field, quantity in PROFILE_QUANTITIES.items()
                        if record.get(field) is not None
                    }
                    values.update(interval_increase(previous, record))
                    records.append(ProfileRecord(self._utc(record["time"]), values, "load_profile"))
                previous = record
            if not fresh or len(batch) < PROFILE_BATCH:
                break
            cursor = fresh[-1]["time"] + timedelta(minutes=1)
        return records

    async def _daily_freeze(self, start: datetime, end: datetime) -> list[ProfileRecord]:
        records = []
        for occurrence in range(1, 63):
            try:
                when = await self.read_di(f"050600{occurrence:02X}")
            except MeterRefused:
                break
            ts = self._utc(when)
            if ts < start:
                break
            if ts <= end:
                energies = await self.read_di(f"050601{occurrence:02X}")
                records.append(ProfileRecord(ts, {"energy_import_kwh": float(energies[0])}, "daily_freeze"))
        return sorted(records, key=lambda r: r.ts)

    async def read_clock(self) -> datetime:
        """The meter's clock as a UTC time."""
        date_di, time_di = ("04000101", "04000102") if self.edition == 2007 else ("C010", "C011")
        day: date = await self.read_di(date_di)
        clock: time = await self.read_di(time_di)
        return self._utc(datetime.combine(day, clock))

    async def set_clock(self, *, broadcast: bool) -> None:
        """Set the meter's clock to now: a broadcast 0x08 (no password) or an addressed write.

        When and how to correct is the engine's clock policy (headend.engine.clock), not the driver's.
        """
        if broadcast:
            await self.channel.send_only(build_time_sync(self._local(datetime.now(UTC)), BROADCAST_ADDRESS))
            return
        credentials = self._require_credentials()
        current = self._local(datetime.now(UTC))
        for di, value in (
            ("04000101", current.date()),
            ("04000102", (current + timedelta(seconds=1)).time()),
        ):
            await self._request(
                build_write(
                    self.address,
                    di,
                    value,
                    password_level=credentials.level,
                    password=credentials.password,
                    operator=CLOCK_OPERATOR,
                ),
                secret=True,
            )

    async def read_alarm_thresholds(self) -> tuple[Decimal, Decimal]:
        """A money-prepaid meter's alarm amounts 1 and 2 (04 00 10 01 / 02, yuan): below the first the
        meter warns its customer, below the second it warns harder (State Grid 备案 layout)."""
        if self.edition != 2007:
            raise NotSupported("1997 meters keep no prepaid alarm amounts")
        first = await self.read_di(ALARM_THRESHOLD_DIS[0])
        second = await self.read_di(ALARM_THRESHOLD_DIS[1])
        return _yuan(first), _yuan(second)

    async def write_alarm_thresholds(self, first: Decimal, second: Decimal, *, operator: str) -> None:
        """Write alarm amounts 1 and 2 with the configured password, then read both back: a value the
        meter does not hold afterwards is a DriverError; a refusal is MeterRefused with its reason.

        A parameter campaign decides which meters get which amounts; this writes one meter."""
        if not Decimal(0) <= second <= first <= MAX_AMOUNT:
            raise ValueError(
                f"alarm amounts must be 0 <= second <= first <= {MAX_AMOUNT}, got {first}, {second}"
            )
        if self.edition != 2007:
            raise NotSupported("1997 meters keep no prepaid alarm amounts")
        credentials = self._require_credentials()
        for di, amount in zip(ALARM_THRESHOLD_DIS, (first, second), strict=True):
            request = build_write(
                self.address,
                di,
                amount.quantize(CENT),
                password_level=credentials.level,
                password=credentials.password,
                operator=operator,
            )
            await self._request(request, secret=True)
        held = await self.read_alarm_thresholds()
        if held != (first.quantize(CENT), second.quantize(CENT)):
            raise DriverError(
                f"meter {self.address} holds alarm amounts {held[0]}, {held[1]} after the write"
            )

    async def write_item(self, di: str, value: Any, *, operator: str) -> None:
        """Write one parameter item with the meter's password: one frame, sent at most once (a lost
        reply is ``MeterTimeout``, never a second write: the caller reads the item back); a refusal
        is ``MeterRefused``."""
        credentials = self._require_credentials()
        await self._request(
            build_write(
                self.address,
                di,
                value,
                password_level=credentials.level,
                password=credentials.password,
                operator=operator,
            ),
            once=True,
            secret=True,
        )

    def _require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise NotSupported(f"no password configured for meter {self.address}")
        return self.credentials

    async def read_events(self, kinds: list[str], *, last: int = 3) -> list[EventRecord]:
        """The records of each event kind the meter (and its model) keeps that are new since the
        last call that returned: the occurrence count is read first and only the records it added
        are fetched (at most ``last``; all ``last`` on the first call, the store skips those already
        seen). A call that fails part-way leaves the counts as they were, so nothing it read is lost.
        Status-word kinds (clock battery low) give one record of the condition now (2007 only)."""
        if self.edition != 2007:
            raise NotSupported("1997 meters keep no standard event records")
        events: list[EventRecord] = []
        counts_before = dict(self._event_counts)
        try:
            for kind in kinds:
                if self.event_kinds is not None and kind not in self.event_kinds:
                    continue
                if kind in STATUS_EVENTS:
                    events.append(await self._status_event(kind))
                elif kind in EVENT_SOURCES:
                    events += await self._new_records(kind, EVENT_SOURCES[kind], last)
        except BaseException:
            # the records read so far are dropped with the failure: the next call reads them again
            self._event_counts = counts_before
            raise
        return events

    async def _new_records(self, kind: str, source: EventSource, last: int) -> list[EventRecord]:
        count = int(await self.read_di(source.count_di))
        seen = self._event_counts.get(kind)
        fresh = count - seen if seen is not None and count >= seen else count  # fewer: the meter was cleared
        records = []
        for occurrence in range(1, min(fresh, last, 10) + 1):
            values = [await self.read_di(di) for di in source.record_dis(occurrence)]
            record = self._event_record(kind, source, values)
            record.details["sequence"] = count - occurrence + 1
            records.append(record)
        self._event_counts[kind] = count
        return records

    def _event_record(self, kind: str, source: EventSource, values: list[object]) -> EventRecord:
        if source.layout == "split":
            start, end = (self._typed(event_time, v) for v in values)
            return EventRecord(kind, self._utc(start), self._utc(end))
        if source.layout == "span":
            span = self._typed(power_down_record, values[0])
            return EventRecord(kind, self._utc(span.start), self._utc(span.end) if span.end else None)
        stamped = self._typed(stamp_record if source.layout == "stamp" else switch_record, values[0])
        return EventRecord(kind, self._utc(stamped.time), details=dict(stamped.details))

    async def _status_event(self, kind: str) -> EventRecord:
        di, bit = STATUS_EVENTS[kind]
        word = await self.read_di(di)
        if not isinstance(word, dict) or not isinstance(word.get(bit), bool):
            raise DriverError(f"status word {di}: bit {bit} missing")
        return EventRecord(kind, datetime.now(UTC), details={"active": word[bit]})

    async def relay_state(self) -> RelayState:
        """Status word 3: bit 4 relay open, bit 6 commanded open, bit 7 pre-trip alarm, bit 12 keep-power."""
        if self.edition != 2007:
            raise NotSupported("1997 meters have no standard relay status word")
        word = self._typed(relay_status, await self.read_di(RELAY_STATUS_DI))
        return RelayState(
            open=word.relay_open,
            command_open=word.command_open,
            keep_power=word.keep_power,
            pre_trip_alarm=word.pre_trip_alarm,
            raw=word.raw,
        )

    @staticmethod
    def _typed(record: Callable[[object], R], value: object) -> R:
        """``record(value)``; a value not shaped as its DI promises is a driver error, not a crash."""
        try:
            return record(value)
        except PayloadError as exc:
            raise DriverError(str(exc)) from None

    async def switch(
        self,
        action: SwitchOperation,
        *,
        operator: str,
        confirm_timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> SwitchResult:
        """Send 0x1C (off = trip, on = direct close, close_allowed, alarm = 2A, alarm_release = 2B) and
        confirm by reading status word 3 back (bit 4, bit 6 for close-allowed, bit 7 for the alarm)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown relay action {action!r}; use {', '.join(ACTIONS)}")
        try:
            unicast_address(self.address)
        except EncodeError as exc:  # a wildcard or broadcast would switch every meter it reaches
            return SwitchResult("refused", action, reason=str(exc))
        if self.edition != 2007:
            return SwitchResult("failed", action, reason="1997 meters have no standard remote control")
        if self.credentials is None:
            return SwitchResult("failed", action, reason=f"no password configured for meter {self.address}")
        expiry = self._local(datetime.now(UTC)) + timedelta(minutes=5)
        request = build_control(
            self.address,
            ACTIONS[action],
            password_level=self.credentials.level,
            password=self.credentials.password,
            operator=operator,
            expiry=expiry,
        )
        evidence: dict[str, Any] = {"operator": operator, "expiry": expiry.isoformat()}
        try:
            await self._request(request, once=True, secret=True)  # never repeated: a lost reply is read back
            evidence["ack"] = True
        except MeterRefused as exc:
            # the relay may have moved all the same (a meter that trips, then answers abnormally)
            evidence["ack"], evidence["abnormal_reply"] = False, str(exc)
            state = await self._read_back()
            if state is not None and not self._reached(action, state):
                reason = "keep-power active" if state.keep_power and action == "off" else str(exc)
                return SwitchResult("refused", action, state, reason, evidence)
        except MeterTimeout as exc:
            evidence["ack"] = False  # the command may still have arrived: the read-back decides
            evidence["no_reply"] = str(exc)
        return await self._confirm(
            action,
            evidence,
            self.confirm_timeout_s if confirm_timeout_s is None else confirm_timeout_s,
            self.confirm_poll_s if poll_s is None else poll_s,
        )

    async def _confirm(
        self, action: SwitchOperation, evidence: dict[str, Any], timeout_s: float, poll_s: float
    ) -> SwitchResult:
        deadline = asyncio.get_running_loop().time() + timeout_s
        state: RelayState | None = None
        while True:
            state = await self._read_back()
            if state is not None and self._reached(action, state):
                record_di = "1D00FF01" if action == "off" else "1E00FF01"
                if action in ("off", "on"):
                    try:
                        evidence["event_record"] = await self.read_di(record_di)
                    except DriverError as exc:
                        evidence["event_record_error"] = str(exc)
                return SwitchResult("confirmed", action, state, "", evidence)
            if asyncio.get_running_loop().time() >= deadline:
                reason = "relay state not reached before the confirmation timeout"
                status: SwitchStatus = "unconfirmed" if evidence.get("ack") else "failed"
                return SwitchResult(status, action, state, reason, evidence)
            await asyncio.sleep(poll_s)

    async def _read_back(self) -> RelayState | None:
        """The relay state, or None when it cannot be read now (no answer, a damaged reply, or a
        dial-in device that is redialling)."""
        try:
            return await self.relay_state()
        except (MeterTimeout, LineError, ChannelUnavailable):
            return None

    @staticmethod
    def _reached(action: SwitchOperation, state: RelayState) -> bool:
        if action in ("alarm", "alarm_release"):
            return state.pre_trip_alarm is (action == "alarm")
        if action == "off":
            return state.open
        if action == "on":
            return not state.open
        return state.command_open is False


def _yuan(value: object) -> Decimal:
    """A BCD money amount as decoded (a float of two decimals) in yuan, exactly."""
    if not isinstance(value, int | float):
        raise DriverError(f"alarm amount {value!r} is not a number")
    return Decimal(str(value)).quantize(CENT)
