"""JSON errors for everything: bad input, unknown routes, oversize bodies, crashes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from server.errors import BadRequest, StorageUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
#: Kiosks fall back to their cache at once; this tells other clients when to come back.
_RETRY = {"Retry-After": "1"}


def json_error(
    status: type[web.HTTPException],
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> web.HTTPException:
    """Return an HTTP exception whose body is ``{"error": code, "detail": detail}``."""
    body = json.dumps({"error": code, "detail": detail}, ensure_ascii=False)
    return status(text=body, content_type="application/json", headers=headers)


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response ``{"error": code, "detail": detail}``."""
    body = json.dumps({"error": code, "detail": detail}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON body; unexpected exceptions become a logged 500."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(400, "bad_request", str(exc))
    except StorageUnavailable as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(503, "unavailable", "storage unavailable, retry later", _RETRY)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        detail = "request body too large" if exc.status == 413 else exc.reason
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, detail, headers)
    except ConnectionResetError:
        # The client left before its body arrived (a kiosk rebooting, a load generator
        # stopping): nobody to answer, nothing wrong with the server.
        log.debug("%s %s: client gone before its body arrived", request.method, request.path)
        return error_response(400, "connection_lost", "connection lost")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's connection logger, minus tracebacks for bad input.

    aiohttp logs every request its HTTP parser refuses (garbage, a TLS hello on the plain
    port, over-long lines, bad chunking) with a full traceback at ERROR, and answers it a clean
    ``400``: probes once left about 50 tracebacks. Such a request becomes one INFO line; any
    other exception keeps its traceback, as a bug should.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            kwargs["exc_info"] = None
            level = min(level, logging.INFO)
            msg = f"{msg}: bad HTTP ({type(exc).__name__}, {exc.code})"  # never the bytes sent
        super().log(level, msg, *args, **kwargs)


#: The ``logger`` of aiohttp's request handler (``web.Application(handler_args=...)``).
PROTOCOL_LOG = ProtocolLog(logging.getLogger("aiohttp.server"), {})
