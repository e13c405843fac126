"""The bare aiohttp JSON echo bench/fleet_load.py compares the server with.

``POST /echo`` parses the JSON body and answers it back inside an object padded to
``--answer-bytes`` (the size of a verify answer), so the echo does the same JSON and HTTP
work per request as a verify minus everything the server adds.

    .venv/bin/python bench/fleetload_echo.py --port 8099 --answer-bytes 700
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


def make_app(answer_bytes: int) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.json()
        text = json.dumps({"echo": body, "pad": ""})
        pad = "x" * max(0, answer_bytes - len(text))
        return web.json_response({"echo": body, "pad": pad})

    app = web.Application()
    app.router.add_post("/echo", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer-bytes", type=int, default=700)
    args = parser.parse_args()
    web.run_app(
        make_app(args.answer_bytes), host="127.0.0.1", port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
