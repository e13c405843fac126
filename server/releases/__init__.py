"""Software releases for the fleet (issue 13, part 5; docs/releases.md).

Admins publish wheels signed with the fleet's Ed25519 release key (``kiosk release
publish``); the server stores them (:mod:`~server.releases.store`) and rolls them out to a
layer — the fleet, a site, a device — in waves (:mod:`~server.releases.rollouts`,
:mod:`~server.releases.waves`) that advance or halt by themselves on what the kiosks report
(:mod:`~server.releases.evaluate`). Each heartbeat stores the kiosk's report and answers its
offer (:mod:`~server.releases.heartbeat`); the kiosk downloads the wheel with its session.

Wiring (server/app.py): :data:`server.releases.views.OPERATIONS`; ``[releases]`` of
server.toml is :class:`~server.releases.settings.ReleaseSettings`. This package imports
nothing itself, so server/config.py can read the settings module without the views.
"""
