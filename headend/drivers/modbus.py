"""The Modbus meter driver: register maps from protocols/models, batched reads, relay write + read-back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from headend.drivers.base import (
    Capabilities,
    EventRecord,
    LineError,
    MeterRefused,
    MeterTimeout,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
)
from headend.transport import ExchangeTimeout, FrameBus, ModbusChannel, ModbusError, RegisterBus
from headend.transport.modbus import RtuLink
from headend.vocabulary import SwitchOperation, SwitchStatus
from protocols.modbus import ModbusModel, load_modbus_model

EXCEPTION_TEXT = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
}


class ModbusDriver:
    """One Modbus meter (unit id) behind a Modbus channel."""

    def __init__(
        self,
        channel: ModbusChannel | FrameBus,
        unit_id: int,
        *,
        model: str,
        confirm_timeout_s: float = 10.0,
        confirm_poll_s: float = 0.5,
    ) -> None:
        self.channel = channel
        self.confirm_timeout_s = confirm_timeout_s  # relay read-back window after a switch
        self.confirm_poll_s = confirm_poll_s
        self.link: RegisterBus = channel if isinstance(channel, ModbusChannel) else RtuLink(channel)
        self.unit_id = unit_id
        self.utc_offset = timedelta(0)  # Modbus meters here keep no clock
        self.address = str(unit_id)
        self.model = load_modbus_model(model)
        self.capabilities = self.capabilities_of(self.model)
        self.unsupported: dict[str, str] = {}
        self.went_back: dict[str, tuple[float, float]] = {}  # no register guard here
        self.last_rtt_s: float | None = None
        self.refusals = 0
        self.last_refusal = ""

    @staticmethod
    def capabilities_of(model: ModbusModel) -> Capabilities:
        """Modbus meters are read-only registers, plus a relay where the model maps one."""
        return Capabilities(relay=model.relay is not None)

    async def _call(
        self, function: int, address: int, count: int = 1, values: list[int] | None = None
    ) -> list[int]:
        try:
            return await self.link.call(function, address, unit=self.unit_id, count=count, values=values)
        except ExchangeTimeout as exc:
            if exc.noise:
                raise LineError(f"checksum error or garbage on the line: {exc}") from None
            raise MeterTimeout(str(exc)) from None
        except ModbusError as exc:
            self.refusals += 1  # Modbus exception replies, counted and logged by the engine's worker
            self.last_refusal = f"Modbus {EXCEPTION_TEXT.get(exc.code, f'exception {exc.code}')}"
            raise MeterRefused([EXCEPTION_TEXT.get(exc.code, f"exception {exc.code}")]) from None

    async def read(self, quantities: list[str]) -> dict[str, float]:
        """Read canonical quantities; adjacent registers are read in one request."""
        self.unsupported = {q: "not in the meter model" for q in quantities if q not in self.model.points}
        known = [q for q in quantities if q in self.model.points]
        values: dict[str, float] = {}
        for block in self.model.reads(known):
            try:
                registers = await self._call(block.function, block.address, block.count)
            except MeterRefused as exc:
                for point in block.points:
                    self.unsupported[point.name] = str(exc)
                continue
            values.update(block.decode(registers))
        if "relay" in values and self.model.relay is not None:
            closed = self.model.relay.is_closed(int(values["relay"]))
            values["relay"] = 1.0 if closed else 0.0
        return values

    async def read_profile(
        self, start: datetime, end: datetime, quantities: Sequence[str] | None = None
    ) -> list[ProfileRecord]:
        raise NotSupported(f"{self.model.name} keeps no load profile")

    async def read_clock(self) -> datetime:
        raise NotSupported(f"{self.model.name} has no readable clock")

    async def set_clock(self, *, broadcast: bool) -> None:
        raise NotSupported(f"{self.model.name} has no settable clock")

    async def read_events(self, kinds: list[str]) -> list[EventRecord]:
        raise NotSupported(f"{self.model.name} keeps no event records")

    async def relay_state(self) -> RelayState:
        """The relay register read back."""
        relay = self._relay()
        (value,) = await self._call(relay.readback_function, relay.readback, 1)
        closed = relay.is_closed(value)
        if closed is None:
            raise MeterRefused([f"unexpected relay register value {value}"])
        return RelayState(open=not closed, raw=value)

    def _relay(self) -> Any:
        if self.model.relay is None:
            raise NotSupported(f"{self.model.name} has no relay")
        return self.model.relay

    async def switch(
        self,
        action: SwitchOperation,
        *,
        operator: str,
        confirm_timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> SwitchResult:
        """Write the relay register (the model's function, e.g. FC16 for Hiking) and read it back."""
        if action not in ("off", "on"):
            return SwitchResult("failed", action, reason=f"{action} is not available on Modbus relays")
        if self.unit_id == 0:  # Modbus unit 0 is the broadcast: every slave on the line would act
            return SwitchResult("refused", action, reason="unit id 0 is the Modbus broadcast: name one unit")
        try:
            relay = self._relay()
        except NotSupported as exc:
            return SwitchResult("failed", action, reason=str(exc))
        value = relay.value_for(action == "on")
        evidence: dict[str, Any] = {
            "operator": operator,
            "register": relay.address,
            "written": value,
            "function": relay.write_function,
        }
        try:
            await self._call(relay.write_function, relay.address, 1, [value])
            evidence["ack"] = True
        except MeterRefused as exc:
            return SwitchResult("refused", action, None, str(exc), evidence)
        except MeterTimeout:
            evidence["ack"] = False
        timeout_s = self.confirm_timeout_s if confirm_timeout_s is None else confirm_timeout_s
        poll_s = self.confirm_poll_s if poll_s is None else poll_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        state = None
        while True:
            try:
                state = await self.relay_state()
            except MeterTimeout:
                state = None
            if state is not None and state.open == (action == "off"):
                evidence["read_back"] = state.raw
                return SwitchResult("confirmed", action, state, "", evidence)
            if asyncio.get_running_loop().time() >= deadline:
                status: SwitchStatus = "unconfirmed" if evidence.get("ack") else "failed"
                return SwitchResult(status, action, state, "relay register did not reach the state", evidence)
            await asyncio.sleep(poll_s)
