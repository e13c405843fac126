"""deploy/install.sh against a temporary root: the layout, the account, the udev rule and the
units it writes, run twice (nothing changes), then an offline upgrade (``previous`` kept).

The script runs for real — useradd/groupadd ``--prefix``, venvs, pip — on stand-in wheels
(tests/deploy/wheels.py) with pip pointed at a local folder instead of an index, so the test
is offline and takes seconds. Root is needed (files owned by the ``siheyi`` user).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.wheels import DEPENDENCY, dependency_wheel, siheyi_wheel

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "install.sh"
KIOSK_GROUPS = ("dialout", "gpio", "audio", "video")
#: The test venv's pip installs into each new venv (--python): no pip bootstrapped into them.
PIP = f"{sys.executable} -m pip"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh chowns to the siheyi user: root only"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd (package passwd)"),
]


def _empty_root(root: Path) -> None:
    """A root with nothing but root in its user database (as useradd --prefix needs)."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\n")  # one group there already
    for name, line in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
        (etc / name).write_text(line)
        (etc / name).chmod(0o640)


def _boot_guard(tmp: Path) -> Path:
    """The updater's boot guard, or a placeholder while device/update has none yet."""
    real = REPO / "device" / "update" / "bootguard.py"
    if real.is_file():
        return real
    placeholder = tmp / "bootguard.py"
    placeholder.write_text("import sys\nsys.exit(0)\n")
    return placeholder


OLD_KIOSK_TOML = '# enrolled by hand\nbundle = "/etc/siheyi/bundle.json"\n[reader]\nurl = "x"\n'
#: The agent's own writes on a Pi, run as the siheyi uid: in a subprocess that opens the
#: /opt/siheyi directory as root, drops to the uid and gid (no supplementary groups) and works
#: relative to that directory (the test's temporary root is below a root-only directory).
#: Each step prints "ok" or the exception's name.
AS_AGENT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from device.update.bootguard import switch_link
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
os.setgroups([])
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[2]))
os.fchdir(fd)

def new_release():
    os.mkdir("releases/9.partial")
    os.rename("releases/9.partial", "releases/9")

steps = {
    "current": lambda: switch_link(Path("current"), "releases/1.0"),
    "previous": lambda: switch_link(Path("previous"), "releases/1.0"),
    "release": new_release,
    "bin": lambda: open("bin/siheyi-boot-guard", "a").close(),
    "bin-dir": lambda: open("bin/other", "w").close(),
    "wheelhouse": lambda: open("wheelhouse/other.whl", "w").close(),
}
done = {}
for name, step in steps.items():
    try:
        step()
        done[name] = "ok"
    except OSError as exc:
        done[name] = type(exc).__name__
print(json.dumps(done))
"""


#: What the installed releases run with: not the test process's import path.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _kiosk(release: Path) -> str:
    """What a release's ``bin/kiosk`` prints (the stand-in wheel prints its version)."""
    command = [str(release / "bin" / "kiosk")]
    return subprocess.run(command, capture_output=True, text=True, env=CLEAN_ENV).stdout.strip()


