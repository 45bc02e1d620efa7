"""The append-only audit log: every module writes it through ``audit`` (the query lives in
:mod:`headend.store.audit`; this path is kept for the billing and fee-control modules)."""

from __future__ import annotations

from headend.store.audit import audit

__all__ = ["audit"]
