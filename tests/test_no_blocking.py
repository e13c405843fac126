"""No blocking call on the kiosk agent's event loop during a tap (aiohttp's blockbuster check)."""

from __future__ import annotations

from pathlib import Path

from blockbuster import BlockBuster, blockbuster_ctx

from firmware_bridge.simserve import SimulatedReaderPort
from tests.e2e_support import (
    Fleet,
    fleet,
    prompt_cache,
    ready_agent,
    sim,
    tap,
)

__all__ = ["fleet", "prompt_cache", "sim"]  # fixtures used by the test below

#: The server's deliberate inline SQLite calls (point reads and batched tap claims of a few
#: microseconds, measured in bench/verify_storage.py): everything else must not block.
INLINE_SQLITE = {
    "server/storage/db.py": {"fetch"},
    "server/verify/claims.py": {"claim_taps", "_connection", "_write_queued"},
}


def allow_inline_sqlite(bb: BlockBuster) -> None:
    for name, function in bb.functions.items():
        if name.startswith("sqlite3."):
            for path, functions in INLINE_SQLITE.items():
                function.can_block_in(path, functions)


async def test_a_tap_never_blocks_the_event_loop(
    tmp_path: Path, fleet: Fleet, sim: SimulatedReaderPort, prompt_cache: Path
) -> None:
    async with ready_agent(tmp_path, fleet, sim, prompt_cache) as agent:
        # Only calls made from our own packages count: the test's own set-up may block.
        with blockbuster_ctx(scanned_modules=["device", "server", "siheyi"]) as bb:
            allow_inline_sqlite(bb)
            for outcome in ("pass", "check", "nat_expired"):
                result = await tap(agent, sim, fleet.people[outcome][0])
                assert result.decision.outcome == outcome
            await agent.status()
