"""Security headers on the board's pages and files.

The Content-Security-Policy allows scripts, styles, images and connections from this server
only, with no inline script or style: an injected ``<script>`` or ``onclick=`` in a kiosk
name or an alert note cannot run even if escaping were ever missed. The JSON API is left
alone (its answers are not rendered by a browser and the verify path stays lean).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
BOARD_PREFIX = "/board"


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add :data:`HEADERS` to every answer under ``/board``, errors included."""
    if not request.path.startswith(BOARD_PREFIX):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    if not response.prepared:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
    return response
