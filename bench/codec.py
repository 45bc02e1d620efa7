"""Codec throughput: DL/T 645 against PyPI libraries, and Q/GDW 1376.1 against the DL/T 645 cycle.

DL/T 645: encode a 2007 read of 00 01 00 00 and decode the meter's reply; ``protocols.dlt645`` is
compared with the PyPI libraries ``dlt645`` (3.2.0) and ``python-dlt645`` (0.1.4), measured in the
same run. Q/GDW 1376.1 (no PyPI implementation found to compare with): a login frame built and
parsed, an AFN 0C F129 answer for 32 measurement points (4 units) built and parsed, and an AFN 10
F1 wrap/unwrap of the same DL/T 645 read; each is printed with its ratio to the headend DL/T 645
cycle measured in the same run. The hand-written 1376.1 header parse and the fast path of the
readings are also measured against the same fields as construct declarations (why they are
hand-written).

Both DL/T 645 libraries install a top-level package named ``dlt645``,
so each is installed into its own directory under ``~/.cache/headend-bench`` (for the benchmark
only; they are not project dependencies) and measured in its own subprocess.

Usage: ``python bench/codec.py [--seconds 2] [--rounds 5] [--gdw1376-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("HEADEND_BENCH_CACHE", Path.home() / ".cache" / "headend-bench"))
REPO = Path(__file__).resolve().parents[1]
LIBRARIES = {"dlt645": "dlt645==3.2.0", "python-dlt645": "python-dlt645==0.1.4"}
ADDRESS = "000000000161"
REPLY_HEX = "6861010000000068910833333433593333338A16"  # 0.26 kWh, a real meter's reply

# Each snippet defines cycle() -> value: build the read request, decode the reply to the value.
SNIPPETS = {
    "headend": f"""
from protocols.dlt645 import build_read, decode
REPLY = bytes.fromhex("{REPLY_HEX}")
def cycle():
    build_read("{ADDRESS}", "00010000")
    return decode(REPLY).value
""",
    "dlt645": f"""
import struct
from dlt645 import CtrlCode, DLT645Protocol, MeterClientService
SERVICE = MeterClientService(None)
ADDR = bytes.fromhex("{ADDRESS}")[::-1]
SERVICE.address = bytearray(ADDR)
REPLY = bytes.fromhex("{REPLY_HEX}")
def cycle():
    DLT645Protocol.build_frame(ADDR, CtrlCode.ReadData, struct.pack("<I", 0x00010000))
    return SERVICE.handle_response(DLT645Protocol.deserialize(REPLY)).value
""",
    "python-dlt645": f"""
import io
import dlt645
REPLY = bytes.fromhex("{REPLY_HEX}")
def cycle():
    frame = dlt645.Frame("{ADDRESS}")
    frame.data = "00010000"
    frame.dump()
    reply = dlt645.read_frame(dlt645.iogen(io.BytesIO(REPLY)))
    return int(reply.data[:-8]) / 100
""",
}

# 1376.1 snippets: cycle() returns a value checked against EXPECTED (defined by the snippet).
GDW1376_SNIPPETS = {
    "1376.1 login build+parse": """
from protocols.gdw1376 import Address, decode, link_test
ADDRESS = Address.parse("0314-25394")
EXPECTED = "0314-25394"
def cycle():
    return decode(link_test(ADDRESS, 3, 1)).address.key
""",
    "1376.1 F129 x32 Pn build+parse": """
import datetime as dt
from protocols.gdw1376 import Address, Afn, EnergyReading, build_request, decode, response_frames, unit
ADDRESS = Address.parse("0314-25394")
AT = dt.datetime(2026, 1, 1, 0, 15)
READINGS = [EnergyReading(AT, 1000.0 + pn, (400.0, 300.0, 200.0, 100.0 + pn)) for pn in range(1, 33)]
GROUPS = [tuple(range(g * 8 + 1, g * 8 + 9)) for g in range(4)]
REQUEST = decode(build_request(ADDRESS, Afn.CLASS1_DATA, [unit(pns, 129) for pns in GROUPS], 1))
UNITS = [unit(pns, 129, *READINGS[pns[0] - 1 : pns[-1]]) for pns in GROUPS]
EXPECTED = 32
def cycle():
    frames = response_frames(REQUEST, UNITS, max_user_data=2048)
    return sum(1 for raw in frames for _ in decode(raw).items())
""",
    "1376.1 F129 x32 Pn, construct only": """
from protocols.gdw1376.data import CODECS
CODECS[(0x0C, True, 129)].fast = None
import datetime as dt
from protocols.gdw1376 import Address, Afn, EnergyReading, build_request, decode, response_frames, unit
ADDRESS = Address.parse("0314-25394")
AT = dt.datetime(2026, 1, 1, 0, 15)
READINGS = [EnergyReading(AT, 1000.0 + pn, (400.0, 300.0, 200.0, 100.0 + pn)) for pn in range(1, 33)]
GROUPS = [tuple(range(g * 8 + 1, g * 8 + 9)) for g in range(4)]
REQUEST = decode(build_request(ADDRESS, Afn.CLASS1_DATA, [unit(pns, 129) for pns in GROUPS], 1))
UNITS = [unit(pns, 129, *READINGS[pns[0] - 1 : pns[-1]]) for pns in GROUPS]
EXPECTED = 32
def cycle():
    frames = response_frames(REQUEST, UNITS, max_user_data=2048)
    return sum(1 for raw in frames for _ in decode(raw).items())
