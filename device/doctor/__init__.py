"""``kiosk doctor``: is this kiosk wired, configured and connected as it should be?

Every check answers ok/warn/fail with what it found and the concrete fix (docs/doctor.md).
:func:`run_doctor` is the one entry point, used by the CLI and by the updater's boot check.
"""

from device.doctor.context import DEFAULT_TIMEOUT_S, Probes, Thresholds, UserInfo
from device.doctor.model import CheckResult, Report
from device.doctor.runner import CHECKS, run_doctor, run_doctor_async

__all__ = [
    "CHECKS",
    "DEFAULT_TIMEOUT_S",
    "CheckResult",
    "Probes",
    "Report",
    "Thresholds",
    "UserInfo",
    "run_doctor",
    "run_doctor_async",
]
