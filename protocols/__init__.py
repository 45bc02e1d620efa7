"""Pure protocol codecs (no I/O): DL/T 645 and Modbus register maps."""
