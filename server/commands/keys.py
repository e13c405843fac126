"""The app key of the command hub (apart, so handlers and the hub import it alike)."""

from __future__ import annotations

from aiohttp import web

from server.commands.hub import CommandHub

HUB = web.AppKey("command_hub", CommandHub)
