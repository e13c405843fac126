"""A real updater process for the power-cut tests: it runs one update (or one trial) and,
at the named step, says so in ``<tmp>/reached`` and hangs there until the test kills it.

``python -m tests.update.powercut_driver <tmp> update|trial <step> [self-test failure]``
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from device.link.client import ChunkSink
from device.update import state as records
from device.update import updater as updater_module
from device.update.settings import UpdateSettings
from device.update.updater import Updater
from tests.update.fakes import KEY_HEX, FakeBuilder, FakeSource, offer_for, wheel_bytes


def hang(tmp: Path, step: str) -> None:
    """The moment to cut the power: tell the test, then wait for the kill."""
    (tmp / "reached").write_text(step)
    time.sleep(3600)


def pause_on_switch(tmp: Path, step: str, at_call: int, after: bool) -> None:
    """Hang before (or after) the ``at_call``-th link switch of this process."""
    real = vars(updater_module)["switch_link"]
    calls = 0

    def switch(link: Path, target: str) -> None:
        nonlocal calls
        calls += 1
        if calls == at_call and not after:
            hang(tmp, step)
        real(link, target)
        if calls == at_call and after:
            hang(tmp, step)

    vars(updater_module)["switch_link"] = switch


def pause_at_install(tmp: Path, step: str, after: bool) -> None:
    """Hang before the install starts, or once ``releases/<v>`` is complete (before the
    trial is written)."""
    real = vars(updater_module)["install_release"]

    async def install(*args: Any) -> Path:
        if not after:
            hang(tmp, step)
        result: Path = await real(*args)
        if after:
            hang(tmp, step)
        return result

    vars(updater_module)["install_release"] = install


class StalledSource(FakeSource):
    """A download that stops after its first chunk: ``downloads/<wheel>.part`` exists."""

    def __init__(self, tmp: Path, step: str, data: bytes) -> None:
        super().__init__(data)
        self.tmp, self.step = tmp, step

    async def fetch_chunks(self, url: str, sink: ChunkSink, timeout_s: float) -> None:
        await sink(self.data[: self.chunk])
        hang(self.tmp, self.step)


async def main(tmp: Path, mode: str, step: str, failure: str) -> None:
    settings = UpdateSettings(
        release_key=KEY_HEX, root=str(tmp / "opt"), state_dir=str(tmp / "var"), idle_s=0.0
    )
    builder = (
        FakeBuilder(sleep_s=3600, reached=tmp / "reached")
        if step == "installing"
        else FakeBuilder()
    )
    version = "2.0" if mode == "trial" else "1.0"
    source = (
        StalledSource(tmp, step, wheel_bytes("2.0"))
        if step == "downloading"
        else FakeSource(wheel_bytes("2.0"))
    )
    up = Updater(settings, source, running_version=version, builder=builder)
    up.idle_for = lambda: 100.0
    if step in ("downloaded", "installed"):
        pause_at_install(tmp, step, after=step == "installed")
    elif step in ("state_written", "rollback_state"):
        pause_on_switch(tmp, step, 1, after=False)
    elif step in ("between_links", "rollback_switched"):
        pause_on_switch(tmp, step, 1, after=True)

    async def announce() -> None:
        if step == "switched":
            hang(tmp, step)

    async def self_test() -> str:
        if step == "self_test":
            hang(tmp, step)
        return failure

    up.announce = announce
    up.self_test = self_test
    if mode == "trial":
        await up._settle_trial()
    else:
        task = asyncio.create_task(up.run())
        up.offer(offer_for("2.0"))
        await up.exit_requested.wait()
        task.cancel()
    record = records.load(settings.state_path)
    (tmp / "reached").write_text(f"done {record.state if record else None}")


if __name__ == "__main__":
    args = [*sys.argv[1:], ""]
    asyncio.run(main(Path(args[0]), args[1], args[2], args[3]))
