"""Simulated DL/T 645 and Modbus meters on virtual serial ports and TCP.

``from simulators import BusSpec, start_bus`` — see :mod:`simulators.bus`.
"""

from simulators.bus import BusSpec, SimBus, start_bus

__all__ = ["BusSpec", "SimBus", "start_bus"]
