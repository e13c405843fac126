"""Sending a file the server holds in memory (a release wheel, a voice pack) to a kiosk,
within a per-process ceiling of downloads at once.

In chunks, so that one slow kiosk on a poor link holds a little of the event loop's time per
write and never a copy of the whole file in the transport's buffer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from aiohttp import web

from server.http.middleware import error_response, json_error

CHUNK = 256 * 1024


async def stream_bytes(
    request: web.Request, data: bytes, *, content_type: str, filename: str
) -> web.StreamResponse:
    """``data`` as an attachment named ``filename``, never cached on the way."""
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    response.content_length = len(data)
    await response.prepare(request)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        await response.write(view[start : start + CHUNK])
    await response.write_eof()
    return response


class HeldFiles:
    """Per process: files held in memory (the newest ``kept``: the one being rolled out, and
    one more) and the downloads of them under way."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.files: OrderedDict[Hashable, bytes] = OrderedDict()
        self.active = 0

    async def get(self, key: Hashable, load: Callable[[], Awaitable[bytes | None]]) -> bytes | None:
        """The file under ``key``: held, else loaded once (None: there is none)."""
        held = self.files.get(key)
        if held is None:
            held = await load()
            if held is None:
                return None
            self.files[key] = held
            while len(self.files) > self.kept:
                self.files.popitem(last=False)
        return held


async def send_held(
    request: web.Request,
    held: HeldFiles,
    key: Hashable,
    load: Callable[[], Awaitable[bytes | None]],
    *,
    limit: int,
    missing: str,
    content_type: str,
    filename: str,
) -> web.StreamResponse:
    """Stream the file under ``key`` to a kiosk; ``429`` with ``Retry-After`` when ``limit``
    downloads are under way in this process (the kiosk tries again at a later heartbeat, and
    taps keep their share of the device ceiling), ``404 not_found`` (``missing``) when there
    is no such file."""
    if held.active >= limit:
        return error_response(429, "overloaded", "too many downloads; retry later",
                              {"Retry-After": "30"})  # fmt: skip
    held.active += 1
    try:
        data = await held.get(key, load)
        if data is None:
            raise json_error(web.HTTPNotFound, "not_found", missing)
        return await stream_bytes(request, data, content_type=content_type, filename=filename)
    finally:
        held.active -= 1
