"""DL/T 645 codec throughput: encode a 2007 read of 00 01 00 00 and decode the meter's reply.

Compares ``protocols.dlt645`` with the PyPI libraries ``dlt645`` (3.2.0) and ``python-dlt645``
(0.1.4), measured in the same run. Both libraries install a top-level package named ``dlt645``,
so each is installed into its own directory under ``~/.cache/headend-bench`` (for the benchmark
only; they are not project dependencies) and measured in its own subprocess.

Usage: ``python bench/codec.py [--seconds 2] [--rounds 5]``
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

RUNNER = """
import sys, time, json
exec(sys.argv[1])
assert abs(cycle() - 0.26) < 1e-9, cycle()
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
        [sys.executable, "-c", RUNNER, SNIPPETS[name], str(seconds)],
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
    args = parser.parse_args()
    paths: dict[str, Path | None] = {"headend": None}
    for name in LIBRARIES:
        try:
            paths[name] = ensure_library(name)
        except subprocess.CalledProcessError:
            print(f"{name}: could not be installed (pip install {LIBRARIES[name]}); skipped", file=sys.stderr)
    results: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            results[name].append(measure(name, path, args.seconds))
    medians = {name: statistics.median(values) for name, values in results.items()}
    baselines = {name: rate for name, rate in medians.items() if name != "headend"}
    best_name = max(baselines, key=baselines.get) if baselines else None
    print(f"DL/T 645 2007 read 00010000: encode request + decode reply, median of {args.rounds} rounds")
    for name, rate in sorted(medians.items(), key=lambda item: -item[1]):
        spread = f"{min(results[name]):,.0f}..{max(results[name]):,.0f}"
        print(f"  {name:14s} {rate:12,.0f} frames/s   (rounds {spread})")
    if best_name:
        ratio = medians["headend"] / baselines[best_name]
        print(f"  ratio headend / {best_name} (faster baseline): {ratio:.2f}x")


if __name__ == "__main__":
    main()
