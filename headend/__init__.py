"""headend: a head-end system (meter data-collection master station) for DL/T 645 and Modbus meters."""

__version__ = "0.1.0"
