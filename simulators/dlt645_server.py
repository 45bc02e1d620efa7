"""The DL/T 645 side of a simulated bus: answers every function code the codec implements.

``Dlt645Responder.handle(frame)`` takes one request frame (as the deframer delivers it) and returns
the replies of the addressed meter(s) with their turnaround delays; broadcasts get no reply.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    DLT645Error,
    EncodeError,
    Frame,
    build_abnormal,
    build_read_reply_frames,
    build_response,
    decode,
)
from protocols.dlt645 import functions as fc
from protocols.dlt645.link import address_to_wire
from simulators.dlt645_values import NoData, value_1997, value_2007
from simulators.meter import RelayRefused, SimMeter
from simulators.tou import SEASON_SWITCH, TABLE_SWITCH, TouRefused

MAX_READ_DATA = 200
SYNC_LIMIT = timedelta(minutes=5)
NO_SYNC_AFTER = time(23, 55)
NO_SYNC_BEFORE = time(0, 5)
ALARM_AMOUNTS = ("04001001", "04001002")  # a money-prepaid meter's alarm amounts 1 and 2, writable
WRITABLE_CLOCK = {"04000101", "04000102", "0400010C", "C010", "C011"}


@dataclass(slots=True)
class Dlt645Meter:
    """A meter model with its DL/T 645 identity: edition, passwords and line quirks."""

    model: SimMeter
    edition: int = 2007
    passwords: dict[int, str] = field(default_factory=dict)  # level -> 6 digits
    preamble: int = 0
    turnaround_s: float = 0.05
    jitter_s: float = 0.0
    block_reads: bool = True  # False: an older meter that refuses FF block DIs of energy and variables
    tariffs: int = 4  # tariffs in use: energy blocks carry the total and this many; higher ones refused
    control_faults: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, first, last) frame
    controls: int = 0  # relay control frames received so far
    control_actions: Counter[str] = field(default_factory=Counter)  # those frames by N1 (trip, alarm, ...)
    fault_counts: Counter[str] = field(default_factory=Counter)  # control faults injected
    offline_after_programming: int | None = None  # the meter stops answering after this many writes

    @property
    def address(self) -> str:
        return self.model.address

    def refuses(self, di: str, edition: int) -> bool:
        """Whether this meter answers ``di`` with an error: a block read on a meter without block
        reads, or a tariff above the tariffs in use."""
        if not self.block_reads and _is_block(di, edition):
            return True
        tariff = _energy_tariff(di, edition)
        return tariff is not None and tariff not in _BLOCK_POSITIONS and tariff > self.tariffs

    def trim(self, di: str, edition: int, value: Any) -> Any:
        """An active-energy block holds the total and the tariffs in use only."""
        if _energy_tariff(di, edition) in _BLOCK_POSITIONS and isinstance(value, list):
            return value[: 1 + self.tariffs]
        return value

    def control_fault(self) -> str | None:
        """Count one relay control frame; the fault scheduled for it (``control_*``), if any."""
        self.controls += 1
        for kind, first, last in self.control_faults:
            if first <= self.controls <= last:
                self.fault_counts[kind] += 1
                return kind
        return None

    def password_ok(self, frame: Frame) -> bool:
        level = frame.fields.get("password_level")
        return level is not None and self.passwords.get(level) == frame.fields.get("password")


_BLOCK_POSITIONS = (0xF, 0xFF)  # the "tariff" of a block DI (1997 nibble, 2007 byte)


def _energy_tariff(di: str, edition: int) -> int | None:
    """The tariff of a current forward/reverse active-energy DI (0 total), None for other DIs."""
    if edition == 2007:
        return int(di[4:6], 16) if di[:4] in ("0001", "0002") and di[6:] == "00" else None
    return int(di[3], 16) if di[:3] in ("901", "902") else None


def _is_block(di: str, edition: int) -> bool:
    """A block DI of energy, demand or instantaneous variables."""
    if edition == 2007:
        return di[:2] in ("00", "01", "02") and di[4:6].upper() == "FF"
    return di[3:].upper() == "F"


@dataclass(slots=True)
class Reply:
    """Bytes a meter puts on the bus and how long after the request it starts sending them."""

    data: bytes
    delay: float
    meter: Dlt645Meter | None


class Dlt645Responder:
    """Answers requests for the meters of one bus (see the module docstring)."""

    def __init__(self, meters: list[Dlt645Meter], seed: int = 0) -> None:
        self.meters = {m.address: m for m in meters}
        self.requests: Counter[int] = Counter()
        self.bad_frames = 0
        self._followups: dict[tuple[str, str], list[bytes]] = {}
        self._cursor: dict[tuple[str, str], int] = {}  # 1997 follow-ups carry no sequence number
        self._rng = random.Random(seed)

    def handle(self, raw: bytes) -> list[Reply]:
        """Replies to one request frame (empty for broadcasts, unknown addresses and garbage)."""
        try:
            frame = decode(raw)
        except DLT645Error:
            self.bad_frames += 1
            return []
        if frame.is_response:
            return []
        self.requests[frame.function] += 1
        targets = self._targets(frame)
        # Broadcasts get no reply, except 1997 reads on 99..99 (how one-meter 1997 lines are found).
        silent = frame.address == BROADCAST_ADDRESS and frame.function not in (
            fc.READ_1997,
            fc.READ_FOLLOWUP_1997,
        )
        replies = []
        for meter in targets:
            if not meter.model.powered or meter.model.offline:
                continue
            data = self._answer(meter, frame)
            if data is not None and not silent:
                delay = meter.turnaround_s + self._rng.uniform(0, meter.jitter_s)
                replies.append(Reply(b"\xfe" * meter.preamble + data, delay, meter))
        return replies

    def _targets(self, frame: Frame) -> list[Dlt645Meter]:
        address = frame.address
        if address == BROADCAST_ADDRESS:
            if frame.function == fc.TIME_SYNC:
                return list(self.meters.values())
            # 1997 meters answer reads on 99..99: only a one-meter line gives a readable answer.
            one = len(self.meters) == 1 and frame.edition == 1997
            return list(self.meters.values()) if one else []
        if "A" in address:
            return [m for m in self.meters.values() if _wildcard_match(address, m.address)]
        meter = self.meters.get(address)
        return [meter] if meter else []

    def _answer(self, meter: Dlt645Meter, frame: Frame) -> bytes | None:
        if frame.function == fc.TIME_SYNC:
            return self.time_sync(meter, frame)
        if frame.edition != meter.edition and not (meter.edition == 2007 and frame.edition == 1997):
            return None  # 1997-only meters ignore 2007 frames silently
        handler = _HANDLERS.get((frame.edition, frame.function))
        if handler is None:
            return self._abnormal(meter, frame, "other" if frame.edition == 2007 else "illegal_data")
        return handler(self, meter, frame)

    # -- helpers ------------------------------------------------------------------------------

    def _ok(self, meter: Dlt645Meter, frame: Frame, data: bytes = b"") -> bytes:
        return build_response(meter.address, frame.function, data, edition=frame.edition)

    def _abnormal(self, meter: Dlt645Meter, frame: Frame, flag: str) -> bytes:
        return build_abnormal(meter.address, frame.function, [flag], edition=frame.edition)

    def _no_data(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        return self._abnormal(meter, frame, "no_data" if frame.edition == 2007 else "di_error")

    def _refused(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        return self._abnormal(meter, frame, "password")

    # -- function codes -----------------------------------------------------------------------

    def read(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        di = frame.di or ""
        if meter.refuses(di, frame.edition):
            return self._no_data(meter, frame)
        try:
            if frame.edition == 2007:
                value = value_2007(meter.model, di, frame.fields.get("count", 1), frame.fields.get("start"))
            else:
                value = value_1997(meter.model, di)
            value = meter.trim(di, frame.edition, value)
            frames = build_read_reply_frames(
                meter.address, di, value, edition=frame.edition, max_data=MAX_READ_DATA
            )
        except (NoData, EncodeError):
            return self._no_data(meter, frame)
        key = (meter.address, di)
        if len(frames) > 1:
            self._followups[key] = frames
            self._cursor[key] = 0
        return frames[0]

    def read_followup(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        key = (meter.address, frame.di or "")
        frames = self._followups.get(key)
        if frame.edition == 1997:
            seq = self._cursor.get(key, 0) + 1
            self._cursor[key] = seq
        else:
            seq = frame.seq or 0
        if not frames or not 1 <= seq < len(frames):
            return self._no_data(meter, frame)
        return frames[seq]

    def read_address(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        return self._ok(meter, frame, address_to_wire(meter.address))

    def write(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        if not meter.password_ok(frame):
            return self._refused(meter, frame)
        di = frame.di or ""
        if di in ALARM_AMOUNTS and meter.model.prepaid_balance is not None and frame.value is not None:
            meter.model.alarm_amounts[ALARM_AMOUNTS.index(di)] = float(frame.value)
            return self._ok(meter, frame)
        if frame.edition == 2007 and meter.model.tou.owns(di):
            return self._write_tou(meter, frame, di)
        if di not in WRITABLE_CLOCK or "value_error" in frame.fields or frame.value is None:
            return self._abnormal(meter, frame, "other" if frame.edition == 2007 else "illegal_data")
        model = meter.model
        current = model.clock.local()
        value = frame.value
        if isinstance(value, datetime):
            new = value
        elif hasattr(value, "hour"):
            new = datetime.combine(current.date(), value)
        else:
            new = datetime.combine(value, current.time())
        model.set_clock(new, frame.fields.get("operator", "00000000"))
        return self._ok(meter, frame)

    def _write_tou(self, meter: Dlt645Meter, frame: Frame, di: str) -> bytes:
        """A time-of-use item: energy up to now stays under the schedule it was used in."""
        if "value_error" in frame.fields or (frame.value is None and di not in (SEASON_SWITCH, TABLE_SWITCH)):
            return self._abnormal(meter, frame, "other")
        model = meter.model
        model.advance()
        try:
            model.tou.write(di, frame.value)
        except TouRefused as exc:
            return self._abnormal(meter, frame, exc.flag)
        model.record_stamp("programming", frame.fields.get("operator", "00000000"))
        if meter.offline_after_programming == model.event_counts.get("programming"):
            model.offline = True  # a planned fault: this write is acknowledged, nothing after it
        return self._ok(meter, frame)

    def write_address(self, meter: Dlt645Meter, frame: Frame) -> bytes | None:
        if len(self.meters) != 1:
            return None  # programming needs a single meter on the segment
        new = frame.value
        del self.meters[meter.address]
        meter.model.address = new
        self.meters[new] = meter
        return self._ok(meter, frame)

    def time_sync(self, meter: Dlt645Meter, frame: Frame) -> bytes | None:
        model = meter.model
        local = model.clock.local()
        target: datetime = frame.value
        near_midnight = local.time() >= NO_SYNC_AFTER or local.time() < NO_SYNC_BEFORE
        already = model.last_broadcast_sync == local.date()
        if abs(target - local) > SYNC_LIMIT or near_midnight or already:
            return self._refused(meter, frame)
        model.set_clock(target)
        model.last_broadcast_sync = target.date()
        return None

    def freeze(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        return self._ok(meter, frame)

    def change_baud(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        if "value_error" in frame.fields:
            return self._abnormal(meter, frame, "baud" if frame.edition == 2007 else "illegal_data")
        return self._ok(meter, frame, frame.payload)

    def change_password(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        fields = frame.fields
        if meter.passwords.get(fields["old_level"]) != fields["old_password"]:
            return self._refused(meter, frame)
        meter.passwords[fields["new_password_level"]] = fields["new_password"]
        return self._ok(meter, frame, frame.payload[-4:])

    def password_command(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        if not meter.password_ok(frame):
            return self._refused(meter, frame)
        if frame.function in (fc.DEMAND_RESET, fc.DEMAND_RESET_1997):
            meter.model.max_demand_kw = 0.0
            meter.model.max_demand_time = None
        return self._ok(meter, frame)

    def remote_control(self, meter: Dlt645Meter, frame: Frame) -> bytes | None:
        fault = meter.control_fault()
        meter.control_actions[str(frame.fields.get("action", "encrypted"))] += 1
        reply = self._control(meter, frame)
        if fault == "control_silent":
            return None
        if fault == "control_abnormal":
            return self._abnormal(meter, frame, "other")
        return reply

    def _control(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        if frame.fields.get("encrypted") or not meter.password_ok(frame):
            return self._refused(meter, frame)
        model = meter.model
        if frame.fields["expiry"] is None or frame.fields["expiry"] < model.clock.local():
            return self._refused(meter, frame)
        action = frame.fields["action"]
        operator = frame.fields["operator"]
        try:
            if action == "trip":
                model.trip(operator)
            elif action in ("close", "close_allowed"):
                model.close(operator, direct=action == "close")
            elif action in ("alarm", "alarm_release"):
                model.relay.alarm = action == "alarm"
            elif action in ("keep_power", "keep_power_release"):
                model.relay.keep_power = action == "keep_power"
            else:
                return self._abnormal(meter, frame, "other")
        except RelayRefused:
            return self._refused(meter, frame)
        return self._ok(meter, frame)

    def multifunction(self, meter: Dlt645Meter, frame: Frame) -> bytes:
        return self._ok(meter, frame, frame.payload)


def _wildcard_match(pattern: str, address: str) -> bool:
    """2007 partial-AA addressing: AA bytes match anything, the rest must equal."""
    return all(p == "AA" or p == a for p, a in zip(_pairs(pattern), _pairs(address), strict=True))


def _pairs(text: str) -> list[str]:
    return [text[i : i + 2] for i in range(0, 12, 2)]


_R = Dlt645Responder
_HANDLERS: dict[tuple[int, int], Any] = {
    (2007, fc.READ): _R.read,
    (2007, fc.READ_FOLLOWUP): _R.read_followup,
    (2007, fc.READ_ADDRESS): _R.read_address,
    (2007, fc.WRITE): _R.write,
    (2007, fc.WRITE_ADDRESS): _R.write_address,
    (2007, fc.FREEZE): _R.freeze,
    (2007, fc.CHANGE_BAUD): _R.change_baud,
    (2007, fc.CHANGE_PASSWORD): _R.change_password,
    (2007, fc.DEMAND_RESET): _R.password_command,
    (2007, fc.METER_CLEAR): _R.password_command,
    (2007, fc.EVENT_CLEAR): _R.password_command,
    (2007, fc.REMOTE_CONTROL): _R.remote_control,
    (2007, fc.MULTIFUNCTION_OUTPUT): _R.multifunction,
    (1997, fc.READ_1997): _R.read,
    (1997, fc.READ_FOLLOWUP_1997): _R.read_followup,
    (1997, fc.WRITE_1997): _R.write,
    (1997, fc.WRITE_ADDRESS_1997): _R.write_address,
    (1997, fc.CHANGE_BAUD_1997): _R.change_baud,
    (1997, fc.CHANGE_PASSWORD_1997): _R.change_password,
    (1997, fc.DEMAND_RESET_1997): _R.password_command,
}
