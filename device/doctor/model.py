"""What a doctor check answers, and the report they make together.

A result is data, not text, so the CLI can print a table, the boot guard can read JSON and a
test can assert on ``status``. Every text that leaves here goes through :func:`redact`: a
check never reads a card, but an error message quoting a port's output or a file must still
never carry a clear ID number (DESIGN.md "Privacy").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.idnumbers import redact

Status = Literal["ok", "warn", "fail"]

#: Status order, worst last: the report's overall status is the worst of its checks.
SEVERITY: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, ok/warn/fail, what was found, and the concrete fix ('' when ok)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", redact(self.detail))
        object.__setattr__(self, "fix", redact(self.fix))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{name, status, detail, fix}``."""
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> CheckResult:
    """A passed check."""
    return CheckResult(name, "ok", detail)


def warn(name: str, detail: str, fix: str = "") -> CheckResult:
    """Works, but someone should look (the kiosk still serves people)."""
    return CheckResult(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str) -> CheckResult:
    """Broken: the kiosk cannot do its job as configured until the fix is applied."""
    return CheckResult(name, "fail", detail, fix)


def not_configured(name: str, detail: str = "not configured") -> CheckResult:
    """A check that does not apply to this kiosk: reported as ok, visibly (docs/doctor.md)."""
    return CheckResult(name, "ok", detail)


@dataclass(frozen=True)
class Report:
    """Every check's result, in the fixed check order."""

    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed): the exit status is 0."""
        return all(c.status != "fail" for c in self.checks)

    def status(self, name: str) -> Status:
        """The status of the check called ``name`` (KeyError when there is none)."""
        return self.by_name(name).status

    def by_name(self, name: str) -> CheckResult:
        """The check called ``name`` (KeyError when there is none)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """``{"ok": bool, "checks": [...]}``: what ``kiosk doctor --json`` prints."""
        return {"ok": self.ok, "checks": [c.as_dict() for c in self.checks]}
