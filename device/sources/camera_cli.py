"""`kiosk camera scan SOURCE`: a technician's tool to check a camera and its QR decoding.

Prints one JSON line per accepted code (after dedupe and the payload checks),
`{"frame": N, "data": "…", "decode_ms": …}`, and a summary on stderr at the end. A file source
is read without dropping frames and the command exits at its end; a device or a stream runs
until `--max-frames` or Ctrl-C. The decoded text is printed because showing it is the point of
the tool; the agent itself never logs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from device.errors import CameraEnded, NoQrDecoder
from device.sources.camera import CaptureThread, OpenCvCamera
from device.sources.qrbackends import Preference
from device.sources.qrscan import QrDecoder, QrScanner


def scan(
    source: str,
    *,
    dedupe_s: float = 3.0,
    max_frames: int | None = None,
    no_frame_timeout_s: float = 10.0,
    decoder: Preference = "auto",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Scan `source` and print accepted codes; 0 on success, 2 if it never opened."""
    try:
        qr = QrDecoder(backend=decoder)
    except NoQrDecoder as exc:
        print(f"error: {exc}", file=err)
        return 2
    print(f"camera scan: decoding with {qr.decoder_names}", file=err)
    camera = OpenCvCamera(source)
    scanner = QrScanner(camera, dedupe_s=dedupe_s, decoder=qr)
    capture: CaptureThread = scanner.capture  # read on its thread, decode on this one
    capture.start()
    frames = 0
    last_frame = time.monotonic()
    try:
        while max_frames is None or frames < max_frames:
            try:
                frame = capture.get(timeout=0.5)
            except CameraEnded:
                break
            if frame is None:
                if time.monotonic() - last_frame > no_frame_timeout_s:
                    # a technician's tool must not wait forever on a camera that is not there
                    print(f"error: no frame from {source!r} for {no_frame_timeout_s:g} s", file=err)
                    break
                continue
            frames += 1
            last_frame = time.monotonic()
            for acc in scanner.process(frame):
                line = {"frame": acc.frame, "data": acc.text, "decode_ms": round(acc.decode_ms, 2)}
                print(json.dumps(line, ensure_ascii=False), file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        capture.stop()
    health = scanner.health()
    summary: dict[str, Any] = {
        k: health[k]
        for k in ("frames", "drops", "restarts", "codes", "duplicates", "rejected", "avg_decode_ms")
    }
    print(f"camera scan: {json.dumps(summary)}", file=err)
    if health["frames"] == 0:
        print(f"error: cannot open camera source {source!r}", file=err)
        return 2
    return 0


def _scan(args: argparse.Namespace) -> int:
    return scan(
        args.source,
        dedupe_s=args.dedupe,
        max_frames=args.max_frames,
        no_frame_timeout_s=args.timeout,
        decoder=args.decoder,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `camera scan` to the `kiosk` command line."""
    camera = sub.add_parser("camera", help="camera tools (scan QR codes from a camera or file)")
    verbs = camera.add_subparsers(dest="verb", required=True)
    scan_p = verbs.add_parser(
        "scan", help="print one JSON line per accepted QR code from a camera, file or stream"
    )
    scan_p.add_argument(
        "source", metavar="SOURCE", help="device index (0), video file path or stream URL"
    )
    scan_p.add_argument(
        "--dedupe",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds within which the same code counts once (default 3)",
    )
    scan_p.add_argument(
        "--max-frames", type=int, default=None, metavar="N", help="stop after N frames"
    )
    scan_p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="give up (exit 2) when no frame arrives for S seconds (default 10)",
    )
    scan_p.add_argument(
        "--decoder",
        choices=("auto", "zxing", "pyzbar"),
        default="auto",
        help="QR decoder: zxing-cpp first with pyzbar fallback (auto, zxing) or pyzbar alone",
    )
    scan_p.set_defaults(func=_scan)
