"""Append-only, fsync'd, size-bounded on-disk spool of what the daemon stores, for while the
database is unreachable: batches of readings, and the cycle, event and clock records of
:mod:`headend.store.records`, kept in the order they were appended.

The spool is a directory of numbered segment files. A segment is a sequence of records
``b"HS" | u32 payload length | u32 crc32(payload) | payload``; a payload is either one batch of
readings as compact JSON rows ``[meter_id, quantity, ts_us, value, quality, source]`` or one
stored record as a JSON object (its ``to_json``). A record counts once
``append`` returns (the file and, for a new segment, the directory were fsync'd); an append the
disk refuses is cut off again and raises :class:`SpoolFullError`.

Every record carries its own checksum, so damage costs only the damaged bytes: reading resumes at
the next intact record, and the damaged stretch is moved to ``quarantine/`` (the bytes in
``<segment>-<offset>.bad``, the reason in ``reasons.txt``), counted and logged once. A torn record
at the end of the newest segment (a crash mid-append, never acknowledged) is set aside there on open.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from headend.store.reading import Reading
from headend.store.records import StoredRecord, record_from_json

# one spool entry: a batch of readings, or one other record the daemon stores
SpoolEntry = list[Reading] | StoredRecord

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<2sII")
_MAGIC = b"HS"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SUFFIX = ".seg"
# the file system refuses to grow the spool: no space, over quota, over the process's file size limit
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class SpoolError(RuntimeError):
    """The spool cannot be used (locked by another process, unreadable ...)."""


class SpoolFullError(SpoolError):
    """Appending would exceed the spool's size bound; the readings were NOT stored."""


def encode_entry(entry: SpoolEntry) -> bytes:
    """One spool record (header + JSON payload) for a batch of readings or a stored record."""
    if isinstance(entry, list):
        data: object = [
            [
                r.meter_id,
                r.quantity,
                (r.ts - _EPOCH) // timedelta(microseconds=1),
                r.value,
                r.quality,
                r.source,
            ]
            for r in entry
        ]
    else:
        data = entry.to_json()
    payload = json.dumps(data, separators=(",", ":")).encode()
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpoolEntry:
    """The readings or the record of one spool record's payload."""
    data = json.loads(payload)
    if isinstance(data, dict):
        return record_from_json(data)
    return [
        Reading(meter_id, quantity, _EPOCH + timedelta(microseconds=ts_us), value, quality, source)
        for meter_id, quantity, ts_us, value, quality, source in data
    ]


def entry_size(entry: SpoolEntry) -> int:
    """How many readings an entry holds (a record counts as one)."""
    return len(entry) if isinstance(entry, list) else 1


def describe(entry: SpoolEntry) -> str:
    """What an entry holds, for messages: ``12 readings`` or ``1 cycle record``."""
    if isinstance(entry, list):
        return f"{len(entry)} readings"
    return f"1 {str(entry.to_json()['record']).replace('_', ' ')} record"


def _intact_length(data: bytes, pos: int) -> int | None:
    """The payload length of an intact record at ``pos`` (magic, length in bounds, CRC), else None."""
    if pos + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    if magic != _MAGIC or start + length > len(data) or zlib.crc32(data[start : start + length]) != crc:
        return None
    return int(length)


