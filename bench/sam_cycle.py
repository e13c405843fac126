"""SAM read cycle (find → select → read-base) against the simulated reader, paced like a UART.

Target (DESIGN.md): a cycle at 115200 baud takes at most 1.2 × the wire time of its bytes, i.e.
the host side (pyserial, framing, parsing, decoding) adds at most 20 % to what the line costs.
The same run also measures an unpaced pty (the host's own cost with an infinitely fast line).

    .venv/bin/python bench/sam_cycle.py [--taps 30] [--baud 115200]

Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

from device.sources.cardreader import CardReader
from device.sources.credentials import Credential
from firmware_bridge import sam
from firmware_bridge.idcard import encode_text
from firmware_bridge.samsim import PHOTO_FILLER, SAMPLE_CARDS, SimulatedSam
from firmware_bridge.simserve import SimulatedReaderPort


def wire_bytes() -> int:
    """Bytes on the line for one cycle, both directions, from the real frame builders."""
    card = SAMPLE_CARDS["resident"]
    frames = [
        sam.find_card_command(),
        sam.build_response(0, 0, sam.SW3_FOUND, bytes(4)),
        sam.select_card_command(),
        sam.build_response(0, 0, sam.SW3_OK, bytes(8)),
        sam.read_base_command(),
        sam.build_response(0, 0, sam.SW3_OK, sam.read_base_data(encode_text(card), PHOTO_FILLER)),
    ]
    return sum(len(f) for f in frames)


def measure(taps: int, baud: int, workdir: Path) -> list[float]:
    """Cycle times in seconds for `taps` taps; baud 0 means an unpaced pty."""
    sim = SimulatedReaderPort(SimulatedSam(), link=workdir / f"reader-{baud}")
    sim.baud = baud
    sim.start()
    got: queue.Queue[Credential] = queue.Queue()
    reader = CardReader(sim.path, poll_interval_s=0.01)
    reader.start(got.put)
    cycles: list[float] = []
    try:
        deadline = time.monotonic() + 5
        while not reader.health()["connected"]:
            if time.monotonic() > deadline:
                raise SystemExit("reader did not connect")
            time.sleep(0.01)
        card = SAMPLE_CARDS["resident"]
        for _ in range(taps):
            sim.place(card)
            got.get(timeout=10)
            assert reader.last_cycle_s is not None
            cycles.append(reader.last_cycle_s)
            sim.remove()
            time.sleep(0.03)
    finally:
        reader.stop()
        sim.stop()
    return cycles


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=30)
    parser.add_argument("--baud", type=int, default=115200)
    args = parser.parse_args()
    nbytes = wire_bytes()
    wire_s = nbytes * 10 / args.baud
    with tempfile.TemporaryDirectory() as tmp:
        paced = measure(args.taps, args.baud, Path(tmp))
        unpaced = measure(args.taps, 0, Path(tmp))
    result = {
        "baud": args.baud,
        "taps": args.taps,
        "wire_bytes": nbytes,
        "wire_ms": round(wire_s * 1000, 2),
        "paced_p50_ms": round(statistics.median(paced) * 1000, 2),
        "paced_p99_ms": round(pct(paced, 0.99) * 1000, 2),
        "paced_max_ms": round(max(paced) * 1000, 2),
        "unpaced_p50_ms": round(statistics.median(unpaced) * 1000, 2),
        "ratio_p50": round(statistics.median(paced) / wire_s, 3),
        "ratio_p99": round(pct(paced, 0.99) / wire_s, 3),
        "target_ratio": 1.2,
    }
    print(f"{'case':<22}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    print(f"{'wire time':<22}{result['wire_ms']:>10}")
    print(
        f"{'paced @ ' + str(args.baud):<22}{result['paced_p50_ms']:>10}"
        f"{result['paced_p99_ms']:>10}{result['paced_max_ms']:>10}"
    )
    print(f"{'unpaced pty':<22}{result['unpaced_p50_ms']:>10}")
    print(json.dumps(result))
    return 0 if result["ratio_p99"] <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
