"""The camera of bench/kiosk_resources.py: a generated 640×480 video served live at its rate.

``make_video`` writes, with OpenCV, an MJPG ``.avi`` of the idle gate scene from
tests/device/qrframes.py (a wall, a sign, sensor noise, slow lighting drift) in which a phone
slides in, holds a QR code for a second and slides out again, once per loop (20 s at 15 fps
by default): frames with and without a code.

A video *file* given to the agent would be read losslessly at the consumer's pace (as fast as
it decodes), not at 15 frames/s, and would end. A camera is live: frames come at their rate
whether or not anyone keeps up. So this module serves the file the way an IP camera serves
MJPEG (``multipart/x-mixed-replace`` over HTTP), paced in real time and looped, and the agent
opens ``http://127.0.0.1:PORT/video.mjpg`` as a live source (``camera.source``), through the
same ``cv2.VideoCapture`` (FFmpeg) it opens a stream with. Each client gets its own stream
from the first frame.

    .venv/bin/python bench/kioskres_video.py make OUT.avi [--fps 15] [--seconds 20]
    .venv/bin/python bench/kioskres_video.py serve VIDEO.avi [--fps 15]   # prints the URL
    .venv/bin/python bench/kioskres_video.py read URL   # the bare capture: read, discard
"""

from __future__ import annotations

import argparse
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.device.qrframes

from tests.device import qrframes

BOUNDARY = b"frame"


def make_video(path: Path, *, fps: float = 15.0, seconds: float = 20.0, seed: int = 0) -> Path:
    """The loop: idle scene, a phone holding a code for one second, idle scene."""
    shot = qrframes.shot("plain", qrframes.token(0, seed), hold_frames=round(fps))
    slide_in, slide_out = 10, 6
    idle = max(1, (round(seconds * fps) - slide_in - slide_out - round(fps)) // 2)
    seq = qrframes.make_sequence(
        [shot], idle_frames=idle, slide_in_frames=slide_in, slide_out_frames=slide_out, seed=seed
    )
    return qrframes.write_video(seq.frames, path, fps)


def jpeg_frames(video: Path) -> list[bytes]:
    """Every frame of ``video`` as JPEG bytes (decoded and encoded once, before serving)."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    finally:
        cap.release()
    if not frames:
        raise SystemExit(f"{video}: no frames")
    return frames


def serve(video: Path, fps: float, port: int = 0) -> None:
    """Serve ``video`` as a looping MJPEG stream at ``fps``; prints the URL, runs forever."""
    frames = jpeg_frames(video)

    class Stream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header(
                "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
            )
            self.end_headers()
            due = time.monotonic()
            i = 0
            try:
                while True:
                    jpeg = frames[i % len(frames)]
                    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    self.wfile.write(head % (BOUNDARY, len(jpeg)) + jpeg + b"\r\n")
                    i += 1
                    due += 1.0 / fps
                    time.sleep(max(0.0, due - time.monotonic()))
            except OSError:
                return  # the client went away

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per stream is not worth the noise."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Stream)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", flush=True)
    server.serve_forever()


def read(url: str) -> None:
    """The bare capture: open the stream the way the agent does and throw the frames away."""
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    cap = cv2.VideoCapture(url, cv2.CAP_ANY, timeouts)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {url}")
    print("reading", flush=True)
    while cap.read()[0]:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    mk = verbs.add_parser("make")
    mk.add_argument("out", type=Path)
    mk.add_argument("--fps", type=float, default=15.0)
    mk.add_argument("--seconds", type=float, default=20.0)
    sv = verbs.add_parser("serve")
    sv.add_argument("video", type=Path)
    sv.add_argument("--fps", type=float, default=15.0)
    rd = verbs.add_parser("read")
    rd.add_argument("url")
    args = parser.parse_args()
    if args.verb == "make":
        print(make_video(args.out, fps=args.fps, seconds=args.seconds))
    elif args.verb == "serve":
        serve(args.video, args.fps)
    else:
        read(args.url)


if __name__ == "__main__":
    main()
