"""docs/api.md's reason codes, core/reasons.py and the code that decides: one set.

An integrator reads reasons from the doc alone, so a code the kiosk or server can produce
and the doc lacks (``card_expired``, ``server_unavailable``, ``cache:verify`` were) is a
silent break. The producers are read as source (AST) rather than run: most reasons need a
failing server, a corrupt cache or a forged pass to appear.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from core import policy, reasons

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"

#: Where decisions get their reasons.
PRODUCERS = (
    "core/policy.py",
    "device/deciding/verifier.py",
    "device/deciding/fallback.py",
    "server/verify/service.py",
)
#: Strings of a reason's shape in those files that are not reasons (outcomes, field names).
NOT_REASONS = {"health_code", "invalid_credential", "masked_id", "server_time", "tap_id"}
_SHAPE = re.compile(r"[a-z]+(?:_[a-z]+)+|[a-z_]+:[a-z_]+")
#: f-string reasons: their fixed prefix and the registry values their variable part takes.
FAMILIES = {
    "pass_": reasons.PASS_CHECKS,
    "pass_claim_": reasons.PASS_CLAIMS,
    "cache:": ("verify", "snapshot"),
    "server_refused:": (),
}


def documented() -> set[str]:
    """The codes in the first column of the doc's marked reason table."""
    text = API_MD.read_text(encoding="utf-8")
    start = text.index("<!-- reason-codes: begin -->")
    table = text[start : text.index("<!-- reason-codes: end -->")]
    codes: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return codes


def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"))


def _is_reason(text: str) -> bool:
    return _SHAPE.fullmatch(text) is not None and text not in NOT_REASONS


def literal_reasons() -> Iterator[tuple[str, str]]:
    """(file, code) for every reason-shaped string a producer returns or lists."""
    for path in PRODUCERS:
        for node in ast.walk(_tree(path)):
            holder = isinstance(node, ast.Return | ast.Tuple | ast.List)
            if holder or (isinstance(node, ast.keyword) and node.arg == "invalid_reason"):
                for leaf in ast.walk(node):
                    value = leaf.value if isinstance(leaf, ast.Constant) else None
                    if isinstance(value, str) and _is_reason(value):
                        yield path, value


def fstring_prefixes() -> set[str]:
    """The fixed beginnings of f-string reasons (``pass_{…}``) in the producers."""
    prefixes: set[str] = set()
    for path in PRODUCERS:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if re.fullmatch(r"[a-z_]+[_:]", head):
                    prefixes.add(head)
    return prefixes


def test_the_doc_lists_every_registered_code_and_no_other() -> None:
    families = {code for code in documented() if "<" in code}
    assert families == {"server_refused:<error>"}
    assert documented() - families == set(reasons.ALL)


def test_the_registry_holds_every_reason_the_producers_write() -> None:
    missing = {(path, code) for path, code in literal_reasons() if not reasons.known(code)}
    assert missing == set()
    assert reasons.known(policy.UNKNOWN_COLOUR_REASON)
    assert reasons.known(policy.ColourRule(passes=False).reason)


def test_every_fstring_reason_is_a_registered_family() -> None:
    decision_prefixes = {p for p in fstring_prefixes() if p.endswith(("_", ":"))}
    assert decision_prefixes <= set(FAMILIES)
    for prefix, values in FAMILIES.items():
        assert all(reasons.known(prefix + value) for value in values)


def test_pass_refusals_match_what_verify_pass_says() -> None:
    said: set[object] = set()
    for node in ast.walk(_tree("core/passes.py")):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("verdict", "PassCheck"):
            said.update(
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and a.value not in (False,)
            )
    assert said - {"ok"} == set(reasons.PASS_CHECKS)


def test_pass_claims_match_what_the_verifier_returns() -> None:
    for node in ast.walk(_tree("device/deciding/verifier.py")):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "_claim_pass":
            returned = {
                r.value.value
                for r in ast.walk(node)
                if isinstance(r, ast.Return) and isinstance(r.value, ast.Constant)
            }
    # claimed, replayed and refused have reasons of their own (pass_claimed, …)
    assert returned - {"claimed", "replayed", "refused"} == set(reasons.PASS_CLAIMS)


def test_cache_origins_are_the_registered_ones() -> None:
    source = (ROOT / "device/deciding/cache.py").read_text(encoding="utf-8")
    origins = set(re.findall(r"origin = '(\w+)'", source))
    assert {f"cache:{o}" for o in origins} == {c for c in reasons.ALL if c.startswith("cache:")}
