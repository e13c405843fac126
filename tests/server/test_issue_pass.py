"""`kiosk server issue-pass`, end to end: issued by the CLI, verified by the kiosk code with
the device bundle's server_key."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol

from core.idnumbers import make_id_number, pseudonym
from core.passes import ReplayGuard, verify_pass
from provisioning.registry import DeviceBundle, add_device
from server.storage.db import connect
from siheyi.cli import build_parser, local_fleet

from .conftest import People


def kiosk(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


def issue(
    capsys: pytest.CaptureFixture[str], db_path: Path, number: str, *extra: str
) -> tuple[int, str, str]:
    site = () if "--site" in extra else ("--site", "site-a")  # the `device` fixture's site
    status = kiosk("server", "issue-pass", number, "--database", str(db_path), *site, *extra)
    out, err = capsys.readouterr()
    return status, out, err


def payload_of(text: str) -> dict[str, Any]:
    part = text.split(".")[1]
    doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return doc


def test_issue_and_verify_with_the_bundle_key(
    capsys: pytest.CaptureFixture[str], db_path: Path, people: People, device: DeviceBundle
) -> None:
    before = time.time()
    status, out, err = issue(capsys, db_path, people.passing, "--minutes", "5")
    assert status == 0, err
    text = out.strip()
    assert out.count("\n") == 1 and text.startswith("SHY1.") and len(text) < 400
    assert people.passing not in out + err
    assert people.passing[:4] + "*" * 10 + people.passing[-4:] in err
    doc = payload_of(text)
    assert list(doc) == sorted(doc)  # compact, sorted keys
    assert doc["exp"] - doc["iat"] == 300 and before - 1 <= doc["iat"] <= time.time()
    assert doc["o"] == "pass" and doc["s"] == "site-a" and doc["v"] == 1 and len(doc["n"]) == 16
    assert device.site == "site-a"

    guard = ReplayGuard()
    result = verify_pass(
        text, device.server_key, now=time.time(), clock_trusted=True, site="site-a", seen=guard
    )
    assert result.ok, result.reason
    # the pass names the person as this site's kiosks do (their bundle's key)
    assert result.pseudonym == pseudonym(bytes.fromhex(device.site_key), people.passing)
    assert result.masked_id == people.passing[:4] + "*" * 10 + people.passing[-4:]
    assert result.outcome == "pass" and result.expires_at == doc["exp"]
    again = verify_pass(
        text, device.server_key, now=time.time(), clock_trusted=True, site="site-a", seen=guard
    )
    assert again.reason == "replayed"
    # Later than its expiry it is refused.
    late = verify_pass(
        text, device.server_key, now=doc["exp"] + 1, clock_trusted=True, site="site-a", seen=guard
    )
    assert late.reason == "expired"


def test_site_bound_pass(
    capsys: pytest.CaptureFixture[str], db_path: Path, people: People, device: DeviceBundle
) -> None:
    other = add_device(local_fleet(None, db_path), "SN-0002", "site-b", server_url="http://test")
    status, out, _ = issue(capsys, db_path, people.passing, "--site", "site-a", "--minutes", "15")
    assert status == 0
    text = out.strip()
    assert payload_of(text)["s"] == "site-a"
    now = time.time()
    for site, reason in (("site-b", "site_mismatch"), ("site-a", "ok")):
        result = verify_pass(
            text, device.server_key, now=now, clock_trusted=True, site=site, seen=ReplayGuard()
        )
        assert result.reason == reason
    # A site-b kiosk refuses it, and its pseudonym is not one a site-b kiosk computes.
    at_b = verify_pass(
        text, other.server_key, now=now, clock_trusted=True, site=other.site, seen=ReplayGuard()
    )
    assert at_b.reason == "site_mismatch"
    assert at_b.pseudonym == pseudonym(bytes.fromhex(device.site_key), people.passing)
    assert at_b.pseudonym != pseudonym(bytes.fromhex(other.site_key), people.passing)
    # Issued for site-b, the pass names the person as site-b's kiosks do.
    status, out, _ = issue(capsys, db_path, people.passing, "--site", "site-b")
    assert status == 0
    for_b = verify_pass(
        out.strip(), other.server_key, now=now, clock_trusted=True, site="site-b",
        seen=ReplayGuard(),
    )  # fmt: skip
    assert for_b.ok, for_b.reason
    assert for_b.pseudonym == pseudonym(bytes.fromhex(other.site_key), people.passing)


def test_a_pass_needs_a_known_site(
    capsys: pytest.CaptureFixture[str], db_path: Path, people: People, device: DeviceBundle
) -> None:
    # No site: argparse refuses (exit 2); a pass valid everywhere would need a fleet-wide key.
    with pytest.raises(SystemExit) as exited:
        kiosk("server", "issue-pass", people.passing, "--database", str(db_path))
    assert exited.value.code == 2
    assert "--site" in capsys.readouterr().err
    status, out, err = issue(capsys, db_path, people.passing, "--site", "")
    assert (status, out) == (1, "") and "--site is required" in err
    # A typo mints no key and no pass.
    status, out, err = issue(capsys, db_path, people.passing, "--site", "site-z")
    assert (status, out) == (1, "") and "unknown site 'site-z'" in err
    with connect(db_path) as conn:
        sites = [r[0] for r in conn.execute("SELECT site FROM site_keys ORDER BY site")]
    assert sites == ["site-a"]


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("yellow", "current outcome is check (code_not_green)"),
        ("expired", "current outcome is nat_expired (nat_expired)"),
        ("unknown", "current outcome is check (unknown_person)"),
        ("bad", "current outcome is invalid_credential (bad_checksum)"),
    ],
)
def test_no_pass_unless_the_decision_is_pass(
    capsys: pytest.CaptureFixture[str],
    db_path: Path,
    people: People,
    who: str,
    message: str,
) -> None:
    number = (
        people.passing[:17] + ("0" if people.passing[17] != "0" else "1")
        if who == "bad"
        else getattr(people, who)
    )
    status, out, err = issue(capsys, db_path, number)
    assert status == 1
    assert out == ""
    assert message in err and "not issued" in err
    assert number not in err


@pytest.mark.parametrize("minutes", ["0", "16", "-5"])
def test_validity_is_bounded(
    capsys: pytest.CaptureFixture[str], db_path: Path, people: People, minutes: str
) -> None:
    status, out, err = issue(capsys, db_path, people.passing, "--minutes", minutes)
    assert (status, out) == (1, "")
    assert "--minutes must be 1..15" in err


def test_png_is_a_scannable_qr(
    capsys: pytest.CaptureFixture[str],
    db_path: Path,
    people: People,
    tmp_path: Path,
    device: DeviceBundle,
) -> None:
    png = tmp_path / "pass.png"
    status, out, _ = issue(capsys, db_path, people.passing, "--png", str(png))
    assert status == 0
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    # QR only: with every symbology zbar now and then also "finds" a linear barcode in the
    # modules of a random token (seen once: a 16-digit DataBar read beside the QR code)
    decoded = [c.data.decode("ascii") for c in pyzbar.decode(image, symbols=[ZBarSymbol.QRCODE])]
    assert decoded == [out.strip()]


def test_database_problem_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    number = make_id_number("110101", "19900307", "451")
    status, _, err = issue(capsys, tmp_path / "missing-dir" / "x.db", number)
    assert status == 2 and err.startswith("error: ")