def _install(root: Path, index: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **CLEAN_ENV,
        "PIP_NO_INDEX": "1",  # dependencies come from the folder below, never an index
        "PIP_FIND_LINKS": str(index),
        "PIP_NO_CACHE_DIR": "1",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), "--python", sys.executable, "--pip", PIP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _entry(root: Path, table: str, name: str) -> list[str]:
    for line in (root / "etc" / table).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"no {name} in {table}")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path below root with mode, owner, group and (links) target or (files) size."""
    seen = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        extra = os.readlink(path) if path.is_symlink() else str(st.st_size)
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, extra)
    return seen


@dataclass(frozen=True)
class Installed:
    """A root after ``install.sh --kiosk --server`` of release 1.0, and what it came from."""

    root: Path
    wheels: Path
    index: Path
    guard: Path

    def run(self, *args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _install(root or self.root, self.index, "--boot-guard", str(self.guard), *args)

    def copy(self, folder: Path) -> Path:
        """A copy of the root (owners, modes and links kept) for a test that changes it."""
        subprocess.run(["cp", "-a", str(self.root), str(folder / "root")], check=True)
        return folder / "root"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("install")
    done = Installed(tmp / "root", tmp / "wheels", tmp / "index", _boot_guard(tmp))
    for folder in (done.wheels, done.index):
        folder.mkdir()
    _empty_root(done.root)
    # Enrolled the old way, before the install: the bundle and its pending key in /etc.
    etc = done.root / "etc" / "siheyi"
    etc.mkdir()
    for name in ("bundle.json", "bundle.json.next-key"):
        (etc / name).write_text("{}")
        (etc / name).chmod(0o644)
    (etc / "kiosk.toml").write_text(OLD_KIOSK_TOML)
    dependency_wheel(done.index)
    wheel = siheyi_wheel(done.wheels, "1.0")
    _ok(done.run("--kiosk", "--server", "--wheel", str(wheel)))
    return done


def test_account_with_the_device_groups(installed: Installed) -> None:
    root = installed.root
    user = _entry(root, "passwd", "siheyi")
    assert user[5:] == ["/var/lib/siheyi", "/usr/sbin/nologin"]
    assert 0 < int(user[2]) < 1000  # a system account
    assert _entry(root, "group", "siheyi")[2] == user[3]
    for group in KIOSK_GROUPS:
        assert "siheyi" in _entry(root, "group", group)[3].split(",")
    assert _entry(root, "group", "audio")[2] == "29"  # an existing group is kept as it was


def test_layout_owners_and_modes(installed: Installed) -> None:
    root = installed.root
    uid, gid = (int(n) for n in _entry(root, "passwd", "siheyi")[2:4])
    opt = root / "opt" / "siheyi"
    assert os.readlink(opt / "current") == "releases/1.0"
    assert not (opt / "previous").exists()
    release = opt / "releases" / "1.0"
    assert _kiosk(release) == "siheyi 1.0"  # its dependency came along
    marker = json.loads((release / "siheyi-release.json").read_text())
    assert marker["version"] == "1.0" and len(marker["sha256"]) == 64
    wheelhouse = sorted(p.name for p in (opt / "wheelhouse").iterdir())
    assert wheelhouse == ["siheyi-1.0-py3-none-any.whl", f"{DEPENDENCY}-1.0-py3-none-any.whl"]
    expect = {
        "var/lib/siheyi": (0o750, uid, gid),
        "etc/siheyi": (0o750, 0, gid),
        "etc/siheyi/agent.env": (0o640, 0, gid),
        "etc/siheyi/server.env": (0o640, 0, gid),
        "var/lib/siheyi/bundle.json": (0o600, uid, gid),
        "var/lib/siheyi/bundle.json.next-key": (0o600, uid, gid),
        "opt/siheyi": (0o755, uid, gid),
        "opt/siheyi/bin": (0o755, 0, 0),
        "opt/siheyi/bin/siheyi-boot-guard": (0o755, 0, 0),
        "opt/siheyi/releases": (0o755, uid, gid),
        "opt/siheyi/releases/1.0/bin/kiosk": (0o755, uid, gid),
        "opt/siheyi/wheelhouse": (0o755, 0, 0),
        f"opt/siheyi/wheelhouse/{DEPENDENCY}-1.0-py3-none-any.whl": (0o644, 0, 0),
    }
    for path, (mode, owner, group) in expect.items():
        st = (root / path).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, owner, group), path
    assert (opt / "current").lstat().st_uid == uid  # the agent switches it itself


def test_the_agent_switches_links_and_installs_releases_but_not_the_guard(
    installed: Installed, tmp_path: Path
) -> None:
    """What the updater and the boot guard write (docs/updates.md), done as the siheyi uid:
    links beside ``releases/`` and a new release; the guard and the wheelhouse stay root's."""
    root = installed.copy(tmp_path)
    uid, gid = _entry(root, "passwd", "siheyi")[2:4]
    opt = root / "opt" / "siheyi"
    command = [sys.executable, "-c", AS_AGENT, str(opt), uid, gid, str(REPO)]
    result = subprocess.run(command, capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "current": "ok",
        "previous": "ok",
        "release": "ok",
        "bin": "PermissionError",
        "bin-dir": "PermissionError",
        "wheelhouse": "PermissionError",
    }
    assert os.readlink(opt / "previous") == "releases/1.0"
    assert (opt / "current").lstat().st_uid == int(uid)


def test_running_it_again_repairs_an_older_layout(installed: Installed, tmp_path: Path) -> None:
    """A kiosk installed when /opt/siheyi was root's and the wheelhouse the agent's, with a
    link switched by hand as root: the next run gives each its owner."""
    root = installed.copy(tmp_path)
    uid, gid = (int(n) for n in _entry(root, "passwd", "siheyi")[2:4])
    opt = root / "opt" / "siheyi"
    os.chown(opt, 0, 0)
    for path in (opt / "wheelhouse", *(opt / "wheelhouse").iterdir()):
        os.chown(path, uid, gid)
    os.lchown(opt / "current", 0, 0)
    wheel = installed.wheels / "siheyi-1.0-py3-none-any.whl"
    _ok(installed.run("--kiosk", "--wheel", str(wheel), root=root))
    assert (opt.stat().st_uid, opt.stat().st_gid) == (uid, gid)
    assert {p.stat().st_uid for p in (opt / "wheelhouse", *(opt / "wheelhouse").iterdir())} == {0}
    assert (opt / "current").lstat().st_uid == uid


