"""A throwaway embedded PostgreSQL server for benchmarks: started in a temp directory, removed after."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from headend.store.embedded import EmbeddedPostgres


def run_on_throwaway_server(
    run: Callable[[argparse.Namespace, str, Path], Awaitable[None]], args: argparse.Namespace
) -> None:
    """``run(args, dsn, spool_dir)`` against a fresh server; the server and its files are gone after."""
    base = Path(tempfile.mkdtemp(prefix="headend-bench-"))
    base.chmod(0o755)  # the server drops root and must reach its directory
    server = EmbeddedPostgres(base / "pg")
    try:
        dsn = server.start()
        asyncio.run(run(args, dsn, base / "spool"))
    finally:
        server.stop("fast")
        shutil.rmtree(base, ignore_errors=True)