""",
    "1376.1 AFN 10 F1 wrap+unwrap": f"""
from protocols import dlt645
from protocols.gdw1376 import (
    Address, Afn, ForwardReply, ForwardRequest, build_request, decode, response_frames, unit
)
ADDRESS = Address.parse("0314-25394")
REPLY = bytes.fromhex("{REPLY_HEX}")
FORWARD = decode(build_request(ADDRESS, Afn.FORWARD, [unit(0, 1, ForwardRequest(1, REPLY))], 2))
ANSWER = response_frames(FORWARD, [unit(0, 1, ForwardReply(1, REPLY))])[0]
EXPECTED = 0.26
def cycle():
    request = dlt645.build_read("{ADDRESS}", "00010000")
    build_request(ADDRESS, Afn.FORWARD, [unit(0, 1, ForwardRequest(1, request))], 2)
    return dlt645.decode(decode(ANSWER).value(1).content).value
""",
    "1376.1 header, hand-written": """
from protocols.gdw1376.address import Address
from protocols.gdw1376.fields import Control, Seq
DATA = bytes.fromhex("C914033263000273")
EXPECTED = 2
def cycle():
    return (Control.from_byte(DATA[0]), Address.from_wire(DATA[1:6]), DATA[6], Seq.from_byte(DATA[7]))[2]
""",
    "1376.1 header, construct": """
from construct import BitsInteger, BitStruct, Bytes, Flag, Int8ul, Int16ul, Struct
HEADER = Struct(
    "c" / BitStruct("up" / Flag, "prm" / Flag, "acd" / Flag, "fcv" / Flag, "fn" / BitsInteger(4)),
    "a1" / Bytes(2), "a2" / Int16ul, "a3" / Int8ul, "afn" / Int8ul,
    "seq" / BitStruct("tpv" / Flag, "fir" / Flag, "fin" / Flag, "con" / Flag, "seq" / BitsInteger(4)),
).compile()
DATA = bytes.fromhex("C914033263000273")
EXPECTED = 2
def cycle():
    return HEADER.parse(DATA).afn
""",
}

RUNNER = """
import sys, time, json
exec(sys.argv[1])
EXPECTED = globals().get("EXPECTED", 0.26)
assert abs(cycle() - EXPECTED) < 1e-9 if isinstance(EXPECTED, float) else cycle() == EXPECTED, cycle()
seconds = float(sys.argv[2])
n = 0
start = time.perf_counter()
while True:
    for _ in range(1000):
        cycle()
    n += 1000
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
        break
print(json.dumps(n / elapsed))
"""


def ensure_library(name: str) -> Path:
    """Install a comparison library into its own cache directory (once)."""
    target = CACHE / name
    if not (target / "dlt645").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), LIBRARIES[name]],
            check=True,
        )
    return target


def measure(name: str, path: Path | None, seconds: float) -> float:
    """Frames per second (encode + decode cycles) of one implementation, in a fresh subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(path) if path else str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, {**SNIPPETS, **GDW1376_SNIPPETS}[name], str(seconds)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(path or REPO),
        check=True,
    )
    return float(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument(
        "--gdw1376-only", action="store_true", help="skip the PyPI DL/T 645 libraries (1376.1 figures only)"
    )
    args = parser.parse_args()
    paths: dict[str, Path | None] = {"headend": None}
    for name in [] if args.gdw1376_only else LIBRARIES:
        try:
            paths[name] = ensure_library(name)
        except subprocess.CalledProcessError:
            print(f"{name}: could not be installed (pip install {LIBRARIES[name]}); skipped", file=sys.stderr)
    results: dict[str, list[float]] = {name: [] for name in [*paths, *GDW1376_SNIPPETS]}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(measure(name, paths.get(name), args.seconds))
    medians = {name: statistics.median(values) for name, values in results.items()}
    gdw = {name: medians.pop(name) for name in GDW1376_SNIPPETS}
    baselines = {name: rate for name, rate in medians.items() if name != "headend"}
    best_name = max(baselines, key=baselines.get) if baselines else None
    print(f"DL/T 645 2007 read 00010000: encode request + decode reply, median of {args.rounds} rounds")
    for name, rate in sorted(medians.items(), key=lambda item: -item[1]):
        spread = f"{min(results[name]):,.0f}..{max(results[name]):,.0f}"
        print(f"  {name:14s} {rate:12,.0f} frames/s   (rounds {spread})")
    if best_name:
        ratio = medians["headend"] / baselines[best_name]
        print(f"  ratio headend / {best_name} (faster baseline): {ratio:.2f}x")
    baseline = medians["headend"]
    print("Q/GDW 1376.1 (cycles/s; ratio to the headend DL/T 645 cycle above, same run)")
    for name, rate in gdw.items():
        spread = f"{min(results[name]):,.0f}..{max(results[name]):,.0f}"
        print(f"  {name:32s} {rate:12,.0f} /s  {rate / baseline:5.2f}x   (rounds {spread})")
    hand, declared = gdw["1376.1 header, hand-written"], gdw["1376.1 header, construct"]
    print(f"  header: hand-written / construct declaration: {hand / declared:.1f}x")
    fast, slow = gdw["1376.1 F129 x32 Pn build+parse"], gdw["1376.1 F129 x32 Pn, construct only"]
    print(f"  F129 readings: hand-written fast path / construct declaration: {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
