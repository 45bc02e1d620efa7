"""Modbus register-map model (pure, no I/O).

    model = load_modbus_model("eastron_sdm630")
    for block in model.reads(["energy_import_kwh", "voltage_a_v"]):
        registers = ...read block.function at block.address, block.count...
        values = block.decode(registers)          # {"energy_import_kwh": 1234.5, ...}
    model.relay  # RelayStrategy or None: write_function, address, on/off values, readback address

Canonical quantity names: energy_import_kwh, energy_export_kwh, voltage_a_v.., current_a_a..,
power_kw (total active, kW), pf, frequency_hz, relay (raw value; see RelayStrategy.is_closed).
"""

from protocols.modbus.model import ModbusModel, RelayStrategy, load_modbus_model, model_from_data
from protocols.modbus.plan import ReadBlock, plan_reads
from protocols.modbus.points import Point, PointError

__all__ = [
    "ModbusModel",
    "Point",
    "PointError",
    "ReadBlock",
    "RelayStrategy",
    "load_modbus_model",
    "model_from_data",
    "plan_reads",
]
