"""Error types raised by the Q/GDW 1376.1 codec. Every codec failure is a ``GDW1376Error``."""

from __future__ import annotations


class GDW1376Error(ValueError):
    """Base class of every error the 1376.1 codec raises."""


class FramingError(GDW1376Error):
    """The bytes are not a 1376.1 frame (start bytes, length copies, protocol id, end byte)."""


class TruncatedFrame(FramingError):
    """The frame ends before its length field says it should."""


class ChecksumError(FramingError):
    """The checksum byte does not match the sum of the user data."""

    def __init__(self, computed: int, received: int) -> None:
        super().__init__(f"checksum mismatch: computed 0x{computed:02X}, frame has 0x{received:02X}")
        self.computed = computed
        self.received = received


class PayloadError(GDW1376Error):
    """The user data does not fit the AFN, the Fn or a value format."""


class EncodeError(GDW1376Error):
    """A value or argument cannot be encoded into a frame."""
