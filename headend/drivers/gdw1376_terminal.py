"""The concentrator itself: its clock (AFN 0C F2 / AFN 05 F31) and its meter archive (AFN 0A / 04 F10).

Clock: :class:`TerminalClock` reads F2 and sets F31 (with PW); when to set it is decided by the same
policy as meter clocks (:func:`headend.engine.clock.check_clock`), which also reads it back.
Archive: the inventory's meters of one concentrator become archive records with serial = Pn (the Pn
stored in the inventory, so a meter keeps its Pn across pushes); ``diff`` queries the concentrator's
records for those serials and the next ``EXTRA_SCAN`` ones, ``push`` downloads the missing or
different records and deletes the extra ones (Pn 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headend.drivers.base import DriverError
from headend.store.archive_requests import ArchiveRow
from headend.transport.concentrator import ConcentratorLink
from protocols.gdw1376 import Afn, ArchiveQuery, ArchiveRecord, unit

EXTRA_SCAN = 32  # serials beyond the highest inventory Pn that are queried for extra records
QUERY_BATCH = 64  # serials per AFN 0A F10 query
PUSH_BATCH = 16  # records per AFN 04 F10 frame (27 bytes each)
PROTOCOLS = {2007: 30, 1997: 1}


async def read_terminal_clock(link: ConcentratorLink) -> datetime:
    """The concentrator's calendar clock (AFN 0C F2) as UTC."""
    for _pn, fn, value in await link.values(Afn.CLASS1_DATA, [unit(0, 2)]):
        if fn == 2 and isinstance(value, datetime):
            utc = link.to_utc(value)
            assert utc is not None
            return utc
    raise DriverError(f"{link.label}: no clock in the answer to AFN 0C F2")


class TerminalClock:
    """A concentrator's clock as the clock policy sees a meter's (``read_clock`` / ``set_clock``)."""

    def __init__(self, link: ConcentratorLink) -> None:
        self.link = link
        self.utc_offset = link.utc_offset  # the concentrator's local time minus UTC

    async def read_clock(self) -> datetime:
        return await read_terminal_clock(self.link)

    async def set_clock(self, *, broadcast: bool) -> None:
        """AFN 05 F31 with the PW (a concentrator is always set addressed: ``broadcast`` is ignored)."""
        now = self.link.to_local(datetime.now(UTC)).replace(microsecond=0)
        await self.link.request(Afn.CONTROL, [unit(0, 31, now)])


@dataclass(frozen=True, slots=True)
class ArchivePoint:
    """One inventory meter as the concentrator should know it."""

    pn: int
    port: int
    address: str
    edition: int = 2007

    def to_row(self) -> ArchiveRow:
        return {"pn": self.pn, "port": self.port, "address": self.address, "edition": self.edition}

    @classmethod
    def from_row(cls, row: ArchiveRow) -> ArchivePoint:
        return cls(int(row["pn"]), int(row["port"]), str(row["address"]), int(row["edition"]))

    def record(self, baud: int) -> ArchiveRecord:
        return ArchiveRecord(
            serial=self.pn,
            pn=self.pn,
            port=self.port,
            address=self.address,
            protocol=PROTOCOLS[self.edition],
            baud=baud,
        )


@dataclass(slots=True)
class ArchiveDiff:
    """Inventory vs the concentrator's archive, by serial (= Pn)."""

    missing: list[ArchiveRecord] = field(default_factory=list)  # in the inventory only
    different: list[tuple[ArchiveRecord, ArchiveRecord]] = field(default_factory=list)  # (wanted, found)
    extra: list[ArchiveRecord] = field(default_factory=list)  # at the concentrator only
    matching: int = 0

    @property
    def agrees(self) -> bool:
        return not (self.missing or self.different or self.extra)

    def changes(self) -> tuple[list[ArchiveRow], list[ArchiveRow]]:
        """What a push sends, as rows: the records it writes, and the records it deletes."""
        writes = [record_row(r) for r in (*self.missing, *(w for w, _f in self.different))]
        return writes, [record_row(r) for r in self.extra]

    def to_json(self) -> dict[str, Any]:
        def brief(record: ArchiveRecord) -> dict[str, Any]:
            return {
                "pn": record.pn,
                "port": record.port,
                "address": record.address,
                "protocol": record.protocol,
            }

        return {
            "agrees": self.agrees,
            "matching": self.matching,
            "missing": [brief(r) for r in self.missing],
            "different": [{"wanted": brief(w), "found": brief(f)} for w, f in self.different],
            "extra": [brief(r) for r in self.extra],
        }


def record_row(record: ArchiveRecord) -> ArchiveRow:
    """An archive record as a request row (what the operator is shown and agrees to)."""
    return {
        "serial": record.serial,
        "pn": record.pn,
        "port": record.port,
        "address": record.address,
        "protocol": record.protocol,
        "baud": record.baud,
    }


def _same(wanted: ArchiveRecord, found: ArchiveRecord) -> bool:
    keys = (wanted.pn, wanted.port, wanted.address, wanted.protocol)
    if keys != (found.pn, found.port, found.address, found.protocol):
        return False
    return wanted.baud == 0 or found.baud in (0, wanted.baud)


async def read_archive(link: ConcentratorLink, serials: list[int]) -> dict[int, ArchiveRecord]:
    """The concentrator's archive records for ``serials`` (AFN 0A F10), by serial."""
    found: dict[int, ArchiveRecord] = {}
    for start in range(0, len(serials), QUERY_BATCH):
        query = ArchiveQuery(tuple(serials[start : start + QUERY_BATCH]))
        for _pn, fn, value in await link.values(Afn.QUERY_PARAMETERS, [unit(0, 10, query)]):
            if fn == 10 and isinstance(value, tuple):
                found.update((r.serial, r) for r in value if isinstance(r, ArchiveRecord))
    return found


async def diff_archive(link: ConcentratorLink, points: list[ArchivePoint]) -> ArchiveDiff:
    """Compare the inventory's meters of ``link`` with the concentrator's archive."""
    baud = link.config.baud
    wanted = {p.pn: p.record(baud) for p in points}
    scan = range(1, max(wanted, default=0) + EXTRA_SCAN + 1)
    found = await read_archive(link, list(scan))
    diff = ArchiveDiff()
    for serial, record in sorted(wanted.items()):
        other = found.get(serial)
        if other is None:
            diff.missing.append(record)
        elif not _same(record, other):
            diff.different.append((record, other))
        else:
            diff.matching += 1
    diff.extra = [r for serial, r in sorted(found.items()) if serial not in wanted]
    return diff


async def push_archive(link: ConcentratorLink, diff: ArchiveDiff) -> int:
    """Download the missing and different records and delete the extra ones (AFN 04 F10, PW); returns
    the records sent."""
    records = [*diff.missing, *(w for w, _f in diff.different)]
    records += [ArchiveRecord(serial=r.serial, pn=0, port=r.port, address=r.address) for r in diff.extra]
    for start in range(0, len(records), PUSH_BATCH):
        await link.request(Afn.SET_PARAMETERS, [unit(0, 10, tuple(records[start : start + PUSH_BATCH]))])
    return len(records)
