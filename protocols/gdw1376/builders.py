"""Ready-made 1376.1 frames for both sides: the terminal's login/heartbeat/answers, the master's
confirmations and requests, and splitting a large answer into a multi-frame reply.

Control bytes follow the real frames in the reference: terminal link tests C9 (DIR 1, PRM 1, fn 9),
master confirmation 0B (DIR 0, PRM 0, fn 11), master reads 4A/4B, terminal answers 88 (A8 with ACD).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.gdw1376.address import Address
from protocols.gdw1376.data import UnitConfirmation
from protocols.gdw1376.errors import EncodeError
from protocols.gdw1376.fields import PW_AFNS, PW_LEN, Afn, Control, Function, Seq
from protocols.gdw1376.frame import FIXED_LEN, Frame, Unit, assemble, encode, encode_unit, unit
from protocols.gdw1376.link import MAX_USER_DATA

LOGIN, LOGOUT, HEARTBEAT = 1, 2, 3
ALL_CONFIRMED, ALL_DENIED, PER_UNIT = 1, 2, 3
MAX_REPLY_USER_DATA = 1024  # a terminal's typical frame budget for one uplink frame
REQUEST_FUNCTION: dict[int, int] = {Afn.RESET: Function.RESET, Afn.CLASS2_DATA: 11, Afn.CLASS3_DATA: 11}


def link_test(address: Address, seq: int, fn: int, data: object = None) -> bytes:
    """Terminal → master: login (F1), logout (F2) or heartbeat (F3), CON set; ``data`` optional."""
    control = Control(up=True, prm=True, function=Function.LINK_TEST)
    units = [unit(0, fn, data)]
    return encode(Frame(control, address.with_msa(0), Afn.LINK_TEST, Seq(seq, con=True), units))


def confirm(address: Address, seq: int, fn: int = ALL_CONFIRMED, *, up: bool = False) -> bytes:
    """AFN 00 F1 (all confirmed) or F2 (all denied): from the master (C 0B) or the terminal (C 80)."""
    control = Control(up=up, prm=False, function=Function.CONFIRM if up else 11)
    return encode(Frame(control, address, Afn.CONFIRM, Seq(seq), [unit(0, fn)]))


def confirm_units(address: Address, seq: int, confirmation: UnitConfirmation, *, up: bool = False) -> bytes:
    """AFN 00 F3: confirm or deny each data unit of a frame."""
    control = Control(up=up, prm=False, function=Function.CONFIRM if up else 11)
    return encode(Frame(control, address, Afn.CONFIRM, Seq(seq), [unit(0, PER_UNIT, confirmation)]))


def request(
    address: Address,
    afn: int,
    units: Sequence[Unit],
    seq: int,
    *,
    pw: bytes | None = None,
    con: bool = False,
) -> Frame:
    """Master → terminal request (C 4A, or 4B for AFN 0D/0E, 41 for resets). AFNs that need PW get
    ``pw`` (16 bytes; zeros when None, what terminals without ESAM accept)."""
    needs_pw = afn in PW_AFNS
    if pw is not None and len(pw) != PW_LEN:
        raise EncodeError(f"PW must have {PW_LEN} bytes, got {len(pw)}")
    control = Control(up=False, prm=True, function=REQUEST_FUNCTION.get(afn, Function.REQUEST_CLASS1))
    return Frame(
        control,
        address,
        afn,
        Seq(seq, con=con),
        list(units),
        pw=(pw or bytes(PW_LEN)) if needs_pw else None,
    )


def build_request(
    address: Address, afn: int, units: Sequence[Unit], seq: int, *, pw: bytes | None = None
) -> bytes:
    """``request`` encoded to bytes."""
    return encode(request(address, afn, units, seq, pw=pw))


def response_frames(
    requested: Frame,
    units: Sequence[Unit],
    *,
    events: tuple[int, int] | None = None,
    max_user_data: int = MAX_REPLY_USER_DATA,
    afn: int | None = None,
) -> list[bytes]:
    """Terminal → master answer to ``requested`` (C 88; A8 with ACD when ``events`` = (EC1, EC2)).

    Units are packed into frames of at most ``max_user_data`` bytes of user data; a single frame
    has FIR=FIN=1, a multi-frame answer FIR on the first, FIN on the last, SEQ counting up from the
    request's. A unit larger than one frame is sent alone in its frame.
    """
    if not 64 <= max_user_data <= MAX_USER_DATA:
        raise EncodeError(f"frame budget {max_user_data} outside 64..{MAX_USER_DATA}")
    control = Control(up=True, prm=False, function=Function.RESPONSE, acd_fcb=events is not None)
    answer_afn = requested.afn if afn is None else afn
    overhead = FIXED_LEN + (2 if events is not None else 0)
    groups: list[list[bytes]] = [[]]
    used = overhead
    for u in units:
        encoded = encode_unit(answer_afn, True, u)
        if groups[-1] and used + len(encoded) > max_user_data:
            groups.append([])
            used = overhead
        groups[-1].append(encoded)
        used += len(encoded)
    frames = []
    last = len(groups) - 1
    for index, group in enumerate(groups):
        seq = Seq((requested.seq.seq + index) & 0x0F, fir=index == 0, fin=index == last)
        header = Frame(control, requested.address, answer_afn, seq, ec=events)
        frames.append(assemble(header, b"".join(group)))
    return frames
