"""Imports flow one way: ``siheyi`` → ``device`` | ``server`` | ``provisioning`` → ``core`` |
``firmware_bridge`` (issue 9, part 2).

The kiosk image must not drag in the server, the server must not depend on the tool that
administers it, and the provisioning tool reaches the server only through its admin API or
the backend the command line hands it. Every ``import``, ``from … import`` (relative ones
resolved) and ``importlib.import_module("…")`` / ``__import__("…")`` with a literal name is
checked, at module level or inside functions alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("core", "device", "server", "provisioning", "siheyi", "firmware_bridge")
#: What each package may import of ours besides itself (``siheyi`` may import anything).
ALLOWED: dict[str, tuple[str, ...]] = {
    "firmware_bridge": (),
    "core": ("firmware_bridge.idcard",),
    "device": ("core", "firmware_bridge"),
    "server": ("core", "firmware_bridge"),
    "provisioning": ("core", "firmware_bridge"),
    "siheyi": OURS,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name a relative ``from`` import refers to."""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it appears."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                name = _resolve(module, is_package, node.level, node.module)
            else:
                name = node.module or ""
            # ``from firmware_bridge import idcard`` is the module firmware_bridge.idcard (and
            # ``from server.config import X`` is reported as server.config.X)
            found += [(node.lineno, f"{name}.{alias.name}".lstrip(".")) for alias in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of ``source`` that its package may not make, as ``line: name``."""
    package = module.split(".")[0]
    allowed = (package, *ALLOWED[package])
    bad = {
        (line, name)
        for line, name in imported_names(source, module, is_package)
        if name.split(".")[0] in OURS and not any(_within(name, p) for p in allowed)
    }
    return [f"{line}: {name}" for line, name in sorted(bad)]


def _modules() -> list[Path]:
    return sorted(p for package in OURS for p in (ROOT / package).rglob("*.py"))


def test_every_package_is_walked() -> None:
    walked = {_module_name(p).split(".")[0] for p in _modules()}
    assert walked == set(OURS)
    assert len(_modules()) > 60


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    bad = forbidden(source, _module_name(path), path.name == "__init__.py")
    assert not bad, f"{path.relative_to(ROOT)} imports across the layers: {bad}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("device.verifier", "from server.config import X", ["1: server.config.X"]),
        ("server.app", "import provisioning.cli", ["1: provisioning.cli"]),
        ("server.app", "from device import privacy, wipe", ["1: device.privacy", "1: device.wipe"]),
        (
            "provisioning.cli",
            "def f():\n    from server.fleet import registry",
            ["2: server.fleet.registry"],
        ),
        (
            "provisioning.cli",
            "import importlib\nimportlib.import_module('server.cli')",
            ["2: server.cli"],
        ),
        ("provisioning.cli", "__import__('device.link.identity')", ["1: device.link.identity"]),
        ("core.policy", "from firmware_bridge import sam", ["1: firmware_bridge.sam"]),
        ("firmware_bridge.sam", "from core import idnumbers", ["1: core.idnumbers"]),
        ("server.fleet.admin", "from ..http import bodies", []),
        ("server.fleet.admin", "from ...device import x", ["1: device.x"]),
        ("core.policy", "from firmware_bridge import idcard", []),
        ("core.policy", "from firmware_bridge.idcard import checksum", []),
        ("provisioning.cli", "import json\nfrom core.wire_admin import X", []),
        ("siheyi.cli", "from server.cli import register", []),
    ],
)
def test_the_rules_catch_what_they_should(module: str, source: str, expected: list[str]) -> None:
    assert forbidden(source, module) == expected
