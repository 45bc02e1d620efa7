"""Round trip: decode(encode(frame)) == frame for generated frames of every declared data unit kind,
and the address text forms parse back to the same address."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.gdw1376 import Address, Deframer, Frame, decode, encode
from tests.gdw1376.strategies import ADDRESSES, frames


@settings(max_examples=400, deadline=None)
@given(frames())
def test_encode_then_decode_is_identity(frame: Frame) -> None:
    raw = encode(frame)
    assert decode(raw) == frame
    assert encode(decode(raw)) == raw


@settings(max_examples=100, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=4), st.data())
def test_deframer_returns_every_frame_from_any_chunking(batch: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode(f) for f in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    deframer = Deframer()
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += deframer.feed(stream[a:b])
    assert [decode(f) for f in out] == batch
    assert deframer.pending == 0 and deframer.noise_bytes == 0


@given(ADDRESSES)
def test_address_text_forms(address: Address) -> None:
    assert Address.parse(address.key).key == address.key
    assert Address.parse(address.hex_name).key == address.key
    assert Address.from_wire(address.to_wire()) == address
