"""The camera pipeline never reads fewer codes than naive full-frame pyzbar (issue 15, part 1).

Whatever the fast path does (skipping unchanged frames, a region of interest, edge-density
regions against a background model, crops at half resolution, variants), every code that
`pyzbar.decode(gray, symbols=[ZBarSymbol.QRCODE])` reads from a whole frame must also come out
of `QrDecoder`. The scenes (`qrscenes`) are the cases a region finder can miss: thin quiet
zones on dark surrounds, moiré from filming a screen, codes filling the frame, mirrored, small
and rotated codes.

Two ways the pipeline sees a scene:

- a still image: a fresh decoder fed the same frame 8 times at 15 fps;
- a stream: 20 idle frames of the same scene without the code (the background model has formed
  and unchanged frames are skipped), then the code appears and is held still, 15 identical
  frames. The phone may already be in view in the idle frames (`Scene.screen_first`).

Generated scenes: derandomized, 10 per kind and per way, the same on every run. Fixed scenes
(`qrscenes.EXAMPLES`): one per kind and the regressions, also with pyzbar as the only decoder.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

from device.sources.qrbackends import Preference
from device.sources.qrscan import QrDecoder
from tests.device import qrscenes as qs

FPS = 15.0
STILL_FRAMES = 8
IDLE_FRAMES = 20
HELD_FRAMES = 15

# Per kind and per test: 7 kinds × 10 generated scenes, the same ones on every run (CI).
_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def naive_reads(image: qs.Image) -> set[bytes]:
    """What naive full-frame pyzbar reads from one frame."""
    return {s.data for s in pyzbar.decode(qs.gray(image), symbols=[ZBarSymbol.QRCODE])}


def still_reads(image: qs.Image, backend: Preference = "auto") -> set[bytes]:
    """What a fresh pipeline reads from one image shown for 8 frames at 15 fps."""
    dec = QrDecoder(backend=backend)
    return {d.data for i in range(STILL_FRAMES) for d in dec.decode(image, i / FPS)}


def stream_reads(idle: qs.Image, image: qs.Image, backend: Preference = "auto") -> set[bytes]:
    """What the pipeline reads when the code appears in a still scene and is held."""
    dec = QrDecoder(backend=backend)
    frames = [idle] * IDLE_FRAMES + [image] * HELD_FRAMES
    return {d.data for i, frame in enumerate(frames) for d in dec.decode(frame, i / FPS)}


def _explained(scene: qs.Scene, naive: set[bytes], got: set[bytes]) -> str:
    return f"pipeline missed {len(naive - got)} code(s) naive pyzbar read: {scene.describe()}"


def _draw(data: st.DataObject, kind: str) -> tuple[qs.Scene, qs.Image, qs.Image, set[bytes]]:
    """A scene of `kind`, its two frames and what naive pyzbar reads in the code frame."""
    scene = data.draw(qs.scenes(kind), label="scene")
    idle, image = qs.render(scene)
    naive = naive_reads(image)
    # --hypothesis-show-statistics: how many generated scenes are not vacuous
    event(f"naive pyzbar reads {'the code' if naive else 'nothing'}")
    return scene, idle, image, naive


# -- explicit examples: one per kind, plus scenes an earlier decoder missed ------------------


@pytest.mark.parametrize("backend", ["auto", "pyzbar"])
@pytest.mark.parametrize("name", list(qs.EXAMPLES))
def test_fixed_example_is_read_by_naive_pyzbar_and_by_the_pipeline(
    name: str, backend: Preference
) -> None:
    """Each fixed scene: naive pyzbar reads its code (not vacuous), and so does the pipeline,
    from a still image and when the code appears in a still scene; also with pyzbar as the
    only decoder (32-bit Raspberry Pi OS has no zxing-cpp wheel)."""
    scene = qs.EXAMPLES[name]
    idle, image = qs.render(scene)
    naive = naive_reads(image)
    assert naive == {scene.payload.encode()}
    assert naive_reads(idle) == set()
    got = still_reads(image, backend)
    assert naive <= got, "still image: " + _explained(scene, naive, got)
    got = stream_reads(idle, image, backend)
    assert naive <= got, "code appearing: " + _explained(scene, naive, got)


# -- the property over generated scenes ------------------------------------------------------


@pytest.mark.parametrize("kind", qs.KINDS)
@_SETTINGS
@given(data=st.data())
def test_still_image_never_fewer_than_naive(kind: str, data: st.DataObject) -> None:
    scene, _idle, image, naive = _draw(data, kind)
    got = still_reads(image)
    assert naive <= got, _explained(scene, naive, got)


@pytest.mark.parametrize("kind", qs.KINDS)
@_SETTINGS
@given(data=st.data())
def test_code_appearing_in_a_still_scene_never_fewer_than_naive(
    kind: str, data: st.DataObject
) -> None:
    scene, idle, image, naive = _draw(data, kind)
    got = stream_reads(idle, image)
    assert naive <= got, _explained(scene, naive, got)
