"""Guard alerts (issue 12, part 4): raised and cleared by the server from the facts it has.

A kiosk offline, its reader, camera or audio at fault, its journal backlog growing, its
audit chain broken or in conflict, its clock not trusted, its offline cache past its limit,
and repeated invalid credentials at one gate. At most one alert per subject and kind is
open at a time, enforced by the database, so several server processes raising the same
alert make one row. Guards list and acknowledge them (``GET /v1/guard/alerts``,
``POST /v1/guard/alerts/{id}/ack``); each change is published on the event bus and, when
the site has one, POSTed once to a webhook.

This package's ``__init__`` imports nothing, so server/config.py can import
:mod:`server.alerts.settings` without a cycle; the app wires :mod:`server.alerts.hooks`
(the ``observe_*`` hooks and ``alerts_ctx``) and :mod:`server.alerts.views`
(``OPERATIONS``). docs/alerts.md describes the rules.
"""
