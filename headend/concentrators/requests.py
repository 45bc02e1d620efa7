"""The daemon's side of archive requests (``headend concentrator archive push`` of a dial-in
concentrator, migration 0040): the desk inserts a request, the daemon that holds the concentrator's
connection works it.

A built-in duty of the engine, so only the active daemon runs it (a standby's engine does not run).
It LISTENs on the requests' channel (and looks every ``poll_every`` seconds anyway, for requests
waiting on a concentrator to dial in), and claims a request (compare-and-set requested -> running)
only while its concentrator is connected; it then runs one job on the concentrator's worker, so the
connection is verified first and no PW goes to an unverified login. A ``read`` request records the
diff between the request's inventory records and the archive (AFN 0A F10); a ``push`` request
sends the rows the operator was shown (AFN 04 F10) only while the archive still differs exactly so,
then queries it back: done when it agrees, failed otherwise. Requests not claimed before they expire
are marked expired (nothing sent); a request found running at start was its predecessor's, cut off:
failed. The operators' grants that trust a concentrator's next login for its archive request only
(``headend channels trust``, :mod:`headend.transport.trust`) are handed to the port on every pass, and
the login that claimed one is recorded; a push that reads back agreeing has that login checked again
the ordinary way. Each final state is counted (``headend_archive_requests_total{state}``) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Literal, Protocol

import asyncpg

from headend.concentrators.service import is_concentrator, on_link
from headend.drivers.gdw1376_terminal import (
    EXTRA_SCAN,
    PUSH_BATCH,
    QUERY_BATCH,
    ArchivePoint,
    diff_archive,
    push_archive,
)
from headend.engine.ports import DriverPort
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from headend.store.archive_requests import (
    ArchiveRequest,
    Outcome,
    claim_request,
    expire_overdue,
    fail_interrupted,
    finish_request,
    listen,
    waiting_requests,
)
from headend.store.trusts import lasting_trusts, record_trust_used
from headend.transport.concentrator import ConcentratorLink
from headend.transport.concentrator_dialin import DialinConcentratorLink

log = logging.getLogger(__name__)

POLL_EVERY_S = 1.0
CONNECT_TIMEOUT_S = 10.0
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
EXPIRED = "the concentrator was not connected (or not verified) before the request expired: nothing sent"
INTERRUPTED = "the daemon stopped while working this request: see the archive with --dry-run"


class RequestHost(Protocol):
    """What the service needs of the running engine (:class:`headend.engine.engine.Engine`)."""

    @property
    def dsn(self) -> str: ...

    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def metrics(self) -> EngineMetrics: ...

    @property
    def workers(self) -> dict[int, ChannelWorker]: ...

    @property
    def port(self) -> DriverPort: ...


class RequestFailed(Exception):
    """A request that ends failed, with this line as its result."""


def _exchanges(points: list[ArchivePoint], records: int) -> int:
    """Frames a request may take: the query before and after, the push batches, and one spare."""
    queries = math.ceil((max((p.pn for p in points), default=0) + EXTRA_SCAN) / QUERY_BATCH)
    return 2 * queries + math.ceil(records / PUSH_BATCH) + 1


async def work(request: ArchiveRequest, link: ConcentratorLink) -> tuple[str, Outcome]:
    """Do ``request`` on ``link`` (inside a worker job); the result line and outcome of a done one."""
    points = [ArchivePoint.from_row(r) for r in request.wanted]
    before = await diff_archive(link, points)
    writes, deletes = before.changes()
    outcome: Outcome = {"concentrator": link.key, **before.to_json(), "writes": writes, "deletes": deletes}
    if request.kind == "read":
        said = "agrees" if before.agrees else f"differs: {len(writes)} to write, {len(deletes)} to delete"
        return f"the archive {said}", outcome
    if (writes, deletes) != (request.writes, request.deletes):
        raise RequestFailed(
            "the archive is not what was shown when the push was asked for: nothing written;"
            " run the push again"
        )
    pushed = await push_archive(link, before) if not before.agrees else 0
    after = await diff_archive(link, points)
    outcome |= {"pushed": pushed, "after": after.to_json(), "agrees": after.agrees}
    if not after.agrees:
        raise RequestFailed(f"pushed {pushed} record(s), but the archive still disagrees with the inventory")
    if isinstance(link, DialinConcentratorLink):
        link.verify_again()  # a login trusted for this push is now verified (or closed) the ordinary way
    return f"pushed {pushed} record(s); the archive agrees with the inventory", outcome


class ArchiveRequests:
    """The service's state: the requests being worked now."""

    def __init__(self, engine: RequestHost, *, poll_every: float = POLL_EVERY_S) -> None:
        self.engine = engine
        self.poll_every = poll_every
        self._wake = asyncio.Event()
        self._working: dict[int, asyncio.Task[None]] = {}
        self._listener: asyncpg.Connection | None = None
        self._recovered = False
        self._unreachable = False

    async def run(self) -> None:
        try:
            while True:
                await self._keep_listening()
                try:
                    if not self._recovered:
                        await self._recover()
                    await self.pass_once()
                    if self._unreachable:
                        self._unreachable = False
                        log.info("archive requests looked at again")
                except DATABASE_ERRORS as exc:
                    if not self._unreachable:  # once per outage
                        self._unreachable = True
                        log.warning("archive requests not looked at", extra={"error": str(exc)})
                except Exception:  # never the end of the service: logged with its traceback, retried
                    self.engine.metrics.failed_passes.labels("archive_requests").inc()
                    log.exception("archive requests pass failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_every):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for task in self._working.values():
                task.cancel()
            if self._listener is not None:
                self._listener.terminate()

    async def _recover(self) -> None:
        """Fail what a predecessor left running (once, when the database first answers)."""
        for request_id in await fail_interrupted(self.engine.pool, INTERRUPTED):
            self._count(request_id, "failed", INTERRUPTED)
        self._recovered = True

    async def _keep_listening(self) -> None:
        """A connection of its own that LISTENs (reopened when lost; polling covers the gap)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        try:
            listener = await asyncpg.connect(self.engine.dsn, timeout=CONNECT_TIMEOUT_S)
            await listen(listener, lambda *_args: self._wake.set())
        except DATABASE_ERRORS:
            return  # polled meanwhile; the pass says the database is unreachable
        self._listener = listener

    async def pass_once(self) -> None:
        """Expire the overdue requests; start each waiting one whose concentrator is connected."""
        await self._sync_trusts()
        for request_id in await expire_overdue(self.engine.pool, EXPIRED):
            self._count(request_id, "expired", EXPIRED)
        for request in await waiting_requests(self.engine.pool):
            if request.id in self._working or not self._ready(request):
                continue
            if not await claim_request(self.engine.pool, request.id):
                continue
            task = asyncio.create_task(self._run(request), name=f"archive-request-{request.id}")
            self._working[request.id] = task
            task.add_done_callback(self._forget)

    async def _sync_trusts(self) -> None:
        """Record the operators' grants that a connection claimed; hand the lasting ones to the port."""
        port = self.engine.port
        claims = port.trust_claims()
        for index, (trust_id, peer) in enumerate(claims):
            try:
                recorded = await record_trust_used(self.engine.pool, trust_id, peer)
            except DATABASE_ERRORS:
                port.requeue_trust_claims(claims[index:])
                raise
            log.info("trust used", extra={"trust": trust_id, "peer": peer, "recorded": recorded})
        specs = {worker.spec.id: worker.spec for worker in self.engine.workers.values()}
        grants = await lasting_trusts(self.engine.pool)
        port.load_trusts((specs[g.channel_id], g) for g in grants if g.channel_id in specs)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for request_id, working in list(self._working.items()):
            if working is task:
                del self._working[request_id]

    def _ready(self, request: ArchiveRequest) -> bool:
        """Whether to claim it now: its concentrator is read by this daemon and, if it dials in, connected
        (a concentrator this daemon does not read is claimed to fail it with that reason)."""
        worker = self.engine.workers.get(request.channel_id)
        return worker is None or self.engine.port.online(worker.spec) is not False

    async def _run(self, request: ArchiveRequest) -> None:
        state: Literal["done", "failed"] = "failed"
        outcome: Outcome | None = None
        try:
            worker = self.engine.workers.get(request.channel_id)
            if worker is None or not is_concentrator(worker) or not worker.meters:
                raise RequestFailed(
                    f"channel {request.channel!r} is not a concentrator with meters this daemon reads"
                )
            points = [ArchivePoint.from_row(r) for r in request.wanted]
            records = len(request.writes or ()) + len(request.deletes or ())

            async def body(link: ConcentratorLink) -> tuple[str, Outcome]:
                return await work(request, link)

            result, outcome = await on_link(worker, "archive", body, _exchanges(points, records))
            state = "done"
        except RequestFailed as exc:
            result = str(exc)
        except Exception as exc:  # the link's or the worker's one line, recorded as the result
            result = str(exc) or type(exc).__name__
        await self._record(request.id, state, result, outcome)
        self._count(request.id, state, result, channel=request.channel, kind=request.kind)

    async def _record(
        self, request_id: int, state: Literal["done", "failed"], result: str, outcome: Outcome | None
    ) -> None:
        """Record the outcome, retried while the database does not answer (the request stays running)."""
        said = False
        while True:
            try:
                await finish_request(self.engine.pool, request_id, state, result, outcome)
                return
            except DATABASE_ERRORS as exc:
                if not said:
                    said = True
                    log.warning(
                        "archive request outcome not recorded yet",
                        extra={"request": request_id, "error": str(exc)},
                    )
            await asyncio.sleep(self.poll_every)

    def _count(self, request_id: int, state: str, result: str, **details: object) -> None:
        self.engine.metrics.archive_requests.labels(state).inc()
        level = logging.INFO if state == "done" else logging.WARNING
        log.log(level, f"archive request {state}", extra={"request": request_id, "result": result, **details})


async def run(engine: RequestHost) -> None:
    """The service's entry point (given to the engine by the composition root, headend/daemon.py)."""
    await ArchiveRequests(engine).run()