def scan(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(offset, length) of every intact payload, and (start, end) of every damaged stretch between
    them: after a record that fails its checksum the scan resumes at the next intact record, so a
    corrupt record costs itself only."""
    payloads: list[tuple[int, int]] = []
    damaged: list[tuple[int, int]] = []
    pos, bad_from = 0, -1
    while pos < len(data):
        length = _intact_length(data, pos)
        if length is not None:
            if bad_from >= 0:
                damaged.append((bad_from, pos))
                bad_from = -1
            payloads.append((pos + _HEADER.size, length))
            pos += _HEADER.size + length
            continue
        if bad_from < 0:
            bad_from = pos
        following = data.find(_MAGIC, pos + 1)
        pos = len(data) if following < 0 else following
    if bad_from >= 0:
        damaged.append((bad_from, len(data)))
    return payloads, damaged


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SegmentContents:
    """What a segment holds: its intact entries in order, and the damaged stretches (each already
    moved to ``quarantine/``) described for messages."""

    entries: list[SpoolEntry]
    damage: list[str]


class Spool:
    """The spool directory; one process at a time (an exclusive lock file guards it).

    ``quarantined`` counts the damaged stretches moved to ``quarantine/`` since the spool was opened
    (each once: a stretch already there is not counted or logged again).
    """

    def __init__(self, directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.size_bytes = 0
        self.quarantined = 0
        self._lock_handle: BinaryIO | None = None
        self._tail: int | None = None  # file descriptor of the open tail segment
        self._tail_size = 0
        self._tail_path: Path | None = None
        self._next_number = 1

    def open(self) -> None:
        """Lock the directory, set a torn tail record aside, and measure what is already spooled."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rejected").mkdir(exist_ok=True)
        (self.directory / "quarantine").mkdir(exist_ok=True)
        handle = open(self.directory / "spool.lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SpoolError(f"spool {self.directory} is in use by another headend process") from None
        self._lock_handle = handle
        segments = self.segments()
        if segments:
            newest = segments[-1]
            data = newest.read_bytes()
            _, damaged = scan(data)
            if damaged and damaged[-1][1] == len(data):
                start = damaged[-1][0]
                self._quarantine(
                    newest, data, start, len(data), "torn record at the end of the newest segment"
                )
                with open(newest, "r+b") as f:
                    f.truncate(start)
                    os.fsync(f.fileno())
            self._next_number = int(newest.stem) + 1
        self.size_bytes = sum(p.stat().st_size for p in segments)

    def close(self) -> None:
        """Close the tail segment and release the directory lock."""
        self.seal()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def is_empty(self) -> bool:
        return not self.segments()

    def append(self, entry: SpoolEntry) -> int:
        """Durably append one batch of readings or one record; return the bytes written.

        Raises :class:`SpoolFullError` when the size bound or the file system (no space, quota, file
        size limit) refuses it; a partly written record is cut off again, so nothing is half stored.
        Blocking: run it in a thread."""
        record = encode_entry(entry)
        if self.size_bytes + len(record) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} is full ({self.size_bytes} of {self.max_bytes} bytes); "
                f"{describe(entry)} not stored"
            )
        if self._tail is not None and self._tail_size + len(record) > self.segment_bytes:
            self.seal()
        try:
            if self._tail is None:
                path = self.directory / f"{self._next_number:012d}{_SUFFIX}"
                self._tail = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                self._tail_path, self._tail_size = path, os.fstat(self._tail).st_size
                self._next_number += 1
                _fsync_dir(self.directory)
            self._write_tail(record)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            raise SpoolFullError(
                f"spool {self.directory}: the disk refuses writes ({os.strerror(exc.errno or 0)}); "
                f"{describe(entry)} not stored"
            ) from exc
        self.size_bytes += len(record)
        return len(record)

    def _write_tail(self, record: bytes) -> None:
        """Write and fsync ``record`` at the tail's end; on failure cut the tail back to its old end."""
        assert self._tail is not None
        written = 0
        try:
            while written < len(record):
                written += os.write(self._tail, record[written:])
            os.fsync(self._tail)
        except OSError:
            try:
                os.ftruncate(self._tail, self._tail_size)
            except OSError:  # the partial record stays; the scan quarantines it
                self._tail_size += written
                self.size_bytes += written
            raise
        self._tail_size += len(record)

    def seal(self) -> None:
        """Finish the tail segment: the next append starts a new one, so older ones are immutable."""
        if self._tail is not None:
            os.close(self._tail)
            self._tail = None
            self._tail_path = None

    def load(self, segment: Path) -> SegmentContents:
        """The intact entries of a sealed segment, in order; damaged stretches (a record that fails
        its checksum or does not decode) are moved to ``quarantine/`` and described."""
        data = segment.read_bytes()
        payloads, damaged = scan(data)
        bad = [(start, end, "checksum mismatch") for start, end in damaged]
        entries: list[SpoolEntry] = []
        for start, length in payloads:
            try:
                entries.append(decode_payload(data[start : start + length]))
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((start - _HEADER.size, start + length, f"undecodable payload: {exc}"))
        damage = []
        for start, end, reason in sorted(bad):
            self._quarantine(segment, data, start, end, reason)
            damage.append(f"{segment.name}: {end - start} bytes at {start} quarantined ({reason})")
        return SegmentContents(entries, damage)

    def _quarantine(self, segment: Path, data: bytes, start: int, end: int, reason: str) -> None:
        """Keep ``data[start:end]`` of ``segment`` in ``quarantine/`` with its reason; log and count
        it the first time only."""
        target = self.directory / "quarantine" / f"{segment.stem}-{start:010d}.bad"
        if target.exists():
            return
        target.write_bytes(data[start:end])
        with open(self.directory / "quarantine" / "reasons.txt", "a") as reasons:
            reasons.write(f"{target.name}: {end - start} bytes of {segment.name} at {start}: {reason}\n")
            reasons.flush()
            os.fsync(reasons.fileno())
        _fsync_dir(target.parent)
        self.quarantined += 1
        log.error(
            "ALARM: spool %s: %d bytes at %d quarantined in %s (%s)",
            segment.name,
            end - start,
            start,
            target,
            reason,
        )

    def remove(self, segment: Path) -> None:
        """Delete a replayed segment."""
        if segment == self._tail_path:
            self.seal()
        size = segment.stat().st_size
        segment.unlink()
        _fsync_dir(self.directory)
        self.size_bytes -= size

    def reject(self, segment: Path) -> Path:
        """Move a segment the database refuses into ``rejected/`` for an operator to inspect."""
        if segment == self._tail_path:
            self.seal()
        size = segment.stat().st_size
        target = self.directory / "rejected" / segment.name
        segment.rename(target)
        _fsync_dir(self.directory)
        self.size_bytes -= size
        return target
