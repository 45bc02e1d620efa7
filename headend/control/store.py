"""Relay commands as database rows: the queries live in :mod:`headend.store.commands`; this path is
kept for the fee-control modules (automation, service)."""

from __future__ import annotations

from headend.store.commands import COMMAND_LIFETIME, create_command, transition

__all__ = ["COMMAND_LIFETIME", "create_command", "transition"]
