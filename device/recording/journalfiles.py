"""The journal's two pre-allocated side files: the sequence floor and the space reserve.

Both exist because a full disk must never cost a sequence number or the journal's ability
to delete what the server acknowledged (issue 10, part 2):

* :class:`SeqFloor` records, in place, the newest sequence number handed out to an event
  the database could not take (and how far the server acknowledged such events). Written
  over blocks allocated when the journal was made, so it works on a full file system; a
  restart reads it and never hands out those numbers again.
* :class:`SpaceReserve` is a file of zeros made with the journal. Deleting it gives SQLite
  room again on a file system someone else filled; it is made again once space returns.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

_SLOT: Final = 256  # bytes per record; two slots so a torn write leaves the other intact
_FILE_SIZE: Final = 2 * _SLOT


@dataclass(frozen=True)
class Floor:
    """Events of ``epoch`` up to ``seq`` were handed out (``seq``'s hash is ``hash``);
    every one up to ``confirmed`` is on disk or acknowledged by the server; ``dropped``
    events that got no number at all were lost and not yet reported."""

    epoch: str
    seq: int
    hash: str
    confirmed: int
    dropped: int = 0


class SeqFloor:
    """The sequence floor file: two checksummed slots, overwritten in place, fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._counter = 0

    def create(self, *, fresh: bool = False) -> None:
        """Allocate the file's blocks now, while the disk has room; ``fresh`` forgets a
        record left by an earlier journal at the same path (wiped without its floor)."""
        if not fresh and self.path.exists() and self.path.stat().st_size >= _FILE_SIZE:
            return
        with open(self.path, "wb") as f:
            f.write(b" " * _FILE_SIZE)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> Floor | None:
        """The newest intact record, or None when none was ever written."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        best: tuple[int, Floor] | None = None
        for offset in (0, _SLOT):
            parsed = _parse(data[offset : offset + _SLOT])
            if parsed is not None and (best is None or parsed[0] > best[0]):
                best = parsed
        if best is None:
            return None
        self._counter = best[0]
        return best[1]

    def write(self, floor: Floor) -> None:
        """Overwrite the older slot with ``floor``, durably; OSError if the file is gone."""
        self._counter += 1
        text = f"{self._counter} {floor.epoch or '-'} {floor.seq} {floor.hash} "
        text += f"{floor.confirmed} {floor.dropped}"
        record = f"{text} {zlib.crc32(text.encode()):08x}\n".encode()
        if len(record) > _SLOT:
            raise ValueError("sequence floor record too long")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, record.ljust(_SLOT, b" "), (self._counter % 2) * _SLOT)
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse(raw: bytes) -> tuple[int, Floor] | None:
    try:
        text, _, crc = raw.decode().strip().rpartition(" ")
        if not text or f"{zlib.crc32(text.encode()):08x}" != crc:
            return None
        counter, epoch, seq, digest, confirmed, dropped = text.split(" ")
        floor = Floor("" if epoch == "-" else epoch, int(seq), digest, int(confirmed), int(dropped))
        return int(counter), floor
    except (UnicodeDecodeError, ValueError):
        return None


class SpaceReserve:
    """``size`` bytes of a file system held back for the journal's worst day."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        return self.size > 0 and self.path.exists()

    def make(self) -> bool:
        """Allocate the reserve; False (and nothing left behind) when there is no room."""
        if self.size <= 0 or self.held:
            return self.held
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.info("journal space reserve %s not made: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        return True

    def release(self) -> bool:
        """Give the reserve's space back to the file system; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _allocate(fd: int, size: int) -> None:
    """Real blocks, not a sparse file: only written or fallocated blocks free space later."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the file system cannot: write
            raise
        chunk = b"\0" * 65536
        for offset in range(0, size, len(chunk)):
            os.pwrite(fd, chunk[: size - offset], offset)