def test_a_linked_guard_folder_is_refused(installed: Installed, tmp_path: Path) -> None:
    """The agent owns /opt/siheyi: root must not write the guard through a link it made."""
    root = installed.copy(tmp_path)
    bin_dir = root / "opt" / "siheyi" / "bin"
    shutil.rmtree(bin_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bin_dir.symlink_to(elsewhere)
    wheel = installed.wheels / "siheyi-1.0-py3-none-any.whl"
    result = installed.run("--kiosk", "--wheel", str(wheel), root=root)
    assert result.returncode == 2 and "is a symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_kiosk_is_on_the_path(installed: Installed) -> None:
    link = installed.root / "usr" / "local" / "bin" / "kiosk"
    assert os.readlink(link) == "/opt/siheyi/current/bin/kiosk"  # the system's, not the root's


def test_a_bundle_in_etc_moves_to_the_state_directory(installed: Installed) -> None:
    """/etc is read-only to the agent, and key rotation writes beside the bundle."""
    etc = installed.root / "etc" / "siheyi"
    state = installed.root / "var" / "lib" / "siheyi"
    assert not (etc / "bundle.json").exists() and not (etc / "bundle.json.next-key").exists()
    assert (state / "bundle.json").read_text() == "{}"
    config = (etc / "kiosk.toml").read_text()
    assert config == OLD_KIOSK_TOML.replace("/etc/siheyi/", "/var/lib/siheyi/")


def test_a_bundle_in_both_places_is_left_with_a_warning(
    installed: Installed, tmp_path: Path
) -> None:
    root = installed.copy(tmp_path)
    old = root / "etc" / "siheyi" / "bundle.json"
    old.write_text('{"old": 1}')
    result = installed.run(
        "--kiosk", "--wheel", str(installed.wheels / "siheyi-1.0-py3-none-any.whl"), root=root
    )
    _ok(result)
    assert "WARNING" in result.stderr and "/etc/siheyi/bundle.json" in result.stderr
    assert old.read_text() == '{"old": 1}'
    assert (root / "var" / "lib" / "siheyi" / "bundle.json").read_text() == "{}"


def test_units_rule_and_boot_guard_in_place(installed: Installed) -> None:
    root = installed.root
    for unit in ("siheyi-agent.service", "siheyi-server.service"):
        written = root / "etc" / "systemd" / "system" / unit
        assert written.read_text() == (REPO / "deploy" / "systemd" / unit).read_text()
    rule = root / "etc" / "udev" / "rules.d" / "99-siheyi-reader.rules"
    assert rule.read_text() == (REPO / "deploy" / "udev" / "99-siheyi-reader.rules").read_text()
    guard = root / "opt" / "siheyi" / "bin" / "siheyi-boot-guard"
    assert guard.read_bytes() == installed.guard.read_bytes()


def test_running_it_again_changes_nothing(installed: Installed) -> None:
    before = _snapshot(installed.root)
    wheel = installed.wheels / "siheyi-1.0-py3-none-any.whl"
    out = _ok(installed.run("--kiosk", "--server", "--wheel", str(wheel)))
    assert "release 1.0 already installed" in out
    assert _snapshot(installed.root) == before


def test_an_upgrade_from_the_wheelhouse_keeps_the_previous_release(
    installed: Installed, tmp_path: Path
) -> None:
    root = installed.copy(tmp_path)
    wheel = siheyi_wheel(tmp_path, "2.0")
    nothing = tmp_path / "empty-index"
    nothing.mkdir()
    # --offline, and an empty index: the dependency can only come from the wheelhouse
    args = ("--boot-guard", str(installed.guard), "--kiosk", "--offline", "--wheel", str(wheel))
    _ok(_install(root, nothing, *args))
    opt = root / "opt" / "siheyi"
    assert os.readlink(opt / "current") == "releases/2.0"
    assert os.readlink(opt / "previous") == "releases/1.0"
    assert _kiosk(opt / "current") == "siheyi 2.0"


def test_a_rebuilt_wheel_of_a_release_in_use_is_refused(
    installed: Installed, tmp_path: Path
) -> None:
    other = tmp_path / "siheyi-1.0-py3-none-any.whl"
    shutil.copy(installed.wheels / other.name, other)
    with other.open("ab") as f:
        f.write(b"\0")  # a zip tolerates trailing bytes: another sha256, same contents
    before = _snapshot(installed.root)
    result = installed.run("--server", "--wheel", str(other))
    assert result.returncode == 2
    assert "in use and was built from another wheel" in result.stderr
    assert _snapshot(installed.root) == before


def test_reader_adapters_by_option(installed: Installed) -> None:
    rules = installed.root / "etc" / "udev" / "rules.d" / "99-siheyi-reader.rules"
    args = ["--kiosk", "--wheel", str(installed.wheels / "siheyi-1.0-py3-none-any.whl")]
    try:
        _ok(installed.run(*args, "--reader-usb", "2E8A:0005"))
        matches = [line for line in rules.read_text().splitlines() if not line.startswith("#")]
        assert matches == [
            'SUBSYSTEM=="tty", ATTRS{idVendor}=="2e8a", ATTRS{idProduct}=="0005", '
            'SYMLINK+="siheyi-reader", GROUP="dialout", MODE="0660", ENV{ID_MM_DEVICE_IGNORE}="1"'
        ]
        bad = installed.run(*args, "--reader-usb", "2e8a")
        assert bad.returncode == 2 and "want VID:PID" in bad.stderr
    finally:
        _ok(installed.run(*args))  # the defaults again, for the other tests


def test_a_role_is_required(tmp_path: Path) -> None:
    result = _install(tmp_path, tmp_path)
    assert result.returncode == 2 and "--kiosk, --server or both" in result.stderr
