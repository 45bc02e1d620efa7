"""Error types raised by the DL/T 645 codec. Every codec failure is a ``DLT645Error``."""

from __future__ import annotations


class DLT645Error(ValueError):
    """Base class of every error the DL/T 645 codec raises."""


class FramingError(DLT645Error):
    """The bytes are not a DL/T 645 frame (start bytes, end byte, trailing bytes)."""


class TruncatedFrame(FramingError):
    """The frame ends before the length byte says it should."""


class ChecksumError(FramingError):
    """The checksum byte does not match the sum of the frame."""

    def __init__(self, computed: int, received: int) -> None:
        super().__init__(f"checksum mismatch: computed 0x{computed:02X}, frame has 0x{received:02X}")
        self.computed = computed
        self.received = received


class PayloadError(DLT645Error):
    """The data field does not fit the function code or data identifier."""


class EncodeError(DLT645Error):
    """A value or argument cannot be encoded into a frame."""
