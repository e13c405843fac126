"""Bulk Ed25519 key generation and bundle writing on every core.

Generating 21,390 keys takes about 5 s in one process here, so large batches are split over
worker processes (``spawn``: no fork of a threaded parent). Small batches stay in-process,
where starting workers would cost more than it saves. Workers hand back raw key bytes; the
private halves go only into bundle files (0600), never to the server or a log.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: Below this many keys one process is faster than starting workers.
PARALLEL_THRESHOLD = 3000


def generate_raw(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` fresh key pairs as (private raw 32 bytes, public raw 32 bytes)."""
    out = []
    for _ in range(count):
        key = Ed25519PrivateKey.generate()
        out.append((key.private_bytes_raw(), key.public_key().public_bytes_raw()))
    return out


def write_files(items: Sequence[tuple[str, str]]) -> int:
    """Write ``(path, text)`` pairs, each created 0600 (no fsync: the caller syncs once)."""
    for path, text in items:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
    return len(items)


def workers() -> int:
    """How many worker processes to use: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def pool(processes: int | None = None) -> ProcessPoolExecutor:
    """A process pool safe to start from a threaded parent."""
    return ProcessPoolExecutor(max_workers=processes or workers(), mp_context=get_context("spawn"))


def generate_many(
    count: int, executor: ProcessPoolExecutor | None = None
) -> list[tuple[bytes, bytes]]:
    """``count`` key pairs, generated on every core when the batch is large."""
    if count < PARALLEL_THRESHOLD and executor is None:
        return generate_raw(count)
    own = executor is None
    ex = executor or pool()
    try:
        n = workers()
        sizes = [count // n + (1 if i < count % n else 0) for i in range(n)]
        out: list[tuple[bytes, bytes]] = []
        for part in ex.map(generate_raw, [s for s in sizes if s]):
            out.extend(part)
        return out
    finally:
        if own:
            ex.shutdown()


def write_many(
    items: Sequence[tuple[str, str]], executor: ProcessPoolExecutor | None = None
) -> None:
    """Write many private files, in parallel when the batch is large; then sync the disk."""
    if len(items) < PARALLEL_THRESHOLD and executor is None:
        write_files(items)
    else:
        own = executor is None
        ex = executor or pool()
        try:
            n = workers() * 4
            step = max(1, -(-len(items) // n))
            list(ex.map(write_files, [items[i : i + step] for i in range(0, len(items), step)]))
        finally:
            if own:
                ex.shutdown()
    if items:
        directories = {str(Path(path).parent) for path, _ in items}
        for directory in directories:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.sync()
