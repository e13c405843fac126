"""The QR camera: frames arrive from the configured device, file or stream."""

from __future__ import annotations

import time

from device.doctor.context import STOP_AGENT, DoctorContext, is_agent
from device.doctor.model import CheckResult, fail, not_configured, ok, warn


def check_camera(ctx: DoctorContext) -> CheckResult:
    """Frames arrive from the configured camera, video file or stream."""
    cam = ctx.config.camera
    if not cam.enabled:
        return not_configured("camera", "not configured (camera.enabled = false)")
    from device.errors import CameraError
    from device.sources.camera import OpenCvCamera

    camera = OpenCvCamera(
        cam.source, width=cam.width, height=cam.height, fps=cam.fps, timeout_s=ctx.timeout_s
    )
    node = f"/dev/video{cam.source}" if cam.source.isdigit() else cam.source
    holders = ctx.probes.holders(node) if node.startswith("/dev/") else []
    if holders:
        pid, cmd = holders[0]
        who = "the kiosk agent" if is_agent(cmd) else f"{cmd[:60]!r}"
        return warn(
            "camera",
            f"{node} not opened: in use by {who} (pid {pid})",
            f"to test the camera itself: {STOP_AGENT}" if is_agent(cmd) else f"kill {pid}",
        )
    try:
        camera.open()
    except CameraError as exc:
        return fail(
            "camera",
            str(exc),
            "check the camera cable and `v4l2-ctl --list-devices`, and camera.source",
        )
    frames, shape = 0, ""
    deadline = time.monotonic() + max(0.5, ctx.timeout_s - 0.5)
    try:
        while frames < ctx.thresholds.camera_frames and time.monotonic() < deadline:
            image = camera.read()
            if image is None:
                if not camera.live:
                    break  # a file that ended (or holds no frame)
                time.sleep(0.02)
                continue
            frames += 1
            shape = f"{image.shape[1]}x{image.shape[0]}"
    finally:
        camera.close()
    if frames < ctx.thresholds.camera_frames:
        return fail(
            "camera",
            f"camera {cam.source} opened but gave {frames} frames "
            f"(wanted {ctx.thresholds.camera_frames})",
            "check the camera (`v4l2-ctl --list-devices`), its cable and its light; for a "
            "stream, the URL and the network",
        )
    return ok("camera", f"camera {cam.source}: {frames} frames of {shape}")
