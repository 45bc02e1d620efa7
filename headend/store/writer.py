"""The reading writer: batches readings into PostgreSQL idempotently, spools them while it is down.

``submit`` returns once its readings are durable: committed in the database, or fsync'd in the
spool when the database is unreachable. That return is the acknowledgement the engine relies on.
When the spool's disk refuses writes too (full, over quota) the batch waits, unacknowledged, in a
bounded buffer in memory (``hold_readings``) that goes to the spool or the database, in order, as
soon as either takes it; only a batch beyond that bound is refused. Both are said once per episode.
``submit_record`` does the same for the daemon's other records (read cycles, meter events, clock
records: :mod:`headend.store.records`), which share the spool and its order.
Every database call has a deadline (``connect_timeout``, ``command_timeout``; a whole write at most
``connect_timeout + 2 * command_timeout``): a database that hangs instead of refusing sends the
batch to the spool within that time, never leaves it waiting in a blocked connection.
Batches are written by a few connections ("lanes") at once: COPY straight into ``readings`` (the
fast path) and, when a batch holds an already stored reading, COPY into a temporary staging table +
``INSERT ... ON CONFLICT DO NOTHING``. While the spool holds anything, new batches are appended
to it too; a recovery task replays it oldest first and switches back to direct writes when empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.config_paths import state_dir
from headend.store.reading import InvalidReading, Reading, validate
from headend.store.records import StoredRecord
from headend.store.spool import Spool, SpoolEntry, SpoolFullError, describe, entry_size

__all__ = ["InvalidReading", "Reading", "ReadingWriter", "StorageError"]

log = logging.getLogger(__name__)

COLUMNS = ("meter_id", "quantity_id", "ts", "value", "quality", "source_id")
_COLS = ", ".join(COLUMNS)
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_stage (meter_id integer, quantity_id smallint, ts timestamptz,"
    " value double precision, quality reading_quality, source_id smallint) ON COMMIT DELETE ROWS"
)
_MERGE_SQL = f"INSERT INTO readings ({_COLS}) SELECT {_COLS} FROM readings_stage ON CONFLICT DO NOTHING"

# The database is unreachable or refusing work for now: spool and retry later. InternalClientError
# covers a connection that received the server's shutdown notice while it sat idle.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)
# Concurrency conflicts between lanes: retry the same batch.
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class StorageError(RuntimeError):
    """The database rejected a batch for a reason other than being unreachable; nothing was stored."""


@dataclass(slots=True)
class _Submission:
    readings: list[Reading]
    future: asyncio.Future[None]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Held:
    """An entry neither the database nor the spool's disk took yet; its submitters still wait."""

    entry: SpoolEntry
    futures: list[asyncio.Future[None]]
    size: int = 0

    def settle(self, error: BaseException | None) -> None:
        for future in self.futures:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class _NameIds:
    """Cache of a name -> small id lookup table (quantities, reading_sources), filled on demand."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.ids: dict[str, int] = {}

    async def resolve(self, conn: asyncpg.Connection, names: set[str]) -> None:
        unknown = [n for n in names if n not in self.ids]
        if not unknown:
            return
        await conn.execute(
            f"INSERT INTO {self.table} (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
            unknown,
        )
        for row in await conn.fetch(
            f"SELECT id, name FROM {self.table} WHERE name = ANY($1::text[])", unknown
        ):
            self.ids[row["name"]] = row["id"]


class _Partitions:
    """Native mode: makes sure the partitions a batch needs exist, remembering those that do."""

    def __init__(self, width: timedelta, origin: datetime) -> None:
        self.width = width
        self.origin = origin
        self.known: set[datetime] = set()

    def start_of(self, ts: datetime) -> datetime:
        return self.origin + ((ts - self.origin) // self.width) * self.width

    async def ensure(self, conn: asyncpg.Connection, readings: list[Reading]) -> set[datetime]:
        """Create missing partitions in the caller's transaction; return their starts, to
        :meth:`remember` once that transaction committed (other lanes must not rely on them sooner)."""
        first = self.start_of(min(r.ts for r in readings))
        if first == self.start_of(max(r.ts for r in readings)) and first in self.known:
            return set()
        starts = {self.start_of(r.ts) for r in readings} - self.known
        if starts:
            await conn.execute("SELECT headend_ensure_partitions($1::timestamptz[])", sorted(starts))
        return starts

    def remember(self, starts: set[datetime]) -> None:
        self.known |= starts


class ReadingWriter:
    """Writes readings to ``readings``; see the module docstring for the durability contract.

    Counters: ``written`` (rows inserted), ``duplicates`` (already stored, skipped), ``spooled``
    (readings appended to the spool), ``replayed`` (spooled readings later committed), ``rejected``
    (readings refused with an error); ``records_written``, ``records_spooled``, ``records_replayed``
    for the other records; ``spool_quarantined`` (damaged spool stretches set aside). Gauges:
    ``pending``, ``lag``, ``spool_bytes``, ``spool_full`` (the disk refuses the spool), ``held``
    (readings waiting in memory for it), ``mode`` (``direct`` or ``spooling``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        spool_dir: Path | None = None,
        batch_size: int = 20_000,
        lanes: int = 2,
        max_pending: int = 200_000,
        spool_max_bytes: int = 1 << 30,
        hold_readings: int | None = None,
        retry_interval: float = 2.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.batch_size = batch_size
        self.lane_count = lanes
        self.max_pending = max_pending
        self.hold_readings = max_pending if hold_readings is None else hold_readings
        self.retry_interval = retry_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.deadline = connect_timeout + 2 * command_timeout  # a whole write, rollback included
        self.spool = Spool(spool_dir or state_dir() / "spool", max_bytes=spool_max_bytes)
        self.mode = "direct"
        self.written = 0
        self.duplicates = 0
        self.spooled = 0
        self.replayed = 0
        self.rejected = 0
        self.records_written = 0
        self.records_spooled = 0
        self.records_replayed = 0
        self.spool_full = False
        self.held = 0
        self._held: deque[_Held] = deque()
        self._refusal_told = False
        self.last_error: str | None = None
        self._queue: deque[_Submission] = deque()
        self._queued = 0
        self._in_flight = 0
        self._changed = asyncio.Condition()
        self._spool_lock = asyncio.Lock()
        self._records_lock = asyncio.Lock()
        self._records_conn: asyncpg.Connection | None = None
        self._quantities = _NameIds("quantities")
        self._sources = _NameIds("reading_sources")
        self._partitions: _Partitions | None = None
        self._schema_known = False
        self._merging = False  # the last batch had stored readings: skip the fast path
        self._tasks: list[asyncio.Task[None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._closing = False
        self._outage_told = False

    # -- gauges -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Readings submitted but not yet durable (queued, being written, held in memory)."""
        return self._queued + self._in_flight + self.held

    @property
    def lag(self) -> float:
        """Seconds the oldest queued submission has waited."""
        return time.monotonic() - self._queue[0].enqueued if self._queue else 0.0

    @property
    def spool_bytes(self) -> int:
        return self.spool.size_bytes

    @property
    def spool_quarantined(self) -> int:
        return self.spool.quarantined

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (replaying what a previous run left) and start the writing lanes."""
        await asyncio.to_thread(self.spool.open)
        if not self.spool.is_empty():
            log.warning("spool holds %d bytes from a previous run; replaying", self.spool.size_bytes)
            self._enter_spooling()
        self._tasks = [
            asyncio.create_task(self._lane(i), name=f"reading-writer-{i}") for i in range(self.lane_count)
        ]

    async def submit(self, readings: Iterable[Reading]) -> None:
        """Return once every reading is durable (database or spool).

        Raises :class:`InvalidReading` (nothing queued), :class:`SpoolFullError` or
        :class:`StorageError` (nothing acknowledged: the caller still owns the readings).
        """
        if self._closing:
            raise RuntimeError("the reading writer is closed")
        batch = list(readings)
        for reading in batch:
            validate(reading)
        if not batch:
            return
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.pending == 0 or self.pending + len(batch) <= self.max_pending
            )
            submission = _Submission(batch, asyncio.get_running_loop().create_future())
            self._queue.append(submission)
            self._queued += len(batch)
            self._changed.notify_all()
        await submission.future

    async def submit_record(self, record: StoredRecord) -> None:
        """Return once ``record`` is durable (database or spool, behind what is spooled already).

        Raises :class:`SpoolFullError` or :class:`StorageError` (not stored)."""
        if self._closing:
            raise RuntimeError("the reading writer is closed")
        async with self._records_lock:
            if self.mode == "direct":
                try:
                    async with asyncio.timeout(self.deadline):
                        if self._records_conn is None or self._records_conn.is_closed():
                            self._records_conn = await self._connect()
                        await self._store_record(self._records_conn, record)
                    self.records_written += 1
                    return
                except UNAVAILABLE as exc:
                    self._drop_records_conn()
                    self._note_unavailable(exc)
            future = asyncio.get_running_loop().create_future()
            async with self._spool_lock:
                durable = await self._append(record, [future])
            if not durable:
                await future
            self.records_spooled += 1

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.pending == 0)

    async def wait_replayed(self) -> None:
        """Wait until the spool has been replayed into the database (used at shutdown and in tests)."""
        while self.mode != "direct":
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Flush, stop the lanes and the recovery task, release the spool. What is still held in
        memory (the spool's disk full, the database down) is lost: said, and its submitters fail."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.pending == self.held)
        async with self._spool_lock:
            await self._spool_held()
            if self._held:
                log.error(
                    "ALARM: %d readings held in memory are lost at shutdown: the spool's disk is full",
                    self.held,
                )
            error = SpoolFullError("the writer closed while the spool's disk was full; not stored")
            while self._held:
                self._release(self._held.popleft(), error)
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        for task in [*self._tasks, *([self._recovery] if self._recovery else [])]:
            task.cancel()
        await asyncio.gather(
            *self._tasks, *([self._recovery] if self._recovery else []), return_exceptions=True
        )
        self._drop_records_conn()
        self.spool.close()

    # -- lanes --------------------------------------------------------------------------------

    async def _take(self) -> list[_Submission] | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._queue) or self._closing)
            if not self._queue:
                return None
            taken: list[_Submission] = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0].readings) <= self.batch_size):
                submission = self._queue.popleft()
                taken.append(submission)
                count += len(submission.readings)
            self._queued -= count
            self._in_flight += count
            return taken

    async def _done(
        self, taken: list[_Submission], futures: list[asyncio.Future[None]], error: BaseException | None
    ) -> None:
        async with self._changed:
            self._in_flight -= sum(len(s.readings) for s in taken)
            self._changed.notify_all()
        _Held([], futures).settle(error)

    async def _lane(self, index: int) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                taken = await self._take()
                if taken is None:
                    return
                readings = [r for s in taken for r in s.readings]
                futures = [s.future for s in taken]
                error: BaseException | None = None
                try:
                    conn, durable = await self._deliver(conn, readings, futures)
                    if not durable:  # held in memory: the recovery task settles these submissions
                        futures = []
                except (SpoolFullError, StorageError) as exc:
                    self.rejected += len(readings)
                    error = exc
                except Exception as exc:  # a bug must fail these submissions, never kill the lane
                    log.exception("reading writer lane %d: unexpected error", index)
                    self.rejected += len(readings)
                    error = StorageError(f"unexpected error writing {len(readings)} readings: {exc!r}")
                await self._done(taken, futures, error)
        finally:
            if conn is not None:
                conn.terminate()

    async def _deliver(
        self, conn: asyncpg.Connection | None, readings: list[Reading], futures: list[asyncio.Future[None]]
    ) -> tuple[asyncpg.Connection | None, bool]:
        """Write one batch to the database or the spool; return the lane's connection for reuse and
        whether the batch is durable (False: held in memory, ``futures`` are settled later)."""
        if self.mode != "direct":
            return conn, await self._spool_or_write(readings, futures, try_direct=True)
        # A reused connection may have died quietly (server restart): one retry on a fresh one. A
        # deadline that passed means a hung server: straight to the spool, no second wait.
        for fresh in (False, True) if conn is not None else (True,):
            try:
                async with asyncio.timeout(self.deadline):
                    conn = await self._connect() if fresh else conn
                    await self._write(conn, readings)
                return conn, True
            except UNAVAILABLE as exc:
                failure = exc
                if conn is not None:
                    conn.terminate()
                conn = None
                if isinstance(exc, TimeoutError):
                    break
        self._note_unavailable(failure)
        return conn, await self._spool_or_write(readings, futures, try_direct=False)

    async def _spool_or_write(
        self, readings: list[Reading], futures: list[asyncio.Future[None]], *, try_direct: bool
    ) -> bool:
        """Spool the batch; with ``try_direct``, write it instead if the spool drained meanwhile.
        False: held in memory, see :meth:`_append`."""
        async with self._spool_lock:
            if try_direct and self.mode == "direct":  # the spool drained while we waited for the lock
                conn = None
                try:
                    async with asyncio.timeout(self.deadline):
                        conn = await self._connect()
                        await self._write(conn, readings)
                    return True
                except UNAVAILABLE as exc:
                    self._note_unavailable(exc)
                finally:
                    if conn is not None:
                        conn.terminate()
            durable = await self._append(readings, futures)
            if durable:
                self.spooled += len(readings)
            return durable

    async def _append(self, entry: SpoolEntry, futures: list[asyncio.Future[None]]) -> bool:
        """Append to the spool (the caller holds the spool lock) and switch to spooling. True once
        durable; False when the spool refused it and it is held in memory behind what is held
        already (nothing overtakes it); :class:`SpoolFullError` when the memory bound is reached."""
        self._enter_spooling()
        if not self._held:
            try:
                await asyncio.to_thread(self.spool.append, entry)
                return True
            except SpoolFullError as exc:
                self.last_error = str(exc)
                if not self.spool_full:
                    log.error(
                        "ALARM: %s; holding up to %d readings in memory until it takes writes again",
                        exc,
                        self.hold_readings,
                    )
                self.spool_full = True
        size = entry_size(entry)
        if self.held + size > self.hold_readings:
            error = SpoolFullError(
                f"spool full and {self.held} readings held in memory (the bound); {describe(entry)} "
                "not stored"
            )
            if not self._refusal_told:
                self._refusal_told = True
                log.error("ALARM: %s, nor any more until the spool takes writes again", error)
            raise error
        self._held.append(_Held(entry, futures, size))
        async with self._changed:
            self.held += size
        return False

    def _release(self, held: _Held, error: BaseException | None) -> None:
        """``held`` left memory (durable, refused or lost): settle its submitters."""
        self.held -= held.size
        held.settle(error)
        self._changed_soon()

    def _changed_soon(self) -> None:
        """Wake waiters on ``_changed`` (pending fell) from code that does not hold it."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def _spool_held(self) -> None:
        """Move held entries into the spool, oldest first, while its disk takes them (the caller
        holds the spool lock); say once when it does again."""
        while self._held:
            held = self._held[0]
            try:
                await asyncio.to_thread(self.spool.append, held.entry)
            except SpoolFullError:
                return
            self._held.popleft()
            if isinstance(held.entry, list):
                self.spooled += held.size
            else:
                self.records_spooled += 1
            self._release(held, None)
        if self.spool_full:
            self.spool_full = False
            self._refusal_told = False
            log.warning("spool takes writes again; nothing is held in memory")

    def _note_unavailable(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not self._outage_told:  # one line per outage, however many lanes notice it
            self._outage_told = True
            log.warning("database unavailable (%s); spooling", self.last_error)

    def _drop_records_conn(self) -> None:
        conn, self._records_conn = self._records_conn, None
        if conn is not None:
            conn.terminate()

    def _enter_spooling(self) -> None:
        self.mode = "spooling"
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name="reading-writer-recovery")

    # -- database -----------------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
        )
        try:
            await conn.execute(_STAGE_DDL)
            if not self._schema_known:
                await self._load_schema(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _load_schema(self, conn: asyncpg.Connection) -> None:
        rows = dict(await conn.fetch("SELECT key, value FROM headend_settings"))
        if rows.get("storage_mode") == "native":
            width = await conn.fetchval("SELECT $1::text::interval", rows["partition_interval"])
            origin = await conn.fetchval("SELECT $1::text::timestamptz", rows["partition_origin"])
            self._partitions = _Partitions(width, origin.astimezone(UTC))
        self._schema_known = True

    async def _write(self, conn: asyncpg.Connection, readings: list[Reading]) -> None:
        """Store one batch idempotently in one transaction; counts inserted and duplicate rows."""
        for attempt in range(5):
            try:
                inserted = await self._write_once(conn, readings)
                break
            except RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
            except UNAVAILABLE:
                raise
            except asyncpg.PostgresError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise StorageError(f"database rejected {len(readings)} readings: {exc}") from exc
        self.written += inserted
        self.duplicates += len(readings) - inserted

    async def _store_record(self, conn: asyncpg.Connection, record: StoredRecord) -> None:
        try:
            await record.store(conn)
        except UNAVAILABLE:
            raise
        except asyncpg.PostgresError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise StorageError(f"database rejected {describe(record)}: {exc}") from exc

    async def _write_once(self, conn: asyncpg.Connection, readings: list[Reading]) -> int:
        await self._quantities.resolve(conn, {r.quantity for r in readings})
        await self._sources.resolve(conn, {r.source for r in readings})
        qids, sids = self._quantities.ids, self._sources.ids
        rows = [(r.meter_id, qids[r.quantity], r.ts, r.value, r.quality, sids[r.source]) for r in readings]
        created: set[datetime] = set()
        async with conn.transaction():
            if self._partitions is not None:
                created = await self._partitions.ensure(conn, readings)
            inserted = await self._insert(conn, rows)
        if self._partitions is not None:
            self._partitions.remember(created)
        return inserted

    async def _insert(self, conn: asyncpg.Connection, rows: Sequence[tuple[object, ...]]) -> int:
        """COPY straight into readings; if the batch holds a stored reading, stage and merge instead
        (and keep merging, as replays and backfills come in runs, until a batch is duplicate-free)."""
        if not self._merging:
            try:
                async with conn.transaction():  # savepoint: the fast path fails whole on any duplicate
                    await conn.copy_records_to_table("readings", records=rows, columns=COLUMNS)
                return len(rows)
            except asyncpg.UniqueViolationError:
                self._merging = True
        await conn.copy_records_to_table("readings_stage", records=rows, columns=COLUMNS)
        inserted = int((await conn.execute(_MERGE_SQL)).rsplit(" ", 1)[1])
        self._merging = inserted != len(rows)
        return inserted

    # -- recovery -----------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Replay the spool oldest first whenever the database answers; then switch back to direct."""
        while True:
            conn = None
            try:
                conn = await self._connect()
                if await self._replay(conn):
                    log.info("spool replayed; writing directly again")
                    return
            except UNAVAILABLE as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                async with self._spool_lock:
                    await self._spool_held()
            except Exception as exc:  # e.g. an unmigrated database: keep the spool, keep trying
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # once per distinct failure, not once per attempt
                    log.error("spool replay failed (%s); retrying every %g s", error, self.retry_interval)
                self.last_error = error
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(self.retry_interval)

    async def _replay(self, conn: asyncpg.Connection) -> bool:
        """Replay segments oldest first, each in its order; True once the spool is empty and the
        mode is direct again."""
        while True:
            async with self._spool_lock:
                segments = self.spool.segments()
                if not segments:
                    if self._held:
                        await self._write_held(conn)
                        continue
                    self.mode = "direct"
                    self._outage_told = False
                    return True
                segment = segments[0]
                self.spool.seal()
            contents = await asyncio.to_thread(self.spool.load, segment)
            damage: str | None = None
            try:
                for entry in contents.entries:
                    async with asyncio.timeout(self.deadline):
                        if isinstance(entry, list):
                            await self._write(conn, entry)
                        else:
                            await self._store_record(conn, entry)
                    if isinstance(entry, list):
                        self.replayed += len(entry)
                    else:
                        self.records_replayed += 1
            except StorageError as exc:
                damage = str(exc)
            if contents.damage:  # the damaged stretches are in quarantine/, the rest is stored
                self.last_error = "; ".join(contents.damage)
            async with self._spool_lock:
                if damage is None:
                    self.spool.remove(segment)
                    continue
                target = self.spool.reject(segment)
            self.last_error = damage
            log.error("ALARM: spool segment kept in %s, it cannot be replayed fully: %s", target, damage)

    async def _write_held(self, conn: asyncpg.Connection) -> None:
        """Store the oldest held entry (the spool is empty, the caller holds the spool lock)."""
        held = self._held[0]
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.deadline):
                if isinstance(held.entry, list):
                    await self._write(conn, held.entry)
                else:
                    await self._store_record(conn, held.entry)
        except StorageError as exc:
            error = exc
            self.rejected += held.size
        self._held.popleft()
        self._release(held, error)
        if not self._held and self.spool_full:
            self.spool_full = False
            self._refusal_told = False
            log.warning("held readings stored; nothing is held in memory")
