"""The QR decoder: which one the camera uses, and that it reads a code.

The kiosk decodes with zxing-cpp first and pyzbar as the fallback (`camera.decoder`). Either
may be missing: zxing-cpp has no wheel for 32-bit Raspberry Pi OS, and pyzbar needs the
libzbar0 system package. This check says which decoders the agent will use and proves each
reads a built-in test code, without a camera.
"""

from __future__ import annotations

import platform
import sys

from device.doctor.context import DoctorContext
from device.doctor.model import CheckResult, fail, not_configured, ok, warn

#: Machines zxing-cpp publishes wheels for: elsewhere pyzbar alone is expected, not a fault.
ZXING_MACHINES = ("x86_64", "aarch64")


def this_machine() -> str:
    """The machine as far as wheels go: a 32-bit Python on a 64-bit kernel (32-bit Raspberry
    Pi OS on a Pi 4 or 5 says aarch64) is "armv7l"; zxing-cpp has no wheel for it."""
    machine = platform.machine()
    if sys.maxsize <= 2**32 and machine in ZXING_MACHINES:
        return "armv7l" if machine == "aarch64" else "i686"
    return machine


INSTALL_ZXING = (
    "reinstall with deploy/install.sh (it adds the zxing extra), or: pip install zxing-cpp"
)
INSTALL_ZBAR = "sudo apt install libzbar0"


def check_qr_decoder(ctx: DoctorContext, machine: str | None = None) -> CheckResult:
    """The decoders `camera.decoder` selects load and read the built-in test code."""
    cam = ctx.config.camera
    if not cam.enabled:
        return not_configured("qr_decoder", "not configured (camera.enabled = false)")
    # Here, not at the top: numpy is ~20 MB the agent's command line never loads otherwise.
    from device.sources import qrbackends

    backends = qrbackends.chain(cam.decoder)
    if not backends:
        return fail(
            "qr_decoder",
            "no QR decoder loads: the camera cannot read codes",
            f"{INSTALL_ZBAR}; {INSTALL_ZXING}",
        )
    broken = [b.name for b in backends if not qrbackends.self_test(b)]
    used = qrbackends.describe(backends)
    if broken:
        return fail(
            "qr_decoder",
            f"{' and '.join(broken)} cannot read the test code ({used})",
            "reinstall the kiosk (deploy/install.sh); see the agent's log for the error",
        )
    names = {b.name for b in backends}
    machine = machine or this_machine()
    if cam.decoder == "pyzbar":
        return ok("qr_decoder", f"{used} (camera.decoder = pyzbar)")
    if qrbackends.ZXING not in names:
        if cam.decoder == "zxing" or machine in ZXING_MACHINES:
            return warn(
                "qr_decoder",
                f"zxing-cpp is not installed: decoding with {used}, which reads fewer codes",
                INSTALL_ZXING,
            )
        return ok("qr_decoder", f"{used} (no zxing-cpp wheel for {machine})")
    if qrbackends.PYZBAR not in names:
        return warn("qr_decoder", f"{used}, no pyzbar fallback (libzbar0 missing)", INSTALL_ZBAR)
    return ok("qr_decoder", f"{used}: each reads the test code")
