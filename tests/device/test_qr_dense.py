"""The minimum module sizes docs/dense-codes.md documents for dense QR codes stay true.

bench/qr_dense.py measures, for versions 10–25 at 640×480 and 1280×720, the smallest module
size (pixels) at which the camera pipeline reads a long health-code payload through a realistic
camera (phone screen, rotation, perspective, blur, noise, JPEG). The doc's table carries those
minimums; here each one is checked against a freshly rendered scene at that size, with the
bench's own renderer and seeds, so a change to the pipeline that loses dense codes, or a doc
that claims more than the code does, fails.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "bench") not in sys.path:
    sys.path.append(str(ROOT / "bench"))  # after the packages: bench/ names shadow nothing
qr_dense = importlib.import_module("qr_dense")

DOC = ROOT / "docs" / "dense-codes.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)×(\d+)\s*\|\s*\d+\s*\|\s*([\d.]+|none)\s*\|")
Resolution = tuple[int, int]


def documented() -> list[tuple[int, Resolution, float | None]]:
    """(version, resolution, pipeline minimum) from the doc's summary table."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            version, w, h, px = match.groups()
            rows.append((int(version), (int(w), int(h)), None if px == "none" else float(px)))
    return rows


def test_the_doc_covers_every_version_and_resolution() -> None:
    covered = {(v, r) for v, r, _px in documented()}
    wanted = {(v, r) for v in qr_dense.VERSIONS for r in qr_dense.RESOLUTIONS}
    assert covered == wanted
    assert all(px is not None for _v, _r, px in documented()), "every cell has a minimum"


def test_the_doc_was_measured_as_the_bench_runs_now() -> None:
    """The doc's figures come from the bench's defaults: the trials checked below."""
    text = DOC.read_text(encoding="utf-8")
    defaults = qr_dense.build_parser().parse_args([])
    assert "bench/qr_dense.py" in text
    assert f"{defaults.trials} trials" in text
    assert defaults.seed == 0


@pytest.mark.parametrize(
    ("version", "resolution", "module_px"),
    [pytest.param(*row, id=f"v{row[0]}-{row[1][0]}x{row[1][1]}") for row in documented()],
)
def test_the_pipeline_reads_the_documented_minimum(
    version: int, resolution: Resolution, module_px: float
) -> None:
    for trial in range(qr_dense.TRIALS):
        scene = qr_dense.scene(version, module_px, resolution, trial)
        assert scene.image is not None, "the documented size fits the frame"
        got = qr_dense.pipeline_reads(scene.image)
        assert scene.text.encode() in got, f"trial {trial}: not read at {module_px} px"
