"""Meter parameters from the master station: time-of-use parameter sets (issue 25)."""
