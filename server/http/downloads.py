"""Sending a file the server holds in memory (a release wheel, a voice pack) to a kiosk.

In chunks, so that one slow kiosk on a poor link holds a little of the event loop's time per
write and never a copy of the whole file in the transport's buffer.
"""

from __future__ import annotations

from aiohttp import web

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
