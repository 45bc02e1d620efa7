"""DL/T 645 codec (2007 and 1997 editions): pure functions of bytes and values, no I/O.

Typical use::

    from protocols.dlt645 import build_read, decode, Deframer
    request = build_read("000000000161", "00010000")   # FE FE FE FE 68 ... 16
    frame = decode(reply_bytes)     # Frame(edition=2007, di="00010000", value=0.26, ...)
"""

from protocols.dlt645.builders import (
    build_abnormal,
    build_change_baud,
    build_change_password,
    build_control,
    build_demand_reset,
    build_event_clear,
    build_freeze,
    build_meter_clear,
    build_multifunction_output,
    build_read,
    build_read_address,
    build_read_followup,
    build_read_profile,
    build_read_reply_frames,
    build_read_response,
    build_response,
    build_time_sync,
    build_write,
    build_write_address,
)
from protocols.dlt645.dataitems import DataItem, di_to_wire, lookup, normalize_di
from protocols.dlt645.decoder import assemble_read, decode, detect_edition
from protocols.dlt645.errors import (
    ChecksumError,
    DLT645Error,
    EncodeError,
    FramingError,
    PayloadError,
    TruncatedFrame,
)
from protocols.dlt645.frame import Frame
from protocols.dlt645.functions import CONTROL_ACTIONS, error_flags
from protocols.dlt645.link import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Deframer,
    encode_frame,
    parse_link,
    scramble,
    unicast_address,
    unscramble,
)

__all__ = [
    "BROADCAST_ADDRESS",
    "CONTROL_ACTIONS",
    "WILDCARD_ADDRESS",
    "ChecksumError",
    "DLT645Error",
    "DataItem",
    "Deframer",
    "EncodeError",
    "Frame",
    "FramingError",
    "PayloadError",
    "TruncatedFrame",
    "assemble_read",
    "build_abnormal",
    "build_change_baud",
    "build_change_password",
    "build_control",
    "build_demand_reset",
    "build_event_clear",
    "build_freeze",
    "build_meter_clear",
    "build_multifunction_output",
    "build_read",
    "build_read_address",
    "build_read_followup",
    "build_read_profile",
    "build_read_reply_frames",
    "build_read_response",
    "build_response",
    "build_time_sync",
    "build_write",
    "build_write_address",
    "decode",
    "detect_edition",
    "di_to_wire",
    "encode_frame",
    "error_flags",
    "lookup",
    "normalize_di",
    "parse_link",
    "scramble",
    "unicast_address",
    "unscramble",
]
