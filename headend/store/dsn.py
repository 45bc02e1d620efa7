"""Which database headend talks to, and where that choice came from (for error messages)."""

from __future__ import annotations

import os
import re

from headend.store.embedded import EmbeddedPostgres

MAX_DSN_LENGTH = 2000


class DsnError(ValueError):
    """A DSN that cannot be used; the message names the option or variable it came from."""


def dsn_source(explicit: str | None = None) -> str:
    """Where :func:`resolve_dsn` takes the DSN from: ``--dsn``, ``HEADEND_DSN`` or the embedded server."""
    if explicit:
        return "--dsn"
    return "HEADEND_DSN" if os.environ.get("HEADEND_DSN") else "the embedded server"


def _checked(dsn: str, source: str) -> str:
    if len(dsn) > MAX_DSN_LENGTH or not dsn.isprintable():
        raise DsnError(f"{source}: not a PostgreSQL URL (too long or control characters)")
    if not re.match(r"^postgres(ql)?://", dsn):
        raise DsnError(f"{source}: {redact(dsn)[:80]!r} is not a PostgreSQL URL (postgresql://user@host/db)")
    return dsn


def resolve_dsn(explicit: str | None = None) -> str:
    """The DSN to use: ``explicit`` > ``$HEADEND_DSN`` > the embedded server (started if needed)."""
    if explicit:
        return _checked(explicit, "--dsn")
    from_env = os.environ.get("HEADEND_DSN")
    if from_env:
        return _checked(from_env, "HEADEND_DSN")
    try:
        return EmbeddedPostgres().start()
    except OSError as exc:
        where = "HEADEND_STATE_DIR" if os.environ.get("HEADEND_STATE_DIR") else "its state directory"
        raise DsnError(
            f"no --dsn or HEADEND_DSN, and the embedded server cannot use {where}: {exc.strerror or exc}"
            f" ({exc.filename})"
        ) from None


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, for logs and status output."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
