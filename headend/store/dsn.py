"""Which database headend talks to."""

from __future__ import annotations

import os
import re

from headend.store.embedded import EmbeddedPostgres


def resolve_dsn(explicit: str | None = None) -> str:
    """The DSN to use: ``explicit`` > ``$HEADEND_DSN`` > the embedded server (started if needed)."""
    if explicit:
        return explicit
    from_env = os.environ.get("HEADEND_DSN")
    if from_env:
        return from_env
    return EmbeddedPostgres().start()


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, for logs and status output."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
