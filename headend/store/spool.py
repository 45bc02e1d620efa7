"""Append-only, fsync'd, size-bounded on-disk spool of what the daemon stores, for while the
database is unreachable: batches of readings, and the cycle, event and clock records of
:mod:`headend.store.records`, kept in the order they were appended.

The spool is a directory of numbered segment files. A segment is a sequence of records
``b"HS" | u32 payload length | u32 crc32(payload) | payload``; a payload is either one batch of
readings as compact JSON rows ``[meter_id, quantity, ts_us, value, quality, source]`` or one
stored record as a JSON object (its ``to_json``). A record counts once
``append`` returns (the file and, for a new segment, the directory were fsync'd). A torn record at
the end of the newest segment (a crash mid-append, never acknowledged) is cut off on open.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
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


def describe(entry: SpoolEntry) -> str:
    """What an entry holds, for messages: ``12 readings`` or ``1 cycle record``."""
    if isinstance(entry, list):
        return f"{len(entry)} readings"
    return f"1 {str(entry.to_json()['record']).replace('_', ' ')} record"


def _scan(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(offset, length) of every intact payload and the offset where intact records end."""
    payloads, pos = [], 0
    while pos + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if magic != _MAGIC or start + length > len(data) or zlib.crc32(data[start : start + length]) != crc:
            break
        payloads.append((start, length))
        pos = start + length
    return payloads, pos


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory; one process at a time (an exclusive lock file guards it)."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.size_bytes = 0
        self._lock_handle: BinaryIO | None = None
        self._tail: BinaryIO | None = None
        self._tail_path: Path | None = None
        self._next_number = 1

    def open(self) -> None:
        """Lock the directory, cut a torn tail record, and measure what is already spooled."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rejected").mkdir(exist_ok=True)
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
            _, end = _scan(data)
            if end != len(data):
                log.warning(
                    "spool %s: cutting %d bytes of an unacknowledged torn record", newest, len(data) - end
                )
                with open(newest, "r+b") as f:
                    f.truncate(end)
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
        Blocking: run it in a thread."""
        record = encode_entry(entry)
        if self.size_bytes + len(record) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} is full ({self.size_bytes} of {self.max_bytes} bytes); "
                f"{describe(entry)} not stored"
            )
        if self._tail is not None and self._tail.tell() + len(record) > self.segment_bytes:
            self.seal()
        if self._tail is None:
            self._tail_path = self.directory / f"{self._next_number:012d}{_SUFFIX}"
            self._next_number += 1
            self._tail = open(self._tail_path, "ab")  # noqa: SIM115 - the open tail segment
            _fsync_dir(self.directory)
        self._tail.write(record)
        self._tail.flush()
        os.fsync(self._tail.fileno())
        self.size_bytes += len(record)
        return len(record)

    def seal(self) -> None:
        """Finish the tail segment: the next append starts a new one, so older ones are immutable."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None
            self._tail_path = None

    def load(self, segment: Path) -> tuple[list[SpoolEntry], str | None]:
        """The intact entries of a sealed segment, in order, and a description of any damage after them."""
        data = segment.read_bytes()
        payloads, end = _scan(data)
        batches = [decode_payload(data[start : start + length]) for start, length in payloads]
        damage = None if end == len(data) else f"{segment}: damaged record at byte {end} of {len(data)}"
        return batches, damage

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
