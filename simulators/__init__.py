"""Simulated DL/T 645 and Modbus meters on virtual serial ports and TCP."""
